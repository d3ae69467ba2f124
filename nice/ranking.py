"""The one ranking the search cuts: the stored fine-tune draws from it, the compressor stores it
and the evaluation measures it as NICE's explanation (the rank loss trains its smoothed order).

A method's block scores are averaged over ~`search.rank_smooth_px` pixels (compact regions
code smaller), and with `search.rank_inert_last` the inert blocks go last: a block equal to the
stored background (MNIST's black paper under the zero background) gives the same image kept or
removed, so it carries no evidence and spends none of a keep level's budget. Their smoothed order
is kept below every live block, so the ranking is still total. `search.rank_change_weight`
(opt-in) adds weight x log of the change keeping a block makes (gate odds x change).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nice.config import NiceConfig
from nice.gates import rank_scores, rank_window
from nice.mixing import background

# Half a grey level: a uint8 pixel equal to the background differs by exactly 0.
INERT_TOLERANCE = 0.5 / 255


def block_change(x: torch.Tensor, cfg: NiceConfig) -> torch.Tensor:
    """(N,h,w) the largest change keeping each gate block of `x` (N,C,H,W in [0,1]) makes to the
    stored image: |pixel - stored background| over the block's pixels and channels."""
    diff = (x.float() - background(x.float(), cfg.mixing)).abs().amax(1, keepdim=True)
    b = cfg.gates.block
    if b > 1:
        diff = F.max_pool2d(diff, b, ceil_mode=True)
    return diff[:, 0]


def live_blocks(x: torch.Tensor, cfg: NiceConfig) -> torch.Tensor:
    """(N,h,w) True where a gate block differs from the stored background anywhere; False where
    keeping it or not gives the same image."""
    return block_change(x, cfg) > INERT_TOLERANCE


def smoothed_scores(cfg: NiceConfig, scores: torch.Tensor) -> torch.Tensor:
    """Block scores (N,h,w) averaged over ~`search.rank_smooth_px` pixels: the search's order
    before the inert shift (what the rank loss trains; values for infidelity and sensitivity)."""
    return rank_scores(scores.float(), rank_window(cfg.search.rank_smooth_px, cfg.gates.block))


def search_ranking(cfg: NiceConfig, scores: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Block scores (N,h,w) of images `x` as the search ranks them (see the module's docstring)."""
    ranked = smoothed_scores(cfg, scores)
    weight = cfg.search.rank_change_weight
    if not cfg.search.rank_inert_last and not weight:
        return ranked
    change = block_change(x, cfg).to(ranked.device)
    if change.shape != ranked.shape:
        raise ValueError(f"scores {tuple(ranked.shape)} do not match the gate grid of the images {tuple(change.shape)}")
    live = change > INERT_TOLERANCE
    if weight:
        ranked = ranked + weight * torch.log(change.clamp(min=INERT_TOLERANCE))
    if not cfg.search.rank_inert_last:
        return ranked
    return inert_last(ranked, live)


def inert_last(ranked: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
    """`ranked` (N,h,w) with the blocks that are not `live` below every live block, in the same
    order among themselves: shifted by each image's range."""
    span = (ranked.amax((1, 2), keepdim=True) - ranked.amin((1, 2), keepdim=True)).detach() + 1.0
    return torch.where(live, ranked, ranked - span)
