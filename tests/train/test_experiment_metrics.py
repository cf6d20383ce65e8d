"""Metric functions: the values reports are built from."""

import json

import numpy as np
import pytest

from train.experiments import metrics as M


def test_jaccard_and_recall():
    assert M.jaccard(["a", "b"], ["b", "a"]) == 1.0
    assert M.jaccard([], []) == 1.0
    assert M.jaccard(["a"], ["b"]) == 0.0
    assert M.jaccard(["a", "b"], ["b", "c"]) == pytest.approx(1 / 3)
    assert M.tag_recall(["chase", "night"], ["night", "day"]) == {"chase": False, "night": True}
    assert M.control_adherence(["chase", "night"], ["chase"]) == 0.5
    assert M.control_adherence([], ["x"]) is None


def frames(seed, t=5, h=32, w=40):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def test_style_and_fidelity_metrics():
    a, b = frames(0), frames(1)
    assert M.palette_distance(a, a) == 0.0
    red = np.zeros_like(a)
    red[..., 0] = 255
    blue = np.zeros_like(a)
    blue[..., 2] = 255
    assert M.palette_distance(red, blue) == 1.0
    assert M.psnr(a, a) == float("inf") and M.psnr(a, b) < 15
    assert M.ssim(a, a) == pytest.approx(1.0) and M.ssim(a, b) < 0.2
    assert M.saturation(red) == pytest.approx(1.0) and M.saturation(np.full_like(a, 128)) == 0.0
    static = np.repeat(a[:1], 5, axis=0)
    assert M.flicker(static) == 0.0 and M.flicker(a) > 0.1
    assert M.motion_score(static, 16) == 0.0 and M.motion_score(a, 16) > 1
    edges = np.full((2, 64, 64, 3), 255, np.uint8)
    edges[:, 20:44, 20:44] = 0
    assert 0 < M.edge_density(edges) < 0.2 and M.edge_density(np.full_like(edges, 9)) == 0.0


def test_planted_explosion_is_detected():
    steps = list(range(1, 101))
    loss = [1.0 + 0.01 * np.sin(i) for i in steps]
    loss[29] = 9.0  # step 30 explodes
    gn = [0.5] * 100
    gn[27:32] = [5.0] * 5  # a grad-norm spike starting at step 28
    assert M.explosions(steps, loss) == [30]
    assert M.first_spike(steps, gn) == 28
    assert M.explosions(steps, [1.0] * 100) == []
    assert M.ema([1.0, 3.0], 0.5) == [1.0, 2.0]


def test_compare_marks_explosions_in_the_report(tmp_path):
    from train.experiments.compare import compare

    runs = []
    for name, boom in (("lora16", 12), ("lora64", None)):
        d = tmp_path / name
        d.mkdir()
        with open(d / "metrics.jsonl", "w") as f:
            for s in range(1, 61):
                loss = 50.0 if s == boom else 1.0 / (1 + 0.01 * s)
                f.write(json.dumps({"step": s, "loss": loss, "grad_norm": 20.0 if s == boom else 0.3, "lr": 1e-4,
                                    "loss_by_sigma": {"0.875-1.000": loss}}) + "\n")
                if s % 20 == 0:
                    f.write(json.dumps({"step": s, "eval_loss": 0.9 - s / 1000}) + "\n")
        (d / "config.json").write_text(json.dumps({"rank": int(name[4:]), "lr": 1e-4, "warmup_steps": 0}))
        runs.append(d)
    res = compare(runs, tmp_path / "cmp")
    by = {r["run"]: r for r in res["runs"]}
    assert by["lora16"]["loss_explosions"] == [12] and by["lora16"]["first_grad_norm_spike"] == 12
    assert by["lora64"]["loss_explosions"] == [] and by["lora64"]["first_grad_norm_spike"] is None
    assert by["lora64"]["best_eval_loss"] == pytest.approx(0.9 - 0.06)
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 10_000
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "| lora16 | 16 |" in md and "compare.png" in md
    assert (tmp_path / "cmp" / "report.html").exists()


def test_clip_score_from_local_weights(tmp_path):
    """CLIP is only used when weights are given by path: a tiny random CLIP saved to disk."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, PreTrainedTokenizerFast

    from dataengine.tiny_tokenizer import train_byte_bpe
    from train.experiments.evaluate import _clip_scores

    tk = train_byte_bpe(["a cat chases a mouse"] * 3, 300, ["<pad>", "<s>", "</s>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                  model_max_length=32)
    cfg = CLIPConfig(text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, max_position_embeddings=32, eos_token_id=2, pad_token_id=0,
                                      bos_token_id=1),
                     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                        image_size=32, patch_size=8), projection_dim=16)
    CLIPModel(cfg).save_pretrained(tmp_path)
    CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                  tokenizer=tok).save_pretrained(tmp_path)
    v = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    s = _clip_scores(str(tmp_path), "a cat", {"a": v, "b": v, "c": np.zeros_like(v)})
    assert set(s) == {"a", "b", "c"} and all(-1 <= x <= 1 for x in s.values())
    assert s["a"] == pytest.approx(s["b"]) and s["a"] != pytest.approx(s["c"])


def test_the_pareto_front_keeps_only_undominated_points():
    """With no spread in the samples every difference is supported, and the front is the plain one."""
    from train.experiments.uncertainty import supported_front

    def pareto(pts):
        return supported_front([t for t, _ in pts], [[d] * 5 for _, d in pts])

    pts = [(1.0, 0.5), (2.0, 0.1), (2.0, 0.3), (0.5, 0.9), (3.0, 0.1), (1.0, 0.5)]
    # (2, .3) is beaten by (2, .1); (3, .1) by (2, .1); the duplicate (1, .5) pair do not dominate each other
    assert pareto(pts) == [True, True, False, True, False, True]
    assert pareto([]) == [] and pareto([(1.0, 1.0)]) == [True]
