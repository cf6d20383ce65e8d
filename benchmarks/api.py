"""Benchmark: `de caption --api` at concurrency 1 against 8, over real HTTP.

The server is dataengine.caption.local_server in its own process (the tiny random Qwen2-VL
through transformers, schema enforced, concurrent requests batched up to 8); the client is the
`--api` runner in this process. Same clips, same constrained prompt, one run each.
Usage: python benchmarks/api.py [--clips 32]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from constrained import make_catalog


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=32)
    args = ap.parse_args()

    from dataengine.caption.api import ApiSettings, caption_via_api
    from dataengine.caption.prompts import SamplingParams, load_prompt
    from dataengine.caption.run import select_clips
    from dataengine.caption.schema import Constraint

    root = Path(__file__).resolve().parents[1]
    srv = subprocess.Popen([sys.executable, "-m", "dataengine.caption.local_server", "--model", "tiny", "--port", "0",
                            "--max-batch", "8"], stdout=subprocess.PIPE, text=True, cwd=root,
                           env=dict(os.environ, PYTHONPATH=str(root)))
    try:
        line = srv.stdout.readline()
        url = line.strip().rsplit(" ", 1)[-1]
        print(line.strip())
        with tempfile.TemporaryDirectory() as tmp:
            cat = make_catalog(Path(tmp), args.clips)
            rates = {}
            for conc in (1, 8, 1, 8):  # twice each, alternating; the second of each is reported
                settings = ApiSettings(url, "tiny-random-qwen2-vl", concurrency=conc)
                prompt = load_prompt("caption_v1", SamplingParams(fps=2.0, max_frames=8, max_pixels=224 * 224),
                                     constraint=Constraint(), endpoint=settings.endpoint)
                name = f"c{conc}-{len(rates)}"
                todo, _ = select_clips(cat, name, prompt.version, query=None, limit=None, overwrite=False,
                                       retry_failed=False)
                s = caption_via_api(cat, settings, prompt, todo, name=name, progress=False)
                rates[conc] = s.attempted / s.seconds
                print(f"  concurrency {conc}: {s.seconds:6.2f} s  {rates[conc]:5.2f} clips/s  parsed "
                      f"{s.labelled}/{s.attempted}  retries {s.retries}")
            print(f"concurrency 8 / concurrency 1: {rates[8] / rates[1]:.2f}x clips/s")
    finally:
        srv.terminate()
        srv.wait(timeout=30)


if __name__ == "__main__":
    main()
