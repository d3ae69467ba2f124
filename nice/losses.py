"""The NICE objective: task(f(mix(x,z)), target) + lambda * mean(E[L0]) + mu * TV(P(z>0))."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nice.gates import HardConcrete


def total_variation(p: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV of a (N,1,h,w) map, averaged per cell edge (the paper's smoothness term)."""
    tv = p.new_zeros(())
    if p.shape[-2] > 1:
        tv = tv + (p[..., 1:, :] - p[..., :-1, :]).abs().mean()
    if p.shape[-1] > 1:
        tv = tv + (p[..., :, 1:] - p[..., :, :-1]).abs().mean()
    return tv


@dataclass
class LossParts:
    total: torch.Tensor
    task: torch.Tensor
    l0: torch.Tensor
    tv: torch.Tensor


class NiceLoss:
    """Composable objective; swap `task_fn` (e.g. KL to the source logits) without touching training."""

    def __init__(self, gates: HardConcrete, task_fn=F.cross_entropy) -> None:
        self.gates = gates
        self.task_fn = task_fn

    def __call__(self, logits: torch.Tensor, target: torch.Tensor, log_alpha: torch.Tensor,
                 lam: float, mu: float) -> LossParts:
        task = self.task_fn(logits.float(), target)
        p_open = self.gates.expected_l0(log_alpha.float())
        l0 = p_open.mean()
        tv = total_variation(p_open) if mu > 0 else p_open.new_zeros(())
        return LossParts(total=task + lam * l0 + mu * tv, task=task, l0=l0, tv=tv)
