"""Benchmark: a whole `de ingest` process against a decode-only pass of the same file.

Generates a 60 s synthetic cartoon (1280x720, 24 fps, h264, a cut every ~4 s), then times, in the
same run:
  - decode-only: decord reading every frame at full size (what any ingest must at least pay),
  - decode-only at the analysis size (decord resizing inside FFmpeg, as ingest does),
  - `de ingest` as a subprocess (process start, imports, catalog, detection, stats, keyframes)
    with --workers 1 and with all cores on 2 copies of the cartoon.
Prints wall times, frames/s and ratios. Usage: python benchmarks/ingest.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def decode_only(path: str, width: int | None = None, height: int | None = None, threads: int = 1) -> tuple[float, int]:
    import decord

    t0 = time.perf_counter()
    kw = {"width": width, "height": height} if width else {}
    vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=threads, **kw)
    n = len(vr)
    for s in range(0, n, 32):
        vr.get_batch(list(range(s, min(n, s + 32)))).asnumpy()
    return time.perf_counter() - t0, n


def run_ingest(folder: Path, catalog: Path, workers: int) -> float:
    if catalog.exists():
        catalog.unlink()
    shutil.rmtree(catalog.parent / f"{catalog.stem}_cache", ignore_errors=True)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "dataengine", "ingest", str(folder), "--catalog", str(catalog),
                        "--no-progress", "--workers", str(workers)], capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    print("   ", r.stdout.strip())
    return dt


def whole_process(cmd: list[str], cwd: str | None = None) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr[-2000:]}")
    return dt


OPENCV_DECODE = ("import cv2, sys\n"
                 "cap = cv2.VideoCapture(sys.argv[1])\n"
                 "n = 0\n"
                 "while cap.grab():\n"
                 "    ok, img = cap.retrieve()\n"
                 "    n += 1\n"
                 "print(n)")


def against_baselines(paths: list[str], reps: int = 3) -> None:
    """Per file, whole processes, alternating, median of `reps`: OpenCV decode-only at full size
    (grab + retrieve: the floor any ingest pays), the PySceneDetect CLI (`detect-adaptive
    list-scenes`, the tool we wrap) and `de ingest` of that one file (stats, keyframes,
    signatures, catalog and regrouping included)."""
    import statistics

    scenedetect = shutil.which("scenedetect", path=os.path.dirname(sys.executable)) or "scenedetect"
    print("| file | frames | OpenCV decode-only | scenedetect detect-adaptive list-scenes | de ingest | "
          "ingest / decode | ingest / scenedetect |")
    print("|---|---|---|---|---|---|---|")
    for path in paths:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "one"
            folder.mkdir()
            os.symlink(os.path.abspath(path), folder / Path(path).name)
            n = int(subprocess.run([sys.executable, "-c", OPENCV_DECODE, path], capture_output=True,
                                   text=True).stdout.strip() or 0)
            t = {"decode": [], "sd": [], "de": []}
            for _ in range(reps):
                t["decode"].append(whole_process([sys.executable, "-c", OPENCV_DECODE, path]))
                t["sd"].append(whole_process([scenedetect, "-i", path, "detect-adaptive", "list-scenes", "-q"],
                                             cwd=tmp))
                cat = Path(tmp) / "c.duckdb"
                cat.unlink(missing_ok=True)
                shutil.rmtree(Path(tmp) / "c_cache", ignore_errors=True)
                t["de"].append(whole_process([sys.executable, "-m", "dataengine", "ingest", str(folder), "--catalog",
                                              str(cat), "--no-progress", "--workers", "1"]))
            m = {k: statistics.median(v) for k, v in t.items()}
            print(f"| {Path(path).name} | {n} | {m['decode']:.2f} s | {m['sd']:.2f} s | {m['de']:.2f} s | "
                  f"**{m['de'] / m['decode']:.2f}x** | **{m['de'] / m['sd']:.2f}x** |")


def distinct_copies(paths: list[str], folder: Path, copies: int) -> None:
    """`copies` copies of each file in folder, each with distinct trailing bytes (its own video)."""
    for i in range(copies):
        for p in paths:
            dst = folder / f"{i}_{Path(p).name}"
            shutil.copy(p, dst)
            with open(dst, "ab") as f:
                f.write(bytes([i]) * 16)


def workers_scaling(paths: list[str], copies: int = 4) -> None:
    """Many files: frames/s with --workers 1 and 2 (per core)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "many"
        folder.mkdir()
        frames = 0
        distinct_copies(paths, folder, copies)
        for p in folder.iterdir():
            frames += int(subprocess.run([sys.executable, "-c", OPENCV_DECODE, str(p)], capture_output=True,
                                         text=True).stdout.strip() or 0)
        for w in (1, 2):
            cat = Path(tmp) / f"w{w}.duckdb"
            dt = whole_process([sys.executable, "-m", "dataengine", "ingest", str(folder), "--catalog", str(cat),
                                "--no-progress", "--workers", str(w)])
            print(f"--workers {w}: {len(list(folder.iterdir()))} files, {frames} frames in {dt:.2f} s: "
                  f"{frames / dt:.0f} frames/s, {frames / dt / w:.0f} per worker")


