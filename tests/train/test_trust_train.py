"""Issue #9, trainer side: a diverged run never reports success; the cache is a cache; run
folders always resume or fail cleanly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from helpers import metrics, rows, run_train

pytestmark = pytest.mark.slow  # each test trains a tiny run, some kill it and resume

TINY = ["--preset", "tiny", "--no-progress"]


# --- 3. a diverged run never reports success ----------------------------------------------------

def test_a_run_whose_weights_go_nan_fails_and_keeps_the_last_finite_checkpoint(tmp_path, train_catalog,
                                                                                 tiny_sana_dir):
    cat = tmp_path / "c.duckdb"
    shutil.copy(train_catalog, cat)
    out = tmp_path / "div"
    r = run_train("--query", "1=1", *TINY, "--base-model", tiny_sana_dir, "--catalog", str(cat),
                  "--validation-every", "0", "--checkpoint-every", "2", "--max-steps", "4",
                  "--output-dir", str(out), "--name", "div", env={"DE_FAULT_NAN_AT_STEP": "3"}, check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "training diverged at step 3" in r.stderr and "step_000002" in r.stderr
    assert not (out / "pytorch_lora_weights.safetensors").exists()
    from train.lora import check_finite

    check_finite(out / "checkpoints" / "step_000002" / "lora.safetensors")  # the kept checkpoint is finite
    assert not (out / "checkpoints" / "step_000004").exists()
    st = rows(cat, "SELECT status, error FROM runs WHERE run_id = 'train-div'")
    assert st[0][0] == "failed" and "diverged at step 3" in st[0][1]
    # train compare sees it
    from train.cli import main

    rc = CliRunner().invoke(main, ["compare", str(out), "--output-dir", str(tmp_path / "cmp")])
    assert rc.exit_code == 0, rc.output
    res = json.loads((tmp_path / "cmp" / "compare.json").read_text())["runs"][0]
    assert res["diverged_at"] == 3 and 3 in res["loss_explosions"]


def test_lr_inf_is_refused(train_catalog, tmp_path):
    r = run_train("--query", "1=1", *TINY, "--lr", "inf", "--catalog", str(train_catalog), "--output-dir",
                  str(tmp_path / "x"), check=False)
    assert r.returncode == 1 and "--lr must be a finite number, got inf" in r.stderr


def test_nonfinite_gradient_skips_the_step_before_the_optimizer(tmp_path, train_catalog, monkeypatch):
    from train import loop
    from train.run import start_training

    calls = {"n": 0}
    real = loop._grad_norm

    def flaky(params):
        calls["n"] += 1
        return float("inf") if calls["n"] <= 2 else real(params)

    monkeypatch.setattr(loop, "_grad_norm", flaky)
    out = tmp_path / "g"
    start_training(query="1=1", preset="tiny", overrides={"catalog": str(train_catalog), "validation_every": 0,
                                                          "max_steps": 4, "checkpoint_every": 0, "grad_clip": 0.0},
                   output_dir=str(out), resume=None, dry_run=False, progress=False, echo=lambda *a, **k: None)
    m = metrics(out)
    assert [x["step"] for x in m if x.get("nonfinite_grad")] == [1, 2]
    assert [x["step"] for x in m if "loss" in x] == [3, 4]
    from train.lora import check_finite

    check_finite(out / "pytorch_lora_weights.safetensors")


def test_generate_and_eval_refuse_a_nonfinite_lora(trained_run, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    f = run / "pytorch_lora_weights.safetensors"
    sd = load_file(str(f))
    k = next(iter(sd))
    sd[k] = torch.full_like(sd[k], float("nan"))
    save_file(sd, str(f))
    from train.cli import main

    r = CliRunner().invoke(main, ["generate", "--lora", str(run), "--prompt", "a cat", "--steps", "1"])
    assert r.exit_code == 1 and "non-finite weights in 1 of" in r.output
    r = CliRunner().invoke(main, ["sweep-steps", str(run), "--steps", "1,2"])
    assert r.exit_code == 1 and "non-finite weights" in r.output


# --- 4. the cache is a cache ----------------------------------------------------------------------

KEY_SCRIPT = """
import sys
from train.models import load_components
from train.cache import Cache
from train.data import Window
c = load_components(sys.argv[1])
cache = Cache("/nonexistent", c, 64, 64, 300)
w = Window(clip_id="c", video_id="v" * 32, video_path="/x.mp4", clip_start_s=0.0, clip_end_s=2.0, window_index=0,
           start_s=0.0, frames=9, fps=16.0, prompt="p", labelling=None, motion_score=None)
