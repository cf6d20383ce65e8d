"""What the training loop prints: one line every --log-every steps when no progress bar is drawn."""

from __future__ import annotations

import math


def _is_tty() -> bool:
    import sys

    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class StepLog:
    """`step 120/10000  loss 0.4213  lr 2.00e-04  1.84 steps/s  ETA 1h29m`, every `every` steps and at
    the last one. Steps/s is over the steps since the previous line and counts training time only
    (validation and checkpoints are excluded), so the ETA does not jump after each validation."""

    def __init__(self, total: int, every: int):
        self.total, self.every = total, every
        self.secs, self.n = 0.0, 0

    def step(self, step: int, secs: float, loss: float | None, lr: float, skipped: int) -> str | None:
        if not self.every:
            return None
        self.secs += secs
        self.n += 1
        if step % self.every and step != self.total:
            return None
        rate = self.n / self.secs if self.secs > 0 else float("inf")
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        loss_s = "nan" if loss is None else f"{loss:.4f}"
        line = (f"step {step}/{self.total}  loss {loss_s}  lr {lr:.2e}  {rate:.2f} steps/s  ETA {_duration(eta)}"
                + (f"  skipped {skipped}" if skipped else ""))
        print(line, flush=True)
        self.secs, self.n = 0.0, 0
        return line


def _duration(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
