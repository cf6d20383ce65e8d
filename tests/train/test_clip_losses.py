"""Per-clip training loss back in the catalog: exact bookkeeping, and planted off-style clips."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path
from statistics import median

import numpy as np
import pytest

from helpers import needs, ingest_cli, rows, run_train

pytestmark = pytest.mark.slow  # trains toy LoRAs: minutes on 2 cores (make test-fast skips them)

FPS = 24


def write(arr, path):
    from dataengine.media import save_mp4

    save_mp4(arr, path, FPS)


def cartoon(scene, secs, phase=0.0, size=(160, 120)):
    from dataengine.synth import draw_frame

    return np.stack([draw_frame(phase + k / FPS, scene, size[0], size[1]) for k in range(int(secs * FPS))])


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Clean cartoons, plus three off-style clips: photographic noise, inverted colours, and a
    palette no clean clip has (desaturated sepia)."""
    from click.testing import CliRunner

    d = tmp_path_factory.mktemp("planted")
    v = d / "v"
    v.mkdir()
    for i in range(6):  # 6 clean single-scene videos
        write(cartoon(i % 6, 2.0, phase=0.3 * i), v / f"clean{i}.mp4")
    rng = np.random.default_rng(0)
    base = rng.normal(128, 60, size=(48, 120, 160, 1)).clip(0, 255)
    grain = rng.normal(0, 25, size=(48, 120, 160, 3))
    write((base + grain).clip(0, 255).astype(np.uint8), v / "planted_noise.mp4")
    write(255 - cartoon(1, 2.0, phase=0.7), v / "planted_inverted.mp4")
    c = cartoon(2, 2.0, phase=1.1).astype(np.float32)
    gray = c.mean(axis=-1, keepdims=True)
    write((gray * np.array([1.07, 0.74, 0.43]) * 0.8 + 20).clip(0, 255).astype(np.uint8), v / "planted_sepia.mp4")
    cat = d / "cat.duckdb"
    r = ingest_cli(CliRunner(), cat, v)
    assert r.exit_code == 0, r.output
    return cat


@pytest.fixture(scope="module")
def trained(planted, tmp_path_factory, tiny_sana_dir):
    d = tmp_path_factory.mktemp("planted-run")
    cat = d / "cat.duckdb"
    shutil.copy(planted, cat)
    out = d / "run"
    run_train("--query", "1=1", "--preset", "tiny", "--base-model", tiny_sana_dir, "--catalog", str(cat),
              "--output-dir", str(out), "--no-progress", "--max-steps", "60", "--batch-size", "4",
              "--holdout", "0", "--validation-every", "0", "--checkpoint-every", "30", "--lr", "1e-4")
    return cat, out


def test_per_clip_losses_are_exactly_the_logged_samples(trained):
    cat, out = trained
    samples = [json.loads(x) for x in (out / "logs" / "sample_losses.jsonl").read_text().splitlines()]
    assert len(samples) == 60 * 4  # every sample of every step, once
    by_clip = defaultdict(list)
    for s in samples:
        by_clip[s["clip_id"]].append(s["loss"])
    run_id = json.loads((out / "run.json").read_text())["run_id"]
    got = {c: (n, ml, z) for c, n, ml, z in rows(cat, "SELECT clip_id, samples, mean_loss, mean_z FROM clip_losses "
                                                      "WHERE run_id = ?", [run_id])}
    assert set(got) == set(by_clip)
    for c, losses in by_clip.items():  # the per-clip mean is the mean of the logged per-sample losses
        n, ml, _ = got[c]
        assert n == len(losses) and ml == pytest.approx(sum(losses) / len(losses), rel=1e-9)
    # z: against each sample's sigma bucket over the run; recomputed here from the log
    from train.clip_losses import bucket

    stats = defaultdict(list)
    for s in samples:
        stats[bucket(s["sigma"])].append(s["loss"])
    ms = {b: (np.mean(v), np.std(v)) for b, v in stats.items()}
    zs = defaultdict(list)
    for s in samples:
        m, sd = ms[bucket(s["sigma"])]
        zs[s["clip_id"]].append((s["loss"] - m) / sd if sd > 0 else 0.0)
    for c, v in zs.items():
        assert got[c][2] == pytest.approx(np.mean(v), abs=1e-9)
    # the clips view shows the newest run's numbers, and queries can use them
    view = dict(rows(cat, "SELECT clip_id, train_loss_z FROM clips WHERE train_samples IS NOT NULL"))
    assert view == {c: v[2] for c, v in got.items()}
    hardest = rows(cat, "SELECT clip_id FROM clips WHERE train_loss_z > 0 ORDER BY train_loss_z DESC")
    assert [h[0] for h in hardest] == sorted((c for c, v in got.items() if v[2] > 0), key=lambda c: -got[c][2])


