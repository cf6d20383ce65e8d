"""`train --dry-run --preview DIR`: the frames written are the frames training feeds the VAE."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.mark.slow
def test_the_preview_frames_equal_what_the_loader_feeds_the_model(train_catalog, tmp_path, monkeypatch):
    """A tiny run encodes every window (--cache-all) while a spy keeps the frames the latent cache
    hands the VAE; the preview of the same query holds, window by window, exactly those frames, at
    the run's size, with the prompt the text encoder gets."""
    import shutil

    import train.cache as cache_mod
    from train.preview import read_sheet
    from train.run import start_training

    fed = {}
    real = cache_mod.read_window

    def spy(w, height, width, readers=None):
        frames = real(w, height, width, readers)
        fed[w.key] = frames.copy()
        return frames

    monkeypatch.setattr(cache_mod, "read_window", spy)
    common = dict(query="1=1", preset="tiny", progress=False, echo=lambda *a, **k: None, resume=None)
    cat = shutil.copy(train_catalog, tmp_path / "cat.duckdb")  # a catalog of its own: an empty latent cache
    over = {"catalog": str(cat), "max_steps": 1, "validation_every": 0, "cache_all": True}
    assert start_training(overrides=over, output_dir=str(tmp_path / "run"), dry_run=False, **common) == 0
    assert fed, "the run encoded no window"
    said = []
    assert start_training(overrides=over, output_dir=str(tmp_path / "dry"), dry_run=True,
                          preview=str(tmp_path / "preview"), **{**common, "echo": lambda *a, **k: said.append(a[0])}) == 0
    rows = [json.loads(line) for line in (tmp_path / "preview" / "windows.jsonl").read_text().splitlines()]
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    man = [json.loads(line) for line in (tmp_path / "run" / "manifest.jsonl").read_text().splitlines()
           if line.strip() and '"clip_id"' in line]
    assert len(rows) == len(fed) and {r["key"] for r in rows} == set(fed)
    for r in rows:
        got = read_sheet(tmp_path / "preview" / r["file"], r["frames"], r["size"])
        assert got.shape == fed[r["key"]].shape == (r["frames"], cfg["height"], cfg["width"], 3)
        assert np.array_equal(got, fed[r["key"]]), r["key"]
    prompts = {m["clip_id"]: m["prompt"] for m in man}
    assert all(r["prompt"] == prompts[r["clip_id"]] for r in rows)
    assert (tmp_path / "preview" / "summary.png").stat().st_size > 0
    assert any("preview:" in s and f"{len(rows)} window(s)" in s for s in said)
    assert not (tmp_path / "dry").exists()  # a dry run still writes no run folder


def test_preview_without_dry_run_is_a_usage_error(runner, train_catalog, tmp_path):
    from train.cli import main

    r = runner.invoke(main, ["--query", "1=1", "--preset", "tiny", "--catalog", str(train_catalog),
                             "--preview", str(tmp_path / "p")])
    assert r.exit_code == 2 and "--preview goes with --dry-run" in r.output
    assert not (tmp_path / "p").exists()


def test_a_window_whose_source_is_gone_is_listed_and_the_rest_are_written(runner, train_catalog, tmp_path,
                                                                          monkeypatch):
    import train.data as data

    real = data.read_window
    calls = []

    def flaky(w, *a, **k):
        calls.append(w.key)
        if len(calls) == 1:
            raise FileNotFoundError(f"{w.video_path} is gone")
        return real(w, *a, **k)

    monkeypatch.setattr(data, "read_window", flaky)
    from train.cli import main

    r = runner.invoke(main, ["--query", "1=1", "--preset", "tiny", "--catalog", str(train_catalog), "--dry-run",
                             "--preview", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in (tmp_path / "p" / "windows.jsonl").read_text().splitlines()]
    assert "is gone" in rows[0]["error"] and "file" not in rows[0]
    assert all("file" in x for x in rows[1:]) and "1 could not be read" in r.output
