"""The NICE objective: task(f(mix(x,z)), target) + lambda * mean(E[L0]) + mu * TV(P(z>0))."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nice.gates import HardConcrete, topk_mask, topk_threshold


def total_variation(p: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV of a (N,1,h,w) map, averaged per cell edge (the paper's smoothness term)."""
    tv = p.new_zeros(())
    if p.shape[-2] > 1:
        tv = tv + (p[..., 1:, :] - p[..., :-1, :]).abs().mean()
    if p.shape[-1] > 1:
        tv = tv + (p[..., :, 1:] - p[..., :, :-1]).abs().mean()
    return tv


def kl_to_source(logits: torch.Tensor, source_probs: torch.Tensor) -> torch.Tensor:
    """KL(p_source || p_mixed): keeps the classifier's whole output, not only its top-1."""
    return F.kl_div(F.log_softmax(logits, dim=1), source_probs, reduction="batchmean")


@dataclass
class LossParts:
    total: torch.Tensor
    task: torch.Tensor
    l0: torch.Tensor
    tv: torch.Tensor
    saturation: torch.Tensor


class NiceLoss:
    """Composable objective; swap `task_fn` (e.g. KL to the source logits) without touching training."""

    def __init__(self, gates: HardConcrete, task_fn=F.cross_entropy, saturation_margin: float = 1.0) -> None:
        self.gates = gates
        self.task_fn = task_fn
        # Past this log_alpha an open gate is clamped to 1 in (almost) every sample, so neither
        # the task nor the L0 term can move it any more: the saturated regime of DESIGN.md §8.
        self.log_alpha_max = gates.log_alpha_for_eval_gate(1.0) + saturation_margin

    def __call__(self, logits: torch.Tensor, target: torch.Tensor, log_alpha: torch.Tensor,
                 lam: float, mu: float, eta: float = 0.0) -> LossParts:
        task = self.task_fn(logits.float(), target)
        la = log_alpha.float()
        p_open = self.gates.expected_l0(la)
        l0 = p_open.mean()
        zero = p_open.new_zeros(())
        tv = total_variation(p_open) if mu > 0 else zero
        sat = F.relu(la - self.log_alpha_max).pow(2).mean() if eta > 0 else zero
        return LossParts(total=task + lam * l0 + mu * tv + eta * sat, task=task, l0=l0, tv=tv, saturation=sat)


def topk_distillation(scores: torch.Tensor, teacher: torch.Tensor, keep: torch.Tensor,
                      temperature: float = 1.0) -> torch.Tensor:
    """Distil a teacher's ranking (issue 20's lever): at each image's keep fraction, the BCE of
    the student's relaxed membership of its own top-k, sigmoid((s - t) / temperature) around its
    cut-off t, against the teacher's exact top-k. Trains the blocks the search would keep to be
    the teacher's, at the levels the search and the preservation metrics use."""
    n = len(scores)
    flat = scores.reshape(n, -1)
    t = topk_threshold(scores.detach(), keep)
    target = topk_mask(teacher, keep).reshape(n, -1)
    return F.binary_cross_entropy_with_logits((flat - t) / temperature, target)


def listwise_distillation(scores: torch.Tensor, teacher: torch.Tensor, teacher_temperature: float = 0.5) -> torch.Tensor:
    """Distil a teacher's ranking over every block (ListNet's top-one KL): the student's softmax
    over an image's blocks against the softmax of the teacher's per-image standardised scores.
    Unlike `topk_distillation`, every block's place gets a gradient, not only the cut-off's
    neighbours, and the teacher's margins (how much more a block matters) are kept."""
    n = len(scores)
    t = teacher.reshape(n, -1).float()
    t = (t - t.mean(1, keepdim=True)) / (t.std(1, keepdim=True) + 1e-8)
    p = torch.softmax(t / teacher_temperature, dim=1)
    return F.kl_div(F.log_softmax(scores.reshape(n, -1).float(), dim=1), p, reduction="batchmean")
