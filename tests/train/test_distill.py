"""Distillation on a toy-world run (issue 23): guidance distillation and reflow step distillation.

The teacher is a night LoRA on the toy base. Each test prints its numbers. The students are loaded
back through diffusers (`load_lora_weights` twice, `set_adapters`) for every measurement."""

from __future__ import annotations

import json

import pytest

from helpers import needs
from click.testing import CliRunner

from catalog.assets import assets_dir

pytestmark = [pytest.mark.slow,
              needs((assets_dir() / "toy" / "sana" / "model_index.json").exists(),
                    "needs the toy weights in assets/toy (train build-toy)")]


@pytest.fixture(scope="module")
def night_run(toy_night, tmp_path_factory):
    """A copy of the night run with a small evaluation set (2 windows and 1 prompt x 3 noises =
    9 paired samples), defined before any command uses the set."""
    from helpers import night_copy
    from train.cli import main

    run = night_copy(toy_night, tmp_path_factory.mktemp("distill"))
    r = CliRunner().invoke(main, ["evalset", str(run), "--windows", "2", "--noises", "3", "--prompts", "1"])
    assert r.exit_code == 0 and "= 9 paired samples" in r.output, r.output
    return run


@pytest.fixture(scope="module")
def guidance_student(night_run):
    """The guidance-distilled student of the night run (made once; tests in any order share it)."""
    from train.cli import main

    r = CliRunner().invoke(main, ["distill-guidance", str(night_run), "--train-steps", "60", "--no-progress"])
    assert r.exit_code == 0, r.output
    return night_run / "distill" / "guidance"


@pytest.fixture(scope="module")
def step_student(night_run):
    """The 4-step reflow student of the night run (made once; tests in any order share it)."""
    from train.cli import main

    r = CliRunner().invoke(main, ["distill-steps", str(night_run), "--steps", "4", "--pairs", "1",
                                  "--teacher-steps", "16", "--train-steps", "300", "--no-progress"])
    assert r.exit_code == 0, r.output
    return night_run / "distill" / "steps4"


def test_the_guidance_distilled_pass_is_closer_to_cfg_than_the_conditional_pass(night_run, guidance_student):
    rec = json.loads((night_run / "distill" / "guidance" / "distill.json").read_text())
    print(f"\nguidance distillation: student to CFG velocity {rec['student_to_cfg']:.4f}, conditional pass alone "
          f"{rec['cond_to_cfg']:.4f} (ratio {rec['cond_to_cfg'] / rec['student_to_cfg']:.1f}x)")
    # the margin: at least 2x closer (measured 5.7x)
    assert rec["student_to_cfg"] * 2 < rec["cond_to_cfg"]
    meta = json.loads((night_run / "distill" / "guidance" / "lora_metadata.json").read_text())
    assert meta["objective"] == "guidance_distillation" and meta["distilled_cfg"] == pytest.approx(rec["scale"])


def test_the_step_distilled_student_beats_the_teacher_at_four_steps(step_student):
    out = step_student
    rec = json.loads((out / "distill.json").read_text())
    print(f"\nstep distillation (reflow): 4-step student to the teacher's 32-step output "
          f"{rec['student_to_teacher']:.4f}; the teacher at 4 steps {rec['teacher_short_to_teacher']:.4f} "
          f"(ratio {rec['teacher_short_to_teacher'] / rec['student_to_teacher']:.1f}x)")
    # the margin: at least 1.5x closer
    assert rec["teacher_steps"] == 32 and rec["pair_teacher_steps"] == 16
    assert rec["student_to_teacher"] * 1.5 < rec["teacher_short_to_teacher"]
    # on the run's evaluation set, paired: the interval of the difference says "better", not only the means
    assert rec["samples"] == 9 and rec["evaluation_set"]["samples"] == 9
    assert rec["student_vs_teacher_short"]["verdict"] == "better", rec["student_vs_teacher_short"]
    assert (out / "reflow_pairs.pt").exists()


