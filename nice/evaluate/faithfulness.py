"""Standard faithfulness metrics for rankings on the gate grid, so that NICE's numbers compare
with published ones: ROAD (remove and debias, Rong et al. 2022), the RISE protocol's
deletion / insertion (Petsiuk et al. 2018), and captum's `infidelity` (Yeh et al. 2019) and
`sensitivity_max`.

Every ranking is one score per gate block (N,h,w); a block is removed or kept whole, as the
compressor does. ROAD is written here because its imputation must fill whole gate blocks."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from nice.gates import topk_mask, upsample_gates

# Noisy linear imputation: a removed pixel is the weighted mean of its 8 neighbours (the ROAD
# paper's weights: 1/6 for the 4 direct neighbours, 1/12 for the diagonals), plus noise.
_NEIGHBOURS = ((-1, -1, 1 / 12), (-1, 0, 1 / 6), (-1, 1, 1 / 12), (0, -1, 1 / 6), (0, 1, 1 / 6),
               (1, -1, 1 / 12), (1, 0, 1 / 6), (1, 1, 1 / 12))
ROAD_LEVELS = (0.1, 0.3, 0.5, 0.7, 0.9)
ROAD_NOISE = 0.01  # the paper's default, here on pixels in [0, 1]


def _impute_one(img: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """One image (C,H,W): the removed pixels (H,W bool) solved from the sparse linear system
    `deg_i x_i - sum_j w_ij x_j = sum_k w_ik x_k` (j removed, k known neighbours), one
    factorisation for every channel."""
    import scipy.sparse as sp
    import scipy.sparse.linalg as sla

    c, h, w = img.shape
    ys, xs = np.nonzero(removed)
    n = len(ys)
    if n == 0:
        return img
    if n == h * w:  # nothing known to impute from
        return np.full_like(img, 0.5)
    index = -np.ones((h, w), dtype=np.int64)
    index[ys, xs] = np.arange(n)
    diag, rhs = np.zeros(n), np.zeros((n, c))
    rows, cols, vals = [np.arange(n)], [np.arange(n)], []
    for dy, dx, wt in _NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        diag[inside] += wt
        j = np.where(inside, index[ny.clip(0, h - 1), nx.clip(0, w - 1)], -2)
        unknown, known = inside & (j >= 0), inside & (j == -1)
        rows.append(np.flatnonzero(unknown))
        cols.append(j[unknown])
        vals.append(np.full(int(unknown.sum()), -wt))
        rhs[known] += wt * img[:, ny[known], nx[known]].T
    a = sp.csc_matrix((np.concatenate([diag, *vals]), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    out = img.copy()
    out[:, ys, xs] = sla.splu(a).solve(rhs).T
    return out


def noisy_linear_impute(x: torch.Tensor, removed: torch.Tensor, noise: float = ROAD_NOISE,
                        seed: int = 0) -> torch.Tensor:
    """`x` (N,C,H,W in [0,1]) with the pixels where `removed` (N,1,H,W, 1 = removed) is set
    replaced by ROAD's noisy linear imputation: each removed pixel the weighted mean of its
    in-image neighbours (a sparse linear system per image), then Gaussian noise of `noise`
    everywhere (as the ROAD code: so that the imputed region does not stand out as smooth).
    An image with every pixel removed has nothing to impute from and becomes 0.5."""
    xs = x.detach().cpu().double().numpy()
    rs = removed.detach().cpu().numpy()[:, 0] > 0.5
    out = torch.from_numpy(np.stack([_impute_one(xs[i], rs[i]) for i in range(len(xs))])).to(x)
    g = torch.Generator().manual_seed(seed)
    return (out + noise * torch.randn(out.shape, generator=g).to(out)).clamp(0, 1)


def road(probs: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, scores: torch.Tensor,
         labels: torch.Tensor, block: int, levels: Sequence[float] = ROAD_LEVELS) -> tuple[list[float], list[float]]:
    """ROAD accuracy curves: (MoRF, LeRF), the accuracy after imputing the top (most relevant
    first) or the bottom (least relevant first) `level` of the gate blocks, per level."""
    size = tuple(x.shape[-2:])
    morf, lerf = [], []
    for f in levels:
        for curve, ranking in ((morf, scores), (lerf, -scores)):
            removed = upsample_gates(topk_mask(ranking, float(f)), block, size)
            imputed = noisy_linear_impute(x, removed)
            curve.append(float((probs(imputed).argmax(1) == labels).float().mean()))
    return morf, lerf


def gaussian_blur(x: torch.Tensor, size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """The RISE insertion substrate: the RISE code's 11x11 Gaussian kernel with sigma 5."""
    t = torch.arange(size, dtype=x.dtype) - size // 2
    k1 = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = (k1[:, None] * k1[None, :])
    k = (k / k.sum()).to(x)
    c = x.shape[1]
    pad = size // 2
    xp = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    return F.conv2d(xp, k[None, None].expand(c, 1, size, size), groups=c)


