"""Baselines on the same images: re-encode every source at a sweep of qualities and classify
the decoded result (the rate-accuracy curve a plain codec gives without NICE)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from nice.imageio import decode_image
from nice.models.fuse import fuse_for_inference


@dataclass
class CurvePoint:
    name: str
    setting: str
    bytes_ratio: float
    accuracy: float


def _pixels(img: Image.Image, channels: int) -> np.ndarray:
    return np.asarray(img.convert("RGB" if channels == 3 else "L"))


@torch.inference_mode()
def classify(classifier: nn.Module, images: Sequence[np.ndarray], batch: int = 256) -> np.ndarray:
    """Top-1 classes of uint8 images (H,W) or (H,W,3); grouped by shape, batched."""
    preds = np.empty(len(images), dtype=np.int64)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(img.shape, []).append(i)
    for idx in groups.values():
        for s in range(0, len(idx), batch):
            part = idx[s:s + batch]
            x = torch.from_numpy(np.stack([images[i] for i in part])).float().div_(255.0)
            x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
            preds[part] = classifier(x).argmax(1).numpy()
    return preds


def quality_sweep(sources: Sequence[bytes], labels: Sequence[int], classifier: nn.Module, channels: int,
                  formats: Sequence[str] = ("JPEG", "WEBP"),
                  qualities: Sequence[int] = (10, 20, 30, 50, 70, 85, 95)) -> list[CurvePoint]:
    """Bytes ratio (re-encoded / source) and accuracy for each format and quality."""
    clf = fuse_for_inference(classifier)
    decoded = [decode_image(d).image for d in sources]
    y = np.asarray(labels)
    src_bytes = sum(len(d) for d in sources)
    points = [CurvePoint("source", "as stored", 1.0,
                         float((classify(clf, [_pixels(im, channels) for im in decoded]) == y).mean()))]
    for fmt in formats:
        for q in qualities:
            total, pixels = 0, []
            for im in decoded:
                buf = io.BytesIO()
                mode = "RGB" if channels == 3 or im.mode not in ("L",) else "L"
                im.convert(mode).save(buf, fmt, quality=q, **({"optimize": True} if fmt == "JPEG" else {}))
                total += buf.tell()
                pixels.append(_pixels(Image.open(io.BytesIO(buf.getvalue())), channels))
            acc = float((classify(clf, pixels) == y).mean())
            points.append(CurvePoint(fmt.lower(), f"q{q}", total / src_bytes, acc))
    return points