# With the tiny random SANA-Video every input had about the same loss (issue 13: z of the planted
# clips -0.010 .. -0.105 against a clean median of 0.066), so the outlier test runs on the toy
# base (issue 21), which has learned what the world looks like: off-style clips cost it more.
HAVE_TOY = (Path(__file__).resolve().parents[2] / "assets" / "toy" / "sana" / "model_index.json").exists()


@pytest.fixture(scope="module")
def planted_world(tmp_path_factory):
    """Clips of the toy world, plus three off-style ones made from world frames: photographic
    noise, inverted colours and a sepia palette no world clip has."""
    from click.testing import CliRunner

    from dataengine.cli import main
    from dataengine.world import random_scene, render
    import random

    d = tmp_path_factory.mktemp("planted-world")
    v = d / "v"
    r = CliRunner().invoke(main, ["synth", str(v), "--world", "3", "--scenes", "3", "--seed", "5",
                                  "--size", "96x64"])
    assert r.exit_code == 0, r.output
    rng = random.Random(3)
    clip = lambda: render(random_scene(rng, "day"), 2.0, 16, 96, 64)  # noqa: E731
    rs = np.random.default_rng(0)
    base = rs.normal(128, 60, size=(32, 64, 96, 1)).clip(0, 255)
    save = lambda a, name: __import__("dataengine.media", fromlist=["save_mp4"]).save_mp4(a, v / name, 16)  # noqa: E731
    save((base + rs.normal(0, 25, size=(32, 64, 96, 3))).clip(0, 255).astype(np.uint8), "planted_noise.mp4")
    save(255 - clip(), "planted_inverted.mp4")
    gray = clip().astype(np.float32).mean(axis=-1, keepdims=True)
    save((gray * np.array([1.07, 0.74, 0.43]) * 0.8 + 20).clip(0, 255).astype(np.uint8), "planted_sepia.mp4")
    cat = d / "cat.duckdb"
    r = ingest_cli(CliRunner(), cat, v)
    assert r.exit_code == 0, r.output
    run_train("--query", "1=1", "--preset", "toy", "--catalog", str(cat), "--output-dir", str(d / "run"),
              "--no-progress", "--max-steps", "40", "--batch-size", "4", "--holdout", "0",
              "--validation-every", "0", "--checkpoint-every", "0", "--lr", "1e-4")
    return cat


@needs(HAVE_TOY, "no toy weights in assets/toy/sana (train build-toy)")
def test_planted_off_style_clips_rank_above_the_median_clean_clip(planted_world):
    cat = planted_world
    z = {p.rsplit("/", 1)[-1] + f"#{i}": v for i, v, p in rows(cat, "SELECT clip_id, train_loss_z, video_path "
                                                                     "FROM clips ORDER BY clip_id")}
    clean = [v for k, v in z.items() if not k.startswith("planted") and v is not None]
    report = {k: round(v, 3) for k, v in sorted(z.items()) if v is not None}
    print(json.dumps({"loss_z": report, "median_clean": round(median(clean), 3)}, indent=1))
    planted = {k: v for k, v in z.items() if k.startswith("planted")}
    assert len(planted) == 3 and len(clean) >= 6
    for k, v in planted.items():
        assert v is not None and v > median(clean), (k, report)


def test_resume_keeps_the_samples_before_the_checkpoint(planted, tmp_path, tiny_sana_dir):
    cat = tmp_path / "cat.duckdb"
    shutil.copy(planted, cat)
    out = tmp_path / "run"
    args = ("--query", "1=1", "--preset", "tiny", "--base-model", tiny_sana_dir, "--catalog", str(cat),
            "--output-dir", str(out), "--no-progress", "--holdout", "0", "--validation-every", "0",
            "--checkpoint-every", "2")
    r = run_train(*args, "--max-steps", "4", env={"DE_FAULT_KILL_AT_STEP": "3"}, check=False)
    assert r.returncode != 0
    logged = [json.loads(x) for x in (out / "logs" / "sample_losses.jsonl").read_text().splitlines()]
    assert {s["step"] for s in logged} == {1, 2}  # flushed at the step-2 checkpoint
    run_train("--resume", "latest", "--output-dir", str(out), "--no-progress")
    logged = [json.loads(x) for x in (out / "logs" / "sample_losses.jsonl").read_text().splitlines()]
    assert [s["step"] for s in logged] == sorted(s["step"] for s in logged)
    assert {s["step"] for s in logged} == {1, 2, 3, 4} and len(logged) == 4 * 2
    run_id = json.loads((out / "run.json").read_text())["run_id"]
    n = rows(cat, "SELECT sum(samples) FROM clip_losses WHERE run_id = ?", [run_id])[0][0]
    assert n == len(logged)
