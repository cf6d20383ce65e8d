"""Issue 33 (trust, round 4), trainer side: experiment commands fail cleanly and resume as what they are."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from helpers import run_train


@pytest.fixture()
def teacher(trained_run, tmp_path):
    """A private copy of the finished tiny run (checkpoints every 2 steps), to distil and break."""
    d = tmp_path / "teacher"
    shutil.copytree(trained_run, d, ignore=shutil.ignore_patterns("distill", "prune", "study", "compress"))
    return d


def _invoke(*args):
    from train.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


# --- 1. a distillation resumes as a distillation, and `train --resume` refuses it ---------------------

@pytest.mark.slow
def test_a_killed_guidance_distillation_resumes_as_itself(teacher):
    r = run_train("distill-guidance", teacher, "--train-steps", "4", "--no-progress",
                  env={"DE_FAULT_KILL_AT_STEP": "3"}, check=False)
    assert r.returncode != 0
    student = teacher / "distill" / "guidance"
    assert (student / "checkpoints" / "step_000002").exists()
    # rerun without --resume: the advice names the command that continues it
    r = _invoke("distill-guidance", teacher, "--train-steps", "4", "--no-progress")
    assert r.exit_code == 1 and f"train distill-guidance {teacher} --resume" in r.output, r.output
    assert "Traceback" not in r.output
    # the plain trainer must not continue it as flow matching
    r = _invoke("--resume", "latest", "--output-dir", student, "--max-steps", "3", "--no-progress")
    assert r.exit_code == 1, r.output
    assert "guidance_distillation" in r.output and f"train distill-guidance {teacher} --resume" in r.output
    assert not (student / "pytorch_lora_weights.safetensors").exists()
    # other settings than it was started with: refused, not silently mixed
    r = _invoke("distill-guidance", teacher, "--train-steps", "4", "--scale", "7", "--resume", "--no-progress")
    assert r.exit_code == 1 and "distilled_cfg" in r.output, r.output
    # --resume continues it from its checkpoint, as the same objective
    r = _invoke("distill-guidance", teacher, "--train-steps", "4", "--resume", "--no-progress")
    assert r.exit_code == 0, r.output
    meta = json.loads((student / "lora_metadata.json").read_text())
    assert meta["objective"] == "guidance_distillation"
    steps = [json.loads(l)["step"] for l in (student / "metrics.jsonl").read_text().splitlines()
             if l.strip() and "loss" in json.loads(l)]
    assert steps[-1] == 4 and 3 in steps


def test_resume_on_a_finished_plain_run_in_a_distill_folder_is_refused(teacher):
    """A folder written by `train` (flow matching) cannot be taken over by distill-steps --resume."""
    student = teacher / "distill" / "steps2"
    student.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(teacher, student, ignore=shutil.ignore_patterns("distill"))
    r = _invoke("distill-steps", teacher, "--steps", "2", "--teacher-steps", "2", "--pairs", "1",
                "--train-steps", "2", "--resume", "--no-progress")
    assert r.exit_code == 1 and "flow_matching" in r.output and "train --resume latest" in r.output, r.output


def test_the_disk_full_message_names_the_command_that_continues_the_run(tmp_path):
    import errno
    from pathlib import Path

    from train.run import _os_error

    maker = {"command": "train distill-steps", "resume": "train distill-steps runs/a --steps 4 --resume"}
    msg = str(_os_error(OSError(errno.ENOSPC, "No space left on device"), Path("runs/a/distill/steps4"), maker))
    assert "train distill-steps runs/a --steps 4 --resume" in msg and "train --resume" not in msg


# --- 9-13: one door for run folders: damaged, missing, foreign, non-finite, unwritable ----------------

READERS = [["compress"], ["study", "--windows", "1", "--noises", "1", "--prompts", "0", "--budgets", "2"], ["prune", "--drop", "1"],
           ["sweep-steps", "--steps-list", "1,2"], ["distill-guidance", "--train-steps", "1"],
           ["distill-steps", "--steps", "1", "--teacher-steps", "2", "--pairs", "1", "--train-steps", "1"]]


def _one_line_error(r, *needles):
    assert r.exit_code == 1, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    for n in needles:
        assert n in r.output, r.output


@pytest.mark.parametrize("cmd", READERS, ids=lambda c: c[0])
def test_a_truncated_lora_is_one_line_for_every_reader(teacher, cmd):
    w = teacher / "pytorch_lora_weights.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    _one_line_error(_invoke(cmd[0], teacher, *cmd[1:], "--no-progress"), "damaged")


def test_generate_with_a_truncated_lora_is_one_line(teacher, tmp_path):
    w = teacher / "pytorch_lora_weights.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    r = _invoke("generate", "--lora", teacher, "--prompt", "a cat", "--steps", "1", "--output", tmp_path / "o.mp4")
    _one_line_error(r, "damaged")


def test_compress_refuses_a_nan_lora_before_the_svd(teacher):
    import torch
    from safetensors.torch import load_file, save_file

    w = teacher / "pytorch_lora_weights.safetensors"
    sd = load_file(str(w))
    k = next(iter(sd))
    sd[k] = torch.full_like(sd[k], float("nan"))
    save_file(sd, str(w))
    _one_line_error(_invoke("compress", teacher, "--no-progress"), "non-finite")


@pytest.mark.parametrize("cmd", [["distill-guidance"], ["distill-steps"], ["study"], ["prune", "--drop", "1"]],
                         ids=lambda c: c[0])
def test_dry_run_on_an_empty_or_damaged_folder_is_one_line(tmp_path, teacher, cmd):
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(_invoke(cmd[0], empty, *cmd[1:], "--dry-run"), "not a run folder")
    cfg = teacher / "config.json"
    cfg.write_text(cfg.read_text()[:40])
    _one_line_error(_invoke(cmd[0], teacher, *cmd[1:], "--dry-run"), "config.json is damaged")


@pytest.mark.parametrize("cmd", READERS[:4] + [["generate"]], ids=lambda c: c[0])
def test_a_lora_for_another_base_model_is_one_line(teacher, cmd, tmp_path):
    from catalog.assets import assets_dir

    toy = assets_dir() / "toy" / "sana"
    cfg = json.loads((teacher / "config.json").read_text())
    cfg["base_model"] = str(toy)
    (teacher / "config.json").write_text(json.dumps(cfg))
    meta = json.loads((teacher / "lora_metadata.json").read_text())
    meta["base_model"] = str(toy)
    (teacher / "lora_metadata.json").write_text(json.dumps(meta))
    if cmd == ["generate"]:
        r = _invoke("generate", "--lora", teacher, "--prompt", "a cat", "--steps", "1", "--output", tmp_path / "o.mp4")
    else:
        r = _invoke(cmd[0], teacher, *cmd[1:], "--no-progress")
    _one_line_error(r, "does not fit the base model")


@pytest.mark.parametrize("cmd", READERS[:3], ids=lambda c: c[0])
def test_an_unwritable_run_folder_fails_before_the_work(teacher, cmd):
    # root ignores permission bits, so the command's output folder is made impossible: a file holds its name
    name = {"compress": "compress", "study": "study", "prune": "prune"}[cmd[0]]
    (teacher / name).write_text("in the way")
    _one_line_error(_invoke(cmd[0], teacher, *cmd[1:], "--no-progress"), "cannot write")


def test_a_full_disk_before_the_work_gives_the_one_disk_full_message(teacher, monkeypatch):
    import errno
    import tempfile

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "mkstemp", full)
    _one_line_error(_invoke("compress", teacher, "--no-progress"), "no space left on the device")


# --- 5. build-toy: a whole model or the old one, never a mix; --quick never replaces the shipped one --

KILLED_BUILD = r"""
import os, signal, sys
from pathlib import Path
from dataengine.atomic import atomic_dir
with atomic_dir(Path(sys.argv[1])) as d:
    (d / "config.json").write_text("new")
    (d / "TOY_MODEL").write_text("new")
    os.kill(os.getpid(), signal.SIGKILL)   # as the first weights file lands
