"""The one search: the smallest stored file that keeps the classifier's prediction.

A search takes a *mask source* (which blocks stay at full resolution, level by level: the
top-k fraction of blocks by any ranking, or the generator's gates thresholded at tau) and
*ladders* (codec rungs from the cheapest to the most faithful, per output format). For each
mask level and ladder, the search probes the lowest open rung, then bisects above it for the
lowest rung whose decode keeps the source's top-1 class; a candidate already larger than the
image's best is not classified (a lower rung is then tried), and keep levels bound each
other's open rungs (`Bounds`: the same rung over more sharp blocks verifies at least as
often and costs at least as many bytes). Every stored file was decoded and classified, so the guard holds by
construction, and nothing larger than the source is ever returned.

- The product's default (docs/results.md: 0.08x searched against 0.45x at a fixed setting,
  mnist-m): NICE's ranking at the keep levels `search.keep` x the ladders of `search.formats`,
  probed at low effort, the smallest candidate re-encoded at full effort and re-verified.
- The fixed path (DESIGN.md section 3): tau thresholds in order x one rung; the first level
  that verifies wins, and a candidate not smaller than the source ends the image's search
  (denser masks only cost more bytes).
- The evaluation runs the same search with other rankings, or on the whole image (a codec
  oracle), so every method is compared on equal terms.

All images of a batch and all their ladders advance in lockstep, one classifier call per step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from nice.codec import CodecLimit, Effort, Rung, decode, encode, final_effort, fixed_effort, fixed_rung, ladders, \
    output_format, probe_effort, search_formats
from nice.config import NiceConfig
from nice.gates import HardConcrete, rank_scores, topk_mask
from nice.imageio import to_uint8_batch
from nice.ranking import search_ranking

# Classifies a uint8 batch (N,H,W[,C]) -> (top-1 class, its probability).
ClassifyFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
Mix = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# Source format (PIL name) and whether the stored image is grey -> the ladders to climb.
LaddersFn = Callable[[str, bool], list[list[Rung]]]


@dataclass
class Masks:
    """Mask levels for a batch: `make(level)` gives the (N,1,h,w) gate grids, 1 = kept sharp;
    a level of 1.0 with `whole` means the image itself (no mixing)."""

    kind: str  # keep | tau: what a level is (recorded in the savings row)
    levels: tuple[float, ...]
    make: Callable[[float], torch.Tensor]
    first_wins: bool = False  # guard ladder: stop at the first level that verifies
    whole: bool = True  # keep level 1.0 stores the unmixed image

    @classmethod
    def top_k(cls, scores: torch.Tensor, keep: Sequence[float], window: int = 1) -> "Masks":
        """The top fraction of blocks by `scores` (N,h,w), smoothed over `window` cells
        (MNIST: -7% bytes with a 5 px window: compact regions code smaller)."""
        ranked = rank_scores(scores.float(), window)
        return cls("keep", tuple(float(k) for k in keep),
                   lambda k: topk_mask(ranked, k) if k < 1.0 else torch.ones_like(ranked[:, None]))

    @classmethod
    def ranking(cls, scores: torch.Tensor, cfg: NiceConfig, x: torch.Tensor,
                keep: Sequence[float] | None = None) -> "Masks":
        """`top_k` as the product ranks the blocks of images `x` (`nice.ranking.search_ranking`:
        smoothed over ~`search.rank_smooth_px` pixels, inert blocks last) at the keep levels
        `search.keep` (or `keep`)."""
        return cls.top_k(search_ranking(cfg, scores, x), cfg.search.keep if keep is None else keep)

    @classmethod
    def whole_image(cls, n: int) -> "Masks":
        """The unmixed image alone (a whole-image codec oracle)."""
        return cls("keep", (1.0,), lambda _: torch.ones(n, 1, 1, 1))

    @classmethod
    def thresholds(cls, log_alpha: torch.Tensor, gates: HardConcrete, taus: Sequence[float],
                   dilate: bool = False) -> "Masks":
        """The generator's gates (N,1,h,w log-alpha) binarised at each tau, the first that verifies."""
        return cls("tau", tuple(float(t) for t in taus), lambda t: gates.binarize(log_alpha, t, dilate),
                   first_wins=True, whole=False)

    @classmethod
    def given(cls, z: torch.Tensor) -> "Masks":
        """One fixed set of masks (N,1,h,w)."""
        return cls("keep", (float(z.mean()),), lambda _: z, whole=False)

    def subset(self, idx: Sequence[int]) -> "Masks":
        """The same levels for images `idx` of the batch."""
        rows = torch.as_tensor(list(idx))
        return dataclasses.replace(self, make=lambda level, make=self.make: make(level)[rows])

    def mapped(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "Masks":
        """The same levels with each grid batch mapped by `fn` (e.g. onto native blocks)."""
        return dataclasses.replace(self, make=lambda level, make=self.make: fn(make(level)))


@dataclass
class Choice:
    """The stored candidate for one image."""

    data: bytes
    fmt: str
    params: dict[str, Any]  # writer arguments of `data`
    z: torch.Tensor  # (1,1,h,w) gate grid used
    level: float  # keep fraction or tau
    pred: int
    prob: float
    rung: Rung
    pixels: np.ndarray | None = None  # what was encoded (for the full-effort re-encode)


@dataclass
class Outcome:
    choice: Choice | None
    levels_tried: int = 0
    too_big: bool = False  # stopped because no candidate was smaller than the source
    notes: list[str] = field(default_factory=list)  # candidates a codec could not write, and why


class Search:
    """The search for batches of same-shaped images, with its ladders and writer efforts."""

    def __init__(self, classify: ClassifyFn, mix: Mix, ladders_for: LaddersFn, probe: Effort,
                 final: Effort | None = None, prune: bool = True) -> None:
        self.classify = classify
        self.mix = mix
        self.ladders_for = ladders_for
        self.probe = probe
        self.final = final or probe
        # False: plain bisection of every ladder at every level, the search before issue 19
        # (bench/compress_throughput.py measures both in one run).
        self.prune = prune

    @classmethod
    def product(cls, cfg: NiceConfig, classify: ClassifyFn, mix: Mix) -> "Search":
        """The default path: `search.formats` x their ladders, probed low, stored at full effort."""
        return cls(classify, mix, lambda src, grey: [lad for fmt in search_formats(cfg.search.formats, src)
                                                     for lad in ladders(fmt, cfg.search, grey)],
                   probe_effort(cfg.codec, cfg.search), final_effort(cfg.codec, cfg.search))

    @classmethod
    def fixed(cls, cfg: NiceConfig, classify: ClassifyFn, mix: Mix) -> "Search":
        """The fixed path: one codec setting (`codec`), one encode per candidate."""
        return cls(classify, mix, lambda src, grey: [[fixed_rung(cfg.codec, output_format(cfg.codec, src))]],
                   fixed_effort(cfg.codec))

    def using(self, classify: ClassifyFn, mix: Mix) -> "Search":
        """This search's ladders and efforts with another classify and mix (native sizes)."""
        return Search(classify, mix, self.ladders_for, self.probe, self.final, self.prune)

    @classmethod
    def one_ladder(cls, classify: ClassifyFn, mix: Mix, rungs: Sequence[Rung], effort: Effort) -> "Search":
        """One ladder for every image at one effort (the evaluation's per-image codec oracles)."""
        return cls(classify, mix, lambda src, grey: [list(rungs)], effort)

    def run(self, x: torch.Tensor, masks: Masks, src_pred: Sequence[int], src_bytes: Sequence[int],
            source_formats: Sequence[str], mode: str, store_mode: str | None = None) -> list[Outcome]:
        """`x` (N,C,H,W) floats in [0,1]. `mode` is the classifier's pixel mode (L/RGB),
        `store_mode` what is written (a grey image read by a colour model is stored grey)."""
        store_mode = store_mode or mode
        n = len(x)
        grey = store_mode == "L"
        out = [Outcome(None) for _ in range(n)]
        best_size = np.asarray(src_bytes, dtype=np.int64).copy()
        active = list(range(n))
        src = np.asarray(src_bytes)
        ladders_of = [self.ladders_for(f, grey) for f in source_formats]  # the same at every level
        # Keep levels are ordered by density, so what one level's probes showed bounds the
        # others' (Bounds); tau levels (the fixed path) stop at the first that verifies.
        bounds = Bounds() if self.prune and masks.kind == "keep" and not masks.first_wins else None
        # Mask levels one after another (the likely winners first): a rung larger than the
        # image's best so far is never classified, so later levels mostly cost encodes.
        for level in masks.levels:
            if not active:
                break
            z, xs = masks.make(level), x
            if len(active) < n:  # the fixed path's later levels: only the images still open
                idx = torch.tensor(active)
                z, xs = z[idx], x[idx]
            plain = masks.whole and level >= 1.0
            pixels = to_uint8_batch(xs if plain else self.mix(xs, z))
            todo: list[_Ladder] = []
            for j, i in enumerate(active):
                ladders_i = ladders_of[i]
                spans = [bounds.span(i, li, float(level), len(r)) if bounds else (0, len(r) - 1)
                         for li, r in enumerate(ladders_i)]
                if all(lo > hi for lo, hi in spans):
                    continue  # no rung of this level can be smaller than the best and verify
                arr = pixels[j]
                if store_mode != mode:
                    arr = np.asarray(Image.fromarray(arr, mode).convert(store_mode))
                out[i].levels_tried += 1
                todo += [_Ladder(i, li, z[j:j + 1], float(level), arr, rungs, lo, hi, probed=not self.prune)
                         for li, (rungs, (lo, hi)) in enumerate(zip(ladders_i, spans)) if lo <= hi]
            small = self._climb(todo, src_pred, out, best_size, mode, store_mode, src, bounds)
            if masks.first_wins:
                for i in active:
                    out[i].too_big = out[i].choice is None and i not in small
                active = [i for i in active if out[i].choice is None and not out[i].too_big]
        self._finalise(out, src_pred, mode, store_mode)
        return out

    def _finalise(self, out: list[Outcome], src_pred: Sequence[int], mode: str, store_mode: str) -> None:
        """Re-encode each winner at full effort; lossy re-encodes are verified by the classifier."""
        lossy = []
        for i, o in enumerate(out):
            c = o.choice
            if c is None or c.pixels is None:
                continue
            params = self.final.args(c.rung, store_mode)
            if params != c.params:
                try:
                    data = encode(c.pixels, store_mode, c.rung, self.final)
                except CodecLimit:
                    continue
                if len(data) < len(c.data):
                    if c.rung.lossless:  # same pixels, fewer bytes
                        c.data, c.params = data, params
                    else:
                        lossy.append((i, data, params, decode(data, mode)))
        if lossy:
            pred, prob = self.classify(np.stack([p[3] for p in lossy]))
            for (i, data, params, _), p, conf in zip(lossy, pred, prob):
                c = out[i].choice
                if c is not None and int(p) == int(src_pred[i]):
                    c.data, c.params, c.pred, c.prob = data, params, int(p), float(conf)
        for o in out:
            if o.choice is not None:
                o.choice.pixels = None

    def _climb(self, todo: list["_Ladder"], src_pred: Sequence[int], out: list[Outcome], best_size: np.ndarray,
               mode: str, store_mode: str, src_bytes: np.ndarray, bounds: "Bounds | None") -> set[int]:
        """Searches of all ladders in `todo` in lockstep, one classifier call per step: each
        ladder's lowest possible rung first (the cheapest wins for most images: docs/results.md),
        then a binary search above it; a rung already too big ends the search below it.
        Returns the images that had a probe smaller than their source."""
        small: set[int] = set()
        while True:
            active = [lad for lad in todo if lad.lo <= lad.hi]
            if not active:
                break
            probes = []
            for lad in active:
                i = lad.image
                mid = lad.next_rung()
                rung = lad.rungs[mid]
                try:
                    data = encode(lad.pixels, store_mode, rung, self.probe)
                except CodecLimit as exc:  # this format cannot hold the image: drop its ladder
                    out[i].notes.append(str(exc))
                    lad.lo = lad.hi + 1
                    continue
                if len(data) < src_bytes[i]:
                    small.add(i)
                if len(data) >= best_size[i]:
                    lad.found_above(mid)  # too big already: only a cheaper rung can win
                    if bounds is not None:
                        bounds.saw(i, lad.ladder, lad.level, mid, None)
                    continue
                probes.append((lad, mid, rung, data, decode(data, mode)))
            if not probes:
                continue
            pred, prob = self.classify(np.stack([p[4] for p in probes]))
            for (lad, mid, rung, data, _), p, c in zip(probes, pred, prob):
                i = lad.image
                kept = int(p) == int(src_pred[i])
                if bounds is not None:
                    bounds.saw(i, lad.ladder, lad.level, mid, kept)
                if kept:
                    lad.found_above(mid)
                    if len(data) < best_size[i]:
                        best_size[i] = len(data)
                        out[i].choice = Choice(data, rung.fmt, self.probe.args(rung, store_mode), lad.z, lad.level,
                                               int(p), float(c), rung, lad.pixels)
                else:
                    lad.lo = mid + 1
        return small


@dataclass
class _Ladder:
    """One image's ladder at one mask level while it is searched: rungs lo..hi are open."""

    image: int
    ladder: int  # index among the image's ladders
    z: torch.Tensor
    level: float
    pixels: np.ndarray
    rungs: list[Rung]
    lo: int
    hi: int
    probed: bool = False

    def next_rung(self) -> int:
        """The lowest open rung first (the cheapest wins for most images), then bisection
        (galloping up from the bottom instead cost +4% bytes and more probes: docs/results.md)."""
        if not self.probed:
            self.probed = True
            return self.lo
        return (self.lo + self.hi) // 2

    def found_above(self, rung: int) -> None:
        """`rung` kept the prediction or was too big: only cheaper rungs are left."""
        self.hi = rung - 1


class Bounds:
    """What the classified probes of an image's ladder showed, as bounds on its other keep
    levels: the same rung over more sharp blocks keeps the prediction at least as often and
    costs at least as many bytes. So a rung that failed at a denser level fails at a sparser
    one (its search starts above it), and a rung that verified at a sparser level already
    gives a file no larger than the same rung at a denser one (only cheaper rungs can win
    there). Every stored candidate is still classified: the bounds prune probes, never the
    guard. A rung too big at one level is too big at any denser one (the best only shrinks).
    Measured on mnist-m: docs/results.md."""

    def __init__(self) -> None:
        self._seen: dict[tuple[int, int], list[tuple[float, int, bool | None]]] = {}

    def saw(self, image: int, ladder: int, level: float, rung: int, kept: bool | None) -> None:
        """`kept`: the prediction held (True) or changed (False); None: too big to classify."""
        self._seen.setdefault((image, ladder), []).append((level, rung, kept))

    def span(self, image: int, ladder: int, level: float, n_rungs: int) -> tuple[int, int]:
        """The rungs of `level` still worth probing (lo > hi: none)."""
        lo, hi = 0, n_rungs - 1
        for lv, r, kept in self._seen.get((image, ladder), ()):
            if kept is False and lv >= level:
                lo = max(lo, r + 1)
            elif kept is not False and lv < level:
                hi = min(hi, r - 1)
        return lo, hi
