"""Mask generators: image (N,C,H,W in [0,1]) -> log_alpha on the gate grid (N,1,ceil(H/b),ceil(W/b)).

`reference` is the one-convolution generator of the reference code (kept for comparison);
`conv` is a small fully convolutional encoder-decoder (U-Net-like, additive skips) that
works at any input size: the input is padded to the network's stride and the output cropped.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nice.config import GateConfig, GeneratorConfig
from nice.gates import HardConcrete, grid_shape


def _check_block(block: int) -> int:
    if block < 1 or block & (block - 1):
        raise ValueError(f"gate block size must be a power of two, got {block}")
    return int(math.log2(block))


class ReferenceGenerator(nn.Module):
    """One 5x5 convolution to log_alpha, averaged over each b x b block."""

    def __init__(self, in_channels: int, block: int, init_log_alpha: float) -> None:
        super().__init__()
        _check_block(block)
        self.block = block
        self.conv = nn.Conv2d(in_channels, 1, 5, padding=2)
        nn.init.constant_(self.conv.bias, init_log_alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        out = self.conv(x)
        if self.block > 1:
            out = F.avg_pool2d(out, self.block, ceil_mode=True)
        gh, gw = grid_shape(h, w, self.block)
        return out[..., :gh, :gw]


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.ReLU(inplace=True))


class ConvGenerator(nn.Module):
    """Encoder down `log2(b) + depth` times, decoder back up `depth` times to the gate grid."""

    def __init__(self, in_channels: int, block: int, width: int, depth: int, init_log_alpha: float,
                 pre_pool: int = 1) -> None:
        super().__init__()
        self.block = block
        if pre_pool < 1 or block % pre_pool or pre_pool & (pre_pool - 1):
            raise ValueError(f"pre_pool ({pre_pool}) must be a power of two dividing the block ({block})")
        self.pre_pool = pre_pool
        self.down_levels = _check_block(block // pre_pool) + depth
        self.depth = depth
        chans = [min(width * 2**i, width * 8) for i in range(self.down_levels + 1)]
        self.stem = _conv(in_channels, chans[0])
        self.down = nn.ModuleList(
            nn.Sequential(_conv(chans[i], chans[i + 1], stride=2), _conv(chans[i + 1], chans[i + 1]))
            for i in range(self.down_levels)
        )
        self.up = nn.ModuleList(
            _conv(chans[i + 1], chans[i]) for i in reversed(range(self.down_levels - depth, self.down_levels))
        )
        self.head = nn.Conv2d(chans[self.down_levels - depth], 1, 3, padding=1)
        nn.init.normal_(self.head.weight, std=1e-3)
        nn.init.constant_(self.head.bias, init_log_alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = 2**self.down_levels * self.pre_pool
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        if self.pre_pool > 1:
            x = F.avg_pool2d(x, self.pre_pool)
        feats = [self.stem(x)]
        for stage in self.down:
            feats.append(stage(feats[-1]))
        y = feats[-1]
        for i, stage in enumerate(self.up):
            skip = feats[self.down_levels - 1 - i]
            y = stage(F.interpolate(y, size=skip.shape[-2:], mode="nearest")) + skip
        gh, gw = grid_shape(h, w, self.block)
        return self.head(y)[..., :gh, :gw]


def build_generator(cfg: GeneratorConfig, gates: GateConfig, in_channels: int) -> nn.Module:
    init = HardConcrete(gates).log_alpha_for_keep(cfg.init_keep)
    if cfg.arch == "reference":
        return ReferenceGenerator(in_channels, gates.block, init)
    if cfg.arch == "conv":
        return ConvGenerator(in_channels, gates.block, cfg.width, cfg.depth, init, cfg.pre_pool)
    raise ValueError(f"unknown generator arch {cfg.arch!r}; expected conv or reference")
