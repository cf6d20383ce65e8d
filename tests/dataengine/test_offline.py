"""No network: `de caption --model qwen2-vl` fails within seconds and says what to do, or loads
the model from the local cache when it is there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from helpers import rows

pytestmark = pytest.mark.slow  # loads models in subprocesses with the hub unreachable

SMALL = ["--fps", "2", "--max-frames", "4", "--max-pixels", "12544", "--no-progress", "--limit", "2"]



def run(cat, hub, *, offline: bool, endpoint: str | None = None):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT")}
    env.update(HF_HUB_CACHE=str(hub), DE_CATALOG=str(cat))
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "dataengine", "caption", "--model", "qwen2-vl", *SMALL],
                       capture_output=True, text=True, env=env, timeout=120)
    return r, time.perf_counter() - t0


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "refused", "no-route"])
def test_model_not_cached_fails_within_10s_with_what_to_do(cat, tmp_path, how):
    hub = tmp_path / "empty-hub"
    hub.mkdir()
    endpoint = {"HF_HUB_OFFLINE": None, "refused": "http://127.0.0.1:9", "no-route": "http://10.255.255.1"}[how]
    r, secs = run(cat, hub, offline=how == "HF_HUB_OFFLINE", endpoint=endpoint)
    assert r.returncode == 1, r.stdout + r.stderr
    assert secs < 10, secs
    err = r.stderr
    assert "Traceback" not in err
    assert "huggingface-cli download Qwen/Qwen2-VL-2B-Instruct" in err
    assert "HF_HUB_OFFLINE" in err and "local folder" in err
    if how != "HF_HUB_OFFLINE":
        assert "cannot reach the Hugging Face hub" in err
    assert rows(cat, "SELECT count(*) FROM captions")[0][0] == 0


@pytest.mark.slow
def test_unreachable_hub_with_the_model_cached_loads_it_from_the_cache(cat, tmp_path, tiny_vlm_dir):
    hub = tmp_path / "hub"
    repo = hub / "models--Qwen--Qwen2-VL-2B-Instruct"
    shutil.copytree(tiny_vlm_dir, repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    r, secs = run(cat, hub, offline=False, endpoint="http://127.0.0.1:9")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "loading Qwen/Qwen2-VL-2B-Instruct from the local cache" in r.stderr
    assert rows(cat, "SELECT captioner, count(*) FROM captions GROUP BY 1") == [("Qwen/Qwen2-VL-2B-Instruct", 2)]


def test_train_with_a_hub_base_model_offline_fails_within_10s(train_catalog, tmp_path):
    hub = tmp_path / "empty-hub"
    hub.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT")}
    env.update(HF_HUB_CACHE=str(hub), HF_ENDPOINT="http://127.0.0.1:9")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "train.cli", "--query", "1=1", "--catalog", str(train_catalog),
                        "--output-dir", str(tmp_path / "run"), "--no-progress", "--frames", "9", "--height", "64",
                        "--width", "64"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert time.perf_counter() - t0 < 10
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "Traceback" not in out and "cannot reach the Hugging Face hub" in out
    assert "huggingface-cli download Efficient-Large-Model/SANA-Video_2B_480p_diffusers" in out
    assert "--base-model" in out


@pytest.mark.parametrize("cli", ["caption", "train"])
def test_a_model_path_that_does_not_exist_is_a_clear_error(train_catalog, tmp_path, cli):
    """A mistyped local folder is neither loaded nor looked up on the hub: one line says so."""
    missing = str(tmp_path / "models" / "no-such-model")
    if cli == "caption":
        cmd = ["-m", "dataengine", "caption", "--catalog", str(train_catalog), "--model", missing, *SMALL]
    else:
        cmd = ["-m", "train.cli", "--query", "1=1", "--catalog", str(train_catalog), "--base-model", missing,
               "--output-dir", str(tmp_path / "run"), "--no-progress", "--frames", "9", "--height", "64", "--width", "64"]
    r = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert f"'{missing}' is neither a folder on this machine nor a hub model id" in r.stdout + r.stderr
