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


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    if isinstance(dataset, IterableDataset):  # streaming datasets shuffle themselves
        return DataLoader(dataset, batch_size=batch_size, num_workers=0)
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=gen,
                      num_workers=0, drop_last=False)
