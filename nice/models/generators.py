"""Mask generators: image (N,C,H,W in [0,1]) -> log_alpha on the gate grid (N,1,ceil(H/b),ceil(W/b)).

`reference` is the one-convolution generator of the reference code (kept for comparison);
`conv` is a small fully convolutional encoder-decoder (U-Net-like, additive skips) that
works at any input size: the input is padded to the network's stride and the output cropped.
`features` reads the frozen classifier's own features (a copy of its trunk, stored with the
generator) and its class-evidence map (CAM: the last linear layer applied at every location, for
the class it predicts; for LeNet, whose head is two linear layers, the logit's linearisation at
each location), then a small trainable head maps them to the gate grid. A small object
in a large view is what the classifier's last stage already finds; a generator learning that
from pixels in a few epochs does not (docs/results.md, scenes).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from nice.config import GENERATOR_ARCHS, GateConfig, GeneratorConfig
from nice.models.classifiers import LeNet, SmallResNet, TorchvisionClassifier
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


def _trunk_parts(classifier: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module, nn.Linear]:
    """(normalise, early stages to stride 8, late stages, global pooling, last linear layer) of a
    ResNet classifier."""
    if isinstance(classifier, SmallResNet) and isinstance(classifier.features[0], nn.Conv2d) \
            and classifier.features[0].stride == (2, 2):
        feats = classifier.features  # conv stem s2, max-pool s2, stages s1, s2, s2, s2
        return classifier.normalize, feats[:6], feats[6:], classifier.head[0], classifier.head[-1]
    if isinstance(classifier, SmallResNet):  # patch stem: stride 4, stages s1, s2, s2, s2
        feats = classifier.features
        return classifier.normalize, feats[:5], feats[5:], classifier.head[0], classifier.head[-1]
    net = getattr(classifier, "net", None)
    if isinstance(classifier, TorchvisionClassifier) and hasattr(net, "layer4"):
        early = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2)
        return classifier.normalize, early, nn.Sequential(net.layer3, net.layer4), net.avgpool, net.fc
    raise ValueError(f"generator arch 'features' needs a ResNet or LeNet classifier (resnet, resnet18.., lenet), "
                     f"got {type(classifier).__name__}; use generator.arch conv")


class FeatureGenerator(nn.Module):
    """log_alpha from the frozen classifier's features: its stride-8 stage, its last stage and the
    CAM of its predicted class (softmax-weighted over classes, standardised per image), each
    brought to the gate grid, then three convolutions (the middle one dilated, for context).
    `margin_map` adds the top-1 class's evidence minus the runner-up's: where a prediction that
    is not sure is decided (a CAM blended over two classes hides it)."""

    def __init__(self, classifier: nn.Module, block: int, width: int, init_log_alpha: float,
                 margin_map: bool = False) -> None:
        super().__init__()
        _check_block(block)
        self.block = block
        self.margin_map = margin_map
        if isinstance(classifier, LeNet):
            # LeNet's head is two linear layers on the flattened last stage: its class evidence per
            # location is the logit's linearisation there (gradient x activation, exact for ReLU).
            normalize, early, late = (copy.deepcopy(m) for m in (classifier.normalize, classifier.features[:3],
                                                                  classifier.features[3:]))
            fc1, fc2 = (copy.deepcopy(m) for m in (classifier.head[1], classifier.head[-1]))
            self.trunk = nn.ModuleDict({"normalize": normalize, "early": early, "late": late, "fc1": fc1, "fc": fc2})
        else:
            normalize, early, late, pool, fc = (copy.deepcopy(m) for m in _trunk_parts(classifier))
            self.trunk = nn.ModuleDict({"normalize": normalize, "early": early, "late": late, "pool": pool, "fc": fc})
        for p in self.trunk.parameters():
            p.requires_grad_(False)
        self.trunk.eval()
        c_early = _out_channels(early)
        self.early_proj = nn.Conv2d(c_early, width, 1)
        self.late_proj = nn.Conv2d(_out_channels(late), width, 1)
        self.head = nn.Sequential(
            nn.Conv2d(2 * width + 2 + margin_map, 2 * width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 2 * width, 3, padding=2, dilation=2), nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 1, 3, padding=1),
        )
        nn.init.normal_(self.head[-1].weight, std=1e-3)
        nn.init.constant_(self.head[-1].bias, init_log_alpha)

    def train(self, mode: bool = True) -> "FeatureGenerator":
        super().train(mode)
        self.trunk.eval()  # frozen: BatchNorm keeps the classifier's statistics
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        grid = grid_shape(h, w, self.block)
        with torch.no_grad():
            early = self.trunk["early"](self.trunk["normalize"](x))
            late = self.trunk["late"](early)
            probs, evidence = self._evidence(late)
            cam = torch.einsum("nkhw,nk->nhw", evidence, probs).unsqueeze(1)
            contrast = cam - evidence.mean(1, keepdim=True)
            maps = [cam, contrast]
            if self.margin_map:
                top2 = probs.topk(2, dim=1).indices  # a classifier has 2 classes or more
                ranked = evidence.gather(1, top2[:, :, None, None].expand(-1, -1, *evidence.shape[-2:]))
                maps.append(ranked[:, :1] - ranked[:, 1:])
            maps = torch.cat(maps, 1)
            spread = maps.std((2, 3), keepdim=True, correction=1 if late.shape[-2:].numel() > 1 else 0)
            maps = (maps - maps.mean((2, 3), keepdim=True)) / (spread + 1e-6)
        parts = [_to_grid(self.early_proj(early), grid), _to_grid(self.late_proj(late), grid), _to_grid(maps, grid)]
        return self.head(torch.cat(parts, 1))

    def _evidence(self, late: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The classifier's answer (N,K) and each class's evidence at each location (N,K,h,w)."""
        fc = self.trunk["fc"]
        if "fc1" in self.trunk:  # LeNet: logit_k = sum over locations of grad_k x activation, + a bias
            fc1 = self.trunk["fc1"]
            hidden = fc1(late.flatten(1))
            probs = torch.softmax(fc(torch.relu(hidden)), dim=1)
            grad = torch.einsum("kj,nj,jc->nkc", fc.weight, (hidden > 0).to(late.dtype), fc1.weight)
            return probs, grad.view(*grad.shape[:2], *late.shape[1:]).mul(late[:, None]).sum(2)
        probs = torch.softmax(fc(self.trunk["pool"](late).flatten(1)), dim=1)
        return probs, torch.einsum("nchw,kc->nkhw", late, fc.weight) + fc.bias.view(1, -1, 1, 1)


