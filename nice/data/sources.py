"""Datasets by name, as PyTorch datasets plus class names (the ingestion issue adds more)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from torch.utils.data import Dataset

from nice.data.arrays import ArrayImageDataset, ViewCache
from nice.data.mnist import CLASS_NAMES, ImageSplit, load_split

if TYPE_CHECKING:
    from nice.view import Augment, View

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


# Views of photos decoded once and kept in memory up to this many bytes (nice.data.arrays.ViewCache).
VIEW_CACHE_BYTES = 4 << 30


def training_data(spec: str, limit: int | None = None, view: "View | None" = None,
                  augment: "Augment | None" = None, cache_bytes: int = VIEW_CACHE_BYTES):
    """(train, val, class_names, channels) for a builtin name or a Dataset artifact directory,
    each image seen through the classifier's `view` (any source size is valid); training
    images through `augment` when given (a random crop, then the view). Without augmentation,
    views that need resampling (photos) are computed once and kept in memory (`cache_bytes`).

    Builtin MNIST / Fashion-MNIST validate on their test split (as in the core issue); an
    artifact trains on its train split and validates on its val split."""
    if spec in BUILTIN:
        train, split = load_builtin(spec, "train", limit=limit)
        test, _ = load_builtin(spec, "test")
        if augment is not None:
            train = ViewedDataset(train, augment)
        elif view is not None and not view.geometry(28, 28).identity:
            train = ViewedDataset(train, view.tensor)
        if view is not None and not view.geometry(28, 28).identity:
            test = ViewedDataset(test, view.tensor)
        return train, test, split.class_names, 1
    from nice.ingest import DatasetArtifact

    art = DatasetArtifact.open(spec)
    val_split = "val" if art.manifest["counts"].get("val") else "test"
    train, val = art.dataset("train", shuffle=True, view=view, augment=augment), art.dataset(val_split, view=view)
    if view is not None and augment is None and _resampled(art, view) and _fits(art, view, cache_bytes):
        train, val = ViewCache(train, "train views"), ViewCache(val, f"{val_split} views")
    return train, val, art.class_names, art.channels


def _resampled(art, view: "View") -> bool:
    """Whether any image of the artifact is resampled to reach the view."""
    return any(not view.geometry(h, w).identity for w, h in art.image_sizes())


def _fits(art, view: "View", budget: int) -> bool:
    counts = art.manifest["counts"]
    n = counts.get("train", 0) + max(counts.get("val", 0), counts.get("test", 0))
    return n * art.channels * view.size * view.size <= budget


class ViewedDataset(Dataset):
    """A map-style dataset of (image, label) seen through a view (`View.tensor`, or an
    `Augment`: a random crop, then the view)."""

    def __init__(self, base: Dataset, view: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.base, self.view = base, view

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return self.view(x), y
