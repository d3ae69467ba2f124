"""Per-image operating point: the smallest stored file that keeps the prediction.

A fixed threshold and codec setting leaves most of the saving on the table (docs/results.md:
0.45x at a fixed setting against 0.08x searched, mnist-m). For every image the generator's
gate scores rank its blocks; for each keep level (the top fraction of blocks stays at full
resolution, the rest is mixed to the background) and each output format, a binary search
over the quality ladder finds the lowest quality whose decode keeps the source's top-1
class. Lossless formats on grey images climb a ladder of posterised grey levels instead.
The smallest verified candidate wins, so the guard holds by construction: every stored
file was decoded and classified.

All images of a batch and all their (keep level, format) ladders advance in lockstep, one
classifier call per step; a candidate already larger than the image's best is not
classified (a lower rung is then tried). The same search runs with any ranking (NICE's
gates, a centre prior, an attribution method) or with keep = (1.0,) alone (a per-image codec
oracle), which is how the evaluation compares them on equal terms.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from nice.codec import EXTENSIONS, output_format
from nice.config import CodecConfig, SearchConfig
from nice.gates import rank_scores, rank_window, topk_mask
from nice.imageio import decoded_pixels, to_uint8_batch

LOSSY = ("jpeg", "webp", "avif")
# Classifies a uint8 batch (N,H,W[,C]) -> (top-1 class, its probability).
Classify = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
Mix = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Rung:
    fmt: str  # jpeg | webp | avif | png
    quality: int | None = None  # lossy formats
    levels: int | None = None  # lossless formats: grey levels kept (256 = all)

    def params(self, cfg: SearchConfig, codec: CodecConfig, mode: str, final: bool = True) -> dict[str, Any]:
        """Writer arguments (what `codec_params` records in the savings row). The search probes
        at low encoder effort and re-encodes only the winner at full effort (`final`): lossless
        pixels do not depend on the effort (same decision, ~25x faster on grey images); a lossy
        re-encode is decoded and classified again and replaces the probe only if it keeps the
        prediction (WebP at 224 px: effort 4 costs ~4x effort 0)."""
        if self.fmt == "jpeg":
            p: dict[str, Any] = {"quality": self.quality, "optimize": True, "progressive": codec.jpeg_progressive}
            if mode == "RGB":
                p["subsampling"] = codec.jpeg_subsampling
            return p
        if self.fmt == "webp":
            if self.levels is not None:
                return {"lossless": True, "quality": 100, "method": 6} if final else {"lossless": True, "quality": 50, "method": 2}
            return {"quality": self.quality, "method": cfg.webp_method if final else cfg.webp_probe_method}
        if self.fmt == "avif":
            return {"quality": self.quality, "speed": 6}
        return {"optimize": True, "compress_level": 9} if final else {"compress_level": 6}

    @property
    def lossless(self) -> bool:
        return self.levels is not None


@dataclass
class Choice:
    """The stored candidate for one image."""

    data: bytes
    fmt: str
    params: dict[str, Any]
    z: torch.Tensor  # (1,1,h,w) gate grid used
    keep: float
    pred: int
    prob: float
    rung: Rung | None = None
    pixels: np.ndarray | None = None  # what was encoded (for the full-effort lossless re-encode)


def ladders(fmt: str, cfg: SearchConfig, grey: bool) -> list[list[Rung]]:
    """The ladders searched for one format, each from the cheapest rung to the most faithful.
    Grey images climb posterised grey levels, losslessly (WebP lossless of a 2-level digit is
    ~75 B where lossy WebP needs ~110 B, MNIST)."""
    out: list[list[Rung]] = []
    if grey and fmt == "webp":
        # Lossy WebP is YUV 4:2:0: a grey image decodes as (slightly) coloured RGB, which a grey
        # classifier or the next run would read as a colour image. Grey stays grey: lossless only.
        out.append([Rung(fmt, levels=int(v)) for v in sorted(cfg.grey_levels)])
    elif fmt in LOSSY:
        out.append([Rung(fmt, quality=int(q)) for q in sorted(cfg.qualities)])
    elif fmt == "png":
        out.append([Rung(fmt, levels=int(v)) for v in (sorted(cfg.grey_levels) if grey else [256])])
    else:
        raise ValueError(f"format {fmt!r} cannot be searched; expected one of {', '.join(EXTENSIONS)}")
    return [lad for lad in out if lad]


def search_formats(cfg: SearchConfig, source_format: str) -> list[str]:
    """The output containers searched for a source of `source_format` (`source` resolved)."""
    out: list[str] = []
    for f in cfg.formats:
        fmt = output_format(CodecConfig(format=f), source_format)
        if fmt not in out:
            out.append(fmt)
    return out


def posterise(arr: np.ndarray, levels: int) -> np.ndarray:
    if levels >= 256:
        return arr
    step = 255.0 / (levels - 1)
    return (np.round(arr.astype(np.float32) / step) * step).round().astype(np.uint8)


def encode_rung(arr: np.ndarray, rung: Rung, params: dict[str, Any], mode: str) -> bytes:
    """Encode uint8 pixels (stored mode `mode`) at one rung; metadata never written."""
    buf = io.BytesIO()
    if rung.levels is not None and rung.levels < 256:
        arr = posterise(arr, rung.levels)
        if rung.fmt == "png" and mode == "L":
            img = Image.fromarray(arr, "L")
            if rung.levels == 2:  # 1-bit PNG
                img.convert("1").save(buf, "PNG", **params)
                return buf.getvalue()
            pal = img.quantize(colors=rung.levels, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
            pal.save(buf, "PNG", bits=max(1, int(np.ceil(np.log2(rung.levels)))), **params)
            return buf.getvalue()
    Image.fromarray(arr, mode).save(buf, rung.fmt.upper(), **params)
    return buf.getvalue()


class OperatingPointSearch:
    """Runs the search for batches of same-shaped images."""

    def __init__(self, cfg: SearchConfig, codec: CodecConfig, classify: Classify, mix: Mix, block: int = 1) -> None:
        self.cfg = cfg
        self.codec = codec
        self.classify = classify
        self.mix = mix
        self.smooth = rank_window(cfg.rank_smooth_px, block)

    def formats_for(self, source_format: str) -> list[str]:
        return search_formats(self.cfg, source_format)

    def run(self, x: torch.Tensor, scores: torch.Tensor, src_pred: Sequence[int], src_bytes: Sequence[int],
            source_formats: Sequence[str], mode: str, store_mode: str | None = None,
            keep: Sequence[float] | None = None) -> list[Choice | None]:
        """`x` (N,C,H,W) floats in [0,1]; `scores` (N,h,w) ranks the gate blocks. `mode` is the
        classifier's pixel mode (L/RGB), `store_mode` what is written (a grey image read by a
        colour model is stored grey). None where no candidate is smaller than its source and
        keeps the prediction."""
        store_mode = store_mode or mode
        n = len(x)
        scores = rank_scores(scores.float(), self.smooth)  # MNIST: -7% bytes with a 5 px window
        grey = store_mode == "L"
        levels = tuple(keep if keep is not None else self.cfg.keep)
        best: list[Choice | None] = [None] * n
        best_size = np.asarray(src_bytes, dtype=np.int64).copy()
        # Keep levels one after another (the likely winners first, `search.keep` order): a
        # rung larger than the image's best so far is never classified, so later levels
        # mostly cost encodes. Within a level every image's ladders advance in lockstep.
        for k in levels:
            z = topk_mask(scores, float(k)) if k < 1.0 else torch.ones_like(scores[:, None])
            pixels = to_uint8_batch(self.mix(x, z)) if k < 1.0 else to_uint8_batch(x)
            todo: list[list[Any]] = []  # [image, z, keep, pixels, rungs, lo, hi]
            for i in range(n):
                arr = pixels[i]
                if store_mode != mode:
                    arr = np.asarray(Image.fromarray(arr, mode).convert(store_mode))
                for fmt in self.formats_for(source_formats[i]):
                    for rungs in ladders(fmt, self.cfg, grey):
                        todo.append([i, z[i:i + 1], float(k), arr, rungs, 0, len(rungs) - 1])
            self._climb(todo, src_pred, best, best_size, mode, store_mode)
        self._finalise(best, src_pred, mode, store_mode)
        return best

    def _finalise(self, best: list[Choice | None], src_pred: Sequence[int], mode: str, store_mode: str) -> None:
        """Re-encode each winner at full effort; lossy re-encodes are verified by the classifier."""
        lossy = []
        for i, c in enumerate(best):
            if c is None or c.rung is None or c.pixels is None:
                continue
            params = c.rung.params(self.cfg, self.codec, store_mode, final=True)
            if params != c.params:
                data = encode_rung(c.pixels, c.rung, params, store_mode)
                if len(data) < len(c.data):
                    if c.rung.lossless:  # same pixels, fewer bytes
                        c.data, c.params = data, params
                    else:
                        lossy.append((i, data, params, decoded_pixels(data, mode)))
        if lossy:
            pred, prob = self.classify(np.stack([p[3] for p in lossy]))
            for (i, data, params, _), p, conf in zip(lossy, pred, prob):
                c = best[i]
                if c is not None and int(p) == int(src_pred[i]):
                    c.data, c.params, c.pred, c.prob = data, params, int(p), float(conf)
        for c in best:
            if c is not None:
                c.pixels = None

    def _climb(self, todo: list[list[Any]], src_pred: Sequence[int], best: list[Choice | None],
               best_size: np.ndarray, mode: str, store_mode: str) -> None:
        """Binary searches of all ladders in `todo` in lockstep, one classifier call per step."""
        while True:
            active = [lad for lad in todo if lad[5] <= lad[6]]
            if not active:
                break
            probes = []
            for lad in active:
                i, z, k, arr, rungs, lo, hi = lad
                mid = (lo + hi) // 2
                rung = rungs[mid]
                params = rung.params(self.cfg, self.codec, store_mode, final=False)
                data = encode_rung(arr, rung, params, store_mode)
                if len(data) >= best_size[i]:
                    lad[6] = mid - 1  # too big already: only a cheaper rung can win
                    continue
                probes.append((lad, mid, rung, params, data, decoded_pixels(data, mode)))
            if not probes:
                continue
            pred, prob = self.classify(np.stack([p[5] for p in probes]))
            for (lad, mid, rung, params, data, _), p, c in zip(probes, pred, prob):
                i = lad[0]
                if int(p) == int(src_pred[i]):
                    lad[6] = mid - 1
                    if len(data) < best_size[i]:
                        best_size[i] = len(data)
                        best[i] = Choice(data, rung.fmt, params, lad[1], lad[2], int(p), float(c), rung, lad[3])
                else:
                    lad[5] = mid + 1