def test_a_student_loads_through_diffusers_and_takes_effect(night_run, step_student):
    """Both LoRAs through diffusers' own loader onto the toy pipeline: from the same noise, the
    student changes the video, and switching it off (weight 0) gives back the teacher's video."""
    import numpy as np
    import torch
    from diffusers import SanaVideoPipeline

    student = step_student / "pytorch_lora_weights.safetensors"
    pipe = SanaVideoPipeline.from_pretrained(str(assets_dir() / "toy" / "sana"))
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(night_run), weight_name="pytorch_lora_weights.safetensors", adapter_name="style")
    pipe.load_lora_weights(str(student.parent), weight_name=student.name, adapter_name="student")

    def video(weights):
        pipe.set_adapters(["style", "student"], weights)
        return np.asarray(pipe(prompt="A grey cat rests alone in the kitchen at night; the camera is still.",
                               height=64, width=64, frames=9, num_inference_steps=4, guidance_scale=1.0,
                               use_resolution_binning=False, output_type="np",
                               generator=torch.Generator().manual_seed(0)).frames)

    both, teacher_only = video([1.0, 1.0]), video([1.0, 0.0])
    pipe.set_adapters(["style"], [1.0])
    style = np.asarray(pipe(prompt="A grey cat rests alone in the kitchen at night; the camera is still.",
                            height=64, width=64, frames=9, num_inference_steps=4, guidance_scale=1.0,
                            use_resolution_binning=False, output_type="np",
                            generator=torch.Generator().manual_seed(0)).frames)
    assert both.shape[1:4] == (9, 64, 64) and np.isfinite(both).all()
    print(f"\nmean |student on - off| {np.abs(both - teacher_only).mean():.4f}; "
          f"|off - style alone| {np.abs(teacher_only - style).mean():.6f}")
    assert np.abs(both - teacher_only).mean() > 0.01  # the student's weights are applied
    assert np.abs(teacher_only - style).mean() < 1e-4  # and switched off, it is the teacher


def test_distilling_a_run_that_has_not_finished_is_a_clear_error(tmp_path):
    from train.cli import main

    (tmp_path / "config.json").write_text("{}")
    r = CliRunner().invoke(main, ["distill-guidance", str(tmp_path)])
    assert r.exit_code == 1 and "no LoRA at" in r.output and "Traceback" not in r.output


def test_study_dry_run_projects_sampling_memory(night_run):
    from train.cli import main

    r = CliRunner().invoke(main, ["study", str(night_run), "--dry-run"])
    assert r.exit_code == 0, r.output
    print("\n" + r.output)
    assert "teacher with CFG (batch 2 per step)" in r.output and "distilled students (guidance 1, batch 1)" in r.output
    assert "projected for the real 2B at 224x224x81" in r.output


@pytest.mark.parametrize("cmd", ["distill-guidance", "distill-steps"])
def test_dry_run_projects_teacher_and_student_on_the_real_config(night_run, cmd):
    from train.cli import main

    r = CliRunner().invoke(main, [cmd, str(night_run), "--dry-run"])
    assert r.exit_code == 0, r.output
    print("\n" + r.output)
    assert "projected for the real 2B at 224x224x81" in r.output and "student (the LoRA run)" in r.output
    assert ("teacher: the same weights" in r.output) == (cmd == "distill-guidance")
    assert ("pairs kept in host memory" in r.output) == (cmd == "distill-steps")
    assert not (night_run / "distill" / "dry").exists()


