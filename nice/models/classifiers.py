"""Classifiers that NICE explains. Every classifier takes images in [0, 1] and normalises
inside, so mixing and codecs work in pixel space and never need to know the statistics."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from nice.config import ClassifierConfig


class Normalize(nn.Module):
    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class LeNet(nn.Module):
    """LeNet-style CNN for 28x28 greyscale digits (Caffe's LeNet widths, ReLU, dropout)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.normalize = Normalize((0.1307,) * in_channels, (0.3081,) * in_channels)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 5 * 5, 256), nn.ReLU(inplace=True),
            nn.Dropout(0.3), nn.Linear(256, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalize(x)))


class SmallResNet(nn.Module):
    """torchvision's ResNet with one BasicBlock per stage (ResNet-10) and a 3x3 stride-2
    stem, so 32-224 px images keep useful spatial detail; global pooling makes it size-free."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.normalize = Normalize((0.485, 0.456, 0.406)[:in_channels] if in_channels == 3 else (0.5,) * in_channels,
                                   (0.229, 0.224, 0.225)[:in_channels] if in_channels == 3 else (0.25,) * in_channels)
        self.net = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_classes)
        self.net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=2, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def build_classifier(cfg: ClassifierConfig) -> nn.Module:
    if cfg.arch == "lenet":
        return LeNet(cfg.in_channels, cfg.num_classes)
    if cfg.arch == "resnet":
        return SmallResNet(cfg.in_channels, cfg.num_classes)
    raise ValueError(f"unknown classifier arch {cfg.arch!r}; expected lenet or resnet")
