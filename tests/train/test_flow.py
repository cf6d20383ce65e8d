import pytest
import torch

from train import flow


def test_noisy_interpolates_and_target_is_velocity():
    x0, eps = torch.randn(3, 4, 2), torch.randn(3, 4, 2)
    s = torch.tensor([0.0, 0.5, 1.0])
    xt = flow.noisy(x0, eps, s)
    assert torch.allclose(xt[0], x0[0]) and torch.allclose(xt[2], eps[2])
    assert torch.allclose(xt[1], 0.5 * x0[1] + 0.5 * eps[1])
    # moving along the target from x_t by -sigma lands on x0 (the velocity points noise-ward)
    v = flow.target(x0, eps)
    assert torch.allclose(xt - s.view(-1, 1, 1) * v, x0, atol=1e-6)


def test_shift_pushes_toward_noise_and_keeps_ends():
    s = torch.tensor([0.0, 0.25, 0.5, 1.0])
    out = flow.shift_sigmas(s, 8.0)
    assert out[0] == 0 and out[-1] == 1
    assert torch.all(out[1:3] > s[1:3])
    assert torch.allclose(flow.shift_sigmas(s, 1.0), s)


def test_sample_sigmas_modes_ranges_and_determinism():
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a = flow.sample_sigmas(4096, generator=g1)
    assert torch.equal(a, flow.sample_sigmas(4096, generator=g2))
    assert a.min() > 0 and a.max() < 1
    assert abs(a.median().item() - 0.5) < 0.03  # logit-normal(0,1) is centred
    u = flow.sample_sigmas(4096, mode="uniform", generator=torch.Generator().manual_seed(1))
    assert abs(u.mean().item() - 0.5) < 0.03
    shifted = flow.sample_sigmas(4096, shift=8.0, generator=torch.Generator().manual_seed(0))
    assert shifted.median() > 0.85  # shift 8 moves the median sigma from 0.5 to 8/9
    with pytest.raises(ValueError):
        flow.sample_sigmas(2, mode="nope")


def test_loss_is_fp32_and_bucketed():
    pred = torch.ones(2, 3, dtype=torch.bfloat16)
    tgt = torch.zeros(2, 3, dtype=torch.bfloat16)
    per = flow.per_sample_loss(pred, tgt)
    assert per.dtype == torch.float32 and torch.allclose(per, torch.ones(2))
    by = flow.loss_by_bucket(torch.tensor([0.05, 0.95, 0.9]), torch.tensor([1.0, 2.0, 4.0]))
    assert by == {"0.000-0.125": 1.0, "0.875-1.000": 3.0}  # 8 bins of sigma
    assert torch.allclose(flow.timesteps(torch.tensor([0.5])), torch.tensor([500.0]))


def test_sigma_range_confines_the_training_noise_levels():
    g = torch.Generator().manual_seed(0)
    s = flow.sample_sigmas(20000, shift=3.0, generator=g, lo=0.6, hi=1.0)
    assert s.min() >= 0.6 and s.max() <= 1.0 and s.std() > 0.05
    full = flow.sample_sigmas(20000, shift=3.0, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(0.6 + 0.4 * full, s)  # the same draws, mapped onto the range
