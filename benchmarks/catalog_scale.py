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


class Served:
    """A `de serve` process on a free loopback port, asked over HTTP with a new connection each
    time (as curl does)."""

    def __init__(self, cat: Path):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen([sys.executable, "-m", "dataengine", "serve", "--catalog", str(cat), "--port",
                                      str(self.port), "--token", "bench-token"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while True:
            try:
                if self.get("/healthz")[1] == 200:
                    return
            except OSError:
                pass
            if time.time() > deadline or self.proc.poll() is not None:
                self.close()
                raise SystemExit(f"de serve did not start: {self.proc.stderr.read()[-2000:]}")
            time.sleep(0.2)

    def get(self, path: str, **params) -> tuple[float, int, str]:
        import http.client
        from urllib.parse import urlencode

        url = path + ("?" + urlencode(params) if params else "")
        t0 = time.perf_counter()
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        c.request("GET", url)
        r = c.getresponse()
        body = r.read().decode("utf-8", "replace")
        c.close()
        return time.perf_counter() - t0, r.status, body

    def ok(self, what: str, path: str = "/", **params) -> float:
        t, status, body = self.get(path, **params)
        if status != 200:
            raise SystemExit(f"{what}: HTTP {status}: {body[:300]}")
        return t

    def until_counted(self, **params) -> float:
        """Seconds until /grid/summary has the filter's count and facets (the page's script polls it)."""
        t0 = time.perf_counter()
        while True:
            _, status, body = self.get("/grid/summary", **params)
            if status == 200:
                return time.perf_counter() - t0
            if status != 202:
                raise SystemExit(f"/grid/summary {params}: {status} {body[:300]}")
            time.sleep(0.05)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def serve_pages(cat: Path, pred: str, runs: int = 20) -> None:
    """`de serve` at this size: whole HTTP requests against a `de serve` process, p50 and p95 per
    kind of request. A *fresh* filter is one the server has not seen, so its page is the first it
    sends for it (the count and facets are then computed in the background)."""
    import re

    srv = Served(cat)
    try:
        srv.until_counted()  # the server counts the unfiltered grid at start
        home = srv.get("/")[2]
        total = int(re.search(r'id="count">(\d+) clip', home).group(1))
        print(f"| `de serve` HTTP request at {total:,} clips (new connection each) | n | p50 | p95 | max |")
        print("|---|---|---|---|---|")
        _facet_clicks(srv, home, runs)
        _page_requests(srv, pred, -(-total // 48), runs)
        _unindexed(srv)
    finally:
        srv.close()


def _facet_clicks(srv: Served, home: str, runs: int) -> None:
    """Fresh facet filters: a curator's clicks (each one's count awaited) and clicks back to back."""
    import re

    tags = re.findall(r'data-tag="([a-z0-9_]+)"', home)
    durs = re.findall(r'href="\?dur=([0-9.]+-[0-9.]*)"', home.replace("&amp;", "&"))
    vids = re.findall(r'href="\?video=([0-9a-f]+)"', home)
    facets = [{"tag": t} for t in tags] + [{"dur": d} for d in durs] + [{"video": v} for v in vids]
    # two rounds of fresh filters: a facet alone, then with a second facet on top
    fresh = (facets + [{**a, **b} for a, b in zip(facets, facets[1:] + facets[:1]) if set(a) != set(b)])[:2 * runs]
    idle, ready = [], []
    for f in fresh[:runs]:  # a curator: click, look at the page and its count, click again
        t = srv.ok(f"facet {f}", **f)
        idle.append(t)
        ready.append(t + srv.until_counted(**f))
    burst = [srv.ok(f"facet {f}", **f) for f in fresh[runs:2 * runs]]  # earlier counts still running
    _row("facet click: a fresh tag, duration or video filter, page 1", idle)
    _row("... its count and facets on the page (the page's script fetches them)", ready)
    _row("facet clicks back to back (earlier clicks still counting), page 1", burst)


def _page_requests(srv: Served, pred: str, last: int, runs: int) -> None:
    """Grid pages (first, random, last; facet and user-SQL filters, counted) and clip pages."""
    import random
    import re

    rng = random.Random(0)
    ids = re.findall(r'data-clip="([^"]+)"', srv.get("/", page=rng.randrange(1, last))[2])
    srv.until_counted(q=pred)
    srv.until_counted(tag="chase")
    srv.until_counted(tag="chase", dur="2-4")
    cases = [
        ("grid, no filter, page 1", lambda i: {}),
        ("grid, no filter, a random page", lambda i: {"page": rng.randrange(2, last)}),
        (f"grid, no filter, page {last:,} (last)", lambda i: {"page": last}),
        ("grid, tag facet chase (counted), a random page", lambda i: {"tag": "chase", "page": rng.randrange(1, 2000)}),
        ("grid, tag chase + duration 2-4 (counted), page 2", lambda i: {"tag": "chase", "dur": "2-4", "page": 2}),
        (f"grid, `{pred}` (user SQL, worker process, counted), page 1", lambda i: {"q": pred}),
        (f"grid, `{pred}`, a random page", lambda i: {"q": pred, "page": rng.randrange(1, 4000)}),
    ]
    for name, params in cases:
        _row(name, [srv.ok(name, **params(i)) for i in range(runs)])
    _row("clip page", [srv.ok("clip page", f"/clip/{ids[i % len(ids)]}") for i in range(runs)])


def _unindexed(srv: Served) -> None:
    """Filters no index serves (ILIKE, the search box) and a labelling's tag facet."""
    ilike = "caption ILIKE '%mouse%'"
    t = srv.ok(ilike, q=ilike)
    counted = srv.until_counted(q=ilike)
    print(f"| `{ilike}` (fresh), page 1 | 1 | {t * 1000:.0f} ms | | |")
    print(f"| `{ilike}`: count and facets ready after the click | 1 | {counted * 1000:.0f} ms | | |")
    _row(f"`{ilike}`, page 9,000 (counted)", [srv.ok(ilike, q=ilike, page=9000) for _ in range(5)])
    for text in ("cat chases mouse", "scene 4242"):
        print(f"| search box `{text}` (fresh), page 1 | 1 | {srv.ok('search', search=text) * 1000:.0f} ms | | |")
    _row("search box `scene 4242`, page 2 (ranked)", [srv.ok("search", search="scene 4242", page=2) for _ in range(5)])
    lab = "Qwen/Qwen2-VL-7B-Instruct@caption_v1-aaaa1111"
    t = srv.ok("labelling", tag="kitchen", labelling=lab) + srv.until_counted(tag="kitchen", labelling=lab)
    print(f"| tag facet with a labelling's captions (fresh): count and facets ready | 1 | {t * 1000:.0f} ms | | |")


def _row(name: str, ts: list[float]) -> None:
    ts = sorted(ts)
    p95 = ts[min(len(ts) - 1, int(round(0.95 * (len(ts) - 1))))]
    print(f"| {name} | {len(ts)} | {statistics.median(ts) * 1000:.0f} ms | {p95 * 1000:.0f} ms | "
          f"{ts[-1] * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
