"""What the toy models have learned (issue 21), measured on held-out world clips with fixed seeds.
Each test prints its figures. They use the weights in assets/toy (shipped; `train build-toy`
rebuilds them). Goals the shipped build does not reach yet are strict xfails that state the
figure, so the day they pass the marker must go."""

from __future__ import annotations

import numpy as np
import pytest

from catalog.assets import assets_dir

FIGURES: dict = {}
HAVE_TOY = (assets_dir() / "toy" / "sana" / "model_index.json").exists()
needs_sana = pytest.mark.skipif(not HAVE_TOY, reason="no toy weights in assets/toy/sana (train build-toy)")

DAY = "A grey cat chases a small brown mouse in the kitchen during the day; the camera is still."
NIGHT = "A grey cat chases a small brown mouse in the kitchen at night; the camera is still."


@pytest.fixture(scope="module")
def toy():
    from train.models import load_components

    c = load_components("toy")
    return c


def sample(c, prompt: str, seeds, steps: int = 12, cfg: float = 3.0) -> np.ndarray:
    """uint8 (N, T, H, W, 3) videos from the pipeline, as validation makes them."""
    import torch

    pipe = c.pipeline()
    pipe.set_progress_bar_config(disable=True)
    out = []
    for s in seeds:
        v = pipe(prompt=prompt, height=64, width=64, frames=9, num_inference_steps=steps, guidance_scale=cfg,
                 use_resolution_binning=False, output_type="np", generator=torch.Generator().manual_seed(s)).frames
        out.append((np.asarray(v)[0] * 255).round().astype(np.uint8))
    return np.stack(out)


def world_clips(n: int, seed: int, time_of_day: str | None = None) -> np.ndarray:
    import random

    from dataengine.world import random_scene, render

    rng = random.Random(seed)
    return np.stack([render(random_scene(rng, time_of_day), 9 / 16, 16, 64, 64, t0=rng.uniform(0, 2))
                     for _ in range(n)])


