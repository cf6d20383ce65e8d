"""Camera motion measured in the decode pass (issue 38.2), against cameras with exact truth."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from helpers import ingest_cli, rows

MEDIA = sorted((Path(__file__).resolve().parents[1] / "media").glob("*.mp4"))


@pytest.fixture(scope="module")
def picture():
    from dataengine.camera_synth import real_picture

    return real_picture(MEDIA[0], random.Random(0))


def test_a_known_shift_zoom_and_turn_are_recovered(picture):
    import cv2

    from dataengine.camera import fit_pair

    g = cv2.cvtColor(cv2.resize(picture, (256, 144), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    m = cv2.getRotationMatrix2D((128, 72), 2.0, 1.05)  # 2 degrees, 5% larger, about the centre
    m[:, 2] += (5.12, -2.88)                            # then 2% of the width right, 2% of the height up
    moved = cv2.warpAffine(g, m, (256, 144), borderMode=cv2.BORDER_REFLECT)
    dx, dy, ls, deg = fit_pair(g, moved)
    assert dx == pytest.approx(0.02, abs=0.003) and dy == pytest.approx(-0.02, abs=0.003)
    assert ls == pytest.approx(np.log(1.05), abs=0.005) and deg == pytest.approx(-2.0, abs=0.2)  # OpenCV's y is down


@pytest.mark.parametrize("kind", ["static", "pan left", "pan right", "tilt up", "tilt down", "zoom in", "zoom out",
                                  "shake"])
def test_each_camera_on_real_footage_gets_its_label(picture, kind):
    from dataengine.camera import CameraTracker, clip_camera
    from dataengine.camera_synth import KINDS, render

    clip = render(picture, kind, random.Random(KINDS.index(kind)), n=48, fps=24.0)
    tr = CameraTracker(stride=3)
    tr.update(clip)
    assert clip_camera(tr.arrays(), 0, len(clip), 24.0)["camera_measured"] == kind


def test_ingest_stores_the_camera_and_it_is_queryable(runner, tmp_path, picture):
    """Two videos through `de ingest`: a pan right and a still camera over real frames; the clips
    carry the labels and rates, `de query` selects by them and `de stats` counts them."""
    from dataengine.camera_synth import render
    from dataengine.cli import main
    from dataengine.media import save_mp4

    vids = tmp_path / "v"
    vids.mkdir()
    save_mp4(render(picture, "pan right", random.Random(1), n=72, fps=24.0), vids / "pan.mp4", 24.0)
    save_mp4(render(picture, "static", random.Random(2), n=72, fps=24.0), vids / "still.mp4", 24.0)
    cat = tmp_path / "c.duckdb"
    r = ingest_cli(runner, cat, vids)
    assert r.exit_code == 0, r.output
    got = dict(rows(cat, "SELECT video_path, camera_measured FROM clips"))
    assert got == {str(vids / "pan.mp4"): "pan right", str(vids / "still.mp4"): "static"}, got
    pan = rows(cat, "SELECT cam_pan, cam_tilt FROM clips WHERE video_path LIKE '%pan.mp4'")[0]
    assert pan[0] > 0.05 and abs(pan[1]) < 0.03
    r = runner.invoke(main, ["query", "camera_measured = 'static'", "--catalog", str(cat), "--columns", "video_path"])
    assert r.exit_code == 0 and "still.mp4" in r.output and "pan.mp4" not in r.output
    r = runner.invoke(main, ["stats", "--catalog", str(cat)])
    assert "camera (measured in the decode pass): " in r.output and "pan right 1" in r.output