def signature_cost(paths: list[str], reps: int = 3) -> None:
    """The near-duplicate signature's share of the analysis pass: the same in-process analysis
    with and without signatures, alternating, median of `reps` each; plus regrouping."""
    import statistics

    from dataengine.analyze import IngestOptions, analyze_video

    for path in paths:
        times = {True: [], False: []}
        for _ in range(reps):
            for sig in (False, True):
                t0 = time.perf_counter()
                res = analyze_video(path, "bench", IngestOptions(signatures=sig))
                times[sig].append(time.perf_counter() - t0)
                assert res.status == "ok", res.error
        on, off = statistics.median(times[True]), statistics.median(times[False])
        print(f"signatures on {Path(path).name}: analysis {off:.3f} s without, {on:.3f} s with: "
              f"{100 * (on - off) / off:+.1f}% ({len(res.clips)} clips; median of {reps})")


def regroup_cost(clips: int = 1_000_000, threshold: int = 10) -> None:
    """Grouping random signatures (the catalog-wide step every ingest ends with), numpy part only."""
    import numpy as np

    from dataengine.dedup import components, near_pairs

    rng = np.random.default_rng(0)
    sigs = rng.integers(-(2 ** 63), 2 ** 63 - 1, size=(clips, 3), dtype=np.int64)
    sigs[clips // 2:clips // 2 + clips // 20] = sigs[:clips // 20]  # 5% exact copies
    t0 = time.perf_counter()
    pairs = near_pairs(sigs, threshold)
    components(len(sigs), pairs)
    print(f"regroup {clips:,} random signatures (5% copies) at {threshold} bits: {time.perf_counter() - t0:.2f} s, "
          f"{len(pairs):,} pairs")


def _pooled(cmds: list[list[str]], procs: int, cwd: str | None = None) -> float:
    """Wall time of running the commands with at most `procs` at once."""
    t0 = time.perf_counter()
    running: list[subprocess.Popen] = []
    for c in cmds:
        while len(running) >= procs:
            running[0].wait()
            running = [p for p in running if p.poll() is None]
        running.append(subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd))
    for p in running:
        p.wait()
    return time.perf_counter() - t0


