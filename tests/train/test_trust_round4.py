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