def rise_auc(curve: Sequence[float]) -> float:
    """The RISE code's area: the trapezoid under the curve over [0, 1]."""
    arr = np.asarray(curve, dtype=np.float64)
    return float((arr.sum() - arr[0] / 2 - arr[-1] / 2) / (len(arr) - 1))


def rise_deletion_insertion(probs: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, scores: torch.Tensor,
                            target: torch.Tensor, block: int, max_steps: int = 50) -> tuple[float, float]:
    """RISE protocol: deletion turns the top blocks black first, insertion puts the top blocks
    back onto the blurred image first; the class probability after each step (one gate block
    per step, or `max_steps` equal steps on larger grids). Returns (deletion AUC, insertion AUC)."""
    n, h, w = scores.shape
    steps = min(h * w, max_steps)
    size = tuple(x.shape[-2:])
    blurred = gaussian_blur(x)
    black = torch.zeros_like(x)
    dele, ins = [], []
    for f in np.linspace(0, 1, steps + 1):
        top = upsample_gates(topk_mask(scores, float(f)), block, size)
        dele.append(probs(torch.lerp(x, black, top)).gather(1, target[:, None]).mean().item())
        ins.append(probs(torch.lerp(blurred, x, top)).gather(1, target[:, None]).mean().item())
    return rise_auc(dele), rise_auc(ins)


def to_pixels(scores: torch.Tensor, block: int, like: torch.Tensor) -> torch.Tensor:
    """Gate-grid scores (N,h,w) as an attribution of the input's shape: each pixel and channel
    of a block carries the block's score shared over them (a block's attributions sum to it)."""
    up = upsample_gates(scores[:, None], block, tuple(like.shape[-2:]))
    return up.expand_as(like) / (block * block * like.shape[1])


def infidelity(probs: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, background: torch.Tensor,
               scores: torch.Tensor, target: torch.Tensor, block: int, p_remove: float = 0.1,
               samples: int = 10, seed: int = 0) -> float:
    """captum's `infidelity` (normalised, so invariant to the attribution's scale) of the
    gate-block attribution, under perturbations that remove random gate blocks (each with
    probability `p_remove`) to the product's background: the change the compressor makes."""
    from captum.metrics import infidelity as captum_infidelity

    g = torch.Generator().manual_seed(seed)
    h, w = scores.shape[-2:]

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bg = background.repeat_interleave(len(inputs) // len(background), dim=0)
        cells = (torch.rand((len(inputs), 1, h, w), generator=g) < p_remove).to(inputs)
        m = upsample_gates(cells, block, tuple(inputs.shape[-2:]))
        perturbation = m * (inputs - bg)
        return perturbation, inputs - perturbation

    attr = to_pixels(scores, block, x)
    value = captum_infidelity(probs, perturb, x, attr, target=target, n_perturb_samples=samples,
                              max_examples_per_batch=max(len(x), 1) * samples, normalize=True)
    return float(value.mean())


def sensitivity(explain: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, target: torch.Tensor,
                radius: float = 0.02, samples: int = 5) -> float:
    """captum's `sensitivity_max`: the largest relative change of the explanation (Frobenius
    norm over its own norm) under uniform input noise of `radius`, mean over images;
    `explain(x, target)` returns the method's gate-grid scores."""
    from captum.metrics import sensitivity_max

    torch.manual_seed(0)  # captum's default perturbation draws from the global generator
    # `target` travels as a keyword so that captum repeats it with the perturbed copies.
    def run(inputs: torch.Tensor | tuple[torch.Tensor, ...], target: torch.Tensor) -> torch.Tensor:
        xb = inputs[0] if isinstance(inputs, tuple) else inputs  # captum passes the original as a tuple
        return (explain(xb.clamp(0, 1), target).flatten(1),)  # captum compares flat tuples

    value = sensitivity_max(run, x, perturb_radius=radius, n_perturb_samples=samples, target=target)
    return float(value.mean())
