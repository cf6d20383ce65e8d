"""The hand-drawn trap generator behind benchmarks/cartoon_traps.py and purity_lab.py (issue 34)."""

from __future__ import annotations

import random

import numpy as np
import pytest


def test_every_trap_draws_inside_its_span_and_leaves_the_rest_alone():
    from dataengine.cartoon_edits import TRAPS
    from dataengine.world import random_scene, render

    base = render(random_scene(random.Random(1)), 60 / 24, 24, 96, 72)
    for name, trap in TRAPS.items():
        seg = base.copy()
        n = trap(seg, random.Random(3), 20)
        changed = np.flatnonzero(np.abs(seg.astype(int) - base).reshape(len(seg), -1).max(1) > 0)
        assert len(changed), name
        assert changed.min() >= 20 and changed.max() < 20 + n, (name, changed, n)


def test_on_twos_holds_each_drawing():
    from dataengine.cartoon_edits import on_twos

    seg = np.arange(10)[:, None, None, None].repeat(2, 1).astype(np.uint8)
    held = on_twos(seg, 2)
    assert [int(f[0, 0, 0]) for f in held] == [0, 0, 2, 2, 4, 4, 6, 6, 8, 8]


@pytest.mark.parametrize("cuts_only", [False, True])
def test_a_cartoon_set_has_truth_that_fits_its_frames(tmp_path, cuts_only):
    from dataengine.cartoon_edits import CUTS_ONLY, KINDS, build_cartoon_set
    import av

    truth = build_cartoon_set(tmp_path, videos=1, segments=5, seed=2, kinds=CUTS_ONLY if cuts_only else KINDS)
    t = truth[0]
    with av.open(str(tmp_path / t.video)) as c:
        assert sum(1 for _ in c.decode(video=0)) == t.frames
    assert len(t.transitions) == 4  # one between each two segments
    assert all(0 <= s.start <= s.end <= t.frames for s in t.transitions + t.traps)
    if cuts_only:
        assert {s.kind for s in t.transitions} == {"cut"}
