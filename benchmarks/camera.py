"""Camera motion labels against exact truth (issue 38.2), and their cost against the decode.

    python benchmarks/camera.py --seeds 0-9      # tuning seeds (the thresholds were fitted here)
    python benchmarks/camera.py --seeds 10-39    # held-out seeds (report these)

Each seed renders every camera kind (dataengine.camera_synth: static, pan, tilt, zoom, shake)
over three pictures: a real frame of each video in tests/media (full resolution) and a toy-world
set whose characters keep running (so a still camera over moving characters is in every seed).
Clips are 2 s at 24 fps, 256x192 (the ingest's analysis size), tracked at the ingest's stride.
Prints accuracy per true label, the confusions, and the tracker's milliseconds per frame against
decoding the real footage at the analysis size.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEDIA = sorted((ROOT / "tests" / "media").glob("*.mp4"))


def seeds(text: str) -> list[int]:
    a, _, b = text.partition("-")
    return list(range(int(a), int(b or a) + 1))


def run(seed_list: list[int], fps: float = 24.0, stride: int = 3) -> tuple[dict, float, int]:
    from dataengine.camera import CameraTracker, clip_camera
    from dataengine.camera_synth import KINDS, real_picture, render, world_picture

    got: dict[str, Counter] = defaultdict(Counter)
    track_s, frames = 0.0, 0
    for seed in seed_list:
        rng = random.Random(seed)
        pictures = [("real", real_picture(p, rng)) for p in MEDIA] + [("world", world_picture(rng))]
        for src, pic in pictures:
            for kind in KINDS:
                clip = render(pic, kind, random.Random(seed * 1000 + KINDS.index(kind)), n=int(2 * fps), fps=fps)
                t0 = time.perf_counter()
                tr = CameraTracker(stride=stride)
                tr.update(clip)
                cam = clip_camera(tr.arrays(), 0, len(clip), fps)
                track_s += time.perf_counter() - t0
                frames += len(clip)
                got[kind][cam["camera_measured"]] += 1
                got[f"{kind} ({src})"][cam["camera_measured"]] += 1
    return got, track_s, frames


def decode_ms_per_frame() -> float:
    """Our decode of the real footage at the analysis size (the pass the tracker rides on)."""
    from dataengine.analyze import IngestOptions
    from dataengine.video import analysis_size, iter_frames, probe

    total, n = 0.0, 0
    for p in MEDIA:
        info = probe(str(p))
        size = analysis_size(info.width, info.height, IngestOptions().analysis_side)
        t0 = time.perf_counter()
        for fb in iter_frames(str(p), info, size):
            n += len(fb.times)
        total += time.perf_counter() - t0
    return 1000 * total / max(1, n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="10-39")
    args = ap.parse_args()
    got, track_s, frames = run(seeds(args.seeds))
    print(f"seeds {args.seeds}: accuracy per true label (clips of 2 s, 256x192, 24 fps)")
    print("| true label | clips | correct | accuracy | read as |\n|---|---|---|---|---|")
    total = right = 0
    for kind, c in got.items():
        n = sum(c.values())
        ok = c[kind.split(" (")[0]]
        if " (" not in kind:
            total, right = total + n, right + ok
        wrong = ", ".join(f"{k} {v}" for k, v in c.most_common() if k != kind.split(" (")[0])
        print(f"| {kind} | {n} | {ok} | {ok / n:.2f} | {wrong} |")
    print(f"overall: {right}/{total} = {right / total:.3f}")
    dec = decode_ms_per_frame()
    print(f"cost: tracking {1000 * track_s / frames:.2f} ms per frame of the clip (it fits every 3rd frame); "
          f"decoding the real footage at the analysis size {dec:.2f} ms per frame "
          f"(ratio {1000 * track_s / frames / dec:.2f})")


if __name__ == "__main__":
    main()