def test_the_study_measures_every_variant_against_the_teacher(night_run, guidance_student, step_student):
    """`train study` after the distillations: one report, every variant with its NFE, time, memory
    and distances on the run's evaluation set, each figure with its interval and each variant with a
    verdict against the teacher at its budget; the broken variants of --checks are told apart from
    the teacher by every metric the report keeps; missing axes are named."""
    from train.cli import main

    r = CliRunner().invoke(main, ["study", str(night_run), "--budgets", "8,4", "--captioner", "toy", "--checks",
                                  "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "evaluation set: 2 held-out windows + 1 validation prompts x 3 noises = 9 paired samples" in r.output
    res = json.loads((night_run / "study" / "study.json").read_text())
    rows = {x["variant"]: x for x in res["variants"]}
    print("\n" + (night_run / "study" / "report.md").read_text())
    assert res["samples"] == 9 and res["evaluation_set"]["samples"] == 9 and res["level"] == 0.95
    assert set(rows) == {"teacher@32", "teacher@8", "teacher@4", "guidance-distilled@32", "guidance-distilled@8",
                         "guidance-distilled@4", "step-distilled@4", "check:lora-scale-0@32",
                         "check:student-0-steps@4", "check:block-dropped@32"}
    assert rows["teacher@32"]["latent_distance"] == 0 and rows["teacher@32"]["nfe"] == 64
    assert rows["teacher@32"]["tag_agreement"] == 1.0  # the toy captioner against itself
    assert rows["teacher@32"]["verdict"] == "reference"
    for x in rows.values():  # every figure has its interval, around its mean
        for m in x["metrics"].values():
            assert m["low"] <= m["mean"] <= m["high"] and m["n"] in (2, 9), (x["variant"], m)
    assert rows["step-distilled@4"]["against"] == "teacher@4" and rows["guidance-distilled@8"]["against"] == "teacher@8"
    assert rows["teacher@8"]["against"] == "teacher@32"
    assert all(x["verdict"] in ("better", "worse", "not distinguishable") for k, x in rows.items() if k != "teacher@32")
    assert rows["guidance-distilled@4"]["nfe"] == 4 and rows["teacher@4"]["nfe"] == 8
    assert all(x["seconds_per_video"] > 0 and x["params"] > 0 for x in rows.values())
    assert rows["teacher@4"]["verdict"] == "worse"  # 4 steps are measurably further from 32 than 0 steps
    assert any(x["pareto"] for x in rows.values()) and rows["step-distilled@4"]["eval_loss"] is None
    assert not any(x["pareto"] for x in rows.values() if x["check"])
    # each kept metric tells at least one broken variant from the teacher, with its interval clear of it
    for key, c in res["checks"].items():
        assert c["separates"] or key in res["dropped_metrics"], (key, c)
    assert rows["check:lora-scale-0@32"]["vs"]["latent_distance"]["low"] > 0
    assert rows["check:block-dropped@32"]["vs"]["eval_loss"]["verdict"] == "worse"
    assert any("pruned" in m for m in res["missing"]) and any("LoRA ranks" in m for m in res["missing"])
    assert (night_run / "study" / "quality_vs_latency.png").stat().st_size > 1000
    assert (night_run / "study" / "report.html").exists()
    assert not (night_run / "study" / ".reference_frames.npy").exists()
    assert "Per-tag agreement" in (night_run / "study" / "report.md").read_text() or \
        all(v == 1.0 for x in rows.values() for v in (x["tags"] or {}).values())


def test_the_same_study_twice_gives_the_same_figures(toy_night, tmp_path):
    """Everything the study samples is seeded by the evaluation set: a second run of the same
    command gives the same distances and intervals (only the measured seconds and memory move)."""
    from helpers import night_copy
    from train.cli import main

    run = night_copy(toy_night, tmp_path)
    args = ["study", str(run), "--budgets", "4", "--windows", "1", "--noises", "2", "--prompts", "1", "--no-progress"]
    figures = []
    for _ in range(2):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 0, r.output
        res = json.loads((run / "study" / "study.json").read_text())
        figures.append({x["variant"]: (x["metrics"], x["vs"], x["verdict"]) for x in res["variants"]})
    assert figures[0] == figures[1]
    assert set(figures[0]) == {"teacher@32", "teacher@4"} and res["samples"] == 4