def hist(frames: np.ndarray, bins: int = 8) -> np.ndarray:
    """A normalised joint RGB histogram of all pixels."""
    q = (frames.reshape(-1, 3) // (256 // bins)).astype(np.int64)
    h = np.bincount(q[:, 0] * bins * bins + q[:, 1] * bins + q[:, 2], minlength=bins ** 3).astype(float)
    return h / h.sum()


def frame_hist_distance(videos: np.ndarray, ref: np.ndarray) -> float:
    """Mean over generated frames of the L1 distance between the frame's colour histogram and the
    closest reference frame's (0 = same colours, 2 = disjoint)."""
    refs = [hist(f) for f in ref.reshape(-1, *ref.shape[2:])[::3]]
    d = [min(np.abs(hist(f) - r).sum() for r in refs) for f in videos.reshape(-1, *videos.shape[2:])]
    return float(np.mean(d))


@needs_sana
def test_the_toy_vae_reconstructs_held_out_world_clips(toy):
    from train.toy import ToyConfig, new_vae, vae_psnr

    cfg = ToyConfig()
    p = vae_psnr(toy.vae, cfg, n=16, seed=999)
    p_random = vae_psnr(new_vae(7).eval(), cfg, n=16, seed=999)
    print(f"\ntoy VAE: held-out PSNR {p:.1f} dB; a random VAE of the same shape: {p_random:.1f} dB")
    assert p >= 26.0 and p > p_random + 10
    FIGURES["vae_psnr"] = p


@needs_sana
@pytest.mark.xfail(strict=True, reason="issue 21's goal is 28 dB; the shipped VAE gives 27.1 dB on this set "
                                       "(28.9 dB on another held-out draw)")
def test_the_toy_vae_reaches_28_db(toy):
    if "vae_psnr" not in FIGURES:
        test_the_toy_vae_reconstructs_held_out_world_clips(toy)
    assert FIGURES["vae_psnr"] >= 28.0


@needs_sana
@pytest.mark.xfail(strict=True, reason="the shipped toy transformer (1,200 steps) has the world's palette but "
                                       "ignores the prompt and is not steady across frames: histogram distance "
                                       "1.50 (bound 0.8; random model 1.98), 'night' only 3.6 darker than 'day'")
def test_base_samples_look_like_the_world_and_follow_day_and_night(toy):
    from train.models import load_components

    day = sample(toy, DAY, seeds=[1, 2, 3])
    night = sample(toy, NIGHT, seeds=[1, 2, 3])
    ref = world_clips(48, seed=4242)
    d_toy = frame_hist_distance(day, ref)
    tiny = load_components("tiny")
    noise = sample(tiny, DAY, seeds=[1], steps=4)
    d_random = frame_hist_distance(noise, ref)
    b_day, b_night = float(day.mean()), float(night.mean())
    ref_day, ref_night = float(world_clips(16, 7, "day").mean()), float(world_clips(16, 7, "night").mean())
    print(f"\ncolour-histogram distance to world frames: toy {d_toy:.3f}, random tiny model {d_random:.3f}"
          f"\nmean brightness: 'day' prompt {b_day:.1f}, 'night' prompt {b_night:.1f} "
          f"(world clips: day {ref_day:.1f}, night {ref_night:.1f})")
    assert d_toy < 0.8 < d_random
    assert b_night < b_day - 10


HAVE_TOY_VLM = (assets_dir() / "toy" / "qwen2-vl" / "config.json").exists()


@pytest.fixture(scope="module")
def world_catalog(tmp_path_factory):
    """A held-out world (seed 77: the build draws other scenes), ingested, with its truth labelling."""
    from click.testing import CliRunner

    from dataengine.cli import main
    from helpers import ingest_cli

    d = tmp_path_factory.mktemp("world")
    r = CliRunner().invoke(main, ["synth", str(d / "videos"), "--world", "6", "--scenes", "4", "--seed", "77"])
    assert r.exit_code == 0, r.output
    cat = d / "c.duckdb"
    assert ingest_cli(CliRunner(), cat, d / "videos").exit_code == 0
    r = CliRunner().invoke(main, ["synth", str(d / "videos"), "--truth-into", str(cat)])
    assert r.exit_code == 0, r.output
    return cat


@pytest.mark.skipif(not HAVE_TOY_VLM, reason="no toy captioner in assets/toy/qwen2-vl (train build-toy)")
def test_the_toy_captioner_labels_the_world(world_catalog):
    from click.testing import CliRunner

    from dataengine.cli import main
    from helpers import rows

    r = CliRunner().invoke(main, ["caption", "--catalog", str(world_catalog), "--model", "toy", "--no-progress",
                                  "--batch-size", "8"])
    assert r.exit_code == 0, r.output  # every answer parses
    got = rows(world_catalog, """
        SELECT t.tag_list, m.tag_list, json_extract_string(t.fields, '$.setting'),
               json_extract_string(m.fields, '$.setting'), json_extract_string(t.fields, '$.time_of_day'),
               json_extract_string(m.fields, '$.time_of_day'), m.status,
               json_extract_string(t.fields, '$.action'), json_extract_string(m.fields, '$.action'),
               json_extract_string(t.fields, '$.camera'), json_extract_string(m.fields, '$.camera'),
               CAST(t.fields->'$.characters' AS VARCHAR), CAST(m.fields->'$.characters' AS VARCHAR)
        FROM captions t JOIN captions m USING (clip_id)
        WHERE t.captioner = 'synth-truth' AND m.captioner = 'toy-qwen2-vl'""")
    for name, i in (("action", 7), ("camera", 9), ("characters", 11)):
        print(f"{name} right: {sum(g[i] == g[i + 1] for g in got) / len(got):.1%}; wrong: "
              + ", ".join(f"{g[i]}->{g[i + 1]}" for g in got if g[i] != g[i + 1])[:300])
    assert got and all(g[6] == "ok" for g in got)
    tp = sum(len(set(a) & set(b)) for a, b, *_ in got)
    fp = sum(len(set(b) - set(a)) for a, b, *_ in got)
    fn = sum(len(set(a) - set(b)) for a, b, *_ in got)
    f1 = 2 * tp / (2 * tp + fp + fn)
    setting = sum(g[2] == g[3] for g in got) / len(got)
    tod = sum(g[4] == g[5] for g in got) / len(got)
    print(f"\ntoy captioner on {len(got)} held-out clips: tag F1 {f1:.3f}; setting right {setting:.1%}; "
          f"time of day right {tod:.1%}")
    assert setting >= 0.95 and tod >= 0.95
    FIGURES["tag_f1"] = f1


@pytest.mark.xfail(strict=True, reason="issue 21 asks for tag F1 >= 0.9; the shipped toy captioner reads the "
                                       "set (setting, time of day: 100%) but not yet the motion (action, camera) "
                                       "or the small mouse (who is in the scene): F1 0.64")
@pytest.mark.skipif(not HAVE_TOY_VLM, reason="no toy captioner in assets/toy/qwen2-vl (train build-toy)")
def test_the_toy_captioner_tags_reach_f1_0_9(world_catalog):
    if "tag_f1" not in FIGURES:
        test_the_toy_captioner_labels_the_world(world_catalog)
    assert FIGURES["tag_f1"] >= 0.9


def night_lora(world_catalog, tmp_path) -> tuple[float, float, float, list[float]]:
    """Train the toy preset's LoRA on the night clips in-process; (base, LoRA, night clips, by step)
    mean brightness of the class prompt's validation video."""
    import json
    import shutil

    from dataengine.media import read_video
    from helpers import rows
    from train.run import start_training

    cat = tmp_path / "c.duckdb"  # a private catalog: a private latent cache beside it
    shutil.copy(world_catalog, cat)
    assert rows(cat, "SELECT count(*) FROM clips WHERE time_of_day = 'night'")[0][0] >= 4
    out = tmp_path / "night"
    rc = start_training(query="time_of_day = 'night'", preset="toy", overrides={"catalog": str(cat)},
                        output_dir=str(out), resume=None, dry_run=False, progress=False, echo=lambda *a, **k: None)
    assert rc == 0 and json.loads((out / "run.json").read_text())["state"] == "finished"

    def brightness(step_dir):
        return float(read_video(out / "validation" / step_dir / "p0.mp4").mean())  # p0: the class prompt

    steps = sorted(p.name for p in (out / "validation").iterdir() if p.name != "base")
    return brightness("base"), brightness(steps[-1]), float(world_clips(16, 7, "night").mean()), \
        [round(brightness(s), 1) for s in steps]


def moved_half_way(base: float, lora: float, night: float) -> bool:
    return base - lora >= 0.5 * (base - night)


@needs_sana
def test_a_night_lora_moves_the_day_base_toward_night(world_catalog, tmp_path):
    """The seed experiment in small: a LoRA on the night clips (a WHERE clause on the truth
    labelling), class prompt for every clip, on the mostly-day base. Under the class prompt the
    samples' brightness moves at least half-way from the base's toward the night clips'."""
    b_base, b_lora, night, progression = night_lora(world_catalog, tmp_path)
    print(f"\nclass-prompt brightness: base {b_base:.1f} -> LoRA {b_lora:.1f} (night clips {night:.1f}); "
          f"by step: {progression}")
    assert moved_half_way(b_base, b_lora, night)
    assert progression[0] > progression[-1]  # the gallery's step rows show the move


@needs_sana
@pytest.mark.parametrize("mutation", [
    "flow target sign",
    pytest.param("latent normalisation", marks=pytest.mark.xfail(
        strict=True, reason="not caught by the brightness outcome: the LoRA still darkens (67.7 against 67.2) "
                            "when it trains on unnormalised latents of the toy VAE (channel std 0.27-1.25)")),
])
def test_the_night_lora_test_has_teeth(world_catalog, tmp_path, monkeypatch, mutation):
    """Break the maths the outcome depends on, in this test only: the outcome must fail."""
    from train import cache, flow

    if mutation == "flow target sign":
        monkeypatch.setattr(flow, "target", lambda x0, noise: x0 - noise)
    else:
        monkeypatch.setattr(cache, "normalise_latents", lambda z, vae: z)
    b_base, b_lora, night, progression = night_lora(world_catalog, tmp_path)
    print(f"\nwith the {mutation} broken: base {b_base:.1f} -> LoRA {b_lora:.1f} (night {night:.1f}); "
          f"by step {progression}")
    assert not moved_half_way(b_base, b_lora, night)
