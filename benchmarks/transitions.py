"""Clip purity on edited footage with exact ground truth (issue 22): one table, every detector.

Builds an edited set (dataengine.edits: segments from inside single shots of the real-camera files
in --media and of toy-world scenes, joined by cuts, dissolves, fades through black, wipes and iris
wipes, with white flashes and fast pans planted inside shots), runs `de ingest` on it once per
detector, and scores the clips `de ingest` made: boundary precision/recall/F1 (within 2 frames;
a gradual transition counts as found if a boundary or an excluded span overlaps it), recall per
transition type, false boundaries (and how many sit at traps), clip purity and coverage.

    python benchmarks/transitions.py                       # 6 videos, seed 0, tests/media if present
    python benchmarks/transitions.py --seed 1 --videos 4   # another (held-out) set
    python benchmarks/transitions.py --kind cuts --seed 2 --videos 4 --segments 12     # hand-drawn, cuts only
    python benchmarks/transitions.py --kind cartoon --seed 3 --videos 4 --segments 12  # hand-drawn, all joins

Seeds 0 and 1 tuned the purity stage (v4, issue 34); seeds 2 and 3 are held out. The cartoon kinds
(dataengine.cartoon_edits) add hand-drawn traps: animation on twos, sweeps, flapping wings,
occluders, repeated wing beats, screen shakes, flashes, cuts between alike shots.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DETECTORS = ["adaptive", "content", "histogram", "transnetv2"]


def ingest_clips(videos: Path, detector: str, work: Path, purity: bool = True) -> tuple[dict, float]:
    """Run `de ingest` with this detector into a fresh catalog; {video name: [(start, end)]}, seconds."""
    import duckdb

    cat = work / f"{detector}{'' if purity else '-no-purity'}.duckdb"
    cat.unlink(missing_ok=True)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "dataengine.cli", "ingest", str(videos), "--catalog", str(cat),
                        "--detector", detector, "--no-progress", *([] if purity else ["--no-purity"])],
                       capture_output=True, text=True, cwd=ROOT)
    secs = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"de ingest --detector {detector} failed:\n{r.stdout}\n{r.stderr}")
    con = duckdb.connect(str(cat), read_only=True)
    out: dict = {}
    for path, s, e in con.execute("SELECT video_path, start_frame, end_frame FROM clips ORDER BY 1, 2").fetchall():
        out.setdefault(Path(path).name, []).append((s, e))
    con.close()
    return out, secs


def table(rows: list[tuple[str, dict, float]], minutes: float = 0.0) -> str:
    from dataengine.edits import TRANSITIONS

    head = ("| detector | boundary P / R / F1 | " + " | ".join({"iris": "irises"}.get(k, k + "s") for k in TRANSITIONS)
            + " | false boundaries (at traps) | false / min | clips | purity | coverage | ingest s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, s, secs in rows:
        per = " | ".join(f"{s['found'][k][0]}/{s['found'][k][1]}" for k in TRANSITIONS)
        lines.append(f"| {name} | {s['boundary_precision']:.2f} / {s['boundary_recall']:.2f} / "
                     f"{s['boundary_f1']:.2f} | {per} | {s['false_boundaries']} ({s['false_at_traps']}) | "
                     f"{s['false_boundaries'] / max(minutes, 1e-9):.1f} | "
                     f"{s['clips']} | {s['purity']:.2f} | {s['coverage']:.2f} | {secs:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from dataengine.edits import build_set, coverage_ceiling, load_truth, score
    from purity_lab import trap_false

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--media", default=str(ROOT / "tests" / "media"),
                    help="folder of real single-shot MP4s (skipped if absent)")
    ap.add_argument("--out", default=None, help="where the set is written (default: a temp folder)")
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--segments", type=int, default=14)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kind", choices=["edited", "cartoon", "cuts"], default="edited",
                    help="edited: camera and toy shots with every transition; cartoon: hand-drawn traps and every "
                         "join; cuts: hand-drawn traps, hard cuts only")
    ap.add_argument("--detectors", default=",".join(DETECTORS))
    a = ap.parse_args(argv)
    work = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="de-transitions-"))
    videos = work / "videos"
    if not (videos / "truth.json").exists():
        t0 = time.perf_counter()
        if a.kind == "edited":
            build_set(videos, media_dir=a.media, videos=a.videos, segments=a.segments, seed=a.seed)
        else:
            from dataengine.cartoon_edits import CUTS_ONLY, KINDS, build_cartoon_set

            build_cartoon_set(videos, videos=a.videos, segments=a.segments, seed=a.seed,
                              kinds=CUTS_ONLY if a.kind == "cuts" else KINDS)
        print(f"edited set: {a.videos} videos in {time.perf_counter() - t0:.0f} s -> {videos}", flush=True)
    truth = load_truth(videos)
    n_tr = sum(len(t.transitions) for t in truth)
    n_traps = sum(len(t.traps) for t in truth)
    print(f"{len(truth)} videos, {n_tr} transitions, {n_traps} traps, "
          f"{sum(t.frames for t in truth)} frames (media: {a.media if Path(a.media).is_dir() else 'none'}); "
          f"coverage ceiling (perfect clips under the default clip policy) {coverage_ceiling(truth):.2f}")
    rows = []
    for d in a.detectors.split(","):
        for purity in (False, True):
            clips, secs = ingest_clips(videos, d, work, purity)
            name = f"{d}, {'with the purity stage' if purity else 'detector alone (--no-purity)'}"
            rows.append((name, score(truth, clips), secs))
            print(f"{name}: done in {secs:.1f} s; false boundaries by trap: {trap_false(truth, clips)}", flush=True)
    print(table(rows, sum(t.frames / t.fps for t in truth) / 60))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
