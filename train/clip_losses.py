"""Per-clip training loss: which clips does the model find hardest?

Every training sample's loss is kept with its sigma and its clip (`logs/sample_losses.jsonl`,
rank 0, after gathering every rank's samples). Flow-matching loss depends strongly on sigma, so a
sample is scored as a z-score against its sigma bucket (10 buckets of width 0.1): the mean and
standard deviation of every sample of that bucket so far in the run. Per clip: the number of
samples, the mean raw loss and the mean z. At each checkpoint and at the end, rank 0 writes these
to the catalog's `clip_losses` in one short transaction (`train_loss_z`, `train_samples` on the
`clips` view come from the newest run).

The log is the state: a resumed run reloads the samples up to its checkpoint's step.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

BUCKETS = 10


def bucket(sigma: float) -> int:
    return min(BUCKETS - 1, max(0, int(sigma * BUCKETS)))


class ClipLossTracker:
    def __init__(self, log_path: Path, *, main_process: bool, resume_step: int | None = None):
        self.path = Path(log_path)
        self.main = main_process
        self.local: list[tuple] = []  # this rank's (step, clip_id, sigma, loss) since the last gather
        self.samples: list[tuple] = []  # rank 0: every sample of the run, in order
        if self.main:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if resume_step is not None and self.path.exists():
                keep = []
                for line in self.path.read_text().splitlines():
                    try:
                        r = json.loads(line)
                    except ValueError:
                        break  # a line cut by a kill: everything after it is redone
                    if r["step"] <= resume_step:
                        keep.append((r["step"], r["clip_id"], r["sigma"], r["loss"]))
                self.samples = keep
                self._rewrite()
            elif resume_step is None:
                self.path.unlink(missing_ok=True)

    def _rewrite(self) -> None:
        from dataengine.atomic import atomic_write

        with atomic_write(self.path, "w") as f:
            for s in self.samples:
                f.write(json.dumps({"step": s[0], "clip_id": s[1], "sigma": s[2], "loss": s[3]}) + "\n")

    def add(self, step: int, clip_ids: list[str], sigmas: list[float], losses: list[float]) -> None:
        self.local += [(step, c, float(s), float(v)) for c, s, v in zip(clip_ids, sigmas, losses)]

    def gather(self, acc=None) -> None:
        """Collective when there are several ranks: every rank must call it at the same step."""
        mine, self.local = self.local, []
        if acc is not None and acc.num_processes > 1:
            from accelerate.utils import gather_object

            got = gather_object([mine])  # one list per rank, in rank order
            allv = [s for part in got for s in part]
        else:
            allv = mine
        if self.main and allv:
            allv.sort(key=lambda s: s[0])  # stable: within a step, rank order then position
            self.samples += allv
            with open(self.path, "a") as f:
                for s in allv:
                    f.write(json.dumps({"step": s[0], "clip_id": s[1], "sigma": s[2], "loss": s[3]}) + "\n")

    def per_clip(self) -> list[tuple[str, int, float, float]]:
        """(clip_id, samples, mean loss, mean z) for every clip sampled so far."""
        stats = defaultdict(lambda: [0, 0.0, 0.0])  # bucket -> n, sum, sum of squares
        for _, _, sg, v in self.samples:
            b = stats[bucket(sg)]
            b[0] += 1
            b[1] += v
            b[2] += v * v
        mean_std = {}
        for k, (n, s1, s2) in stats.items():
            m = s1 / n
            var = max(0.0, s2 / n - m * m)
            mean_std[k] = (m, math.sqrt(var))
        acc = defaultdict(lambda: [0, 0.0, 0.0])
        for _, cid, sg, v in self.samples:
            m, sd = mean_std[bucket(sg)]
            z = (v - m) / sd if sd > 0 else 0.0
            a = acc[cid]
            a[0] += 1
            a[1] += v
            a[2] += z
        return [(cid, n, s / n, z / n) for cid, (n, s, z) in sorted(acc.items())]


def write_catalog(catalog, run_id: str, rows: list[tuple[str, int, float, float]]) -> None:
    """Replace the run's rows in one short transaction."""
    from catalog import db, losses

    with db.writing(catalog) as con:
        losses.replace_run(con, run_id, rows)