def folder_throughput(paths: list[str], copies: int = 3, reps: int = 3) -> None:
    """A folder of real videos (`copies` distinct-byte copies of each file), whole processes,
    median of `reps`: a pooled OpenCV decode (one process per file, as many at once as cores), the
    PySceneDetect CLI on as many files at once, and `de ingest --workers <cores>` with and without
    the purity stage (issue 22 asks: purity on no worse than today's ratios)."""
    import statistics

    cores = os.cpu_count() or 1
    scenedetect = shutil.which("scenedetect", path=os.path.dirname(sys.executable)) or "scenedetect"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "folder"
        folder.mkdir()
        distinct_copies(paths, folder, copies)
        files = sorted(str(p) for p in folder.iterdir())
        t: dict = {"decode": [], "sd": [], "on": [], "off": []}
        for _ in range(reps):
            t["decode"].append(_pooled([[sys.executable, "-c", OPENCV_DECODE, f] for f in files], cores))
            t["sd"].append(_pooled([[scenedetect, "-i", f, "detect-adaptive", "list-scenes", "-q"] for f in files],
                                   cores, cwd=tmp))
            for key, extra in (("on", []), ("off", ["--no-purity"])):
                cat = Path(tmp) / f"{key}.duckdb"
                cat.unlink(missing_ok=True)
                shutil.rmtree(Path(tmp) / f"{key}_cache", ignore_errors=True)
                t[key].append(whole_process([sys.executable, "-m", "dataengine", "ingest", str(folder), "--catalog",
                                             str(cat), "--no-progress", "--workers", str(cores), *extra]))
        m = {k: statistics.median(v) for k, v in t.items()}
        print(f"folder of {len(files)} real videos, {cores} at once, median of {reps}: pooled OpenCV decode "
              f"{m['decode']:.2f} s, scenedetect CLI {m['sd']:.2f} s")
        for key, name in (("off", "de ingest --no-purity"), ("on", "de ingest (purity stage on)")):
            print(f"  {name}: {m[key]:.2f} s = {m[key] / m['decode']:.2f}x decode, {m[key] / m['sd']:.2f}x scenedetect")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--folder-only", action="store_true", help="only the folder-of-real-videos measurement")
    args = ap.parse_args()
    if args.folder_only:
        media = Path(__file__).resolve().parents[1] / "tests" / "media"
        folder_throughput(sorted(str(p) for p in media.glob("*.mp4")))
        return
    from dataengine.synth import make_cartoon
    from dataengine.video import analysis_size

    w, h = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        one = tmp / "one"
        cuts = [float(t) for t in range(4, int(args.seconds), 4)]
        t0 = time.perf_counter()
        res = make_cartoon(one / "cartoon.mp4", duration_s=args.seconds, fps=24, size=(w, h), cuts=cuts)
        print(f"generated {res.num_frames} frames {w}x{h} in {time.perf_counter() - t0:.1f} s")
        path = res.path
        decode_only(path)  # warm the page cache
        d_full, n = decode_only(path)
        aw, ah = analysis_size(w, h, 320)
        cores = os.cpu_count() or 1
        d_small, _ = decode_only(path, aw, ah)
        d_small_mt, _ = decode_only(path, aw, ah, threads=cores)
        print(f"decode-only full size, 1 thread       : {d_full:6.2f} s  {n / d_full:7.0f} frames/s")
        print(f"decode-only {aw}x{ah}, 1 thread       : {d_small:6.2f} s  {n / d_small:7.0f} frames/s")
        print(f"decode-only {aw}x{ah}, {cores} threads      : {d_small_mt:6.2f} s  {n / d_small_mt:7.0f} frames/s")
        t1 = run_ingest(one, tmp / "c1.duckdb", 1)
        print(f"de ingest, 1 worker (whole process)   : {t1:6.2f} s  {n / t1:7.0f} frames/s")
        print(f"  ratio vs decode-only full size        : {t1 / d_full:.2f}x")
        print(f"  ratio vs decode-only analysis size    : {t1 / d_small:.2f}x (1 thread), "
              f"{t1 / d_small_mt:.2f}x ({cores} threads, same decoder threads as ingest)")
        two = tmp / "two"
        two.mkdir()
        shutil.copy(path, two / "a.mp4")
        make_cartoon(two / "b.mp4", duration_s=args.seconds, fps=24, size=(w, h), cuts=[c + 1 for c in cuts])
        t2 = run_ingest(two, tmp / "c2.duckdb", cores)
        print(f"de ingest, {cores} workers, 2 videos: {t2:6.2f} s  {2 * n / t2:7.0f} frames/s  "
              f"ratio {t2 / (2 * d_full):.2f}x two sequential decode-only passes (full)")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "dataengine", "--help"], capture_output=True, check=True)
        print(f"de --help               : {time.perf_counter() - t0:6.2f} s")
        media = Path(__file__).resolve().parents[1] / "tests" / "media"
        real = sorted(str(p) for p in media.glob("*.mp4")) if media.is_dir() else []
        against_baselines([*real, path])
        workers_scaling(real or [path])
        if real:
            folder_throughput(real)
        signature_cost([path, *real])
        regroup_cost()


if __name__ == "__main__":
    main()
