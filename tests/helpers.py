"""Helpers shared by tests (import as `from helpers import ...`)."""

import json
import os
import subprocess
import sys
from pathlib import Path


def ingest_cli(runner, catalog, *paths, extra=()):
    from dataengine.cli import main

    return runner.invoke(main, ["ingest", *map(str, paths), "--catalog", str(catalog), "--no-progress",
                                "--workers", "2", *extra])


def run_train(*args, env=None, check=True):
    e = dict(os.environ, **(env or {}))
    r = subprocess.run([sys.executable, "-m", "train.cli", *args], capture_output=True, text=True, env=e)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def metrics(run_dir):
    return [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl")) if l.strip()]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_same_training(a, b):
    """Two run folders trained the same LoRA (to float tolerance) with the same logged losses:
    what one process and several must agree on for the same global batch."""
    import pytest
    import torch
    from safetensors.torch import load_file

    wa = load_file(os.path.join(a, "pytorch_lora_weights.safetensors"))
    wb = load_file(os.path.join(b, "pytorch_lora_weights.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        # atol 1e-5, a twentieth of one step at lr 2e-4: Adam divides by the gradient's own size,
        # so where the gradient is ~0 the two reduction orders' rounding noise becomes a step of
        # its own (1.1e-6 once, in a loaded full-suite run); different data moves whole tensors
        assert torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-5), (k, (wa[k] - wb[k]).abs().max())
    la = [x["loss"] for x in metrics(a) if "loss" in x]
    lb = [x["loss"] for x in metrics(b) if "loss" in x]
    assert la == pytest.approx(lb, rel=1e-4)  # the logged loss is the global batch's on both


def rows(catalog, sql, params=()):
    """Run a read-only query on a catalog file (tests check rows directly, not through our code)."""
    import duckdb

    con = duckdb.connect(str(catalog), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def tables(md: str) -> list[list[list[str]]]:
    """The markdown tables of a report, as rows of cells (escaped pipes honoured)."""
    from train.experiments.report import split_row

    out, cur = [], None
    for line in md.splitlines():
        if line.startswith("|"):
            if cur is None:
                cur = []
                out.append(cur)
            cur.append(split_row(line))
        else:
            cur = None
    return out


def assert_well_formed(md: str) -> None:
    """Every table: one header row, a delimiter row of as many cells, rows of as many cells."""
    ts = tables(md)
    assert ts, "no table"
    for t in ts:
        n = len(t[0])
        assert all(set(c) <= set("-: ") for c in t[1]) and len(t[1]) == n, t[:2]
        assert all(len(r) == n for r in t[2:]), t


def toy_night_run(d, max_steps: int = 60):
    """A night LoRA on the toy world (6 videos of 4 scenes, seed 77) in d/night: the teacher the
    pruning and distillation tests start from."""
    from click.testing import CliRunner

    from dataengine.cli import main as de
    from train.run import start_training

    assert CliRunner().invoke(de, ["synth", str(d / "v"), "--world", "6", "--scenes", "4", "--seed", "77"]).exit_code == 0
    cat = d / "c.duckdb"
    assert ingest_cli(CliRunner(), cat, d / "v").exit_code == 0
    assert CliRunner().invoke(de, ["synth", str(d / "v"), "--truth-into", str(cat)]).exit_code == 0
    out = d / "night"
    rc = start_training(query="time_of_day = 'night'", preset="toy",
                        overrides={"catalog": str(cat), "max_steps": max_steps, "validation_every": 0},
                        output_dir=str(out), resume=None, dry_run=False, progress=False, echo=lambda *a, **k: None)
    assert rc == 0
    return out


def night_copy(run, d):
    """A private copy of a finished run folder (the LoRA, config, manifest and records) in d/night:
    what a test writes into it (distill/, prune/, study/) is seen by no other module."""
    import shutil

    return Path(shutil.copytree(run, d / "night"))


def needs(present: bool, reason: str):
    """skipif for a missing input, except under CI=true, where a test whose inputs are missing must
    fail rather than pass having compared nothing."""
    import pytest

    return pytest.mark.skipif(not present and not os.environ.get("CI"), reason=reason)


def caption_copy(src, dst, captions, *, captioner="v", version="1", order="clip_id") -> list[str]:
    """Copy the catalog `src` to `dst` and give its clips (in `order`) the labelling `captioner`@`version`:
    `captions` is a list of (caption, tags), one per clip from the first; later clips stay uncaptioned.
    Returns every clip id in that order."""
    import shutil

    import duckdb

    from catalog import labels

    shutil.copy(src, dst)
    con = duckdb.connect(str(dst))
    ids = [r[0] for r in con.execute(f"SELECT clip_id FROM clips ORDER BY {order}").fetchall()]
    for cid, (text, tags) in zip(ids, captions):
        con.execute("INSERT INTO captions (clip_id, captioner, prompt_version, status, caption, tag_list, fields, "
                    "raw_output, created_at) VALUES (?, ?, ?, 'ok', ?, ?, '{}', ?, current_timestamp)",
                    [cid, captioner, version, text, tags, text])
    labels.refresh(con)
    con.close()
    return ids