def _out_channels(stage: nn.Module) -> int:
    convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def _to_grid(t: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    if tuple(t.shape[-2:]) == tuple(grid):
        return t
    if t.shape[-2] >= grid[0] and t.shape[-1] >= grid[1]:
        return F.adaptive_avg_pool2d(t, grid)
    return F.interpolate(t, size=grid, mode="bilinear", align_corners=False)


def build_generator(cfg: GeneratorConfig, gates: GateConfig, in_channels: int,
                    classifier: nn.Module | None = None) -> nn.Module:
    """`classifier` (the frozen one it is trained against) is needed by, and only by, arch `features`."""
    init = HardConcrete(gates).log_alpha_for_keep(cfg.init_keep)
    if cfg.arch == "reference":
        return ReferenceGenerator(in_channels, gates.block, init)
    if cfg.arch == "conv":
        return ConvGenerator(in_channels, gates.block, cfg.width, cfg.depth, init, cfg.pre_pool)
    if cfg.arch == "features":
        if classifier is None:
            raise ValueError("generator arch 'features' is built from its classifier; none was given")
        return FeatureGenerator(classifier, gates.block, cfg.width, init, cfg.margin_map)
    raise ValueError(f"unknown generator arch {cfg.arch!r}; expected one of {', '.join(GENERATOR_ARCHS)}")
