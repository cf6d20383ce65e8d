"""What makes `train build-toy` faster (22 minutes before, 12-15 now) without changing what it
computes:
- the VAE trains with `single_frame_convs`: its causal convolutions keep only their current-frame
  tap while it trains on single frames, and get full-size kernels back after;
- the transformer trains on prompt embeddings trimmed of the padding no prompt uses.
Each is only a speed-up if it is the same function, which is what these tests check."""

from __future__ import annotations

import random

import pytest


def _clip(frames: int, seed: int = 0):
    from dataengine.world import random_scene
    from train.toy import ToyConfig, to_tensor, world_batch

    rng = random.Random(seed)
    return to_tensor(world_batch([random_scene(rng) for _ in range(2)], ToyConfig(size=32), rng, frames))


def _code(vae, x, grad: bool = False):
    import torch

    with torch.set_grad_enabled(grad):
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
            loss = (_code(vae, x, grad=True) - x).pow(2).mean()
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


def test_trimmed_prompts_give_the_transformer_the_same_prediction():
    """The pipeline pads prompts to 300 tokens; the toy's captions use about 30. Trimmed, the
    transformer predicts the same velocity (the cross-attention gives padding zero weight), and a
    trim that cut a used token would not."""
    import torch

    from train import flow
    from train.toy import MAX_LEN, encoder_parts, new_transformer, pipeline_of, new_vae, trim_padding
    from train.cache import encode_text

    tok, te = encoder_parts(0)
    tr = new_transformer(0, te.config.hidden_size).eval()
    pipe = pipeline_of(tok, te, new_vae(0), tr, 3.0)
    prompts = ["A grey cat chases a small brown mouse in the kitchen at night; the camera is still.",
               "A mouse rests on the porch during the day."]
    emb, mask, ne, nm = encode_text(pipe, prompts, MAX_LEN, "cpu")
    t_emb, t_mask, t_ne, t_nm = trim_padding(emb, mask, ne, nm)
    assert emb.shape[1] == MAX_LEN and 10 < t_emb.shape[1] < 60 and t_ne.shape[1] == t_emb.shape[1]
    assert int(t_mask.sum()) == int(mask.sum()) and int(t_nm.sum()) == int(nm.sum())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 3, 8, 8, generator=g)
    sig = torch.tensor([0.9, 0.3])

    def predict(e, m):
        with torch.no_grad():
            return tr(x, encoder_hidden_states=e, encoder_attention_mask=m, timestep=flow.timesteps(sig),
                      return_dict=False)[0]

    full = predict(emb, mask)
    assert (predict(t_emb, t_mask) - full).abs().max() < 1e-4
    cut = t_emb.shape[1] - 1  # one used token too few
    assert (predict(t_emb[:, :cut], t_mask[:, :cut]) - full).abs().max() > 1e-3
