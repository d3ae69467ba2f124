"""Candidates at native resolution: photos larger than the classifier's view.

Encoding a 12-megapixel candidate costs ~1 s (WebP) to ~2 s (AVIF), so the per-image search of
small images (every rung of every ladder encoded and classified) is out of reach here. Instead:

1. the mask level is chosen on the view: the source mixed at native size with each level's
   native mask, seen through the view and classified in one batch (no encode);
2. the format on a proxy: the sparsest passing candidate reduced to ~`native_proxy_pixels`
   and encoded in each format at the native quality, the smallest first;
3. verification at native size: the candidate encoded, decoded at native size, put through
   the view and classified; on a flip the next denser passing level, at most `native_tries`
   native encodes, and nothing is stored that is not smaller than the source. When every
   try flipped (a borderline prediction that codec artefacts turn either way), the sparsest
   passing level is retried up the quality ladder in each format and in `native_fallback`.

Mixing happens in uint8 at native size (no float copy of a 40-megapixel image): kept blocks
keep their native pixels, the background is flat (`mean`, `zero`) or `pool`-pixel block means
(`lowres`) or a box blur (`blur`), all computed by Pillow in C.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageFilter

from nice.codec import CodecLimit, Effort, Rung, decode, encode, limit_reason
from nice.compress.search import Choice, Outcome
from nice.config import MixingConfig
from nice.view import View

ClassifyFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def background(pixels: np.ndarray, cfg: MixingConfig, pool: int) -> np.ndarray:
    """The background a native image is mixed with, uint8 of the same shape."""
    if cfg.mode == "zero":
        return np.zeros_like(pixels)
    if cfg.mode == "mean":
        # the mean of a box reduction to ~1 MP: the same colour to within rounding, 10x cheaper
        f = max(1, int(math.sqrt(pixels.shape[0] * pixels.shape[1] / 1e6)))
        small = np.asarray(Image.fromarray(pixels).reduce(f)) if f > 1 else pixels
        mean = small.reshape(-1, *small.shape[2:]).mean(axis=0)
        out = np.empty_like(pixels)
        out[...] = np.round(mean).astype(np.uint8)
        return out
    img = Image.fromarray(pixels)
    if cfg.mode == "lowres":  # Pillow's reduce averages partial edge blocks over their own pixels
        small = img.reduce(pool) if pool > 1 else img
        return np.asarray(small.resize((small.width * pool, small.height * pool), Image.Resampling.NEAREST)
                          .crop((0, 0, img.width, img.height)))
    return np.asarray(img.filter(ImageFilter.BoxBlur(pool // 2)))


def mix(pixels: np.ndarray, bg: np.ndarray, grid: np.ndarray, block: int) -> np.ndarray:
    """Kept blocks (grid 1) from `pixels`, the rest from `bg`; uint8 at native size."""
    if grid.all():
        return pixels
    if not grid.any():
        return bg
    out = bg.copy()
    # Runs of kept blocks per block row, copied as slices (4x faster than a boolean mask at 12 MP).
    edges = np.diff(np.pad(grid.astype(np.int8), ((0, 0), (1, 1))), axis=1)
    for r in np.flatnonzero(grid.any(axis=1)):
        rows = slice(r * block, (r + 1) * block)
        for c0, c1 in zip(np.flatnonzero(edges[r] == 1), np.flatnonzero(edges[r] == -1)):
            out[rows, c0 * block:c1 * block] = pixels[rows, c0 * block:c1 * block]
    return out


def proxy(pixels: np.ndarray, max_pixels: int) -> np.ndarray:
    """The image box-reduced by an integer factor to at most ~`max_pixels` (format choice)."""
    h, w = pixels.shape[:2]
    f = math.ceil(math.sqrt(h * w / max_pixels)) if h * w > max_pixels else 1
    return pixels if f == 1 else np.asarray(Image.fromarray(pixels).reduce(f))


@dataclass
class NativeImage:
    """One source at native size, as the native search needs it."""

    pixels: np.ndarray  # uint8 (H,W) or (H,W,3) in the stored mode
    block: int  # native mask block
    pool: int  # native background block (lowres)
    source_bytes: int
    pred: int  # the source's top-1 through the view
    icc: bytes | None = None
    exif: bytes | None = None
    detail: int = 1  # kept blocks stored at 1/detail of native resolution (upsampled back), 1 = native


def smoothed(pixels: np.ndarray, factor: int) -> np.ndarray:
    """The image box-reduced by `factor` and resized back (bilinear) to its own size: the
    kept blocks at reduced resolution, smooth and cheap to code, still at native size."""
    if factor <= 1:
        return pixels
    img = Image.fromarray(pixels)
    return np.asarray(img.reduce(factor).resize(img.size, Image.Resampling.BILINEAR))


@dataclass
class _Candidates:
    """One image's passing levels, mixed at native size on demand (the first is mixed already)."""

    pixels: np.ndarray
    bg: np.ndarray
    block: int
    passing: list[tuple[float, np.ndarray]]
    first: np.ndarray

    def mixed(self, i: int) -> np.ndarray:
        return self.first if i == 0 else mix(self.pixels, self.bg, self.passing[i][1], self.block)


