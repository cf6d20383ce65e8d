"""Fault injection: hooks the tests use to kill or poison a process at a chosen point, read where
they fire (never at import, so a test can set them for one command and not the next).

- `DE_FAULT_KILL_AT_STEP=N`: the training loop SIGKILLs itself right after step N (no cleanup),
  as a preempted or OOM-killed job would die.
- `DE_FAULT_NAN_AT_STEP=N`: the training loop poisons one LoRA weight with NaN right after step N's
  optimizer update (what `--lr inf` or a real divergence does).
- `DE_FAULT_EXIT_ONCE=PATH`: the first Ray task (ingest or caption) to find no file at PATH creates
  it and exits its process, as a killed worker would (Ray then retries the task).

None is set in normal use; each is documented here and nowhere else.
"""

from __future__ import annotations

import os

KILL_AT_STEP = "DE_FAULT_KILL_AT_STEP"
NAN_AT_STEP = "DE_FAULT_NAN_AT_STEP"
EXIT_ONCE = "DE_FAULT_EXIT_ONCE"


def step_hook(name: str) -> int:
    """The step a step hook names (0: none)."""
    try:
        return int(os.environ.get(name, "0") or 0)
    except ValueError:
        return 0


def exit_once(note: str = "") -> None:
    """Under DE_FAULT_EXIT_ONCE, the first caller leaves the marker file and dies at once."""
    marker = os.environ.get(EXIT_ONCE)
    if marker and not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(note)
        os._exit(1)
