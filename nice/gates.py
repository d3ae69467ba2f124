"""Hard-concrete L0 gates (Louizos, Welling & Kingma 2018), as in DESIGN.md §2.

A gate grid has one cell per b x b pixel block; `log_alpha` has shape (N, 1, H/b, W/b).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nice.config import GateConfig


class HardConcrete:
    """Stateless sampler / evaluator for a gate grid with fixed (beta, gamma, zeta)."""

    def __init__(self, cfg: GateConfig | None = None) -> None:
        cfg = cfg or GateConfig()
        if not (cfg.gamma < 0.0 and cfg.zeta > 1.0 and cfg.beta > 0.0):
            raise ValueError("hard concrete needs gamma < 0 < 1 < zeta and beta > 0")
        self.beta, self.gamma, self.zeta = cfg.beta, cfg.gamma, cfg.zeta
        self.block = cfg.block
        # log(-gamma/zeta) shift of the expected-L0 formula
        self._l0_shift = cfg.beta * math.log(-cfg.gamma / cfg.zeta)

    def sample(self, log_alpha: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
        """Training gates: stretched, clamped concrete samples (exact 0s and 1s occur)."""
        u = torch.rand_like(log_alpha).clamp(eps, 1.0 - eps)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / self.beta)
        return (s * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)

    def deterministic(self, log_alpha: torch.Tensor) -> torch.Tensor:
        """Evaluation gates: the noise-free stretched sigmoid."""
        return (torch.sigmoid(log_alpha) * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)

    def __call__(self, log_alpha: torch.Tensor, training: bool) -> torch.Tensor:
        return self.sample(log_alpha) if training else self.deterministic(log_alpha)

    def expected_l0(self, log_alpha: torch.Tensor) -> torch.Tensor:
        """P(z > 0) per cell, closed form: sigmoid(log_alpha - beta * log(-gamma/zeta))."""
        return torch.sigmoid(log_alpha - self._l0_shift)

    def binarize(self, log_alpha: torch.Tensor, tau: float = 0.5, dilate: bool = False) -> torch.Tensor:
        """Binary compression mask: deterministic gate > tau, optionally grown by one cell."""
        z = (self.deterministic(log_alpha) > tau).to(log_alpha.dtype)
        if dilate:
            z = F.max_pool2d(z, kernel_size=3, stride=1, padding=1)
        return z

    def log_alpha_for_eval_gate(self, z: float) -> float:
        """The log_alpha whose deterministic gate equals `z` (in (0, 1])."""
        s = (z - self.gamma) / (self.zeta - self.gamma)
        return math.log(s / (1 - s))

    def log_alpha_for_keep(self, p_keep: float) -> float:
        """The log_alpha whose expected L0 equals `p_keep` (used to initialise generators)."""
        p = min(max(p_keep, 1e-4), 1 - 1e-4)
        return math.log(p / (1 - p)) + self._l0_shift


def upsample_gates(z: torch.Tensor, block: int, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour gate grid -> pixels, cropped to `size` (grids cover partial blocks)."""
    if block > 1:
        # repeat_interleave: faster on CPU than F.interpolate(nearest) or expand + reshape.
        z = z.repeat_interleave(block, dim=-2).repeat_interleave(block, dim=-1)
    return z[..., : size[0], : size[1]]


def grid_shape(height: int, width: int, block: int) -> tuple[int, int]:
    """Gate grid size for an image: partial edge blocks get a gate of their own."""
    return (math.ceil(height / block), math.ceil(width / block))


def rank_window(smooth_px: int, block: int) -> int:
    """Ranking window in gate cells: ~`smooth_px` pixels, odd; 1 = the raw scores."""
    k = max(1, round(smooth_px / max(block, 1)))
    return k if k % 2 else k + 1


def rank_scores(scores: torch.Tensor, window: int) -> torch.Tensor:
    """Scores (N,h,w) averaged over a `window` x `window` neighbourhood: per-pixel gates kept
    by rank scatter over the stroke; the local mean keeps compact regions, which coders store
    in fewer bytes. The search ranks by this, and the rank loss trains through it."""
    if window <= 1 or scores.shape[-1] <= 1:
        return scores
    return F.avg_pool2d(scores[:, None], window, stride=1, padding=window // 2,
                        count_include_pad=False)[:, 0]


def relaxed_topk(scores: torch.Tensor, keep: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Top-`keep` gate grids (N,1,h,w) for training: the forward pass is exactly `topk_mask`
    (what the search stores), the backward pass that of sigmoid((s - t) / temperature) around
    each image's threshold t, so cells near the cut-off learn whether they belong in."""
    n, h, w = scores.shape
    hard = topk_mask(scores.detach(), keep)
    t = topk_threshold(scores.detach(), keep)
    soft = torch.sigmoid((scores.reshape(n, -1) - t) / temperature).reshape(n, 1, h, w)
    return hard + (soft - soft.detach())  # exactly `hard` in the forward pass


def topk_threshold(scores: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(N,1) cut-offs of scores (N,h,w): between each image's k-th and k+1-th score, k its
    `keep` fraction of the blocks (at least one kept and one dropped)."""
    n, h, w = scores.shape
    srt = scores.reshape(n, -1).sort(dim=1, descending=True).values
    k = (keep.float() * (h * w)).round().clamp(1, h * w - 1).long()
    return 0.5 * (srt.gather(1, (k - 1)[:, None]) + srt.gather(1, k[:, None]))


def topk_mask(scores: torch.Tensor, keep: torch.Tensor | float) -> torch.Tensor:
    """Binary gate grids (N,1,h,w) keeping the `keep` fraction (per image or one value) of
    blocks with the highest scores (ties broken by position, deterministically)."""
    n, h, w = scores.shape
    flat = scores.reshape(n, -1)
    keep_t = torch.as_tensor(keep, dtype=torch.float32).expand(n) if not torch.is_tensor(keep) else keep.float()
    k = (keep_t * (h * w)).round().clamp(0, h * w).long()
    order = flat.argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(h * w).expand(n, -1))
    return (ranks < k[:, None]).float().reshape(n, 1, h, w)
