"""A slow, faithful teacher ranking computed once per training image, for distilling into the
mask generator (`train_generator.teacher_weight`; issue 20's distillation lever): an evaluation
method (`train_generator.teacher`, before the stored fine-tune) or greedy insertion from the
stored background (`train_generator.greedy_steps`, after it, on the classifier that ships)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm import tqdm

from nice.classify import Classify
from nice.config import GREEDY_BASES, TEACHER_METHODS, NiceConfig
from nice.evaluate.attributions import LEARNED, InferenceNets, attribute
from nice.gates import grid_shape
from nice.mixing import background, mix
from nice.ranking import inert_last, live_blocks, smoothed_scores
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


def cell_masks(h: int, w: int, cell: int) -> torch.Tensor:
    """(C,1,h,w) one mask per candidate cell of `cell` x `cell` gate blocks over an h x w gate
    grid, row-major (edge cells cropped)."""
    ch, cw = -(-h // cell), -(-w // cell)
    eye = torch.eye(ch * cw).view(ch * cw, 1, ch, cw)
    return eye.repeat_interleave(cell, 2).repeat_interleave(cell, 3)[..., :h, :w].contiguous()


@torch.no_grad()
def greedy_insertion(probs: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, cfg: NiceConfig,
                     target: torch.Tensor, steps: int, chunk: int = 16, cell: int = 1) -> torch.Tensor:
    """(N, steps) candidate indices: from the stored background, add the candidate (a cell of
    `cell` x `cell` gate blocks, row-major; 1 = a block) that most raises `target`'s probability,
    `steps` times: the preservation oracle at `steps` candidates. Costs 1 + C + (C-1) + ...
    forwards an image for C live candidates (0.23 s at 64 px, 3 steps, one core)."""
    block = cfg.gates.block
    (h, w), n = grid_shape(x.shape[-2], x.shape[-1], block), len(x)
    eye = cell_masks(h, w, cell)
    cells = len(eye)
    if not 0 < steps <= cells:
        raise ValueError(f"greedy steps must be in 1..{cells} (the candidate cells of an image), got {steps}")
    # A cell equal to the stored background everywhere (MNIST's black paper) changes nothing
    # kept or not: it is not classified, which skips most of MNIST's candidates.
    live = F.max_pool2d(live_blocks(x, cfg).float()[:, None], cell, ceil_mode=True).view(n, cells) > 0
    out = torch.empty(n, steps, dtype=torch.long)
    for s in range(0, n, chunk):
        xs, ts = x[s:s + chunk], target[s:s + chunk]
        m = len(xs)
        z = torch.zeros(m, 1, h, w)
        taken = torch.zeros(m, cells, dtype=torch.bool)
        rows = torch.arange(m)
        # The probability of the image as it stands: classified once, then carried from the
        # chosen candidate (the kept cells are exactly that candidate's).
        now = probs(mix(xs, z, cfg.mixing, block)).gather(1, ts[:, None])[:, 0]
        for t in range(steps):
            i, c = (live[s:s + m] & ~taken).nonzero(as_tuple=True)
            # An inert cell leaves the probability where it is; a kept one is not a candidate again.
            p = now[:, None].expand(m, cells).masked_fill(taken, -1.0)
            if len(i):
                cand = (z[i] + eye[c]).clamp(max=1)
                p[i, c] = probs(mix(xs[i], cand, cfg.mixing, block)).gather(1, ts[i, None])[:, 0]
            best = p.argmax(1)
            out[s:s + m, t] = best
            now = p[rows, best]
            taken[rows, best] = True
            z = (z + eye[best]).clamp(max=1)
    return out


def put_first(scores: torch.Tensor, first: torch.Tensor, cell: int = 1) -> torch.Tensor:
    """`scores` (N,h,w) with each image's own values re-assigned so that its cells `first` (N, k;
    cells of `cell` x `cell` blocks, row-major as `cell_masks`) rank first, in that order, each
    cell's blocks and then all the other blocks in their `scores` order: a listwise student sees
    the original spread of values."""
    n, (h, w) = len(scores), scores.shape[-2:]
    masks = cell_masks(h, w, cell).flatten(1)
    cell_of = masks.argmax(0)  # each block's cell
    steps = first.shape[1]
    pos = torch.full((n, len(masks)), steps, dtype=torch.long)
    pos.scatter_(1, first, torch.arange(steps).expand(n, steps))
    flat = scores.reshape(n, -1)
    by_score = flat.argsort(dim=1, descending=True, stable=True)
    # Blocks by their cell's greedy step (not chosen: last), ties in score order: stable sorts.
    order = by_score.gather(1, pos[:, cell_of].gather(1, by_score).argsort(dim=1, stable=True))
    out = torch.empty_like(flat).scatter_(1, order, flat.sort(1, descending=True).values)
    return out.view_as(scores)


def greedy_teacher(model: Any, data: Dataset, steps: int, batch: int = 256, progress: bool = True,
                   cell: int = 1, base: str = "occlusion") -> torch.Tensor:
    """(N,h,w) the greedy teacher for every image of `data`: greedy insertion's first `steps`
    cells of `cell` x `cell` gate blocks (each cell's blocks in the base order), then the rest in
    the `base` order with its values: occlusion of `model`'s classifier against its stored
    background, or `nice`, the generator's own smoothed ranking (the student moves only the
    greedy cells). Inert blocks (equal to the stored background) go last, as the search ranks
    them: kept or not they change nothing (MNIST's paper; none on a flat-background colour set)."""
    if base not in GREEDY_BASES:
        raise ValueError(f"the greedy teacher's base must be one of {GREEDY_BASES}, got {base!r}")
    occ = teacher_scores(model, data, "occlusion", batch, progress) if base == "occlusion" else None
    probs = Classify(model.classifier).probs
    nets: InferenceNets | None = None  # the generator's, tuned once, on the first batch
    out, done = [], 0
    loader = DataLoader(data, batch_size=batch, shuffle=False, num_workers=0)
    for items in tqdm(loader, desc=f"greedy teacher ({steps} cells)", unit="batch", disable=not progress):
        x = items[0].float()
        target = probs(x).argmax(1)
        if occ is None:
            nets = nets or InferenceNets.tuned(model, x)
            ref = smoothed_scores(model.config, attribute("nice", model, x, target, x, nets=nets).scores)
        else:
            ref = occ[done:done + len(x)]
        done += len(x)
        order = greedy_insertion(probs, x, model.config, target, steps, cell=cell)
        out.append(inert_last(put_first(ref, order, cell), live_blocks(x, model.config)))
    return torch.cat(out)


def _distil(cfg: NiceConfig, classifier: nn.Module, generator: nn.Module, train: Iterable, val: Dataset,
            images: int, epochs: int, lr: float, teach: Callable[[Any, Dataset], torch.Tensor], seconds_key: str,
            on_epoch: EpochCallback | None, progress: bool) -> TrainResult:
    """A teacher phase: `teach`(the model, the first `images` training images) scores them, then
    `generator` is fine-tuned on them for `epochs` at `lr` with the distillation term against the
    frozen `classifier`; `final[seconds_key]` is the phase's wall time (teacher and fine-tune)."""
    from nice.bundle import NiceModel
    from nice.training.mask_generator import train_mask_generator

    t0 = time.perf_counter()
    subset = first_images(train, images)
    scores = teach(NiceModel(classifier, generator, cfg), subset)
    phase = replace(cfg, train_generator=replace(cfg.train_generator, epochs=epochs, lr=lr))
    res = train_mask_generator(phase, classifier, WithTeacher(subset, scores), val, on_epoch=on_epoch,
                               progress=progress, init=generator)
    res.final[seconds_key] = time.perf_counter() - t0
    return res


def distil_teacher(cfg: NiceConfig, classifier: nn.Module, generator: nn.Module, train: Iterable, val: Dataset,
                   on_epoch: EpochCallback | None = None, progress: bool = True) -> TrainResult:
    """The product's distillation phase (`train_generator.teacher`): the teacher's ranking of the
    frozen classifier on the first `teacher_images` training images (against the model's stored
    background, as the evaluation explains), then `generator` fine-tuned on them with the
    distillation term. Occlusion costs ~35 ms an image at 64 px on 2 cores, so it runs once on a
    subset; the generator has learned the task on the whole split before. `final` carries the
    phase's wall time (`teacher_seconds`: the teacher and the fine-tune)."""
    mc = cfg.train_generator
    return _distil(cfg, classifier, generator, train, val, mc.teacher_images, mc.teacher_epochs, mc.teacher_lr,
                   lambda model, subset: teacher_scores(model, subset, mc.teacher, progress=progress),
                   "teacher_seconds", on_epoch, progress)


def distil_greedy(cfg: NiceConfig, classifier: nn.Module, generator: nn.Module, train: Iterable, val: Dataset,
                  on_epoch: EpochCallback | None = None, progress: bool = True) -> TrainResult:
    """The greedy phase (`train_generator.greedy_steps`), run on the classifier that ships (after
    the stored fine-tune): greedy insertion's first blocks on the first `greedy_images` training
    images, distilled with the same term as `teacher`. On the plain classifier it fails (mnist-m:
    54.9% kept at 5% against 93.4%): a classifier that never saw the flat background answers
    from other blocks than the one that ships (docs/results.md). `final` carries `greedy_seconds`."""
    mc = cfg.train_generator
    return _distil(cfg, classifier, generator, train, val, mc.greedy_images, mc.greedy_epochs, mc.greedy_lr,
                   lambda model, subset: greedy_teacher(model, subset, mc.greedy_steps, progress=progress,
                                                                cell=mc.greedy_cell, base=mc.greedy_base),
                   "greedy_seconds", on_epoch, progress)
