"""Train for what is stored: fine-tune the classifier on the images compression writes.

The per-image search stores, for each image, the generator's top-k blocks mixed into the
stored background (`mixing`, not the one the generator may have trained against) and
encoded at a low rung of a quality (or grey-level) ladder, and keeps a candidate only if
the classifier still predicts the source's class. A classifier that has seen such images
accepts sparser masks and lower rungs, so the search lands on smaller files
(docs/results.md: mnist-m -12% bytes with block-mean backgrounds; with the flat background
it is what lets the classifier read it at all). Half of every batch stays original so the accuracy on originals is kept; past
`stored_max_drop` points of loss on the validation originals the original classifier is
returned unchanged.
"""

from __future__ import annotations

import copy
import logging
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from nice.codec import Rung, decode, encode, ladders, probe_effort, search_formats
from nice.config import NiceConfig
from nice.data.arrays import make_loader
from nice.device import seed_everything
from nice.gates import topk_mask
from nice.imageio import to_float_batch, to_uint8_batch
from nice.mixing import make_mixer
from nice.ranking import search_ranking
from nice.training.common import EpochCallback, TrainResult

log = logging.getLogger(__name__)


class StoredImages:
    """A float batch (N,C,H,W in [0,1]) -> the candidates the search would store for it: per
    image a keep level of `search.keep` and a rung of the search's ladders, drawn at random,
    mixed, encoded (at the search's probe effort) and decoded through the codec layer."""

    def __init__(self, cfg: NiceConfig, generator: nn.Module, seed: int = 0) -> None:
        self.cfg = cfg
        self.generator = generator.eval()
        self.mixer = make_mixer(cfg.mixing, cfg.gates.block)
        self.mode = "L" if cfg.classifier.in_channels == 1 else "RGB"
        grey = self.mode == "L"
        self.rungs: list[Rung] = [r for fmt in search_formats(cfg.search.formats, "PNG" if grey else "JPEG")
                                  for lad in ladders(fmt, cfg.search, grey) for r in lad]
        self.effort = probe_effort(cfg.codec, cfg.search)
        self.rng = np.random.default_rng(seed)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        scores = search_ranking(self.cfg, self.generator(x)[:, 0], x)
        keep = torch.from_numpy(self.rng.choice(np.asarray(self.cfg.search.keep, dtype=np.float32), len(x)))
        pixels = to_uint8_batch(self.mixer(x, topk_mask(scores, keep)))
        out = []
        for arr in pixels:
            rung = self.rungs[int(self.rng.integers(len(self.rungs)))]
            out.append(decode(encode(arr, self.mode, rung, self.effort), self.mode))
        return to_float_batch(np.stack(out))


def finetune_on_stored(cfg: NiceConfig, classifier: nn.Module, generator: nn.Module, train: Dataset,
                       val: Dataset, on_epoch: EpochCallback | None = None, progress: bool = True) -> TrainResult:
    """`classifier` fine-tuned on half-original, half-stored batches (a copy; the input is
    untouched). `final` reports validation accuracy on originals and on stored images before
    and after, and whether the fine-tuned classifier was kept."""
    tc = cfg.train_classifier
    seed_everything(tc.seed)
    # Runs on the CPU whatever `tc.device` says: every stored image is a codec round trip there.
    generator = copy.deepcopy(generator).eval()
    stored = StoredImages(cfg, generator, seed=tc.seed)
    before: dict[str, float] | None = None
    model = copy.deepcopy(classifier).train()
    for p in model.parameters():  # the generator's training froze the classifier it was given
        p.requires_grad_(True)
    loader = make_loader(train, tc.batch_size, shuffle=True, seed=tc.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.stored_lr, weight_decay=tc.weight_decay)
    history: list[dict[str, float]] = []
    for epoch in range(tc.stored_epochs):
        model.train()
        total, seen = 0.0, 0
        bar = tqdm(loader, desc=f"classifier on stored images {epoch + 1}/{tc.stored_epochs}",
                   disable=not progress, unit="batch", leave=False)
        for x, y in bar:
            half = len(x) // 2
            x = torch.cat([x[:half], stored(x[half:])])
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(y)
            seen += len(y)
            bar.set_postfix(loss=f"{total / seen:.4f}")
        # The original is scored in the same pass as the first epoch's model: one codec round
        # trip of the validation set serves both.
        scored = _accuracies([model] if before else [model, classifier], val, cfg, generator, tc.seed)
        after, before = scored[0], before or scored[1]
        metrics = {"stored_train_loss": total / seen, **{f"{k}_after": v for k, v in after.items()}}
        history.append(metrics)
        if progress:
            tqdm.write(f"classifier on stored images {epoch + 1}/{tc.stored_epochs}: accuracy on originals "
                       f"{after['val_accuracy'] * 100:.2f}%, on stored images {after['val_accuracy_stored'] * 100:.2f}%",
                       file=sys.stderr)
        if on_epoch:
            on_epoch(epoch, metrics)
    model.eval()
    before = before or _accuracies([classifier], val, cfg, generator, tc.seed)[0]
    final = {**{f"{k}_before": v for k, v in before.items()}, **(history[-1] if history else {})}
    drop = (before["val_accuracy"] - final.get("val_accuracy_after", before["val_accuracy"])) * 100
    keep_new = bool(history) and drop <= tc.stored_max_drop
    final["stored_finetune_kept"] = float(keep_new)
    if not keep_new and history:
        log.warning("fine-tuning on stored images cost %.2f points on the originals (limit %.2f): "
                    "keeping the original classifier", drop, tc.stored_max_drop)
    return TrainResult(model=model if keep_new else classifier, history=history, final=final)


@torch.no_grad()
def _accuracies(nets: list[nn.Module], val: Dataset, cfg: NiceConfig, generator: nn.Module,
                seed: int) -> list[dict[str, float]]:
    """Validation accuracy of each classifier on the originals and on stored images, in one
    pass: every batch is stored (encoded, decoded) once for all of them, with the same draws
    on every call."""
    stored = StoredImages(cfg, generator, seed=seed + 1)
    for net in nets:
        net.eval()
    hits = torch.zeros(len(nets), 2)
    n = 0
    for x, y in make_loader(val, 512, shuffle=False):
        xs = stored(x)
        for i, net in enumerate(nets):
            hits[i, 0] += (net(x).argmax(1) == y).sum()
            hits[i, 1] += (net(xs).argmax(1) == y).sum()
        n += len(y)
    return [{"val_accuracy": float(h[0]) / n, "val_accuracy_stored": float(h[1]) / n} for h in hits]


def train_for_storage(cfg: NiceConfig, classifier: nn.Module, generator: nn.Module, train: Dataset, val: Dataset,
                      on_epoch: EpochCallback | None = None, progress: bool = True) -> tuple[nn.Module, dict[str, float]]:
    """The classifier a NICE model should ship with: fine-tuned on stored images when
    `train_classifier.stored_epochs` > 0, else `classifier` itself (no metrics)."""
    if cfg.train_classifier.stored_epochs <= 0:
        return classifier, {}
    res = finetune_on_stored(cfg, classifier, generator, train, val, on_epoch=on_epoch, progress=progress)
    return res.model, res.final
