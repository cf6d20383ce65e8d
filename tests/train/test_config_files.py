"""train --config (TOML, YAML, a run's config.json), presets as files, and their precedence.

Everything here goes through the CLI; --print-config shows the resolved config without loading a
model or opening a catalog.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path



import pytest
from click.testing import CliRunner

from helpers import run_train
from train.cli import main
from train.config import TrainConfig

ORIGINAL_DOC = Path(__file__).resolve().parents[2] / "docs" / "original_experiment.md"

# docs/original_experiment.md's setup table, row by row, as TrainConfig fields; the test below
# reads the page and checks that this copy says what it says.
ORIGINAL_TABLE = {
    "base model": {"base_model": "Efficient-Large-Model/SANA-Video_2B_480p_diffusers"},
    "trained": {"lora_targets": "linear"},
    "resolution": {"width": 224, "height": 224, "buckets": "square"},
    "clip length": {"frames": 81, "frame_buckets": None},
    "batch size": {"batch_size": 8},
    "optimizer": {"optimizer": "adamw"},
    "learning rate": {"lr": 2e-4},
    "LoRA rank / alpha / dropout": {"rank": 16, "alpha": 32.0, "lora_dropout": 0.1},
    "objective": {},  # flow matching: the only objective train/flow.py has
    "steps": {"max_steps": 10_000},
}
DOC_VALUES = {  # the doc's words for each row, as the table prints them
    "base model": "`Efficient-Large-Model/SANA-Video_2B_480p_diffusers`",
    "trained": "LoRA on every linear layer of the diffusion transformer; the rest frozen",
    "resolution": "224 x 224",
    "clip length": "81 frames",
    "batch size": "8",
    "optimizer": "AdamW, or its 8-bit form (LoRA parameters only)",
    "learning rate": "2e-4",
    "LoRA rank / alpha / dropout": "16 / 32 / 0.1",
    "objective": "flow matching (the model predicts the velocity)",
    "steps": "10,000",
}
# and what the doc says outside the table: class prompt for every clip, seed 69420 at CFG 4
ORIGINAL_PROSE = {"prompt_template": "class", "validation_seed": 69420, "cfg": 4.0, "fps": 16.0}


def cli(*args):
    r = CliRunner().invoke(main, list(args))
    return r


def resolved(*args) -> dict:
    r = cli(*args, "--print-config")
    assert r.exit_code == 0, r.output
    return tomllib.loads(r.output)


def test_seed_preset_is_the_original_table_field_by_field():
    cfg = resolved("--preset", "seed-tomjerry")
    for row, want in ORIGINAL_TABLE.items():
        for field, value in want.items():
            assert cfg.get(field) == value, f"{row}: {field} is {cfg.get(field)!r}, the table says {value!r}"
    for field, value in ORIGINAL_PROSE.items():
        assert cfg[field] == value, field
    # the objective row: flow matching, velocity target (train/flow.py's target is noise - x0)
    from train import flow

    import torch

    x0, noise = torch.zeros(1), torch.ones(1)
    assert flow.target(x0, noise).item() == 1.0


def test_the_copy_of_the_table_matches_the_document():
    text = ORIGINAL_DOC.read_text()
    setup = text.split("## Setup")[1].split("##")[0]
    rows = dict(re.findall(r"^\| (.+?) \| (.+?) \|$", setup, re.M))
    rows.pop("component", None)
    assert rows == DOC_VALUES


def test_preset_files_resolve_to_what_the_presets_were():
    """The presets moved from Python to assets/presets/*.toml; their resolved configs did not change."""
    seed = resolved("--preset", "seed-tomjerry")
    stab = resolved("--preset", "stability-lora64")
    diff = {k for k in set(seed) | set(stab) if seed.get(k) != stab.get(k)}
    assert diff == {"rank", "alpha", "lr", "warmup_steps", "lr_schedule", "max_steps", "preset"}
    assert (stab["rank"], stab["alpha"], stab["lr"], stab["warmup_steps"], stab["lr_schedule"],
            stab["max_steps"]) == (64, 128.0, 1e-4, 500, "cosine", 15_000)
    tiny = resolved("--preset", "tiny")
    assert (tiny["base_model"], tiny["width"], tiny["height"], tiny["frames"], tiny["max_steps"]) == (
        "tiny", 64, 64, 9, 4)
    assert tiny["gradient_checkpointing"] is False and tiny["mixed_precision"] == "no"


def test_command_line_beats_file_beats_preset(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text('preset = "tiny"\nquery = "tags LIKE \'%chase%\'"\nrank = 8\nlr = 1e-3\nmax-steps = 7\n')
    cfg = resolved("--config", str(f), "--rank", "2")
    assert cfg["rank"] == 2  # command line
    assert cfg["lr"] == 1e-3 and cfg["max_steps"] == 7  # file (a dashed key works too)
    assert cfg["base_model"] == "tiny" and cfg["frames"] == 9  # preset
    assert cfg["query"] == "tags LIKE '%chase%'"
    assert cfg["seed"] == 42  # default
    # --preset on the command line replaces the file's preset, and the file still wins over it
    cfg = resolved("--config", str(f), "--preset", "seed-tomjerry")
    assert cfg["preset"] == "seed-tomjerry" and cfg["frames"] == 81 and cfg["rank"] == 8
    # --query on the command line replaces the file's
    assert resolved("--config", str(f), "--query", "1=1")["query"] == "1=1"


def test_yaml_config_including_yaml_1_1_exponents(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("preset: tiny\nlr: 2e-4\nframe_buckets: [9, 5]\nbuckets: auto\nmotion_score: true\n")
    cfg = resolved("--config", str(f))
    assert cfg["lr"] == 2e-4  # PyYAML reads 2e-4 as a string; a float option takes it as the number
    assert cfg["frame_buckets"] == "5,9" and cfg["frames"] == 9 and cfg["buckets"] == "auto"
    assert cfg["motion_score"] is True


def test_print_config_reads_back_identically(tmp_path):
    first = cli("--preset", "stability-lora64", "--rank", "32", "--print-config").output
    f = tmp_path / "mine.toml"
    f.write_text(first)
    assert cli("--config", str(f), "--print-config").output == first


@pytest.mark.parametrize("text,suffix,message", [
    ("rnak = 4\n", ".toml", "unknown option 'rnak' (did you mean rank?)"),
    ("rank = \"16\"\n", ".toml", "rank must be an integer, got '16'"),
    ("gradient_checkpointing = 1\n", ".toml", "gradient_checkpointing must be true or false, got 1"),
    ("[train]\nrank = 4\n", ".toml", "options go at the top level, not in sections (train)"),
    ("rank = = 4\n", ".toml", "not valid TOML"),
    ("rank: [4\n", ".yaml", "not valid YAML"),
    ("- rank\n", ".yaml", "expected a table of options at the top level, got list"),
    ("rank = 4\n", ".ini", "give a .toml, .yaml/.yml or a run's config.json"),
    ("frames = 80\n", ".toml", "--frames must be 1 + 4k"),
    ("frame_buckets = [33, 50]\n", ".toml", "--frame-buckets takes frame counts of the form 1 + 4k"),
    ("buckets = \"320x200\"\n", ".toml", "must be positive multiples of 32"),
    ('preset = "nope"\n', ".toml", "unknown preset 'nope': choose one of seed-tomjerry, stability-lora64, tiny"),
])
def test_bad_config_files_are_one_line_errors(tmp_path, text, suffix, message):
    f = tmp_path / f"bad{suffix}"
    f.write_text(text)
    for extra in (["--print-config"], ["--dry-run"]):
        r = cli("--config", str(f), "--query", "1=1", *extra)
        assert r.exit_code == 1, r.output
        assert message in r.output and "Traceback" not in r.output
        assert r.output.startswith(f"Error: ") and len(r.output.strip().splitlines()) == 1, r.output


def test_missing_config_file_and_a_file_without_a_query(tmp_path):
    r = cli("--config", str(tmp_path / "nope.toml"))
    assert r.exit_code == 1 and "Error: --config" in r.output and "no such file" in r.output
    f = tmp_path / "noquery.toml"
    f.write_text('preset = "tiny"\n')
    r = cli("--config", str(f), "--dry-run")
    assert r.exit_code == 1 and r.output.strip() == 'Error: give --query "WHERE-CLAUSE" (see train --help)'


@pytest.mark.slow
def test_a_run_config_json_repeats_the_run(trained_run, tmp_path, tiny_sana_dir):
    """`train --config runs/a/config.json --output-dir runs/b` trains the same LoRA, bit for bit."""
    from safetensors.torch import load_file

    b = tmp_path / "b"
    r = run_train("--config", str(trained_run / "config.json"), "--output-dir", str(b), "--no-progress")
    assert "Error" not in r.stderr
    ca, cb = (json.loads((d / "config.json").read_text()) for d in (trained_run, b))
    differ = {k for k in ca if ca[k] != cb[k]}
    assert differ == {"name", "output_dir", "config_file"}, differ
    assert cb["config_file"] == str((trained_run / "config.json").absolute())
    wa, wb = (load_file(d / "pytorch_lora_weights.safetensors") for d in (trained_run, b))
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    assert (trained_run / "manifest.jsonl").read_text() == (b / "manifest.jsonl").read_text()