print(cache.latent_path(w).name, cache.text_path("a prompt").name)
"""


@pytest.mark.slow
def test_cache_keys_are_the_same_in_every_process(tiny_sana_dir):
    outs = []
    for seed in ("1", "2", "3"):
        r = subprocess.run([sys.executable, "-c", KEY_SCRIPT, tiny_sana_dir], capture_output=True, text=True,
                           env=dict(os.environ, PYTHONHASHSEED=seed), timeout=300)
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout.split())
    assert outs[0] == outs[1] == outs[2]


def test_a_second_run_reuses_the_cache_and_replaces_corrupt_entries(tmp_path, train_catalog, tiny_sana_dir):
    from catalog.db import cache_dir

    cat = tmp_path / "c.duckdb"
    shutil.copy(train_catalog, cat)
    common = ["--query", "1=1", *TINY, "--base-model", tiny_sana_dir, "--catalog", str(cat), "--validation-every", "0",
              "--checkpoint-every", "0", "--max-steps", "1"]
    r1 = run_train(*common, "--output-dir", str(tmp_path / "a"))
    assert "0 latents reused" in r1.stdout
    lat = sorted((cache_dir(cat) / "train" / "latents").glob("*.safetensors"))
    txt = sorted((cache_dir(cat) / "train" / "text").glob("*.safetensors"))
    with open(lat[0], "r+b") as f:  # truncated, as a kill mid-copy or a full disk leaves it
        f.truncate(lat[0].stat().st_size // 2)
    txt[0].write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    r2 = run_train(*common, "--output-dir", str(tmp_path / "b"))
    assert "Traceback" not in r2.stderr
    n = len(lat)
    assert f"{n - 1} latents reused, 1 encoded" in r2.stdout and "2 corrupt entries replaced" in r2.stdout
    meta = json.loads((tmp_path / "b" / "run.json").read_text())
    assert meta["cache"]["latents_reused"] == n - 1 and meta["cache"]["corrupt_replaced"] == 2
    assert meta["state"] == "finished"


# --- 5. run folders that always resume or fail cleanly --------------------------------------------

def test_resume_falls_back_past_a_damaged_checkpoint_and_cleans_partial_ones(tmp_path, train_catalog, tiny_sana_dir):
    out = tmp_path / "r"
    args = ["--query", "1=1", *TINY, "--base-model", tiny_sana_dir, "--catalog", str(train_catalog),
            "--validation-every", "0", "--checkpoint-every", "1", "--keep-checkpoints", "3", "--max-steps", "4"]
    r = run_train(*args, "--output-dir", str(out), env={"DE_FAULT_KILL_AT_STEP": "3"}, check=False)
    assert r.returncode == -9
    ck = out / "checkpoints"
    (ck / "step_000003" / "optimizer.pt").unlink()  # damaged newest checkpoint
    (ck / "step_000004.tmp").mkdir()  # what a kill during a save leaves
    r = run_train("--resume", "latest", "--output-dir", str(out), "--no-progress", check=False)
    assert r.returncode == 0, r.stderr
    assert not (ck / "step_000004.tmp").exists() and "removed partial checkpoint step_000004.tmp" in r.stderr
    assert "resumed from" in r.stderr and "step_000002" in r.stderr
    m = metrics(out)
    assert [x["step"] for x in m if "loss" in x] == [1, 2, 3, 4]
    assert json.loads((out / "run.json").read_text())["state"] == "finished"


def test_resume_with_no_checkpoint_restarts_and_empty_folder_is_explained(tmp_path, train_catalog, tiny_sana_dir):
    out = tmp_path / "r0"
    r = run_train("--query", "1=1", *TINY, "--base-model", tiny_sana_dir, "--catalog", str(train_catalog),
                  "--validation-every", "0", "--checkpoint-every", "0", "--max-steps", "2",
                  "--output-dir", str(out), env={"DE_FAULT_KILL_AT_STEP": "1"}, check=False)
    assert r.returncode == -9 and (out / "run.json").exists()
    r = run_train("--resume", "latest", "--output-dir", str(out), "--no-progress", check=False)
    assert r.returncode == 0, r.stderr
    assert "restarting" in r.stderr and [x["step"] for x in metrics(out) if "loss" in x] == [1, 2]
    r = run_train("--resume", "latest", "--output-dir", str(out), "--no-progress", check=False)
    # a finished run: said so, exit 0, no model loaded (so no cache or load messages)
    assert r.returncode == 0 and "nothing to resume" in r.stdout and "finished all 2 steps" in r.stdout
    assert "LoRA:" not in r.stdout and "Loading" not in r.stderr
    # options a resume cannot apply are named, not silently dropped
    r = run_train("--resume", "latest", "--output-dir", str(out), "--no-progress", "--rank", "8", "--preset", "tiny",
                  check=False)
    assert r.returncode == 0 and "ignored: --rank (only --max-steps and --log-every apply)" in r.stderr
    assert "--preset is not read" in r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_train("--resume", "latest", "--output-dir", str(empty), check=False)
    assert r.returncode == 1 and "nothing to resume" in r.stderr and "remove the folder" in r.stderr


def test_a_moved_library_resumes_from_another_directory(tmp_path, videos, tiny_sana_dir):
    from catalog.db import cache_dir

    lib = tmp_path / "lib"
    shutil.copytree(videos[0], lib)
    cat = tmp_path / "c.duckdb"
    runner = CliRunner()
    from helpers import ingest_cli

    assert ingest_cli(runner, cat, lib).exit_code == 0
    out = tmp_path / "run"
    r = run_train("--query", "1=1", *TINY, "--base-model", tiny_sana_dir, "--catalog", str(cat),
                  "--validation-every", "0", "--checkpoint-every", "1", "--max-steps", "3",
                  "--output-dir", str(out), env={"DE_FAULT_KILL_AT_STEP": "2"}, check=False)
    assert r.returncode == -9
    cfg = json.loads((out / "config.json").read_text())
    assert os.path.isabs(cfg["catalog"])
    lib.rename(tmp_path / "moved")  # the library moves, and is re-ingested at its new path
    assert ingest_cli(runner, cat, tmp_path / "moved").exit_code == 0
    shutil.rmtree(cache_dir(cat) / "train" / "latents")  # so frames must really be read again
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = subprocess.run([sys.executable, "-m", "train.cli", "--resume", "latest", "--output-dir", str(out),
                        "--no-progress"], cwd=elsewhere, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "read from their videos' current paths" in r.stdout
    assert [x["step"] for x in metrics(out) if "loss" in x] == [1, 2, 3]
    assert not (elsewhere / "catalog.duckdb").exists()


def test_an_unwritable_catalog_does_not_stop_a_run(tmp_path, train_catalog, monkeypatch):
    from catalog.db import CatalogError
    from train import run as runmod

    def refuse(*a, **k):
        raise CatalogError("cannot write to catalog: read-only file system")

    monkeypatch.setattr(runmod, "record_start", refuse)
    said = []
    out = tmp_path / "ro"
    runmod.start_training(query="1=1", preset="tiny", overrides={"catalog": str(train_catalog), "validation_every": 0,
                                                                 "max_steps": 1, "checkpoint_every": 0},
                          output_dir=str(out), resume=None, dry_run=False, progress=False,
                          echo=lambda *a, **k: said.append(" ".join(map(str, a))))
    assert any("not recorded in the catalog" in x for x in said)
    assert (out / "pytorch_lora_weights.safetensors").exists()
    assert json.loads((out / "run.json").read_text())["state"] == "finished"


def test_a_busy_catalog_is_a_clear_error_and_wandb_is_checked_first(tmp_path, train_catalog, tiny_sana_dir):
    import importlib.util

    cat = tmp_path / "c.duckdb"
    shutil.copy(train_catalog, cat)
    if importlib.util.find_spec("wandb") is None:
        r = run_train("--query", "1=1", *TINY, "--catalog", str(cat), "--report-to", "wandb",
                      "--output-dir", str(tmp_path / "w"), check=False)
        assert r.returncode == 1 and "needs wandb, which is not installed" in r.stderr
        assert not (tmp_path / "w").exists()
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                               "print('held', flush=True); time.sleep(120)", str(cat)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = run_train("--query", "1=1", *TINY, "--base-model", tiny_sana_dir, "--catalog", str(cat),
                      "--validation-every", "0", "--max-steps", "1", "--output-dir", str(tmp_path / "b"),
                      env={"DE_LOCK_WAIT": "1"}, check=False)
    finally:
        holder.kill()
        holder.wait()
    assert r.returncode == 1 and "is busy" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "b").exists()


def test_a_full_disk_under_the_run_folder_fails_cleanly_and_resumes(tmp_path, train_catalog, tiny_sana_dir):
    mnt = tmp_path / "small"
    mnt.mkdir()
    m = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if m.returncode:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            f"needs a tmpfs mount (root or CAP_SYS_ADMIN): {m.stderr.decode().strip()}")
    try:
        filler = mnt / "filler"
        free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
        with open(filler, "wb") as f:  # room for the frozen run (~75 KB) but not a checkpoint (~136 KB)
            f.write(b"\0" * (free - 160 * 1024))
        out = mnt / "run"
        r = run_train("--query", "1=1", *TINY, "--base-model", tiny_sana_dir, "--catalog", str(train_catalog),
                      "--validation-every", "0", "--checkpoint-every", "1", "--max-steps", "2",
                      "--output-dir", str(out), check=False)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
        assert "no space left on the device holding" in r.stderr
        assert not list((out / "checkpoints").glob("*.tmp")) if (out / "checkpoints").exists() else True
        filler.unlink()
        r = run_train("--resume", "latest", "--output-dir", str(out), "--no-progress", check=False)
        assert r.returncode == 0, r.stderr[-3000:]
        assert (out / "pytorch_lora_weights.safetensors").exists()
        assert [x["step"] for x in metrics(out) if "loss" in x] == [1, 2]
    finally:
        subprocess.run(["umount", "-l", str(mnt)])
