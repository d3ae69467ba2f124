"""The object-scale curriculum (`train_classifier.curriculum`): a classifier for one small
object in a large view, trained first on crops around the object, then on whole views.

From scratch on whole views every attempt on scenes stayed at chance: the object covers ~1 of
the 49 cells of the final feature map and its gradient, averaged with the clutter of the
others, never starts the features. Crops of the view that hold the whole object keep its pixel
scale (the task becomes mnist-m-like and learns in thousands of fast steps); a fully
convolutional network with global max pooling (`classifier.pool = "max"`) then applies the
same features to the whole view, where a short second stage stops background cells firing.
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from nice.config import NiceConfig
from nice.data.arrays import make_loader
from nice.data.scene_views import RenderedViews
from nice.device import pick_device, seed_everything
from nice.models import build_classifier
from nice.training.common import EpochCallback, TrainResult, accuracy

log = logging.getLogger(__name__)


def object_crops(images: np.ndarray, boxes: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    """A random side x side crop of each view that holds its whole object (centred on the
    object when the object is larger than the crop)."""
    size = images.shape[1]
    if side > size:
        raise ValueError(f"train_classifier.curriculum.crop ({side}) is larger than the view ({size} px)")
    out = np.empty((len(images), side, side, images.shape[3]), images.dtype)
    for k, (y0, x0, y1, x1) in enumerate(boxes):
        origin = []
        for lo, hi in ((y0, y1), (x0, x1)):
            a, b = max(0, hi - side), min(lo, size - side)
            origin.append(int(rng.integers(a, b + 1)) if b >= a else min(max(0, (lo + hi - side) // 2), size - side))
        out[k] = images[k, origin[0]:origin[0] + side, origin[1]:origin[1] + side]
    return out


def _batch(x: np.ndarray, device: torch.device) -> torch.Tensor:
    return (torch.from_numpy(np.ascontiguousarray(x)).to(device).permute(0, 3, 1, 2).float().div_(255)
            .contiguous(memory_format=torch.channels_last))


def _stage(model: nn.Module, views: RenderedViews, crop: int, steps: int, lr: float, batch: int,
           weight_decay: float, smoothing: float, seed: int, device: torch.device, name: str,
           progress: bool) -> float:
    """AdamW with a one-cycle schedule; returns the final running loss."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    # One-cycle needs a few steps per phase; a smoke run of under 20 steps keeps lr constant.
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1) if steps >= 20
             else torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0))
    rng = np.random.default_rng(seed)
    batch = min(batch, len(views))
    model.train()
    running = float("nan")
    with tqdm(range(steps), desc=name, unit="step", disable=not progress, leave=False) as bar:
        for step in bar:
            idx = np.sort(rng.choice(len(views), batch, replace=False))
            x = object_crops(views.images[idx], views.boxes[idx], crop, rng) if crop else views.images[idx]
            y = torch.from_numpy(views.labels[idx]).to(device)
            loss = F.cross_entropy(model(_batch(x, device)), y, label_smoothing=smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running = loss.item() if step == 0 else 0.98 * running + 0.02 * loss.item()
            if step % 50 == 0:
                bar.set_postfix(loss=f"{running:.3f}")
    return running


def train_curriculum(cfg: NiceConfig, views: RenderedViews, val: Dataset,
                     on_epoch: EpochCallback | None = None, progress: bool = True,
                     initial: nn.Module | None = None) -> TrainResult:
    """The two stages on rendered views; validation accuracy (on `val`, the artifact's own
    frames through the view) after each. History entries are the stages, in order."""
    tc, cc = cfg.train_classifier, cfg.train_classifier.curriculum
    seed_everything(tc.seed)
    device = pick_device(tc.device)
    model = (initial if initial is not None else build_classifier(cfg.classifier)).to(device)
    model = model.to(memory_format=torch.channels_last)
    val_loader = make_loader(val, 128, shuffle=False)
    history: list[dict[str, float]] = []
    stages = (("crops", cc.crop, cc.crop_steps, tc.lr), ("views", 0, cc.view_steps, cc.view_lr))
    for k, (name, crop, steps, lr) in enumerate(stages):
        if steps <= 0:
            continue
        loss = _stage(model, views, crop, steps, lr, tc.batch_size, tc.weight_decay, cc.label_smoothing,
                      tc.seed + k, device, f"classifier {name}", progress)
        metrics = {"train_loss": loss, "test_accuracy": accuracy(model, val_loader, device), "steps": float(steps)}
        history.append(metrics)
        log.info("classifier stage %s: %s", name, metrics)
        if progress:
            tqdm.write(f"classifier {name} ({steps} steps): loss {loss:.4f}, "
                       f"eval accuracy {metrics['test_accuracy'] * 100:.2f}%", file=sys.stderr)
        if on_epoch:
            on_epoch(len(history) - 1, metrics)
    if not history:
        history.append({"test_accuracy": accuracy(model, val_loader, device)})
    model = model.eval().cpu().to(memory_format=torch.contiguous_format)
    return TrainResult(model=model, history=history, final=dict(history[-1]))
