"""Figures with their uncertainty: bootstrap intervals, paired comparisons and plain verdicts.

NumPy only. Every comparison in the study is *paired*: two variants sample from the same noise
for the same item, so the difference per sample carries the comparison and the noise shared by
both cancels. A mean is reported with a percentile bootstrap interval (a fixed seed, so the same
samples give the same interval); a difference gets a verdict only when its interval leaves zero.
"""

from __future__ import annotations

import math

import numpy as np

LEVEL = 0.95
BOOTSTRAP = 2000
SEED = 0


def interval(values, *, level: float = LEVEL, n_boot: int = BOOTSTRAP, seed: int = SEED) -> tuple[float, float, float]:
    """(mean, low, high): the mean of `values` and its percentile-bootstrap interval. One value
    (or values that are all equal) gives a zero-width interval; no values give NaNs."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(x.mean())
    if x.size == 1 or np.all(x == x[0]):
        return m, m, m
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return m, float(lo), float(hi)


def compare(a, b, *, lower_is_better: bool = True, level: float = LEVEL) -> dict:
    """`a` against `b`, sample by sample (the same items and noises, in the same order): the mean
    difference a - b with its interval, a verdict (better / worse / not distinguishable, from
    a's side) and, when the interval holds zero, how many samples a difference of the measured
    size would need to be seen (80% power at this level)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"a paired comparison needs the same samples on both sides ({a.size} vs {b.size})")
    d = a - b
    m, lo, hi = interval(d, level=level)
    if lo > 0 or hi < 0:
        verdict = "worse" if (lo > 0) == lower_is_better else "better"
    else:
        verdict = "not distinguishable"
    return {"difference": m, "low": lo, "high": hi, "samples": int(d.size), "verdict": verdict,
            "samples_needed": None if verdict != "not distinguishable" else samples_needed(d, level=level)}


def samples_needed(d, *, level: float = LEVEL, power: float = 0.8) -> int | None:
    """Paired samples a difference with this mean and spread needs to be told from zero:
    n = ((z_(1-alpha/2) + z_power) * sd / |mean|)^2. None when the mean is zero (no size of
    sample separates it) or there is no spread to measure."""
    d = np.asarray(d, dtype=np.float64).ravel()
    if d.size < 2:
        return None
    m, sd = abs(float(d.mean())), float(d.std(ddof=1))
    if m == 0.0 or sd == 0.0:
        return None
    n = ((_z(1 - (1 - level) / 2) + _z(power)) * sd / m) ** 2
    return int(math.ceil(n))


def _z(p: float) -> float:
    """The standard normal quantile."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(p)


def supported_front(times: list[float], samples: list, *, level: float = LEVEL) -> list[bool]:
    """The Pareto front over (time, distance) using only the differences the intervals support:
    variant j pushes variant i off the front when j is at least as fast, j's distance is not
    shown to be worse than i's, and j is faster or shown to be closer. `samples[i]` holds the
    paired per-sample distances of variant i."""
    n = len(times)
    out = []
    for i in range(n):
        dominated = False
        for j in range(n):
            if j == i or times[j] > times[i]:
                continue
            c = compare(samples[j], samples[i], level=level)
            if c["verdict"] == "worse":
                continue
            if times[j] < times[i] or c["verdict"] == "better":
                dominated = True
                break
        out.append(not dominated)
    return out
