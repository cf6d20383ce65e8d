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
# measurements the tool caches per user (train.memory) go to a folder of this test session's
import tempfile  # noqa: E402

os.environ.setdefault("XDG_CACHE_HOME", tempfile.mkdtemp(prefix="de-test-cache-"))
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:  # pytest -n N: share the cores, do not oversubscribe
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))


# The modules that take longest (seconds of one worker, measured), started first: with one module
# per worker at a time (`--dist loadfile`), the last long module to start sets the wall time.
LONGEST = ["tests/train/test_distill.py", "tests/train/test_toy_outcomes.py", "tests/dataengine/test_ray.py",
           "tests/train/test_trust_train.py", "tests/train/test_train_e2e.py", "tests/test_gpu_check.py",
           "tests/train/test_buckets.py", "tests/dataengine/test_offline.py", "tests/train/test_clip_losses.py",
           "tests/train/test_toy_build.py", "tests/dataengine/test_api.py", "tests/train/test_trust_round4.py",
           "tests/train/test_loop_edges.py", "tests/train/test_prune.py", "tests/train/test_sigma_bins.py"]


def _longest_first(items) -> None:
    rank = {m: i for i, m in enumerate(LONGEST)}
    order = {}
    for i, it in enumerate(items):
        order.setdefault(it.nodeid.split("::")[0], i)
    items.sort(key=lambda it: (rank.get(it.nodeid.split("::")[0], len(LONGEST)), order[it.nodeid.split("::")[0]]))


def pytest_collection_modifyitems(config, items):
    """DE_TEST_SHUFFLE=SEED runs the suite in a shuffled order (`make test-shuffled`): the modules
    in a random order, and the tests in a random order within each module, so a test that passes
    only after another one fails. Modules stay whole so module fixtures are made once."""
    seed = os.environ.get("DE_TEST_SHUFFLE")
    if not seed:
        _longest_first(items)
        return
    import random

    rng = random.Random(seed)
    by_module: dict = {}
    for it in items:
        by_module.setdefault(it.nodeid.split("::")[0], []).append(it)
    modules = list(by_module.values())
    rng.shuffle(modules)
    for m in modules:
        rng.shuffle(m)
    items[:] = [it for m in modules for it in m]


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


@pytest.fixture(scope="session")
def tiny_sana_dir(tmp_path_factory):
    from train.models import save_tiny

    d = tmp_path_factory.mktemp("tiny-sana")
    save_tiny(d)
    return str(d)


@pytest.fixture(scope="session")
def train_catalog(videos, tmp_path_factory):
    root, _ = videos
    cat = tmp_path_factory.mktemp("train") / "cat.duckdb"
    from helpers import ingest_cli

    r = ingest_cli(CliRunner(), cat, root)
    assert r.exit_code == 0, r.output
    return cat



@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, train_catalog, tiny_sana_dir):
    """One finished tiny run (4 steps, validation at 0/2/4) shared by the experiment tests."""
    from helpers import run_train

    out = tmp_path_factory.mktemp("runs") / "tiny-run"
    run_train("--query", "1=1", "--preset", "tiny", "--no-progress", "--base-model", tiny_sana_dir,
              "--catalog", str(train_catalog), "--output-dir", str(out))
    return out


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory):
    from dataengine.caption.tiny import save_tiny

    d = tmp_path_factory.mktemp("tiny-qwen2-vl")
    save_tiny(d)
    return str(d)




@pytest.fixture(scope="session")
def toy_night(tmp_path_factory):
    """The toy night LoRA run (helpers.toy_night_run), trained once per test run. Tests that add to
    a run folder take a private copy (`night_copy`); the catalog and its caches stay shared."""
    from helpers import toy_night_run

    return toy_night_run(tmp_path_factory.mktemp("toy-night"))
