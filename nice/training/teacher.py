"""A slow, faithful teacher ranking computed once per training image, for distilling into the
mask generator (`train_generator.teacher_weight`; issue 20's distillation lever)."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from nice.classify import Classify
from nice.evaluate.attributions import LEARNED, InferenceNets, attribute
from nice.mixing import background

TEACHERS = tuple(m for m in LEARNED if m != "nice")


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
