"""catalog.isolate's worker pool: workers that grow are replaced, and a worker that cannot
start does not hold a slot."""

from __future__ import annotations

import os

import pytest

from catalog import isolate


def test_a_worker_past_its_share_of_the_ceiling_retires_and_is_replaced():
    w = isolate.QueryWorkers(n=1, memory_mb=4096, recycle_share=0.0)  # every worker is "too big"
    try:
        pids = [w.run(os.getpid, (), 60) for _ in range(3)]
        assert len(set(pids)) == 3 and os.getpid() not in pids
        assert w.retired == 3 and w.killed == 0
    finally:
        w.close()
    w = isolate.QueryWorkers(n=1, memory_mb=4096)  # the default share: one worker serves them all
    try:
        assert len({w.run(os.getpid, (), 60) for _ in range(3)}) == 1 and w.retired == 0
    finally:
        w.close()


def test_a_worker_that_cannot_start_does_not_hold_its_slot(monkeypatch):
    real = isolate._Proc
    calls = []

    def failing(*a):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("fork refused")
        return real(*a)

    monkeypatch.setattr(isolate, "_Proc", failing)
    w = isolate.QueryWorkers(n=1, memory_mb=4096)
    try:
        with pytest.raises(OSError):
            w.run(os.getpid, (), 60)
        assert isinstance(w.run(os.getpid, (), 60), int)  # not "the server is busy"
    finally:
        w.close()
