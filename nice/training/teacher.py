"""A slow, faithful teacher ranking computed once per training image, for distilling into the
mask generator (`train_generator.teacher_weight`; issue 20's distillation lever)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm import tqdm

from nice.classify import Classify
from nice.config import TEACHER_METHODS, NiceConfig
from nice.evaluate.attributions import LEARNED, InferenceNets, attribute
from nice.mixing import background
from nice.training.common import EpochCallback, TrainResult

TEACHERS = TEACHER_METHODS
assert set(TEACHERS) == set(LEARNED) - {"nice"}, "a teacher is an evaluation method"


class WithTeacher(Dataset):
    """`base`'s (x, y) items with the teacher's gate-grid scores of the same image: (x, y, t)."""

    def __init__(self, base: Dataset, scores: torch.Tensor) -> None:
        if len(base) != len(scores):
            raise ValueError(f"{len(scores)} teacher rankings for {len(base)} training images")
        self.base, self.scores = base, scores

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[Any, Any, torch.Tensor]:
        x, y = self.base[i][:2]
        return x, y, self.scores[i]


def teacher_scores(model: Any, data: Dataset, method: str, batch: int = 256,
                   progress: bool = True) -> torch.Tensor:
    """(N,h,w) scores of `method` for every image of `data` (in order), explaining the frozen
    classifier's own prediction against the model's stored background, as the evaluation does."""
    if method not in TEACHERS:
        raise ValueError(f"teacher must be one of {TEACHERS}, got {method!r}")
    clf = Classify(model.classifier)  # the one classifier wrapper: the prediction the evaluation explains
    nets: InferenceNets | None = None  # tuned once, on the first batch
    out = []
    loader = DataLoader(data, batch_size=batch, shuffle=False, num_workers=0)
    for items in tqdm(loader, desc=f"{method} teacher", unit="batch", disable=not progress):
        x = items[0].float()  # training datasets serve [0, 1] floats
        target = clf.probs(x).argmax(1)
        nets = nets or InferenceNets.tuned(model, x)
        out.append(attribute(method, model, x, target, background(x, model.config.mixing), nets=nets).scores)
    return torch.cat(out)


def first_images(data: Iterable, n: int) -> TensorDataset:
    """The first `n` images of a (streamed) training split, in memory: a map-style dataset that
    a teacher's per-image scores can index (`WithTeacher`)."""
    xs, ys = [], []
    for x, y, *_ in data:
        xs.append(torch.as_tensor(x).float())
        ys.append(int(y))
        if len(xs) == n:
            break
    if not xs:
        raise ValueError("the training split has no images to compute a teacher on")
    return TensorDataset(torch.stack(xs), torch.tensor(ys))


def distil_teacher(cfg: NiceConfig, classifier: nn.Module, generator: nn.Module, train: Iterable, val: Dataset,
                   on_epoch: EpochCallback | None = None, progress: bool = True) -> TrainResult:
    """The product's distillation phase (`train_generator.teacher`): the teacher's ranking of the
    frozen classifier on the first `teacher_images` training images (against the model's stored
    background, as the evaluation explains), then `generator` fine-tuned on them with the
    distillation term. Occlusion costs ~35 ms an image at 64 px on 2 cores, so it runs once on a
    subset; the generator has learned the task on the whole split before. `final` carries the
    phase's wall time (`teacher_seconds`: the teacher and the fine-tune)."""
    from nice.bundle import NiceModel
    from nice.training.mask_generator import train_mask_generator

    t0 = time.perf_counter()
    mc = cfg.train_generator
    subset = first_images(train, mc.teacher_images)
    scores = teacher_scores(NiceModel(classifier, generator, cfg), subset, mc.teacher, progress=progress)
    phase = replace(cfg, train_generator=replace(mc, epochs=mc.teacher_epochs, lr=mc.teacher_lr))
    res = train_mask_generator(phase, classifier, WithTeacher(subset, scores), val, on_epoch=on_epoch,
                               progress=progress, init=generator)
    res.final["teacher_seconds"] = time.perf_counter() - t0
    return res
