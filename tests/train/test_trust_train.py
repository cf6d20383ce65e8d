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
    assert r.returncode == 1 and "--lr must be a positive finite number" in r.stderr


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
