"""A NICE model's training phases in their order, against a frozen, plain classifier:

1. the mask generator (`train_generator`), then the distilled teacher where configured;
2. the stored fine-tune of the classifier on the images compression writes;
3. the greedy phase on that (shipped) classifier where configured, and with
   `greedy_then_stored` the stored fine-tune once more, from the plain classifier, on the masks of
   the generator that ships.

One function, so the job (CLI, component, pipeline) and the library-only demo train the same
model in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from torch import nn
from torch.utils.data import Dataset

from nice.config import NiceConfig
from nice.training.common import EpochCallback
from nice.training.mask_generator import train_mask_generator
from nice.training.stored import train_for_storage
from nice.training.teacher import distil_greedy, distil_teacher


@dataclass
class Trained:
    classifier: nn.Module  # the one the model ships with
    generator: nn.Module
    final: dict[str, float]


def train_phases(cfg: NiceConfig, classifier: nn.Module, train: Iterable, val: Dataset,
                 epoch_logger: Callable[[str], EpochCallback | None] = lambda prefix: None,
                 progress: bool = True) -> Trained:
    """Every phase `cfg` asks for, on `classifier` (left unchanged); `epoch_logger(prefix)` gives
    each phase's per-epoch callback. `final` merges the phases' metrics; the repeated stored
    fine-tune's are prefixed `restored_`."""
    mc = cfg.train_generator
    res = train_mask_generator(cfg, classifier, train, val, on_epoch=epoch_logger("epoch_"), progress=progress)
    if mc.teacher:  # a slow, faithful ranking distilled into the trained generator
        res = distil_teacher(cfg, classifier, res.model, train, val, on_epoch=epoch_logger("teacher_epoch_"),
                             progress=progress)
    shipped, stored = train_for_storage(cfg, classifier, res.model, train, val,
                                        on_epoch=epoch_logger("stored_epoch_"), progress=progress)
    final = {**res.final, **stored}
    if mc.greedy_steps:  # on the classifier that ships, which it is measured on
        res = distil_greedy(cfg, shipped, res.model, train, val, on_epoch=epoch_logger("greedy_epoch_"),
                            progress=progress)
        final = {**final, **res.final}
        if mc.greedy_then_stored:  # the shipped classifier learns the masks that ship
            shipped, stored = train_for_storage(cfg, classifier, res.model, train, val,
                                                on_epoch=epoch_logger("restored_epoch_"), progress=progress)
            final = {**final, **{f"restored_{k}": v for k, v in stored.items()}}
    return Trained(shipped, res.model, final)
