"""Train the classifier that NICE will explain (and later keep frozen)."""

from __future__ import annotations

import logging
import sys

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from nice.config import NiceConfig
from nice.data.arrays import make_loader
from nice.device import pick_device, seed_everything
from nice.models import build_classifier
from nice.training.common import EpochCallback, TrainResult, accuracy, autocast, cpu_memory_format

log = logging.getLogger(__name__)


def train_classifier(cfg: NiceConfig, train: Dataset, test: Dataset,
                     on_epoch: EpochCallback | None = None, progress: bool = True,
                     initial: nn.Module | None = None) -> TrainResult:
    """Train `cfg.classifier` (or fine-tune `initial`, e.g. the user's own weights) for
    `train_classifier.epochs`; 0 epochs only measures it on `test`."""
    tc = cfg.train_classifier
    seed_everything(tc.seed)
    device = pick_device(tc.device)
    model = (initial if initial is not None else build_classifier(cfg.classifier)).to(device)
    fmt = cpu_memory_format(device, cfg.classifier.in_channels)
    model = model.to(memory_format=fmt)
    train_loader = make_loader(train, tc.batch_size, shuffle=True, seed=tc.seed)
    test_loader = make_loader(test, 512, shuffle=False)
    if tc.epochs <= 0:
        final = {"test_accuracy": accuracy(model, test_loader, device)}
        return TrainResult(model=model.eval().cpu(), history=[], final=final)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tc.lr, epochs=tc.epochs,
                                                steps_per_epoch=len(train_loader))
    history: list[dict[str, float]] = []
    for epoch in range(tc.epochs):
        model.train()
        total, seen = 0.0, 0
        bar = tqdm(train_loader, desc=f"classifier epoch {epoch + 1}/{tc.epochs}", disable=not progress,
                   unit="batch", leave=False)
        for x, y in bar:
            x, y = x.to(device, non_blocking=True).contiguous(memory_format=fmt), y.to(device, non_blocking=True)
            with autocast(device, tc.amp):
                loss = F.cross_entropy(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(y)
            seen += len(y)
            bar.set_postfix(loss=f"{total / seen:.4f}")
        metrics = {"train_loss": total / seen, "test_accuracy": accuracy(model, test_loader, device)}
        history.append(metrics)
        log.info("classifier epoch %d: %s", epoch + 1, metrics)
        if progress:
            tqdm.write(f"classifier epoch {epoch + 1}/{tc.epochs}: loss {metrics['train_loss']:.4f}, "
                       f"eval accuracy {metrics['test_accuracy'] * 100:.2f}%", file=sys.stderr)
        if on_epoch:
            on_epoch(epoch, metrics)
    model = model.eval().cpu().to(memory_format=torch.contiguous_format)
    return TrainResult(model=model, history=history, final=dict(history[-1]))
