"""Datasets by name, as PyTorch datasets plus class names (the ingestion issue adds more)."""

from __future__ import annotations

from pathlib import Path

from nice.data.arrays import ArrayImageDataset
from nice.data.mnist import CLASS_NAMES, ImageSplit, load_split

BUILTIN = tuple(CLASS_NAMES)


def load_builtin(name: str, split: str, path: str | Path | None = None,
                 limit: int | None = None) -> tuple[ArrayImageDataset, ImageSplit]:
    data = load_split(name, split, path)
    if limit is not None:
        data = ImageSplit(data.images[:limit], data.labels[:limit], data.class_names)
    return ArrayImageDataset(data.images, data.labels), data


def export_png_folder(split: ImageSplit, out: str | Path, limit: int | None = None) -> Path:
    """Write a split as `out/<class>/<index>.png` (a labelled folder, like a user's archive)."""
    from PIL import Image

    out = Path(out)
    n = len(split) if limit is None else min(limit, len(split))
    for i in range(n):
        cls = split.class_names[int(split.labels[i])]
        target = out / cls / f"{i:05d}.png"
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(split.images[i], "L").save(target, format="PNG", optimize=True)
    return out
