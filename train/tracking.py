"""Metrics go to metrics.jsonl always; TensorBoard / wandb through accelerate when asked.
A disabled tracker is a null object, so the loop never branches on it."""

from __future__ import annotations

import json
from pathlib import Path


def missing_trackers(report_to: str) -> list[str]:
    """The packages --report-to needs that are not installed."""
    import importlib.util

    want = {"none": [], "tensorboard": ["tensorboard"], "wandb": ["wandb"], "all": ["tensorboard", "wandb"]}[report_to]
    return [m for m in want if importlib.util.find_spec(m) is None]


class NullTracker:
    def log(self, values: dict, step: int) -> None:
        pass

    def close(self) -> None:
        pass


class JsonlTracker:
    def __init__(self, path: Path, truncate_after: int | None = None):
        self.path = Path(path)
        if truncate_after is not None and self.path.exists():
            # resuming: drop what a killed run logged after its last checkpoint
            keep = [l for l in self.path.read_text().splitlines() if l.strip() and json.loads(l).get("step", 0) <= truncate_after]
            self.path.write_text("".join(l + "\n" for l in keep))
        self._f = open(self.path, "a")

    def log(self, values: dict, step: int) -> None:
        self._f.write(json.dumps({"step": step, **values}, sort_keys=True) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class AccelerateTracker:
    def __init__(self, accelerator, project: str, config: dict):
        flat = {k: v for k, v in config.items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers(project, config=flat)
        self.acc = accelerator

    def log(self, values: dict, step: int) -> None:
        flat = {}
        for k, v in values.items():
            if isinstance(v, dict):
                flat.update({f"{k}/{kk}": vv for kk, vv in v.items() if isinstance(vv, (int, float))})
            elif isinstance(v, (int, float)):
                flat[k] = v
        self.acc.log(flat, step=step)

    def close(self) -> None:
        self.acc.end_training()


class Trackers:
    def __init__(self, trackers: list):
        self.trackers = trackers

    def log(self, values: dict, step: int) -> None:
        for t in self.trackers:
            t.log(values, step)

    def close(self) -> None:
        for t in self.trackers:
            t.close()


def make_trackers(accelerator, out_dir: Path, report_to: str, config: dict, truncate_after: int | None) -> Trackers:
    if not accelerator.is_main_process:
        return Trackers([NullTracker()])
    ts: list = [JsonlTracker(out_dir / "metrics.jsonl", truncate_after)]
    ts.append(AccelerateTracker(accelerator, out_dir.name, config) if report_to != "none" else NullTracker())
    return Trackers(ts)
