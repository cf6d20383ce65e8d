"""Issue 33 (trust, round 4), data-engine side."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from dataengine.cli import main

FAST = ["--free", "--max-new-tokens", "12", "--fps", "2", "--max-frames", "4", "--max-pixels", "12544", "--no-progress"]


@pytest.mark.parametrize("damage", ["weights", "config"])
def test_a_damaged_captioner_folder_is_one_line(train_catalog, tiny_vlm_dir, tmp_path, damage):
    model = tmp_path / "model"
    shutil.copytree(tiny_vlm_dir, model)
    if damage == "weights":
        w = next(model.glob("*.safetensors"))
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    else:
        c = model / "config.json"
        c.write_text(c.read_text()[:30])
    cat = tmp_path / "c.duckdb"
    shutil.copy(train_catalog, cat)
    r = CliRunner().invoke(main, ["caption", "--catalog", str(cat), "--model", str(model), *FAST])
    assert r.exit_code == 1, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "cannot load" in r.output and str(model) in r.output


@pytest.fixture(scope="module")
def small_catalog(tmp_path_factory):
    from dataengine import synth
    from helpers import ingest_cli

    d = tmp_path_factory.mktemp("cat")
    synth.make_cartoon(d / "v" / "a.mp4", size=(160, 120), duration_s=3.0, fps=24, cuts=[1.5])
    cat = d / "c.duckdb"
    r = ingest_cli(CliRunner(), cat, d / "v")
    assert r.exit_code == 0, r.output
    return cat


@pytest.mark.parametrize("damage", ["truncated", "zeroed"])
@pytest.mark.parametrize("cmd", [["stats"], ["captions", "list"], ["query", "1=1"], ["dedup"]])
def test_a_damaged_catalog_is_one_line_and_not_busy(small_catalog, tmp_path, damage, cmd, monkeypatch):
    import time

    b = small_catalog.read_bytes()
    bad = tmp_path / "bad.duckdb"
    bad.write_bytes(b[: 3 * 4096 + 100] if damage == "truncated" else b"\0" * len(b))
    monkeypatch.setenv("DE_LOCK_WAIT", "10")
    t0 = time.monotonic()
    r = CliRunner().invoke(main, [*cmd, "--catalog", str(bad)])
    assert r.exit_code == 1, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "busy" not in r.output and time.monotonic() - t0 < 5  # a damaged file is not a lock to wait out


def test_only_duckdbs_lock_message_counts_as_busy():
    from catalog.db import is_lock_error

    assert is_lock_error(Exception('IO Error: Could not set lock on file "/x.duckdb": Conflicting lock is held in '
                                   'python (PID 1)'))
    assert not is_lock_error(Exception("IO Error: Could not read block 12 of file /x.duckdb"))


@pytest.fixture()
def captioned(small_catalog, tmp_path):
    from helpers import caption_copy

    cat = tmp_path / "c.duckdb"
    ids = caption_copy(small_catalog, cat, [("ŞİMDİ the cat runs across the café", ["chase"]),
                                            ("a mouse sleeps under the table", ["chase"])],
                       captioner="seed", version="v1", order="start_s")
    return cat, ids


def test_search_finds_words_outside_ascii_lowercased_as_the_captions_are(captioned):
    from catalog.search import search

    cat, ids = captioned
    for q in ("ŞİMDİ", "şimdi cat", "CAFÉ"):
        got = search(q, cat)
        assert got and got[0]["clip_id"] == ids[0], (q, got)


def test_search_refuses_more_words_than_it_searches_and_limit_zero(captioned):
    cat, _ = captioned
    many = " ".join(f"word{i}" for i in range(40))
    r = CliRunner().invoke(main, ["query", "--search", many, "--catalog", str(cat)])
    assert r.exit_code == 1 and "at most 32" in r.output, r.output
    r = CliRunner().invoke(main, ["query", "--search", "cat", "--limit", "0", "--catalog", str(cat)])
    assert r.exit_code == 2 and "--limit" in r.output



# --- 3. a jump in the frames' times bounds clips like a cut ---------------------------------------------

def test_a_timestamp_gap_never_makes_a_clip_span_it():
    import numpy as np

    from dataengine.scenes import SplitOptions, split_scenes

    times = np.concatenate([np.arange(48) / 24.0, [36000.0]])
    res = split_scenes([], times, SplitOptions(min_duration=1.0, max_duration=10.2, trim_frames=2))
    assert res.clips, "the 2 s before the gap are a clip"
    for c in res.clips:
        assert c.end_s - c.start_s <= 10.2 + 0.1, c
        assert c.end_frame <= 48  # the lone frame after the gap belongs to no clip
    assert sum(c.end_s - c.start_s for c in res.clips) == pytest.approx(2.0, abs=0.05)


def test_a_long_held_vfr_frame_does_not_make_a_window_longer_than_the_limit():
    import numpy as np

    from dataengine.scenes import SplitOptions, split_scenes

    # 24 fps for 6 s, one drawing held 4 s, then 24 fps for 6 s: 16 s of real time in one shot
    times = np.concatenate([np.arange(144) / 24.0, 10.0 + np.arange(144) / 24.0])
    res = split_scenes([], times, SplitOptions(min_duration=1.0, max_duration=5.0))
    assert res.clips
    assert max(c.end_s - c.start_s for c in res.clips) <= 5.0 + 1.5 / 24
    assert sum(c.end_s - c.start_s for c in res.clips) == pytest.approx(16.0, abs=0.05)
