"""Shared pieces of the training loops: autocast, evaluation, epoch metrics."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

EpochCallback = Callable[[int, dict[str, float]], None]


def cpu_memory_format(device: torch.device, in_channels: int) -> torch.memory_format:
    """Colour CNNs train 1.8x faster channels-last on CPU (ResNet-10 at 224 px: 11.7 vs 21.4 ms
    an image on one thread); grey LeNets and accelerators stay as they were measured."""
    return torch.channels_last if device.type == "cpu" and in_channels == 3 else torch.contiguous_format


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on CUDA (no GradScaler needed); a no-op on CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)


def accuracy(model: nn.Module, loader: DataLoader, device: torch.device) -> float:
    """Top-1 accuracy over a loader."""
    preds, labels = predict(model, loader, device)
    return (preds == labels).float().mean().item()


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: torch.device,
            transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-1 predictions and labels over a loader (optionally on transformed inputs)."""
    model.eval()
    preds, labels = [], []
    for x, y in loader:
        x = x.to(device)
        if transform is not None:
            x = transform(x)
        preds.append(model(x).argmax(1).cpu())
        labels.append(y)
    return torch.cat(preds), torch.cat(labels)
