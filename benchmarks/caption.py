"""Benchmark: captioning throughput with the tiny random Qwen2-VL on the same clips.

Measures, in one run, on a catalog of synthetic clips:
  - clips/s at batch 1 and at batch 8 (decode overlapped with generation),
  - the overlap gain at batch 8: overlapped against sequential decode-then-generate, and the share
    of decode time hidden (1 - time the generator waited for frames / total decode time).
Usage: python benchmarks/caption.py [--clips 32]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=256)  # `de caption` default
    args = ap.parse_args()

    from catalog import db
    from dataengine.analyze import IngestOptions
    from dataengine.caption.models import load_captioner
    from dataengine.caption.prompts import SamplingParams, load_prompt
    from dataengine.caption.run import caption_clips, select_clips
    from dataengine.ingest import ingest_paths
    from dataengine.scenes import SplitOptions
    from dataengine.synth import make_cartoon

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n_videos = max(1, args.clips // 8)
        for i in range(n_videos):
            # 8 clips per video of different lengths (1.2 s to 3.0 s): batches mix lengths
            cuts, t = [], 0.0
            for k in range(8):
                t += 1.4 + 0.25 * k + 0.05 * i  # distinct bytes per video (identical files dedupe)
                cuts.append(round(t, 3))
            make_cartoon(tmp / f"v{i}.mp4", duration_s=t + 1.5, fps=24, size=(640, 360), cuts=cuts[:-1])
        cat = tmp / "c.duckdb"
        ingest_paths(cat, [tmp], IngestOptions(split=SplitOptions(min_duration=1.0)), progress=False)
        con = db.connect(cat, read_only=True)
        n = con.execute("SELECT count(*) FROM clips").fetchone()[0]
        con.close()
        sampling = SamplingParams(fps=2.0, max_frames=8, max_pixels=224 * 224, max_new_tokens=args.max_new_tokens)
        prompt = load_prompt("caption_v1", sampling)
        cap = load_captioner("tiny", device="cpu")
        print(f"{n} clips, tiny random Qwen2-VL on CPU, {args.max_new_tokens} new tokens, "
              f"{sampling.max_frames} frames max at {sampling.fps} fps, {sampling.max_pixels} px/frame")

        import os

        import torch

        def run(name, batch, overlap):
            # every run gets the same torch threads (the overlapped runner reserves one core for
            # decoding on CPU), so the comparison is about scheduling, not thread counts
            torch.set_num_threads(max(1, (os.cpu_count() or 1) - 1))
            cap.name = name
            todo, _ = select_clips(cat, name, prompt.version, query=None, limit=None, overwrite=False,
                                   retry_failed=False)
            s = caption_clips(cat, cap, prompt, todo, batch_size=batch, overlap=overlap, progress=False)
            rate = s.attempted / s.seconds
            print(f"  {name:<24} {s.seconds:6.2f} s  {rate:6.2f} clips/s  generate {s.generate_seconds:5.2f} s  "
                  f"waited for frames {s.decode_seconds:5.2f} s  mean visual tokens {s.visual_tokens / max(1, s.attempted):.0f}  "
                  f"catalog connect+write {s.write_seconds:5.3f} s ({100 * s.write_seconds / s.seconds:.1f}% of wall)")
            return s

        run("warmup", 8, True)
        b1 = run("batch1-overlap", 1, True)
        b8 = run("batch8-overlap", 8, True)
        b8s = run("batch8-sequential", 8, False)
        r1 = b1.attempted / b1.seconds
        r8 = b8.attempted / b8.seconds
        decode_total = b8s.decode_seconds  # sequential: every second of decoding is waited for
        hidden = 1 - b8.decode_seconds / decode_total if decode_total else 0.0
        print(f"batch 8 / batch 1 throughput: {r8 / r1:.2f}x")
        print(f"decode time (sequential run): {decode_total:.2f} s; waited in overlapped run: {b8.decode_seconds:.2f} s; "
              f"hidden: {hidden * 100:.0f}%")
        print(f"overlapped vs sequential wall time at batch 8: {b8s.seconds / b8.seconds:.2f}x faster")


if __name__ == "__main__":
    main()
