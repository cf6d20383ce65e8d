"""The loop's edges, covered systematically (issue 20): every combination of max-steps,
validation-every, checkpoint-every and grad-accum that puts the last step on or off an interval
ends with a LoRA, validation at exactly the expected steps, checkpoints at the expected steps, a
complete metrics log, and a finished run that `--resume latest` recognises."""

from __future__ import annotations

import json
import shutil

import pytest

from helpers import metrics, run_train

pytestmark = pytest.mark.slow  # a tiny training run per combination of options

# (max_steps, validation_every, checkpoint_every, grad_accum)
CASES = [
    (3, 2, 0, 1),   # the reported crash: the last step is not a validation step
    (3, 0, 2, 1),   # no validation at all; a checkpoint before the end
    (4, 2, 2, 1),   # everything on the intervals (the demo's combination)
    (1, 5, 5, 1),   # one step, intervals past the end: validation at 0 and at the last step
    (3, 1, 1, 2),   # every step validated and checkpointed, with accumulation
    (5, 3, 4, 3),   # intervals that do not divide the run, with accumulation
]


def expected_validations(max_steps, every):
    if not every:
        return []
    return sorted({0, *range(every, max_steps + 1, every), max_steps})


@pytest.mark.parametrize("max_steps,val_every,ckpt_every,accum", CASES,
                         ids=[f"steps{a}-val{b}-ckpt{c}-accum{d}" for a, b, c, d in CASES])
def test_every_combination_ends_with_a_lora(tmp_path, train_catalog, max_steps, val_every, ckpt_every, accum):
    from train.lora import check_finite
    from train.run import start_training

    cat = tmp_path / "c.duckdb"
    shutil.copy(train_catalog, cat)
    out = tmp_path / "run"
    lines = []
    rc = start_training(query="1=1", preset="tiny",
                        overrides={"catalog": str(cat), "max_steps": max_steps, "validation_every": val_every,
                                   "checkpoint_every": ckpt_every, "grad_accum": accum, "batch_size": 1,
                                   "validation_steps": 2},
                        output_dir=str(out), resume=None, dry_run=False, progress=False,
                        echo=lambda *a, **k: lines.append(" ".join(map(str, a))))
    assert rc == 0
    lora = out / "pytorch_lora_weights.safetensors"
    assert lora.exists(), "\n".join(lines)
    check_finite(lora)
    m = metrics(out)
    assert [x["step"] for x in m if "loss" in x] == list(range(1, max_steps + 1))
    # validation ran exactly at 0, each multiple of the interval, and the last step (once)
    got = sorted(int(p.name.split("_")[-1]) if p.name != "base" else 0 for p in (out / "validation").iterdir()) \
        if (out / "validation").exists() else []
    assert got == expected_validations(max_steps, val_every)
    evals = [x["step"] for x in m if "eval_loss" in x]
    assert evals == expected_validations(max_steps, val_every)  # every validation logged its eval loss
    ck = sorted(int(p.name.split("_")[-1]) for p in (out / "checkpoints").glob("step_*")) \
        if (out / "checkpoints").exists() else []
    assert ck == [s for s in range(ckpt_every, max_steps, ckpt_every)][-3:] if ckpt_every else ck == []
    assert json.loads((out / "run.json").read_text())["state"] == "finished"
    # resuming a finished run says so and changes nothing
    before = lora.read_bytes()
    r = run_train("--resume", "latest", "--output-dir", str(out), "--no-progress", check=False)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "finished" in (r.stdout + r.stderr)
    assert lora.read_bytes() == before


@pytest.mark.slow
def test_resume_after_a_kill_off_the_validation_interval_finishes(tmp_path, train_catalog):
    """kill -9 after step 2 of 3 (checkpoint at 2, validation every 2): the resumed run validates
    its last step, writes the LoRA, and logs each step once."""
    cat = tmp_path / "c.duckdb"
    shutil.copy(train_catalog, cat)
    out = tmp_path / "k"
    args = ["--query", "1=1", "--preset", "tiny", "--no-progress", "--catalog", str(cat), "--output-dir", str(out),
            "--max-steps", "3", "--validation-every", "2", "--checkpoint-every", "2", "--validation-steps", "2"]
    r = run_train(*args, env={"DE_FAULT_KILL_AT_STEP": "2"}, check=False)
    assert r.returncode != 0 and not (out / "pytorch_lora_weights.safetensors").exists()
    r = run_train("--resume", "latest", "--output-dir", str(out), "--no-progress", check=False)
    assert r.returncode == 0, r.stderr
    assert "resumed from step 2" in r.stderr and "Traceback" not in r.stderr
    assert (out / "pytorch_lora_weights.safetensors").exists()
    assert [x["step"] for x in metrics(out) if "loss" in x] == [1, 2, 3]
    assert (out / "validation" / "step_000003").is_dir()


@pytest.mark.parametrize("option,value,needle", [
    ("--seed", "100000000000000000", "--seed must be an integer in [0, 4294967295]"),
    ("--seed", "-1", "--seed must be an integer in [0, 4294967295]"),
    ("--validation-seed", str(2**64), "--validation-seed must be an integer in [0, 4294967295]"),
    ("--frames", "100001", "--frames must be an integer in [1, 1025]"),
    ("--height", str(2**20), "--height must be an integer in [32, 4096]"),
    ("--rank", "100000", "--rank must be an integer in [1, 4096]"),
    ("--max-steps", str(10**12), "--max-steps must be an integer in [1, 1000000000]"),
    ("--batch-size", str(2**40), "--batch-size must be an integer in [1, 65536]"),
    ("--validation-steps", "100000", "--validation-steps must be an integer in [1, 1000]"),
])
def test_integer_options_are_checked_against_what_their_consumers_accept(train_catalog, tmp_path, option, value,
                                                                         needle):
    r = run_train("--query", "1=1", "--preset", "tiny", option, value, "--catalog", str(train_catalog),
                  "--output-dir", str(tmp_path / "x"), "--dry-run", check=False)
    assert r.returncode in (1, 2) and "Traceback" not in r.stderr, r.stderr
    assert needle in r.stderr
    assert not (tmp_path / "x").exists()


def test_every_integer_field_has_a_range():
    """A new integer option cannot slip in unchecked: each has a range, and both ends pass."""
    from dataclasses import fields

    from train.config import INT_RANGES, TrainConfig

    ints = {f.name for f in fields(TrainConfig) if f.type in ("int", int)}
    assert ints == set(INT_RANGES)
    for name, (lo, hi) in INT_RANGES.items():
        for v in (lo, hi):
            kw = {name: v}
            if name == "frames":
                kw[name] = v - (v - 1) % 4
            if name in ("height", "width"):
                kw[name] = v - v % 32
            TrainConfig(base_model="tiny", **kw)
