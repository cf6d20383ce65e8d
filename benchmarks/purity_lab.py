"""Tune and check the clip-purity stage in-process, on decoded sets cached once (issue 34).

`benchmarks/transitions.py` scores whole `de ingest` runs (the figures to report). This lab
decodes each video of a set once, the way ingest does (the same reader, analysis size, detector
feed and thumbnails), caches the detector's cuts, the frame times and the thumbnails, and then
scores the purity stage (dataengine.purity.purify) and the clip policy on them in a second: what
a threshold change does to every set, before a full run.

    python benchmarks/purity_lab.py --sets cartoon:0,1 edited:0,1       # the tuning seeds
    python benchmarks/purity_lab.py --sets cartoon:2,3 edited:2,3       # held out: report only
"""

from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MEDIA = ROOT / "tests" / "media"  # real single-shot camera files for the edited sets (CC BY 4.0, see its README)


def build(kind: str, seed: int, root: Path) -> Path:
    out = root / f"{kind}-{seed}"
    if (out / "truth.json").exists():
        return out
    if kind in ("cartoon", "cuts"):
        from dataengine.cartoon_edits import CUTS_ONLY, KINDS, build_cartoon_set

        build_cartoon_set(out, videos=4, segments=12, seed=seed, kinds=CUTS_ONLY if kind == "cuts" else KINDS)
    else:
        from dataengine.edits import build_set

        build_set(out, media_dir=MEDIA if MEDIA.is_dir() else None, videos=4, segments=14, seed=seed)
    return out


def decode(path: Path, detector: str = "adaptive") -> dict:
    """What ingest's decode pass gives the purity stage: detector cuts, times, thumbnails."""
    from dataengine.purity import Thumbs
    from dataengine.scenes import DetectorOptions, SceneFeeder
    from dataengine.video import analysis_size, iter_frames, probe

    info = probe(path)
    size = analysis_size(info.width, info.height, 256)
    feeder = SceneFeeder(DetectorOptions(detector), info.nominal_fps)
    thumbs, times = Thumbs(), []
    for fb in iter_frames(str(path), info, size, prefer="opencv"):
        feeder.update(fb.frames, bgr=fb.bgr)
        thumbs.update(fb.frames, bgr=fb.bgr)
        times.append(fb.times)
    return {"cuts": feeder.finish(), "times": np.concatenate(times), "thumbs": thumbs.array(),
            "spans": list(feeder.spans)}


def cached(set_dir: Path, detector: str) -> dict:
    p = set_dir / f"decoded-{detector}.pkl"
    if p.exists():
        return pickle.loads(p.read_bytes())
    from dataengine.edits import load_truth

    out = {t.video: decode(set_dir / t.video, detector) for t in load_truth(set_dir)}
    p.write_bytes(pickle.dumps(out))
    return out


def clips_of(dec: dict, purity: bool = True) -> dict:
    from dataengine.purity import PurityResult, merge, purify
    from dataengine.scenes import SplitOptions, split_scenes

    out = {}
    for name, d in dec.items():
        pure = purify(d["thumbs"], d["cuts"]) if purity else PurityResult(d["cuts"], [], {})
        if d["spans"]:
            pure = PurityResult(pure.cuts, merge(pure.spans + d["spans"]), pure.dropped_cuts)
        split = split_scenes(pure.cuts, d["times"], SplitOptions(), pure.spans)
        out[name] = [(c.start_frame, c.end_frame) for c in split.clips]
    return out


def trap_false(truth, clips, tol: int = 2) -> dict:
    """False boundaries per trap kind (the most specific trap near each; `twos` only when no
    other trap is near; `none` when no trap is)."""
    from collections import Counter

    c: Counter = Counter()
    for t in truth:
        cs = sorted(clips.get(t.video, []))
        bounds, prev = [], 0
        for s, e in cs:
            bounds.append((prev, s) if s > prev + 1 else (s, s))
            prev = e
        for b in bounds:
            if b == (0, 0):
                continue
            if any(b[0] <= sp.end + tol and b[1] >= sp.start - tol for sp in t.transitions):
                continue
            near = [sp.kind for sp in t.traps if b[0] <= sp.end + tol and b[1] >= sp.start - tol]
            specific = [k for k in near if k != "twos"]
            c[specific[0] if specific else near[0] if near else "none"] += 1
    return dict(c)


def report(name: str, truth, clips) -> str:
    from dataengine.edits import score

    s = score(truth, clips)
    minutes = sum(t.frames / t.fps for t in truth) / 60
    cuts = s["found"]["cut"]
    grad = [s["found"][k] for k in ("dissolve", "fade", "wipe", "iris")]
    g = (sum(x[0] for x in grad), sum(x[1] for x in grad))
    return (f"{name}: F1 {s['boundary_f1']:.3f} (P {s['boundary_precision']:.2f} R {s['boundary_recall']:.2f}); "
            f"cuts {cuts[0]}/{cuts[1]}, gradual {g[0]}/{g[1]}; false {s['false_boundaries']} "
            f"({s['false_boundaries'] / minutes:.1f}/min; by trap {trap_false(truth, clips)}); "
            f"purity {s['purity']:.3f}, coverage {s['coverage']:.3f}")


def main(argv=None) -> int:
    from dataengine.edits import load_truth

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", nargs="+", default=["cartoon:0,1", "edited:0,1"],
                    help="KIND:SEED,SEED (kind: cartoon, cuts (cartoons with hard cuts only) or edited)")
    ap.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "de-purity-lab"))
    ap.add_argument("--detector", default="adaptive")
    a = ap.parse_args(argv)
    root = Path(a.root)
    for spec in a.sets:
        kind, seeds = spec.split(":")
        for seed in (int(x) for x in seeds.split(",")):
            d = build(kind, seed, root)
            truth = load_truth(d)
            dec = cached(d, a.detector)
            t0 = time.perf_counter()
            with_stage = clips_of(dec, True)
            secs = time.perf_counter() - t0
            print(report(f"{kind} seed {seed} {a.detector} alone", truth, clips_of(dec, False)))
            print(report(f"{kind} seed {seed} {a.detector} + purity ({secs:.2f} s)", truth, with_stage), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
