"""The toy VAE's build trains with `single_frame_convs`: its causal convolutions keep only their
current-frame tap while it trains on single frames, and get full-size kernels back after. That is
only a speed-up if it is the same function, before and after, on clips of any length."""

from __future__ import annotations

import random

import pytest


def _clip(frames: int, seed: int = 0):
    from dataengine.world import random_scene
    from train.toy import ToyConfig, to_tensor, world_batch

    rng = random.Random(seed)
    return to_tensor(world_batch([random_scene(rng) for _ in range(2)], ToyConfig(size=32), rng, frames))


def _code(vae, x):
    import torch

    with torch.no_grad():
        return vae.decode(vae.encode(x).latent_dist.mode()).sample


@pytest.mark.parametrize("frames", [1, 9])
def test_thin_kernels_compute_the_same_function_and_give_back_full_ones(frames):
    import torch

    from train.toy import new_vae, single_frame_convs

    vae = new_vae(3).eval()
    x = _clip(frames)
    before = _code(vae, x)
    shapes = {n: p.shape for n, p in vae.named_parameters()}
    thin = single_frame_convs(vae)
    assert len(thin.convs) == 30  # every 3x3x3 causal convolution of the toy's shape
    with thin:
        assert all(m.weight.shape[2] == 1 for m in thin.convs)
        inside = _code(vae, x)
    after = _code(vae, x)
    assert torch.equal(before, inside) or (before - inside).abs().max() < 1e-5
    assert torch.equal(before, after)
    assert {n: p.shape for n, p in vae.named_parameters()} == shapes


def test_training_inside_moves_only_the_current_frame_taps_and_the_clip_code_stays_per_frame():
    """A few optimiser steps inside the block: on leaving, the earlier-frame taps are still exactly
    zero, so a 9-frame clip codes each frame as that frame alone."""
    import torch

    from train.toy import new_vae, single_frame_convs

    vae = new_vae(4).train()
    start = {n: p.detach().clone() for n, p in vae.named_parameters()}
    with single_frame_convs(vae) as thin:
        opt = torch.optim.AdamW(vae.parameters(), lr=1e-2)
        for _ in range(2):
            x = _clip(1, seed=5)
            loss = (_code_grad(vae, x) - x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert all(float(m.weight.detach()[:, :, :-1].abs().max()) == 0.0 for m in thin.convs)
    moved = [n for n, p in vae.named_parameters() if not torch.equal(p, start[n])]
    assert any("conv" in n for n in moved)
    vae.eval()
    clip = _clip(9, seed=6)
    whole = _code(vae, clip)
    one = torch.cat([_code(vae, clip[:, :, t:t + 1]) for t in range(9)], dim=2)
    assert (whole - one).abs().max() < 1e-5


def _code_grad(vae, x):
    return vae.decode(vae.encode(x).latent_dist.mode()).sample


def test_a_vae_with_earlier_frame_taps_is_refused():
    import torch

    from train.toy import new_vae, single_frame_convs

    vae = new_vae(5)
    thin = single_frame_convs(vae)
    with torch.no_grad():
        thin.convs[-1].weight[:, :, 0] += 1.0
    with pytest.raises(ValueError, match="earlier-frame taps"):
        with thin:
            pass
    assert all(m.weight.shape[2] == 3 for m in thin.convs)  # refused before any was thinned
