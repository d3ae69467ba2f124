"""Codec baselines on the same images: what a plain codec gives without NICE, encoded and
decoded through the same candidate layer as the product (nice/codec.py), so that a rung here
is byte for byte the rung the search would store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image

from nice.classify import Classify
from nice.codec import Effort, Rung, decode, encode, final_effort
from nice.view import View

SWEEP_QUALITIES = (10, 20, 30, 50, 70, 85, 95)


@dataclass
class CurvePoint:
    name: str
    setting: str
    bytes_ratio: float
    accuracy: float


def reencode(pixels: Sequence[np.ndarray], mode: str, rungs: Rung | Sequence[Rung],
             effort: Effort) -> tuple[np.ndarray, list[np.ndarray]]:
    """Each image encoded at its rung (one for all, or one per image): (bytes, decoded pixels)."""
    per_image = [rungs] * len(pixels) if isinstance(rungs, Rung) else list(rungs)
    sizes, back = [], []
    for arr, rung in zip(pixels, per_image):
        data = encode(arr, mode, rung, effort)
        sizes.append(len(data))
        back.append(decode(data, mode))
    return np.array(sizes, dtype=np.int64), back


def downsampled(pixels: Sequence[np.ndarray], mode: str, factor: int, rungs: Rung | Sequence[Rung],
                effort: Effort) -> tuple[np.ndarray, list[np.ndarray]]:
    """Each image shrunk by `factor` (box filter), encoded, decoded and scaled back (bilinear)."""
    small = []
    for arr in pixels:
        h, w = arr.shape[:2]
        small.append(np.asarray(Image.fromarray(arr, mode).resize((max(1, w // factor), max(1, h // factor)),
                                                                 Image.Resampling.BOX)))
    sizes, back = reencode(small, mode, rungs, effort)
    return sizes, [np.asarray(Image.fromarray(b, mode).resize((arr.shape[1], arr.shape[0]), Image.Resampling.BILINEAR))
                   for b, arr in zip(back, pixels)]


def quality_sweep(pixels: Sequence[np.ndarray], src_bytes: int, labels: Sequence[int], model: Any,
                  formats: Sequence[str] = ("jpeg", "webp"),
                  qualities: Sequence[int] = SWEEP_QUALITIES) -> list[CurvePoint]:
    """Bytes ratio (re-encoded / `src_bytes`, the sources' total) and accuracy for each format
    and quality, on decoded sources of any sizes in the classifier's mode; `model` a NiceModel
    (its classifier and its codec settings)."""
    cfg = model.config
    mode = "RGB" if cfg.classifier.in_channels == 3 else "L"
    clf = Classify(model.classifier)
    view = View.of(cfg.classifier)
    y = np.asarray(labels)

    def predict(images: Sequence[np.ndarray]) -> np.ndarray:  # through the classifier's view
        return clf.predict([view.apply(im) for im in images] if view is not None else images)

    points = [CurvePoint("source", "as stored", 1.0, float((predict(pixels) == y).mean()))]
    effort = final_effort(cfg.codec, cfg.search)
    for fmt in formats:
        for q in qualities:
            sizes, back = reencode(pixels, mode, Rung(fmt, quality=int(q)), effort)
            points.append(CurvePoint(fmt, f"q{q}", float(sizes.sum()) / src_bytes,
                                     float((predict(back) == y).mean())))
    return points
