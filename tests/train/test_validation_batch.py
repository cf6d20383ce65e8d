"""Validation prompts sampled together give the videos each prompt gives alone (--validation-batch)."""
import numpy as np
import pytest

from train.validate import batches


def st(h=64, w=64, frames=9, cfg=3.0, seed=0):
    return {"height": h, "width": w, "frames": frames, "cfg": cfg, "seed": seed}


def test_batches_group_only_prompts_that_share_size_frames_and_cfg():
    s = [st(), st(), st(cfg=5.0), st(), st(w=96), st(), st(cfg=5.0)]
    assert batches(s, 1) == [[0], [1], [2], [3], [4], [5], [6]]
    assert batches(s, 2) == [[0, 1], [2, 6], [3, 5], [4]]
    assert batches(s, 8) == [[0, 1, 3, 5], [2, 6], [4]]
    got = sorted(i for g in batches(s, 3) for i in g)
    assert got == list(range(len(s)))  # every prompt once
    assert all(len(g) <= 3 for g in batches(s, 3))
    assert batches([], 4) == []


def test_a_batch_makes_the_same_videos_as_one_prompt_at_a_time():
    torch = pytest.importorskip("torch")
    from train.cache import encode_text
    from train.models import build_tiny
    from train.validate import generate, generate_many

    c = build_tiny(0)
    pipe = c.pipeline()
    pipe.set_progress_bar_config(disable=True)
    pe, pm, ne, nm = encode_text(pipe, ["a cat runs", "a mouse hides in a hole", "night"], 32, "cpu")
    null = (ne[0], nm[0])
    kw = dict(cfg=3.0, steps=3, height=32, width=32, frames=5, device="cpu")
    seeds = [7, 8, 7]
    alone = [generate(pipe, (pe[i], pm[i]), null, seed=s, **kw) for i, s in enumerate(seeds)]
    together = generate_many(pipe, [(pe[i], pm[i]) for i in range(3)], null, seeds=seeds, **kw)
    assert len(together) == 3
    for a, b in zip(alone, together):
        assert a.shape == b.shape == (5, 32, 32, 3)
        np.testing.assert_allclose(a, b, atol=1e-4)
    # the prompts and seeds do matter: different ones give different videos
    assert np.abs(together[0] - together[1]).max() > 1e-3
    assert np.abs(together[0] - together[2]).max() > 1e-3


def test_eval_loss_in_batches_is_the_same_loss():
    """eval_loss(batch=N) puts N sigmas of a window through the transformer at once: the losses
    (overall and per sigma) are those of one sigma at a time, for every chunking."""
    torch = pytest.importorskip("torch")
    from train.models import build_tiny
    from train.validate import eval_loss

    c = build_tiny(0)
    tr = c.transformer
    g = torch.Generator().manual_seed(3)
    cin = tr.config.in_channels
    dim = tr.config.caption_channels
    items = [{"key": f"w{i}", "latents": torch.randn(cin, 2, 4, 4, generator=g),
              "embeds": torch.randn(12, dim, generator=g), "mask": torch.ones(12, dtype=torch.long)}
             for i in range(3)]
    one = eval_loss(tr, items, "cpu", torch.float32)
    assert len(one["eval_loss_by_sigma"]) == 9
    for b in (2, 4, 9, 64):
        got = eval_loss(tr, items, "cpu", torch.float32, batch=b)
        assert got["eval_loss"] == pytest.approx(one["eval_loss"], rel=1e-5)
        for k, v in one["eval_loss_by_sigma"].items():
            assert got["eval_loss_by_sigma"][k] == pytest.approx(v, rel=1e-5)
    # and the noise is each window's own: another key gives another loss
    other = eval_loss(tr, [{**items[0], "key": "other"}], "cpu", torch.float32)
    assert other["eval_loss"] != pytest.approx(eval_loss(tr, items[:1], "cpu", torch.float32)["eval_loss"], rel=1e-6)


def test_the_trainer_predicts_without_unused_padding_and_gets_the_same_velocity():
    """`objectives.predict` (training, distillation, eval loss) cuts the prompt padding that no row
    of the batch uses. The prediction is the model's on the full, padded text; a cut into a used
    token would change it."""
    torch = pytest.importorskip("torch")
    from train.cache import encode_text
    from train.models import build_tiny
    from train.objectives import predict, used_tokens

    c = build_tiny(0)
    tr = c.transformer.eval()
    pipe = c.pipeline()
    pe, pm, _, _ = encode_text(pipe, ["a cat runs", "a mouse hides in a hole under the stairs"], 64, "cpu")
    n = used_tokens(pm)
    assert pe.shape[1] == 64 and 1 < n < 64 and int(pm[:, n:].sum()) == 0 and int(pm[:, n - 1].sum()) > 0
    assert used_tokens(torch.zeros(2, 5)) == 1
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, tr.config.in_channels, 2, 4, 4, generator=g)
    sig = torch.tensor([0.8, 0.2])
    seen = []
    hook = tr.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["encoder_hidden_states"].shape[1]),
                                        with_kwargs=True)
    with torch.no_grad():
        got = predict(tr, x, pe, pm, sig, torch.float32, "cpu")
        hook.remove()
        from train import flow

        full = tr(x, encoder_hidden_states=pe, encoder_attention_mask=pm, timestep=flow.timesteps(sig),
                  return_dict=False)[0]
        cut = tr(x, encoder_hidden_states=pe[:, :n - 1], encoder_attention_mask=pm[:, :n - 1],
                 timestep=flow.timesteps(sig), return_dict=False)[0]
    assert seen == [n]
    assert (got - full).abs().max() < 1e-5
    assert (cut - full).abs().max() > 1e-3