class NativeSearch:
    """Chooses and verifies one image's stored file at native size (see the module doc)."""

    def __init__(self, view: View, classify: ClassifyFn, mixing: MixingConfig, effort: Effort,
                 tries: int, proxy_pixels: int, qualities: Sequence[int] = ()) -> None:
        """`qualities`: a ladder for the lossy rungs' quality at native size, bisected (each
        probe a verified native encode) for the lowest that keeps the prediction; empty = the
        rung's own quality only."""
        self.view = view
        self.classify = classify
        self.mixing = mixing
        self.effort = effort
        self.tries = tries
        self.proxy_pixels = proxy_pixels
        self.qualities = tuple(sorted(int(q) for q in qualities))

    def run(self, img: NativeImage, levels: Sequence[tuple[float, np.ndarray]], rungs: Sequence[Rung],
            fallback: Sequence[Rung] = ()) -> Outcome:
        """`levels`: (level, native grid) candidates; `rungs`: one per format, in preference;
        `fallback`: formats for the rescue when every try in `rungs` flipped the prediction
        (see `_rescue`)."""
        x, mode = img.pixels, ("L" if img.pixels.ndim == 2 else "RGB")
        out = Outcome(None)
        # Sparsest first: the first candidate that verifies is the smallest the mask allows.
        order = sorted(levels, key=lambda lv: float(lv[1].mean()))
        bg = background(x, self.mixing, img.pool)
        x = smoothed(x, img.detail)
        views = np.stack([self.view.apply(mix(x, bg, grid, img.block)) for _, grid in order])
        pred, _ = self.classify(views)
        passing = [lv for lv, p in zip(order, pred) if int(p) == img.pred]
        out.levels_tried = len(order)
        usable = self._usable(rungs, x, out)
        if not passing or not usable:
            return out
        first = mix(x, bg, passing[0][1], img.block)  # the format choice's and the first try's
        if len(usable) > 1:
            usable = self._rank_formats(first, mode, usable, out)
        cand = _Candidates(x, bg, img.block, passing, first)
        encodes, used = self._verify(img, cand, usable, mode, out)
        if out.choice is None and not out.too_big:
            fmts = {r.fmt for r in usable}
            more = usable + [r for r in self._usable(fallback, x, out) if r.fmt not in fmts]
            encodes += self._rescue(img, cand, more, used, mode, out)
        out.levels_tried = encodes
        return out

    def _usable(self, rungs: Sequence[Rung], x: np.ndarray, out: Outcome) -> list[Rung]:
        usable = []
        for rung in rungs:
            why = limit_reason(rung.fmt, x.shape[1], x.shape[0])
            if why:
                out.notes.append(why)
            else:
                usable.append(rung)
        return usable

    def _verify(self, img: NativeImage, cand: _Candidates, usable: list[Rung], mode: str,
                out: Outcome) -> tuple[int, set[str]]:
        """The passing levels, sparsest first, each encoded in the first format that can write
        it and verified at native size, at most `tries` of them; sets `out.choice` to the first
        that keeps the prediction (then lowered on the quality ladder). Returns the encodes
        spent and the formats tried."""
        tries = encodes = 0
        used: set[str] = set()
        for i, (level, grid) in enumerate(cand.passing):
            if tries >= self.tries:
                break
            mixed = cand.mixed(i)
            data = None
            for rung in usable:
                try:
                    data = encode(mixed, mode, rung, self.effort, img.icc, img.exif)
                    break
                except CodecLimit as exc:  # e.g. the writer's own limits: the next format
                    out.notes.append(str(exc))
                    usable = [r for r in usable if r != rung]
            if data is None:
                break
            used.add(rung.fmt)
            tries += 1
            encodes += 1
            if len(data) >= img.source_bytes:
                out.too_big = True  # denser levels only cost more bytes
                break
            p, conf = self.classify(self.view.apply(decode(data, mode))[None])
            if int(p[0]) == img.pred:
                out.choice = Choice(data, rung.fmt, self.effort.args(rung, mode), torch.from_numpy(grid)[None, None],
                                    float(level), int(p[0]), float(conf[0]), rung)
                encodes += self._lower(mixed, mode, img, rung, out)
                break
        return encodes, used

    def _rescue(self, img: NativeImage, cand: _Candidates, rungs: list[Rung], used: set[str], mode: str,
                out: Outcome) -> int:
        """Every try flipped: a borderline prediction that codec artefacts turn either way, and
        not monotonically in quality (scenes frame 373, top-1 at 0.49: AVIF keeps it at q10-20
        and turns it at q5 and q25-95, JPEG at q5 but not q80). The sparsest passing level is
        retried up the quality ladder, lowest first, at most `tries` encodes per format (a
        format's rung already tried is skipped); the first that keeps the prediction is stored.
        Returns the encodes spent."""
        level, grid = cand.passing[0]
        mixed = cand.mixed(0)
        spent = 0
        for rung in rungs:
            ladder = [] if rung.quality is None else [Rung(rung.fmt, quality=q) for q in self.qualities
                                                      if q < rung.quality]
            if rung.fmt not in used:
                ladder.append(rung)
            for r in ladder[:self.tries]:
                try:
                    data = encode(mixed, mode, r, self.effort, img.icc, img.exif)
                except CodecLimit as exc:
                    out.notes.append(str(exc))
                    break
                spent += 1
                if len(data) >= img.source_bytes:
                    break  # higher qualities only cost more bytes
                p, conf = self.classify(self.view.apply(decode(data, mode))[None])
                if int(p[0]) == img.pred:
                    out.choice = Choice(data, r.fmt, self.effort.args(r, mode), torch.from_numpy(grid)[None, None],
                                        float(level), int(p[0]), float(conf[0]), r)
                    return spent
        return spent

    def _lower(self, mixed: np.ndarray, mode: str, img: NativeImage, rung: Rung, out: Outcome) -> int:
        """Bisect the quality ladder below the verified `rung` for the lowest quality that
        still keeps the prediction (each probe encoded, decoded and classified at native
        size); replaces `out.choice` with it. Returns the encodes spent."""
        if rung.quality is None or not self.qualities:
            return 0
        lower = [q for q in self.qualities if q < rung.quality]
        lo, hi, spent = 0, len(lower) - 1, 0
        while lo <= hi:
            mid = (lo + hi) // 2
            r = Rung(rung.fmt, quality=lower[mid])
            data = encode(mixed, mode, r, self.effort, img.icc, img.exif)
            spent += 1
            p, conf = self.classify(self.view.apply(decode(data, mode))[None])
            if int(p[0]) == img.pred:
                c = out.choice
                assert c is not None
                if len(data) < len(c.data):
                    out.choice = Choice(data, r.fmt, self.effort.args(r, mode), c.z, c.level, int(p[0]),
                                        float(conf[0]), r)
                hi = mid - 1
            else:
                lo = mid + 1
        return spent

    def _rank_formats(self, mixed: np.ndarray, mode: str, rungs: list[Rung], out: Outcome) -> list[Rung]:
        """Formats by their bytes on a small proxy of the candidate (one native encode only), at
        the lowest quality of the ladder when there is one: where the bisection is headed, and
        where formats differ most (at q80 WebP wins the proxy; at q5-20 AVIF stores a flat
        background in a fraction of WebP's bytes, docs/results.md "Scenes")."""
        small = proxy(mixed, self.proxy_pixels)
        low = min(self.qualities) if self.qualities else None
        sizes = []
        for rung in rungs:
            probe = rung if low is None or rung.quality is None else Rung(rung.fmt, quality=min(low, rung.quality))
            try:
                sizes.append((len(encode(small, mode, probe, self.effort)), rung))
            except CodecLimit as exc:
                out.notes.append(str(exc))
        return [r for _, r in sorted(sizes, key=lambda s: s[0])] or rungs
