"""Checked numeric option types for every command (`de` and `train`).

click's `FloatRange` lets NaN through (every comparison with NaN is false) and `inf` through when
there is no upper bound; `Float` refuses both, so a NaN scale or fps is a usage error (exit 2) and
never a result. Every int and float option of every command is one of these (or click's IntRange);
tests/test_options.py walks the commands and holds that."""

from __future__ import annotations

import math

import click


class Float(click.FloatRange):
    """A finite float in [min, max] (open ends with min_open / max_open)."""

    name = "finite float range"
    finite = True

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return rv


def Int(min: int | None = None, max: int | None = None) -> click.IntRange:  # noqa: A002 - click's names
    return click.IntRange(min=min, max=max)


SEED = click.IntRange(0, 2**32 - 1)  # numpy's and torch's seed range


class Size(click.ParamType):
    """WIDTHxHEIGHT, both even (yuv420p video needs even sides) and within [lo, hi]."""

    name = "WxH"

    def __init__(self, lo: int = 16, hi: int = 4096):
        self.lo, self.hi = lo, hi

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            w, h = (int(x) for x in str(value).lower().split("x"))
        except ValueError:
            self.fail(f"{value!r} does not look like 320x240", param, ctx)
        if not (self.lo <= w <= self.hi and self.lo <= h <= self.hi):
            self.fail(f"{value!r}: each side must be between {self.lo} and {self.hi}", param, ctx)
        if w % 2 or h % 2:
            self.fail(f"{value!r}: both sides must be even (H.264 and yuv420p need it)", param, ctx)
        return w, h


SIZE = Size()
