"""The study's statistics (train.experiments.uncertainty): intervals that cover, paired verdicts
that see a real difference and refuse a made-up one, and sample sizes that deliver their power."""

from __future__ import annotations

import numpy as np
import pytest

from train.experiments.uncertainty import compare, interval, samples_needed, supported_front


def test_the_interval_covers_the_true_mean_about_95_times_in_100():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(400):
        m, lo, hi = interval(rng.exponential(1.0, 40), n_boot=500, seed=int(rng.integers(1 << 30)))
        assert lo <= m <= hi
        hits += lo <= 1.0 <= hi
    assert 0.89 <= hits / 400 <= 0.99, hits  # a percentile bootstrap on skewed data undercovers a little


def test_the_same_values_give_the_same_interval_and_edge_cases_are_defined():
    x = np.random.default_rng(3).normal(size=30)
    assert interval(x) == interval(x)
    assert interval([2.0]) == (2.0, 2.0, 2.0) and interval([1.0, 1.0]) == (1.0, 1.0, 1.0)
    assert all(np.isnan(v) for v in interval([]))


def test_paired_verdicts_see_a_small_shift_that_unpaired_noise_would_hide():
    """Two variants from the same noises: a shared spread of 1.0, a true shift of 0.05. Pairing
    sees it; the two means alone (their intervals overlap) would not."""
    rng = np.random.default_rng(1)
    shared = rng.normal(0, 1.0, 64)
    a, b = shared + 0.05 + rng.normal(0, 0.02, 64), shared
    c = compare(a, b)
    assert c["verdict"] == "worse" and c["low"] > 0 and c["samples_needed"] is None
    assert interval(a)[1] < interval(b)[2]  # the unpaired intervals overlap
    assert compare(b, a)["verdict"] == "better"
    assert compare(b, a, lower_is_better=False)["verdict"] == "worse"  # e.g. tag agreement: higher is better


def test_no_difference_is_not_distinguishable_and_says_how_many_samples_a_difference_needs():
    rng = np.random.default_rng(2)
    a = rng.normal(0, 1, 20)
    c = compare(a + rng.normal(0.0, 0.5, 20), a)  # the same variant, resampled noise on top
    assert c["verdict"] == "not distinguishable"
    assert c["samples_needed"] is None or c["samples_needed"] > 20
    with pytest.raises(ValueError):
        compare([1, 2, 3], [1, 2])


def test_the_samples_needed_deliver_about_80_percent_power():
    """Draw paired differences of mean 0.2 and sd 1: the formula asks for n; at that n about 80%
    of fresh experiments find the difference (the verdict is not 'not distinguishable')."""
    rng = np.random.default_rng(5)
    n = samples_needed(rng.normal(0.2, 1.0, 100000))
    assert 180 <= n <= 220  # (1.96 + 0.84)^2 / 0.2^2 = 196
    found = sum(compare(rng.normal(0.2, 1.0, n), np.zeros(n))["verdict"] != "not distinguishable"
                for _ in range(200))
    assert 0.7 <= found / 200 <= 0.9, found


def test_the_front_keeps_only_what_the_intervals_support():
    rng = np.random.default_rng(4)
    base = rng.normal(1.0, 0.3, 50)
    slow_close = base * 0.5
    fast_same = base * 0.5 + rng.normal(0, 0.001, 50)    # as close as slow_close, within noise, and faster
    fast_far = base * 2.0
    # slow_close is as close as fast_same (not distinguishable) and slower: off the front
    assert supported_front([2.0, 1.0, 0.5], [slow_close, fast_same, fast_far]) == [False, True, True]
    # a slower variant that is shown to be closer stays on the front
    assert supported_front([2.0, 1.0], [base * 0.2, base]) == [True, True]
