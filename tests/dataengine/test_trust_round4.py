"""Issue 33 (trust, round 4), data-engine side."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from dataengine.cli import main

FAST = ["--free", "--max-new-tokens", "12", "--fps", "2", "--max-frames", "4", "--max-pixels", "12544", "--no-progress"]


@pytest.mark.parametrize("damage", ["weights", "config"])
def test_a_damaged_captioner_folder_is_one_line(train_catalog, tiny_vlm_dir, tmp_path, damage):
    model = tmp_path / "model"
    shutil.copytree(tiny_vlm_dir, model)
    if damage == "weights":
        w = next(model.glob("*.safetensors"))
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    else:
        c = model / "config.json"
        c.write_text(c.read_text()[:30])
    cat = tmp_path / "c.duckdb"
    shutil.copy(train_catalog, cat)
    r = CliRunner().invoke(main, ["caption", "--catalog", str(cat), "--model", str(model), *FAST])
    assert r.exit_code == 1, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "cannot load" in r.output and str(model) in r.output
