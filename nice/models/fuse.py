"""Inference-time fusion: fold BatchNorm into the preceding convolution (eval mode only)."""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models.resnet import BasicBlock


def _fuse_sequential(seq: nn.Sequential) -> None:
    mods = list(seq.children())
    for i in range(len(mods) - 1):
        if isinstance(mods[i], nn.Conv2d) and isinstance(mods[i + 1], nn.BatchNorm2d):
            seq[i] = fuse_conv_bn_eval(mods[i], mods[i + 1])
            seq[i + 1] = nn.Identity()


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """A fused copy of `model` (the original is untouched); outputs equal up to float rounding."""
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if isinstance(module, BasicBlock):
            module.conv1 = fuse_conv_bn_eval(module.conv1, module.bn1)
            module.bn1 = nn.Identity()
            module.conv2 = fuse_conv_bn_eval(module.conv2, module.bn2)
            module.bn2 = nn.Identity()
        elif isinstance(module, nn.Sequential):
            _fuse_sequential(module)
    return model
