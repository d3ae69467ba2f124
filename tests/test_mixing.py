import pytest
import torch

from nice.config import MixingConfig, NiceConfig, GateConfig
from nice.gates import upsample_gates
from nice.mixing import block_means, mix


def test_zero_mixing_keeps_only_gated_pixels():
    x = torch.rand(2, 1, 28, 28)
    z = (torch.rand(2, 1, 28, 28) > 0.5).float()
    out = mix(x, z, MixingConfig(mode="zero"), block=1)
    assert torch.equal(out, x * z)


@pytest.mark.parametrize("h, w, b, k", [(64, 64, 8, 8), (37, 53, 8, 16), (40, 24, 4, 8)])
def test_lowres_background_blocks_are_constant_and_grid_aligned(h, w, b, k):
    torch.manual_seed(0)
    x = torch.rand(1, 3, h, w)
    gh, gw = -(-h // b), -(-w // b)
    z = (torch.rand(1, 1, gh, gw) > 0.5).float()
    out = mix(x, z, MixingConfig(mode="lowres", pool=k), block=b)
    zp = upsample_gates(z, b, (h, w))[0, 0]
    # Foreground pixels are untouched.
    assert torch.equal(out[0][:, zp == 1], x[0][:, zp == 1])
    # Every aligned k x k block: its background pixels equal that block's mean of the source.
    for i in range(0, h, k):
        for j in range(0, w, k):
            blk, src, m = out[0, :, i:i + k, j:j + k], x[0, :, i:i + k, j:j + k], zp[i:i + k, j:j + k]
            if (m == 0).any():
                bg = blk[:, m == 0]
                assert torch.allclose(bg, src.mean(dim=(1, 2))[:, None].expand_as(bg), atol=1e-6)


def test_block_means_partial_edge_blocks_average_their_own_pixels():
    x = torch.zeros(1, 1, 10, 10)
    x[..., 8:, :] = 1.0  # the last partial row of 8x8 blocks is all ones
    bm = block_means(x, 8)
    assert torch.allclose(bm[..., 8:, :], torch.ones(1, 1, 2, 10))
    assert torch.allclose(bm[..., :8, :], torch.zeros(1, 1, 8, 10))


def test_pool_must_be_multiple_of_block():
    with pytest.raises(ValueError, match="multiple"):
        NiceConfig(gates=GateConfig(block=8), mixing=MixingConfig(mode="lowres", pool=12))


def test_mixing_is_differentiable_in_the_gates():
    x = torch.rand(1, 1, 16, 16)
    z = torch.full((1, 1, 2, 2), 0.5, requires_grad=True)
    mix(x, z, MixingConfig(mode="lowres", pool=8), block=8).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_mean_background_is_each_images_mean_colour():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 37, 53)
    z = (torch.rand(2, 1, 5, 7) > 0.5).float()
    cfg = MixingConfig(mode="mean", pool=12)  # pool is unused: any value is valid
    NiceConfig(gates=GateConfig(block=8), mixing=cfg)
    out = mix(x, z, cfg, block=8)
    zp = upsample_gates(z, 8, (37, 53))
    for i in range(2):
        fg, bg = zp[i, 0] == 1, zp[i, 0] == 0
        assert torch.equal(out[i][:, fg], x[i][:, fg])
        mean = x[i].mean(dim=(1, 2))[:, None]
        assert torch.allclose(out[i][:, bg], mean.expand(-1, int(bg.sum())), atol=1e-6)


def test_colour_default_trains_against_block_means_and_stores_a_flat_background():
    from nice.config import MaskTrainConfig, colour_default

    cfg = colour_default()
    assert cfg.mixing.mode == "mean" and cfg.training_mixing() == MixingConfig(mode="lowres", pool=8)
    assert NiceConfig().training_mixing() == NiceConfig().mixing  # grey: trains on what it stores
    # The block alignment rule holds for the training background too.
    with pytest.raises(ValueError, match="multiple"):
        NiceConfig(gates=GateConfig(block=8), mixing=MixingConfig(mode="mean", pool=12),
                   train_generator=MaskTrainConfig(mixing="lowres"))
    with pytest.raises(ValueError, match="train_generator.mixing"):
        MaskTrainConfig(mixing="flat")
