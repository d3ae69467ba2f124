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


def kl_to_source(logits: torch.Tensor, source_probs: torch.Tensor,
                 weights: torch.Tensor | None = None) -> torch.Tensor:
    """KL(p_source || p_mixed): keeps the classifier's whole output, not only its top-1.
    Per-image `weights` give the weighted mean; without them the batch mean as it always was
    (the same reduction, so unweighted training stays bit-identical)."""
    log_p = F.log_softmax(logits, dim=1)
    if weights is None:
        return F.kl_div(log_p, source_probs, reduction="batchmean")
    return (F.kl_div(log_p, source_probs, reduction="none").sum(1) * weights).mean()


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy to the target class; the weighted mean over images with `weights`."""
    if weights is None:
        return F.cross_entropy(logits, target)
    return (F.cross_entropy(logits, target, reduction="none") * weights).mean()


def unsure_weights(source_probs: torch.Tensor, weight: float) -> torch.Tensor | None:
    """Per-image weights 1 + weight * (1 - top-1 probability), scaled to mean 1 over the batch:
    the frames the classifier is unsure of count more (where NICE's ranking lost bytes on scenes)
    without changing the task loss's scale against the L0 term. None when weight is 0."""
    if weight <= 0:
        return None
    w = 1.0 + weight * (1.0 - source_probs.max(1).values)
    return w / w.mean()


@dataclass
class LossParts:
    total: torch.Tensor
    task: torch.Tensor
    l0: torch.Tensor
    tv: torch.Tensor
    saturation: torch.Tensor


class NiceLoss:
    """Composable objective; swap `task_fn(logits, target, weights)` (e.g. KL to the source
    softmax) without touching training."""

    def __init__(self, gates: HardConcrete, task_fn=cross_entropy, saturation_margin: float = 1.0) -> None:
        self.gates = gates
        self.task_fn = task_fn
        # Past this log_alpha an open gate is clamped to 1 in (almost) every sample, so neither
        # the task nor the L0 term can move it any more: the saturated regime of DESIGN.md §8.
        self.log_alpha_max = gates.log_alpha_for_eval_gate(1.0) + saturation_margin

    def __call__(self, logits: torch.Tensor, target: torch.Tensor, log_alpha: torch.Tensor,
                 lam: float, mu: float, eta: float = 0.0, weights: torch.Tensor | None = None) -> LossParts:
        task = self.task_fn(logits.float(), target, weights)
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
