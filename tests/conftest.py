"""Shared fixtures: synthetic cartoons with known cuts, CLI runner, catalogs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def videos(tmp_path_factory):
    """A folder of cartoons in several codecs/containers, plus the ground truth per file."""
    from dataengine import synth

    root = tmp_path_factory.mktemp("videos")
    truth = {}
    specs = {
        "h264 cartoon.mp4": dict(duration_s=6.0, fps=24, cuts=[2.0, 4.0]),
        "mkv_h264.mkv": dict(duration_s=5.0, fps=25, cuts=[2.2]),
        "vp8.webm": dict(duration_s=5.0, fps=24, cuts=[1.5, 3.5]),
        "mpeg4.mov": dict(duration_s=5.0, fps=30, cuts=[2.5]),
        "vfr.mkv": dict(duration_s=6.0, fps=24, cuts=[2.5, 4.5], vfr=True),
        "dessin animé é.mp4": dict(duration_s=4.0, fps=24, cuts=[2.0]),
    }
    for name, kw in specs.items():
        truth[name] = synth.make_cartoon(root / name, size=(240, 180), **kw)
    return root, truth


@pytest.fixture()
def video_dir(videos, tmp_path):
    """A private copy of the good videos (tests may add bad files next to them)."""
    root, truth = videos
    d = tmp_path / "raw"
    shutil.copytree(root, d)
    return d, truth


@pytest.fixture()
def runner():
    return CliRunner()


@pytest.fixture()
def catalog_path(tmp_path) -> Path:
    return tmp_path / "cat.duckdb"
