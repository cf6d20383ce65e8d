"""A catalog of 1,000,005 clips: how fast are `de query`, `de stats` and `train --dry-run`?

Builds the catalog itself through the real schema (migrations), with synthetic rows: 2,000
videos, 1,000,005 clips, two labellings of every clip (about a fifth tagged `chase`) and a pin.
Then times each command as a whole process, three runs each (median), and in the same run the
baseline: a bare DuckDB scan with the same predicate on the base table, also as a whole process
(`python -c "import duckdb; ..."`), so interpreter start-up is on both sides.

    python benchmarks/catalog_scale.py [--clips 1000005] [--keep DIR]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

TAGS = ["chase", "kitchen", "night", "day", "garden", "fight", "sneak", "fall", "run", "dance", "explosion", "trap"]


def build(cat: Path, n_clips: int, n_videos: int = 2000) -> float:
    import duckdb

    from catalog import db, labels

    t0 = time.perf_counter()
    db.connect(cat).close()  # the real schema
    con = duckdb.connect(str(cat))
    con.execute("BEGIN")
    con.execute(f"""
        INSERT INTO videos (video_id, path, size_bytes, duration_s, fps, width, height, num_frames, codec, container,
                            rotation, is_vfr, reader, status, error, error_kind, split_key, ingested_at)
        SELECT md5(i::VARCHAR), '/data/cartoons/episode_' || i || '.mp4', 300000000, 1320.0, 24.0, 1440, 1080,
               31680, 'h264', 'mp4', 0, false, 'decord', 'ok', '', '', 'k1', now()
        FROM range({n_videos}) t(i)""")
    con.execute(f"""
        INSERT INTO clip_segments (clip_id, video_id, scene_index, window_index, start_frame, end_frame, start_s,
                                   end_s, motion_score, brightness, colorfulness, sharpness, keyframe_path, detector,
                                   detector_params, split_key)
        SELECT printf('%s_%07d_%07d', left(md5((i % {n_videos})::VARCHAR), 16), (i // {n_videos}) * 60,
                      (i // {n_videos}) * 60 + 48 + (i % 97)), md5((i % {n_videos})::VARCHAR),
               i // {n_videos}, 0, (i // {n_videos}) * 60, (i // {n_videos}) * 60 + 48 + (i % 97),
               (i // {n_videos}) * 2.5, (i // {n_videos}) * 2.5 + 2.0 + (i % 97) / 24.0,
               (i % 113) / 10.0, 0.3 + (i % 7) / 20.0, 0.2 + (i % 11) / 30.0, 100 + (i % 50), NULL, 'adaptive',
               '{{}}', 'k1'
        FROM range({n_clips}) t(i)""")
    tags = "[" + ", ".join(f"'{t}'" for t in TAGS) + "]"
    for cap, ver, salt in (("Qwen/Qwen2-VL-7B-Instruct", "caption_v1-aaaa1111", 0),
                           ("Qwen/Qwen2.5-VL-7B-Instruct", "caption_v1-bbbb2222", 5)):
        con.execute(f"""
            INSERT INTO captions (clip_id, captioner, prompt_version, status, caption, tag_list, fields, raw_output,
                                  error, num_frames, visual_tokens, seconds, is_random_model, created_at)
            SELECT clip_id, '{cap}', '{ver}', 'ok',
                   'A grey cat chases a small brown mouse across the kitchen, scene ' || h,
                   list_distinct([{tags}[1 + (h + {salt}) % 5], {tags}[1 + (h // 7) % 12], {tags}[1 + (h // 13) % 12]]),
                   json_object('characters', ['grey cat', 'mouse'], 'action', 'chase', 'setting', 'kitchen',
                               'time_of_day', CASE WHEN h % 3 = 0 THEN 'night' ELSE 'day' END,
                               'camera', 'wide shot', 'motion', 'fast')::VARCHAR,
                   '{{"caption": "..."}}', '', 8, 600, 1.5, false, now() - INTERVAL ({salt}) MINUTE
            FROM (SELECT clip_id, (hash(clip_id) % 100000)::BIGINT AS h FROM clip_segments)""")
    con.execute("COMMIT")
    con.close()
    t_rows = time.perf_counter() - t0
    con = db.connect(cat)
    t1 = time.perf_counter()
    labels.set_pin(con, "Qwen/Qwen2-VL-7B-Instruct")  # what `de captions use` does: re-choose every clip's label
    print(f"pinning a labelling (re-choosing 1 of 2 labels for every clip): {time.perf_counter() - t1:.2f} s")
    con.close()
    return t_rows


def timed(cmd: list[str], runs: int = 3) -> tuple[float, list[float], str]:
    times, out = [], ""
    for _ in range(runs):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
        out = r.stdout + r.stderr
    return statistics.median(times), times, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=1_000_005)
    ap.add_argument("--keep", default=None, help="build the catalog here and keep it")
    ap.add_argument("--serve-only", action="store_true", help="only the `de serve` page timings")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        cat = root / "big.duckdb"
        if not (cat.exists() and (root / "built").exists()):
            cat.unlink(missing_ok=True)
            print(f"built {args.clips:,} clips, 2 labellings, a pin in {build(cat, args.clips):.1f} s "
                  f"({cat.stat().st_size / 2**20:.0f} MiB)")
            (root / "built").write_text("ok")
        py = sys.executable
        pred = "tags LIKE '%chase%'"
        if args.serve_only:
            serve_pages(cat, pred)
            return
        base_sql = ("SELECT c.clip_id FROM captions c WHERE c.captioner = 'Qwen/Qwen2-VL-7B-Instruct' "
                    "AND c.status = 'ok' AND array_to_string(c.tag_list, ',') LIKE '%chase%' LIMIT 5")
        base_cmd = [py, "-c", f"import duckdb; c = duckdb.connect({str(cat)!r}, read_only=True); "
                              f"print(c.execute({base_sql!r}).fetchall())"]
        count_sql = ("SELECT count(*) FROM captions c WHERE c.captioner = 'Qwen/Qwen2-VL-7B-Instruct' AND "
                     "c.status = 'ok' AND array_to_string(c.tag_list, ',') LIKE '%chase%'")
        n_match = subprocess.run([py, "-c", f"import duckdb; c = duckdb.connect({str(cat)!r}, read_only=True); "
                                            f"print(c.execute({count_sql!r}).fetchone()[0])"],
                                 capture_output=True, text=True).stdout.strip()
        print(f"clips matching {pred!r}: {n_match}")
        b, bt, _ = timed(base_cmd)
        q, qt, _ = timed([py, "-m", "dataengine", "query", pred, "--limit", "5", "--catalog", str(cat)])
        s, st, _ = timed([py, "-m", "dataengine", "stats", "--catalog", str(cat)])
        dry = [py, "-m", "train.cli", "--query", pred, "--dry-run", "--catalog", str(cat), "--frames", "33"]
        first, _, _ = timed(dry, runs=1)  # may measure the real block's memory once (then cached)
        d, dt, out = timed(dry)
        print("| command (whole process, median of 3) | seconds | runs | goal | vs bare scan |")
        print("|---|---|---|---|---|")
        print(f"| bare DuckDB scan, same predicate on `captions` (baseline) | {b:.2f} | "
              f"{', '.join(f'{x:.2f}' for x in bt)} | | 1.00x |")
        print(f"| `de query \"{pred}\" --limit 5` | {q:.2f} | {', '.join(f'{x:.2f}' for x in qt)} | < 0.5 | "
              f"{q / b:.2f}x |")
        print(f"| `de stats` | {s:.2f} | {', '.join(f'{x:.2f}' for x in st)} | < 2 | {s / b:.2f}x |")
        print(f"| `train --query \"{pred}\" --dry-run` | {d:.2f} | {', '.join(f'{x:.2f}' for x in dt)} | < 5 | "
              f"{d / b:.2f}x |")
        print(f"(first dry run in a fresh user cache: {first:.2f} s)")
        print(out.strip().splitlines()[0])
        serve_pages(cat, pred)


def serve_pages(cat: Path, pred: str, runs: int = 7) -> None:
    """`de serve`'s page data at this size (in-process: the catalog reads behind each page). Each
    kind of request runs `runs` times: the first on a fresh server (the filter's total and facets
    are computed), the rest with them cached (what a curator paging and clicking gets)."""
    from catalog import db
    from dataengine.serve.app import Browser

    db.connect(cat).close()  # migrate to the current schema first, as `de serve` does
    b = Browser(cat)
    first = b.grid()
    cid, last = first["rows"][0]["clip_id"], first["pages"]
    cases = [("grid, no filter, page 1", lambda: b.grid()),
             (f"grid, no filter, page {last // 2:,} (middle)", lambda: b.grid(page=last // 2)),
             (f"grid, no filter, page {last:,} (last)", lambda: b.grid(page=last)),
             ("grid, tag facet chase, page 1", lambda: b.grid(tag="chase")),
             ("grid, duration facet 2-4, page 1", lambda: b.grid(dur="2-4")),
             (f"grid, {pred}, page 1", lambda: b.grid(q=pred)),
             ("grid, caption ILIKE '%mouse%', page 9,000", lambda: b.grid(q="caption ILIKE '%mouse%'", page=9000)),
             ("clip page", lambda: b.clip(cid))]
    print(f"| `de serve` request at {first['total']:,} clips (catalog reads) | first (facets computed) | "
          f"p50 | p95 (of {runs - 1} after the first) |")
    print("|---|---|---|---|")
    try:
        for name, fn in cases:
            b._facets.clear()
            ts = []
            try:
                for _ in range(runs):
                    t0 = time.perf_counter()
                    fn()
                    ts.append(time.perf_counter() - t0)
            except Exception as e:  # e.g. a worker's memory ceiling: the page shows this error
                print(f"| {name} | error after {time.perf_counter() - t0:.1f} s: {str(e)[:120]} | | |")
                continue
            rest = sorted(ts[1:])
            p95 = rest[min(len(rest) - 1, int(round(0.95 * (len(rest) - 1))))]
            print(f"| {name} | {ts[0] * 1000:.0f} ms | {statistics.median(rest) * 1000:.0f} ms | {p95 * 1000:.0f} ms |")
    finally:
        b.close()


if __name__ == "__main__":
    main()
