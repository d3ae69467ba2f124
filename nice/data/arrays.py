"""In-memory image arrays as a PyTorch dataset (images in [0, 1], channels first)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset


class ArrayImageDataset(Dataset):
    """uint8 images (N,H,W) or (N,H,W,C) with integer labels."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        if len(images) != len(labels):
            raise ValueError("images and labels differ in length")
        arr = torch.from_numpy(np.ascontiguousarray(images))
        self.images = arr.unsqueeze(1) if arr.ndim == 3 else arr.permute(0, 3, 1, 2).contiguous()
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i].float().div_(255.0), self.labels[i]


def fixed_mmap_threshold(size: int = 128 * 1024) -> None:
    """glibc: serve allocations above `size` by mmap, always. Its default raises the threshold
    to the largest block freed, so each decoded photo (~6 MB) is then carved from the heap
    between the small views kept in memory, and the heap fragments by ~2 MB per photo (10,000
    photos: OOM on 24 GB). No-op elsewhere."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, size)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


class ViewCache(Dataset):
    """A streaming dataset's (view, label) pairs decoded once into memory as uint8: for sources
    that are resampled to the view every epoch (native photos: a 1 MP JPEG decode and resize
    cost ~10 ms, more than the network's step at the view), a deterministic view need not be
    computed again."""

    def __init__(self, base: IterableDataset, desc: str = "views", progress: bool = True) -> None:
        from tqdm import tqdm

        fixed_mmap_threshold()

        images: list[torch.Tensor] = []
        labels: list[int] = []
        for x, y in tqdm(base, total=len(base), desc=f"caching {desc}", disable=not progress,  # type: ignore[arg-type]
                         unit="img", leave=False):
            images.append((x * 255.0).round().to(torch.uint8))
            labels.append(int(y))
        self.images = torch.stack(images) if images else torch.empty((0,), dtype=torch.uint8)
        self.labels = torch.tensor(labels, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i].float().div_(255.0), self.labels[i]


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    if isinstance(dataset, IterableDataset):  # streaming datasets shuffle themselves
        return DataLoader(dataset, batch_size=batch_size, num_workers=0)
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=gen,
                      num_workers=0, drop_last=False)
