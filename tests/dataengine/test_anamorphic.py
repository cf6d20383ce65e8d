"""Anamorphic sources (non-square pixels, as on DVDs): the catalog keeps the sample aspect ratio,
and everything that reads frames sees them as a player shows them."""

from __future__ import annotations

import re
from fractions import Fraction

import duckdb
import pytest
from click.testing import CliRunner

from helpers import ingest_cli, rows, run_train
from dataengine import synth
from dataengine.clipread import ClipReader
from dataengine.video import probe


@pytest.fixture(scope="module")
def anamorphic(tmp_path_factory):
    """240x180 stored at SAR 4:3 (a 16:9 picture), beside a 320x180 square-pixel twin."""
    root = tmp_path_factory.mktemp("anamorphic")
    synth.make_cartoon(root / "v" / "squeezed.mp4", size=(240, 180), sar=Fraction(4, 3), duration_s=4.0, fps=24,
                       cuts=[2.0])
    synth.make_cartoon(root / "v" / "square.mp4", size=(320, 180), duration_s=3.0, fps=24, cuts=[])
    cat = root / "cat.duckdb"
    r = ingest_cli(CliRunner(), cat, root / "v")
    assert r.exit_code == 0, r.output
    return root, cat


def test_probe_and_catalog_keep_the_sample_aspect_ratio(anamorphic):
    root, cat = anamorphic
    assert probe(root / "v" / "squeezed.mp4").sar == pytest.approx(4 / 3)
    got = dict(rows(cat, "SELECT regexp_extract(path, '[^/]+$'), sar FROM videos"))
    assert got["squeezed.mp4"] == pytest.approx(4 / 3) and got["square.mp4"] == 1.0
    view = rows(cat, "SELECT DISTINCT width, height, round(sar, 4) FROM clips WHERE video_path LIKE '%squeezed%'")
    assert view == [(240, 180, 1.3333)]
    # keyframes (what `de serve` shows) are stretched to the display aspect too
    import cv2

    for (kf,) in rows(cat, "SELECT keyframe_path FROM clips"):
        h, w = cv2.imread(kf).shape[:2]
        assert abs(w / h - 16 / 9) < 0.03, (kf, w, h)


def test_frames_are_read_at_the_display_aspect(anamorphic):
    root, _ = anamorphic
    r = ClipReader(str(root / "v" / "squeezed.mp4"))
    assert r.size == (320, 180)
    frames, _ = r.read(0.0, 1.0, 8.0)
    assert frames.shape[1:] == (180, 320, 3)
    # the same picture as the square-pixel twin drawn at 320x180 (same scene, same time): round
    # things stay round
    twin, _ = ClipReader(str(root / "v" / "square.mp4")).read(0.0, 1.0, 8.0)
    diff = abs(frames[:4].astype(int) - twin[:4].astype(int)).mean()
    assert diff < 12, diff


def test_export_writes_square_pixels(anamorphic, tmp_path):
    _, cat = anamorphic
    from dataengine.cli import main

    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["export", str(out), "--catalog", str(cat), "--query", "video_path LIKE '%squeezed%'",
                                  "--max-side", "160", "--no-progress"])
    assert r.exit_code == 0, r.output
    files = sorted(out.rglob("*.mp4"))
    assert files
    for f in files:
        info = probe(f)
        assert (info.width, info.height, info.sar) == (160, 90, 1.0)


@pytest.mark.slow
def test_buckets_use_the_display_aspect(anamorphic):
    _, cat = anamorphic
    r = run_train("--query", "video_path LIKE '%squeezed%'", "--preset", "tiny", "--width", "224", "--height", "224",
                  "--frames", "9", "--catalog", str(cat), "--buckets", "auto", "--holdout", "0", "--dry-run")
    m = re.search(r"^buckets \(WxHxF: train windows\): (.+); largest crop (\d+)%", r.stdout, re.M)
    assert m and re.fullmatch(r"288x160x9: \d+", m.group(1)), r.stdout  # 16:9, not the stored 4:3
    assert int(m.group(2)) <= 1


def test_an_older_catalog_learns_the_ratio_on_the_next_ingest(anamorphic, tmp_path):
    import shutil

    root, cat = anamorphic
    old = tmp_path / "old.duckdb"
    shutil.copy(cat, old)
    con = duckdb.connect(str(old))
    con.execute("UPDATE videos SET sar = NULL")  # what migration 7 leaves for videos ingested before it
    con.close()
    assert rows(old, "SELECT DISTINCT sar FROM clips") == [(1.0,)]  # unknown shows as square
    r = ingest_cli(CliRunner(), old, root / "v")
    assert r.exit_code == 0 and "skipped 2" in r.output, r.output
    got = dict(rows(old, "SELECT regexp_extract(path, '[^/]+$'), sar FROM videos"))
    assert got["squeezed.mp4"] == pytest.approx(4 / 3) and got["square.mp4"] == 1.0
