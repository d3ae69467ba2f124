import math

import pytest
import torch

from nice.config import GateConfig
from nice.gates import HardConcrete, grid_shape, upsample_gates


def test_training_samples_lie_in_unit_interval_with_exact_zeros_and_ones():
    hc = HardConcrete()
    torch.manual_seed(0)
    z = hc.sample(torch.zeros(100_000))
    assert z.min() >= 0 and z.max() <= 1
    assert (z == 0).float().mean() > 0.05, "stretching beyond [0,1] must produce exact zeros"
    assert (z == 1).float().mean() > 0.05, "and exact ones"
    assert ((z > 0) & (z < 1)).any()


@pytest.mark.parametrize("log_alpha", [-4.0, -1.5, 0.0, 0.7, 2.0, 5.0])
def test_expected_l0_matches_monte_carlo(log_alpha):
    hc = HardConcrete()
    torch.manual_seed(1)
    la = torch.full((400_000,), log_alpha)
    mc = (hc.sample(la) > 0).float().mean().item()
    closed = hc.expected_l0(torch.tensor(log_alpha)).item()
    assert abs(mc - closed) < 0.01


def test_expected_l0_formula_constants():
    hc = HardConcrete(GateConfig(beta=0.66, gamma=-0.1, zeta=1.1))
    la = torch.tensor(0.3)
    want = 1 / (1 + math.exp(-(0.3 - 0.66 * math.log(0.1 / 1.1))))
    assert hc.expected_l0(la).item() == pytest.approx(want, rel=1e-6)


def test_eval_gates_are_deterministic_and_clamped():
    hc = HardConcrete()
    la = torch.linspace(-10, 10, 101)
    z1, z2 = hc(la, training=False), hc(la, training=False)
    assert torch.equal(z1, z2)
    want = (torch.sigmoid(la) * 1.2 - 0.1).clamp(0, 1)
    assert torch.allclose(z1, want)
    assert z1[0] == 0 and z1[-1] == 1


def test_binarize_threshold_and_dilation():
    hc = HardConcrete()
    la = torch.full((1, 1, 5, 5), -10.0)
    la[0, 0, 2, 2] = 10.0
    assert hc.binarize(la).sum() == 1
    dilated = hc.binarize(la, dilate=True)
    assert dilated.sum() == 9 and dilated[0, 0, 1:4, 1:4].eq(1).all()


def test_log_alpha_for_keep_inverts_expected_l0():
    hc = HardConcrete()
    for p in (0.1, 0.5, 0.9):
        assert hc.expected_l0(torch.tensor(hc.log_alpha_for_keep(p))).item() == pytest.approx(p, abs=1e-6)


def test_grid_and_upsampling_cover_partial_blocks():
    assert grid_shape(28, 28, 8) == (4, 4)
    z = torch.arange(16.0).view(1, 1, 4, 4)
    up = upsample_gates(z, 8, (28, 30))
    assert up.shape == (1, 1, 28, 30)
    assert up[0, 0, 27, 29] == z[0, 0, 3, 3] and up[0, 0, 7, 8] == z[0, 0, 0, 1]


def test_relaxed_topk_forward_is_the_stored_mask_and_gradient_sits_at_the_cut_off():
    from nice.gates import relaxed_topk, topk_mask

    torch.manual_seed(0)
    scores = torch.randn(3, 4, 5, requires_grad=True)
    keep = torch.tensor([0.1, 0.25, 0.5])
    z = relaxed_topk(scores, keep, temperature=0.5)
    assert torch.equal(z.detach(), topk_mask(scores.detach(), keep))  # exactly what the search keeps
    assert z.detach().sum(dim=(1, 2, 3)).tolist() == [2.0, 5.0, 10.0]
    z.sum().backward()
    g = scores.grad.reshape(3, -1)
    flat = scores.detach().reshape(3, -1)
    for i, k in enumerate((2, 5, 10)):
        order = flat[i].argsort(descending=True)
        # cells next to the cut-off move most; the far ends barely
        near = g[i, order[k - 1]] + g[i, order[k]]
        assert near > g[i, order[0]] + g[i, order[-1]]


