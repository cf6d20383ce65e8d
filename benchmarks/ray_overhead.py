"""Ray's overhead on this machine: `de ingest` and `de caption` on Ray against the local paths.

Whole processes, same inputs, measured in one run:
  - ingest: the process pool (--workers 2) vs --ray ADDRESS (a cluster already running, as on a
    real cluster) vs --ray (a local cluster started by the command itself);
  - caption (tiny random Qwen2-VL, CPU): one process vs --ray ADDRESS --workers 2 (two actors).

    python benchmarks/ray_overhead.py [--videos 4] [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def run(cmd, env=None) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, **(env or {})))
    dt = time.perf_counter() - t0
    if r.returncode not in (0, 1) or "Error" in r.stdout + r.stderr[-300:]:
        raise SystemExit(f"{cmd} failed: {r.stdout[-1000:]} {r.stderr[-2000:]}")
    return dt, r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    from dataengine.caption.tiny import save_tiny
    from dataengine.synth import make_cartoon

    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for i in range(args.videos):
            make_cartoon(tmp / "v" / f"c{i}.mp4", duration_s=args.seconds + i * 0.37, fps=24, size=(640, 360),
                         cuts=[args.seconds * k / 5 + 0.1 * i for k in range(1, 5)])
        tiny = save_tiny(tmp / "tiny")
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
        addr = cluster.address  # a cluster already running, as on a real one
        try:
            res = {}
            for name, extra in (("pool", ["--workers", "2"]), ("ray-running", ["--ray", addr]),
                                ("ray-local", ["--ray"])):
                cat = tmp / f"{name}.duckdb"
                res[name] = run([py, "-m", "dataengine", "ingest", str(tmp / "v"), "--catalog", str(cat),
                                 "--no-progress", *extra])
            print(f"ingest of {args.videos} videos x ~{args.seconds:.0f} s, 640x360, whole processes:")
            for k, (t, line) in res.items():
                print(f"  {k:<12} {t:6.2f} s  ({t / res['pool'][0]:.2f}x pool)   {line[:110]}")
            cap = {}
            for name, extra in (("one process", []), ("ray 2 actors", ["--ray", addr, "--workers", "2"])):
                cat = tmp / f"cap-{name[:3]}.duckdb"
                shutil.copy(tmp / "pool.duckdb", cat)
                cap[name] = run([py, "-m", "dataengine", "caption", "--catalog", str(cat), "--model", tiny,
                                 "--max-new-tokens", "64", "--fps", "2", "--max-frames", "8", "--max-pixels", "50176",
                                 "--batch-size", "4", "--no-progress"] + extra, env={"DE_CAPTION_FLUSH_S": "2"})
            n = re.search(r"parse failures (\d+)", cap["one process"][1])
            print("caption, tiny random Qwen2-VL on CPU, 64 new tokens, batch 4:")
            for k, (t, line) in cap.items():
                print(f"  {k:<12} {t:6.2f} s  ({t / cap['one process'][0]:.2f}x one process)   {line[:110]}")
            if n:
                print(f"  ({n.group(1)} clips)")
        finally:
            cluster.shutdown()


if __name__ == "__main__":
    main()