"""


def test_a_build_killed_mid_write_leaves_the_old_model_whole(tmp_path):
    import subprocess
    import sys

    final = tmp_path / "sana"
    final.mkdir()
    for n in ("config.json", "TOY_MODEL", "model.safetensors"):
        (final / n).write_text("old")
    r = subprocess.run([sys.executable, "-c", KILLED_BUILD, str(final)], capture_output=True)
    assert r.returncode == -9
    assert {p.name: p.read_text() for p in final.iterdir()} == {"config.json": "old", "TOY_MODEL": "old",
                                                                 "model.safetensors": "old"}
    from dataengine.atomic import atomic_dir

    with atomic_dir(final) as d:  # a build that completes replaces the folder whole
        (d / "config.json").write_text("new")
    assert [p.name for p in final.iterdir()] == ["config.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".sana.old")]


def test_build_toy_quick_without_out_is_refused(tmp_path):
    r = _invoke("build-toy", "--quick", "--part", "captioner")
    assert r.exit_code == 2 and "--out" in r.output


def test_build_toy_into_an_unwritable_folder_fails_before_training(tmp_path):
    (tmp_path / "f").write_text("x")
    r = _invoke("build-toy", "--quick", "--part", "captioner", "--out", tmp_path / "f" / "toy")
    _one_line_error(r, "cannot write")


def test_distilling_a_lora_for_another_base_model_is_one_line(teacher):
    from catalog.assets import assets_dir

    cfg = json.loads((teacher / "config.json").read_text())
    cfg["base_model"] = str(assets_dir() / "toy" / "sana")
    (teacher / "config.json").write_text(json.dumps(cfg))
    r = _invoke("distill-guidance", teacher, "--train-steps", "1", "--no-progress")
    _one_line_error(r, "does not fit the base model")


# --- issue 35.5: the way in -----------------------------------------------------------------------------

@pytest.mark.slow
def test_missing_weights_say_the_next_step_and_leave_no_run_folder(train_catalog, tmp_path):
    out = tmp_path / "run"
    r = run_train("--query", "1=1", "--preset", "tiny", "--base-model", "nobody/not-a-model", "--catalog",
                  str(train_catalog), "--output-dir", str(out), "--no-progress", env={"HF_HUB_OFFLINE": "1"},
                  check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "hf download nobody/not-a-model" in r.stderr and "train --preset toy" in r.stderr, r.stderr
    assert "nothing was trained" in r.stderr and not out.exists()


def test_a_missing_captioner_says_the_toy_command(tmp_path, monkeypatch):
    from dataengine.caption.models import CaptionModelError, load_captioner

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CaptionModelError) as e:
        load_captioner("nobody/not-a-vlm")
    assert "de caption --model toy" in str(e.value)


# --- issue 35.6: the first step comes quickly (latents encoded as batches first use them) ------------

def _fresh_catalog(train_catalog, tmp_path, name):
    d = tmp_path / name
    d.mkdir()
    shutil.copy(train_catalog, d / "c.duckdb")  # a catalog of its own: its own, empty cache folder
    return d / "c.duckdb"


@pytest.mark.slow
def test_lazy_latents_train_the_same_run_as_an_upfront_cache(train_catalog, tmp_path, tiny_sana_dir):
    from helpers import assert_same_training

    outs = {}
    for mode in ("lazy", "all"):
        cat = _fresh_catalog(train_catalog, tmp_path, mode)
        outs[mode] = tmp_path / f"run-{mode}"
        run_train("--query", "1=1", "--preset", "tiny", "--base-model", tiny_sana_dir, "--catalog", str(cat),
                  "--max-steps", "4", "--validation-every", "0", "--output-dir", str(outs[mode]), "--no-progress",
                  *(["--cache-all"] if mode == "all" else []))
    assert_same_training(outs["lazy"], outs["all"])


@pytest.mark.slow
def test_a_short_run_encodes_only_the_windows_its_steps_use(train_catalog, tmp_path, tiny_sana_dir):
    from train.data import Manifest

    cat = _fresh_catalog(train_catalog, tmp_path, "short")
    out = tmp_path / "short-run"
    r = run_train("--query", "1=1", "--preset", "tiny", "--base-model", tiny_sana_dir, "--catalog", str(cat),
                  "--max-steps", "2", "--batch-size", "1", "--validation-every", "0", "--holdout", "1",
                  "--output-dir", str(out), "--no-progress")
    man = Manifest.read(out / "manifest.jsonl")
    train_n = sum(w.role == "train" for w in man.windows)
    held = sum(w.role == "holdout" for w in man.windows)
    stats = json.loads((out / "logs" / "cache_rank0.json").read_text())
    assert train_n > 2  # the selection holds more windows than the run uses
    assert stats["latents_encoded"] <= 2 * 1 + held, stats  # steps x batch + the held-out windows
    assert "2 encoded" in r.stdout or f"{stats['latents_encoded']} encoded" in r.stdout


# --- issue 36.8: reflow pairs for any number of latent shapes in one batch of jobs ---------------------

def test_reflow_batches_hold_one_shape_each_whatever_the_cut():
    import torch

    from train.distill import same_shape_batches

    # three buckets, the middle one small: a cut every 16 jobs would span all three shapes
    shapes = [(16, 3, 8, 8)] * 10 + [(16, 3, 8, 12)] * 3 + [(16, 3, 12, 8)] * 9
    jobs = [(s, f"w{i}", 0, None) for i, s in enumerate(shapes)]
    batches = same_shape_batches(jobs, 16)
    assert [len(b) for b in batches] == [10, 3, 9]
    assert sum(len(b) for b in batches) == len(jobs)
    for b in batches:
        torch.stack([torch.zeros(j[0]) for j in b])  # one shape per batch: stacks
    assert [len(b) for b in same_shape_batches([((1,), "k", i, None) for i in range(40)], 16)] == [16, 16, 8]
