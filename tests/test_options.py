"""Every numeric option of every command has a checked, finite range (issue 33: `--scale nan` was
taken, and saved a LoRA beside a distill.json full of NaN)."""

from __future__ import annotations

import dataclasses

import click
import pytest
from click.testing import CliRunner


def _commands():
    from dataengine.cli import main as de
    from train.cli import main as train

    def walk(cmd, path):
        yield path, cmd
        if isinstance(cmd, click.Group):
            for name, sub in sorted(cmd.commands.items()):
                yield from walk(sub, f"{path} {name}")

    yield from walk(de, "de")
    yield from walk(train, "train")


def _numeric(p) -> bool:
    return isinstance(p.type, (click.types.IntParamType, click.types.FloatParamType))


def numeric_options():
    return [(path, cmd, p) for path, cmd in _commands() for p in cmd.params if _numeric(p)]


def test_every_numeric_option_has_a_finite_checked_range():
    from dataengine.options import Float
    from train.cli import main as train_main
    from train.config import INT_RANGES, TrainConfig

    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unchecked = []
    for path, cmd, p in numeric_options():
        if cmd is train_main and p.name in fields:
            # the trainer's options become TrainConfig, whose __post_init__ checks them: ints against
            # INT_RANGES, every float finite, the rest by rule (lr > 0, dropout in [0, 1), ...)
            if isinstance(p.type, click.types.IntParamType) and p.name not in INT_RANGES:
                unchecked.append(f"{path} {p.opts[0]} (not in train.config.INT_RANGES)")
            continue
        if isinstance(p.type, click.types.FloatParamType) and not isinstance(p.type, Float):
            unchecked.append(f"{path} {p.opts[0]} (a float that may be NaN or inf)")
        elif isinstance(p.type, click.types.IntParamType) and not (
                isinstance(p.type, click.IntRange) and p.type.min is not None and p.type.max is not None):
            unchecked.append(f"{path} {p.opts[0]} (an int without both bounds)")
    assert not unchecked, "unchecked numeric options:\n" + "\n".join(unchecked)
    assert len(numeric_options()) > 60  # the walk reaches every command


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "1e400"])
def test_every_float_option_refuses_non_finite_values(bad):
    from dataengine.options import Float

    floats = [(path, p) for path, _, p in numeric_options() if isinstance(p.type, Float)]
    assert floats
    for path, p in floats:
        with pytest.raises(click.BadParameter):
            p.type.convert(bad, p, None)


def test_distill_guidance_scale_nan_is_a_usage_error(tmp_path):
    from train.cli import main

    r = CliRunner().invoke(main, ["distill-guidance", str(tmp_path), "--scale", "nan"])
    assert r.exit_code == 2 and "not a finite number" in r.output
    r = CliRunner().invoke(main, ["sweep-steps", str(tmp_path), "--limit-prompts", "-100"])
    assert r.exit_code == 2 and "--limit-prompts" in r.output


@pytest.mark.parametrize("args,msg", [
    (["--fps", "0"], "--fps"), (["--fps", "nan"], "not a finite number"), (["--fps", "-24"], "--fps"),
    (["--size", "0x0"], "between 16 and 4096"), (["--size", "-320x240"], "between 16 and 4096"),
    (["--size", "321x241"], "even"), (["--size", "100000x100000"], "between 16 and 4096"),
    (["--world", "1", "--size", "20000x20000"], "between 16 and 4096"), (["--seconds", "0"], "--seconds"),
    (["--seconds", "0.04", "--fps", "24"], "under two frames"),
])
def test_synth_checks_its_options(tmp_path, args, msg):
    from dataengine.cli import main

    r = CliRunner().invoke(main, ["synth", str(tmp_path / "out"), *args])
    assert r.exit_code == 2 and msg in r.output, r.output
    assert not list((tmp_path).glob("out/*"))


def test_synth_into_a_path_under_a_regular_file_is_a_clear_error(tmp_path):
    from dataengine.cli import main

    (tmp_path / "f").write_text("x")
    r = CliRunner().invoke(main, ["synth", str(tmp_path / "f" / "out"), "--seconds", "1"])
    assert r.exit_code == 1 and "cannot create" in r.output and r.exception is None or \
        isinstance(r.exception, SystemExit), r.output
