"""The standard faithfulness metrics on cases whose answer is known: ROAD's imputation solves
its linear system, ROAD and RISE rank a right ranking above a wrong one, captum's infidelity
is zero for the exact attribution of a linear model."""

from __future__ import annotations

import torch

from nice.evaluate import faithfulness as fa


def _ramp(n: int = 3, size: int = 16) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    return ((yy + 2 * xx) / (3 * size))[None, None].repeat(n, 1, 1, 1)


def test_noisy_linear_imputation_fills_removed_blocks_from_their_neighbours():
    x = _ramp()
    removed = torch.zeros(3, 1, 16, 16)
    removed[:, :, 4:12, 4:12] = 1  # one whole 8x8 gate block: no pixel of its own left
    filled = fa.noisy_linear_impute(x, removed, noise=0.0)
    # A linear image is its own neighbour mean, so the system's solution is the ramp itself.
    assert torch.allclose(filled, x, atol=1e-5)
    x2 = x.clone()
    x2[:, :, 4:12, 4:12] = 1.0  # what was there must not matter
    assert torch.allclose(fa.noisy_linear_impute(x2, removed, noise=0.0), x, atol=1e-5)
    noisy = fa.noisy_linear_impute(x, removed)
    assert 0.005 < (noisy - x).std() < 0.02  # the noise the ROAD paper adds
    everything = fa.noisy_linear_impute(x, torch.ones(3, 1, 16, 16), noise=0.0)
    assert torch.all(everything == 0.5)


def _left_detector(x: torch.Tensor) -> torch.Tensor:
    """Class 0 when the left half is bright, against a fixed class-1 logit."""
    left = x[..., :, : x.shape[-1] // 2].mean(dim=(1, 2, 3)) * 20
    return torch.softmax(torch.stack([left, torch.full_like(left, 5.0)], 1), 1)


def _left_right_images(n: int = 4, size: int = 16) -> torch.Tensor:
    x = torch.zeros(n, 1, size, size)
    x[..., : size // 2] = 0.9
    return x


def test_road_and_rise_prefer_the_ranking_that_points_at_the_evidence():
    x = _left_right_images()
    labels = torch.zeros(4, dtype=torch.long)
    grid = torch.zeros(4, 4, 4)
    right = grid.clone()
    right[..., :2] = 1.0  # the left half (the evidence) first
    wrong = -right
    morf_r, lerf_r = fa.road(_left_detector, x, right, labels, block=4)
    morf_w, lerf_w = fa.road(_left_detector, x, wrong, labels, block=4)
    assert sum(morf_r) < sum(morf_w) and sum(lerf_r) > sum(lerf_w)
    d_r, i_r = fa.rise_deletion_insertion(_left_detector, x, right, labels, block=4)
    d_w, i_w = fa.rise_deletion_insertion(_left_detector, x, wrong, labels, block=4)
    assert d_r < d_w and i_r > i_w
    assert fa.rise_auc([0.5, 0.5, 0.5]) == 0.5 and fa.rise_auc([0.0, 1.0]) == 0.5
    flat = torch.full((1, 3, 20, 20), 0.3)
    assert torch.allclose(fa.gaussian_blur(flat), flat)


def test_infidelity_is_zero_for_the_exact_attribution_of_a_linear_model():
    torch.manual_seed(0)
    w = torch.randn(1, 1, 8, 8)

    def linear(x: torch.Tensor) -> torch.Tensor:  # two "classes": w.x and its negative
        s = (x * w).sum(dim=(1, 2, 3))
        return torch.stack([s, -s], 1)

    x = torch.rand(6, 1, 8, 8)
    bg = torch.zeros_like(x)
    target = torch.zeros(6, dtype=torch.long)
    exact = fa.infidelity(linear, x, bg, w[:, 0].expand(6, 8, 8), target, block=1, p_remove=0.3)
    other = fa.infidelity(linear, x, bg, torch.rand(6, 8, 8), target, block=1, p_remove=0.3)
    assert exact < 1e-8 < other


def test_sensitivity_is_zero_for_an_explanation_that_ignores_the_input():
    x = torch.rand(4, 1, 8, 8)
    target = torch.zeros(4, dtype=torch.long)
    assert fa.sensitivity(lambda xb, _t: torch.ones(len(xb), 2, 2), x, target) == 0.0
    assert fa.sensitivity(lambda xb, _t: xb[:, 0], x, target) > 0.0