def test_rank_scores_window_and_identity():
    from nice.gates import rank_scores, rank_window

    assert rank_window(5, 1) == 5 and rank_window(5, 8) == 1 and rank_window(4, 1) == 5
    s = torch.zeros(1, 7, 7)
    s[0, 3, 3] = 9.0
    assert torch.equal(rank_scores(s, 1), s)
    sm = rank_scores(s, 3)
    assert sm[0, 3, 3] == pytest.approx(1.0) and sm[0, 2, 2] == pytest.approx(1.0) and sm[0, 0, 0] == 0


def test_inert_blocks_rank_last_in_their_smoothed_order():
    """A block equal to the stored background (the same image kept or removed) ranks below every
    live block, whatever its score; live blocks keep the smoothed order; off, it is the smoothed one."""
    from nice.config import NiceConfig
    from nice.gates import rank_scores, topk_mask
    from nice.ranking import live_blocks, search_ranking

    cfg = NiceConfig()  # zero background, per-pixel gates, 5 px window
    x = torch.zeros(2, 1, 12, 12)
    x[:, :, 2:10, 6] = 0.8  # a vertical stroke: 8 live pixels
    x[1, :, 5, 2] = 1 / 255  # one grey level above the background is live
    scores = torch.zeros(2, 12, 12)
    scores[:, 0:5, 0:5] = 10.0  # the generator's strongest scores sit on the empty paper
    live = live_blocks(x, cfg)
    assert live[0].sum() == 8 and live[1].sum() == 9 and bool(live[1, 5, 2])
    ranked = search_ranking(cfg, scores, x)
    smoothed = rank_scores(scores, 5)
    for i in range(2):
        n = int(live[i].sum())
        top = topk_mask(ranked[i:i + 1], n / 144)[0, 0].bool()
        assert torch.equal(top, live[i]), "the top blocks are the live ones, not the high-scored paper"
        # the order inside each group is the smoothed one
        assert torch.equal(ranked[i][live[i]].argsort(stable=True), smoothed[i][live[i]].argsort(stable=True))
        assert torch.equal(ranked[i][~live[i]].argsort(stable=True), smoothed[i][~live[i]].argsort(stable=True))
    # opt-in: the change a block makes weighs in (equal scores: the brighter stroke pixel first)
    cfg.search.rank_change_weight = 1.0
    flat = torch.zeros(1, 12, 12)
    x2 = torch.zeros(1, 1, 12, 12)
    x2[0, 0, 3, 3], x2[0, 0, 8, 8] = 0.2, 0.9
    top = topk_mask(search_ranking(cfg, flat, x2), 1 / 144)[0, 0]
    assert top[8, 8] == 1 and top.sum() == 1
    cfg.search.rank_change_weight = 0.0
    cfg.search.rank_inert_last = False
    assert torch.equal(search_ranking(cfg, scores, x), smoothed)
    # the mean background of colour models: a block is inert only where it equals the image's mean
    colour = NiceConfig()
    colour.mixing.mode, colour.gates.block = "mean", 4
    flat = torch.full((1, 3, 8, 8), 0.5)
    flat[:, :, :4, :4] = 0.9
    assert live_blocks(flat, colour).all()
    assert not live_blocks(torch.full((1, 3, 8, 8), 0.3), colour).any()


def test_listwise_distillation_is_least_at_the_teachers_order_and_moves_every_block_towards_it():
    from nice.losses import listwise_distillation

    torch.manual_seed(0)
    teacher = torch.randn(4, 6, 6) * 3 + 1  # any scale and offset: standardised per image
    z = (teacher - teacher.mean((1, 2), keepdim=True)) / teacher.reshape(4, -1).std(1)[:, None, None]
    assert listwise_distillation(z / 0.5, teacher).item() < 1e-5  # the teacher's own softmax: KL 0
    student = torch.zeros(4, 6, 6, requires_grad=True)  # no order yet
    reversed_ = listwise_distillation(-z / 0.5, teacher)
    loss = listwise_distillation(student, teacher)
    assert reversed_ > loss > 0
    loss.backward()
    g = student.grad.reshape(4, -1)
    flat = teacher.reshape(4, -1)
    # descending the gradient raises the teacher's first block and lowers its last, in every image
    assert (g.gather(1, flat.argmax(1, keepdim=True)) < 0).all()
    assert (g.gather(1, flat.argmin(1, keepdim=True)) > 0).all()
    assert (g != 0).float().mean() > 0.9  # every block's place is trained, not only the cut-off's
