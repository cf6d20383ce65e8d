"""`de serve`: a web browser over the catalog and the run folders (Starlette, server-rendered).

Reads go through the same sandbox as `de query` (the user's WHERE clause is checked by
`check_where_clause` and runs on the read-only connection with external access off); facet
conditions are bound parameters. The only write is human curation (`catalog.curation`), one
short transaction per edit. All catalog access in this process is serialised by one lock and
every connection is closed at the end of its request, so the file is never held between
requests and `de caption`/`de ingest` elsewhere can write.

Media are served by clip id only: the path comes from the catalog, never from the request. A run
file is served only if it is in the listing of that run folder made by this server.
"""

from __future__ import annotations

import hmac
import json
import re
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

PAGE_SIZE = 48
DURATION_BUCKETS = [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10), (10, 15), (15, 30), (30, None)]
TAG_RE = re.compile(r"^[a-z0-9_]{1,40}$")
HEX_RE = re.compile(r"^[0-9a-f]{8,64}$")
CLIP_RE = re.compile(r"^[0-9a-f]{8,64}_[0-9]+_[0-9]+$")
LABELLING_RE = re.compile(r"^[^\x00-\x1f]{1,300}$")
GRID_COLUMNS = ("clip_id, video_id, video_path, start_s, end_s, duration_s, motion_score, caption, tags, tag_list, "
                "rejected, keyframe_path, captioner, prompt_version")
# containers and codecs a browser plays as they are; anything else gets a cached h264 preview
PLAYABLE = {(".mp4", "h264"), (".m4v", "h264"), (".mp4", "av1"), (".webm", "vp8"), (".webm", "vp9"),
            (".webm", "av1")}


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Browser:
    """The catalog and runs behind the pages; every method opens and closes its connection."""

    def __init__(self, catalog, runs_dir=None, token: str | None = None, query_timeout: float = 30.0):
        from catalog.db import resolve_path

        self.catalog = resolve_path(catalog)
        self.runs_dir = Path(runs_dir).resolve() if runs_dir else None
        self.token = token
        self.timeout = query_timeout
        self.lock = threading.Lock()
        self.preview_dir = self.catalog.parent / f"{self.catalog.stem}_cache" / "previews"
        self._preview_locks: dict[str, threading.Lock] = {}
        self._manifests: dict[str, tuple[float, set]] = {}

    # -- reading ---------------------------------------------------------------------------
    def _read(self, fn):
        """fn(con) on a sandboxed read-only connection, under the process lock, with a timeout."""
        import duckdb

        from catalog.query import QueryError, open_sandboxed

        with self.lock:
            con = open_sandboxed(self.catalog)
            timer = threading.Timer(self.timeout, con.interrupt)
            timer.daemon = True
            timer.start()
            try:
                return fn(con)
            except duckdb.InterruptException as e:
                raise QueryError(f"the query ran longer than {self.timeout:g} s and was stopped; simplify it") from e
            except duckdb.Error as e:
                raise QueryError(f"query failed: {str(e).splitlines()[0]}") from e
            finally:
                timer.cancel()
                con.close()

    def where(self, con, q: str | None, tag: str | None, video: str | None, dur: str | None):
        """The WHERE text and its parameters: the user's clause (checked like `de query`'s) plus facets."""
        from catalog.query import check_where_clause, view_columns

        parts, params = [], []
        if q:
            parts.append(f"({check_where_clause(q, view_columns(con))}\n)")
        if tag:
            if not TAG_RE.match(tag):
                raise BadRequest("a tag facet is lowercase letters, digits and _")
            parts.append("list_contains(tag_list, ?)")
            params.append(tag)
        if video:
            if not HEX_RE.match(video):
                raise BadRequest("a video facet is a video id")
            parts.append("video_id = ?")
            params.append(video)
        if dur:
            m = re.fullmatch(r"(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)?", dur)
            if not m:
                raise BadRequest("a duration facet looks like 2-4 or 30-")
            parts.append("duration_s >= ?")
            params.append(float(m.group(1)))
            if m.group(2):
                parts.append("duration_s < ?")
                params.append(float(m.group(2)))
        return ("WHERE " + " AND ".join(parts)) if parts else "", params

    def grid(self, q=None, tag=None, video=None, dur=None, labelling=None, page=1) -> dict:
        page = max(1, int(page))
        lab = parse_labelling(labelling)

        def run(con):
            where, params = self.where(con, q, tag, video, dur)
            total = con.execute(f"SELECT count(*) FROM clips {where}", params).fetchone()[0]
            cur = con.execute(f"SELECT {GRID_COLUMNS} FROM clips {where} ORDER BY video_path, start_s, clip_id "
                              "LIMIT ? OFFSET ?", params + [PAGE_SIZE, (page - 1) * PAGE_SIZE])
            cols = [d[0] for d in cur.description]
            rows = [dict(zip(cols, r)) for r in cur.fetchall()]
            vids = sorted({r["video_id"] for r in rows})
            codecs = dict(con.execute(f"SELECT video_id, codec FROM videos WHERE video_id IN "
                                      f"({', '.join('?' for _ in vids) or 'NULL'})", vids).fetchall())
            for r in rows:
                r["direct"] = playable(r["video_path"], codecs.get(r["video_id"]))
            if lab:
                ids = [r["clip_id"] for r in rows]
                marks = ", ".join("?" for _ in ids) or "NULL"
                picked = {r[0]: r[1:] for r in con.execute(
                    f"SELECT clip_id, caption, tag_list, status FROM captions WHERE captioner = ? AND "
                    f"prompt_version = ? AND clip_id IN ({marks})", [lab[0], lab[1], *ids]).fetchall()}
                for r in rows:
                    cap, tags, status = picked.get(r["clip_id"], (None, None, None))
                    r["caption"], r["tag_list"] = cap, tags
                    r["status"] = status
                    r["tags"] = ",".join(tags) if tags else None
                tag_sql = (f"SELECT t, count(*) FROM (SELECT unnest(c.tag_list) AS t FROM captions c WHERE "
                           f"c.captioner = ? AND c.prompt_version = ? AND c.status = 'ok' AND c.clip_id IN "
                           f"(SELECT clip_id FROM clips {where})) GROUP BY t ORDER BY 2 DESC, t LIMIT 40")
                tags = con.execute(tag_sql, [lab[0], lab[1], *params]).fetchall()
            else:
                tags = con.execute(f"SELECT t, count(*) FROM (SELECT unnest(tag_list) AS t FROM clips {where}) "
                                   "GROUP BY t ORDER BY 2 DESC, t LIMIT 40", params).fetchall()
            cases = " ".join(f"WHEN duration_s < {hi} THEN '{lo}-{hi}'" for lo, hi in DURATION_BUCKETS if hi)
            durs = dict(con.execute(f"SELECT CASE {cases} ELSE '30-' END AS b, count(*) FROM clips {where} GROUP BY b",
                                    params).fetchall())
            videos = con.execute(f"SELECT video_id, any_value(video_path), count(*) FROM clips {where} GROUP BY 1 "
                                 "ORDER BY 3 DESC, 2 LIMIT 40", params).fetchall()
            labellings = con.execute("SELECT captioner, prompt_version, count(*) FILTER (WHERE status = 'ok'), "
                                     "max(created_at) FROM captions GROUP BY 1, 2 ORDER BY 4 DESC").fetchall()
            pin = con.execute("SELECT value FROM settings WHERE key = 'caption_pin'").fetchone()
            return {"total": total, "rows": rows, "tags": tags, "videos": videos, "labellings": labellings,
                    "durations": [(f"{lo}-{hi if hi else ''}", durs.get(f"{lo}-{hi}" if hi else "30-", 0))
                                  for lo, hi in DURATION_BUCKETS],
                    "pin": pin[0] if pin else None}

        out = self._read(run)
        out.update(page=page, pages=max(1, -(-out["total"] // PAGE_SIZE)), q=q or "", tag=tag, video=video, dur=dur,
                   labelling=labelling)
        return out

    def clip(self, clip_id: str) -> dict:
        if not CLIP_RE.match(clip_id):
            raise BadRequest("not a clip id", 404)

        def run(con):
            cur = con.execute("SELECT * FROM clips WHERE clip_id = ?", [clip_id])
            cols = [d[0] for d in cur.description]
            r = cur.fetchone()
            if r is None:
                raise BadRequest(f"no clip {clip_id}", 404)
            row = dict(zip(cols, r))
            cur = con.execute("SELECT captioner, prompt_version, status, caption, tag_list, fields, raw_output, error, "
                              "created_at, is_random_model FROM captions WHERE clip_id = ? ORDER BY "
                              "(captioner = 'human') DESC, created_at DESC", [clip_id])
            cols = [d[0] for d in cur.description]
            labellings = [dict(zip(cols, x)) for x in cur.fetchall()]
            nb = con.execute("SELECT clip_id, start_s, end_s, caption FROM clips WHERE video_id = ? "
                             "ORDER BY start_s", [row["video_id"]]).fetchall()
            codec = con.execute("SELECT codec FROM videos WHERE video_id = ?", [row["video_id"]]).fetchone()
            cur = con.execute("SELECT run_id, samples, mean_loss, mean_z, updated_at FROM clip_losses "
                              "WHERE clip_id = ? ORDER BY updated_at DESC", [clip_id])
            losses = [dict(zip([d[0] for d in cur.description], x)) for x in cur.fetchall()]
            dups = []
            if row.get("dup_group") is not None:
                dups = [dict(zip(("clip_id", "video_path", "start_s", "end_s", "dup_rank"), x)) for x in con.execute(
                    "SELECT clip_id, video_path, start_s, end_s, dup_rank FROM clips WHERE dup_group = ? "
                    "AND clip_id <> ? ORDER BY dup_rank", [row["dup_group"], clip_id]).fetchall()]
            return row, labellings, nb, (codec[0] if codec else None), losses, dups

        row, labellings, nb, codec, losses, dups = self._read(run)
        i = next(k for k, x in enumerate(nb) if x[0] == clip_id)
        neighbours = [dict(clip_id=x[0], start_s=x[1], end_s=x[2], caption=x[3], here=x[0] == clip_id)
                      for x in nb[max(0, i - 3): i + 4]]
        direct = playable(row["video_path"], codec)
        return {"row": row, "labellings": labellings, "neighbours": neighbours, "codec": codec, "direct": direct,
                "runs": self.runs_using(clip_id), "losses": losses, "dups": dups}

    def media_row(self, clip_id: str) -> dict:
        if not CLIP_RE.match(clip_id):
            raise BadRequest("not a clip id", 404)

        def run(con):
            r = con.execute("SELECT c.clip_id, c.video_id, c.video_path, c.start_s, c.end_s, c.keyframe_path, "
                            "c.width, c.height, c.fps, v.codec FROM clips c JOIN videos v USING (video_id) "
                            "WHERE c.clip_id = ?", [clip_id]).fetchone()
            if r is None:
                raise BadRequest(f"no clip {clip_id}", 404)
            return dict(zip(["clip_id", "video_id", "video_path", "start_s", "end_s", "keyframe_path", "width",
                             "height", "fps", "codec"], r))

        return self._read(run)

    def preview(self, row: dict) -> Path:
        """A cached h264 MP4 of just the clip's range (for sources a browser cannot play)."""
        from ..identity import check_source
        from ..media import save_mp4
        from ..video import ClipReader, fit_size

        out = self.preview_dir / f"{row['clip_id']}.mp4"
        lock = self._preview_locks.setdefault(row["clip_id"], threading.Lock())
        with lock:
            if out.exists():
                return out
            check_source(row["video_path"], row["video_id"])
            self.preview_dir.mkdir(parents=True, exist_ok=True)
            reader = ClipReader(row["video_path"], size=fit_size(row["width"], row["height"], max_side=480))
            frames, _ = reader.read(row["start_s"], row["end_s"], row["fps"])
            tmp = out.with_suffix(".tmp.mp4")
            try:
                save_mp4(frames, tmp, row["fps"])
                tmp.replace(out)
            finally:
                tmp.unlink(missing_ok=True)
        return out

    # -- runs --------------------------------------------------------------------------------
    def runs(self) -> list[dict]:
        if not self.runs_dir or not self.runs_dir.is_dir():
            return []
        out = []
        for d in sorted(self.runs_dir.iterdir()):
            if d.is_dir() and ((d / "run.json").exists() or (d / "config.json").exists()
                               or (d / "compare.json").exists()):
                info = _load_json(d / "run.json") or {}
                out.append({"name": d.name, "status": info.get("status"), "step": info.get("step"),
                            "mtime": time.strftime("%Y-%m-%d %H:%M", time.localtime(d.stat().st_mtime))})
        return out

    def run_dir(self, name: str) -> Path:
        names = {r["name"] for r in self.runs()}
        if name not in names:
            raise BadRequest(f"no run {name!r} under {self.runs_dir}", 404)
        return self.runs_dir / name

    def run_files(self, name: str) -> dict[str, Path]:
        """Every servable file of a run (the allow-list file requests are looked up in)."""
        d = self.run_dir(name)
        files = {}
        for p in d.rglob("*"):
            rel = p.relative_to(d).as_posix()
            if p.is_file() and not rel.startswith(("checkpoints/", "cache", "logs/")) and p.suffix.lower() in (
                    ".mp4", ".gif", ".png", ".jpg", ".html", ".md", ".json", ".jsonl", ".csv", ".svg"):
                files[rel] = p
        return files

    def run_page(self, name: str) -> dict:
        d = self.run_dir(name)
        files = self.run_files(name)
        steps = []
        vdir = d / "validation"
        if vdir.is_dir():
            for sd in sorted(vdir.iterdir(), key=lambda p: (p.name != "base", p.name)):
                prompts = _load_json(sd / "prompts.json") or []
                cells = []
                for k, pr in enumerate(prompts):
                    vid = f"validation/{sd.name}/p{k}.mp4"
                    gif = f"validation/{sd.name}/p{k}.gif"
                    cells.append({"video": vid if vid in files else None, "gif": gif if gif in files else None,
                                  "summary": pr.get("summary", ""), "prompt": pr.get("prompt", "")})
                label = "base" if sd.name == "base" else str(int(sd.name.split("_")[-1])) if "_" in sd.name else sd.name
                steps.append({"step": label, "cells": cells})
        metrics = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if line.strip()] \
            if (d / "metrics.jsonl").exists() else []
        reports = sorted(f for f in files if f.endswith((".html", ".md")) and f not in ("gallery.html", "gallery.md"))
        images = sorted(f for f in files if f.endswith(".png"))
        return {"name": name, "run": _load_json(d / "run.json") or {}, "config": _load_json(d / "config.json") or {},
                "steps": steps, "loss_svg": metrics_svg(metrics, "loss"), "lr_svg": metrics_svg(metrics, "lr"),
                "eval_svg": metrics_svg(metrics, "eval_loss"), "reports": reports, "images": images}

    def runs_using(self, clip_id: str) -> list[str]:
        out = []
        for r in self.runs():
            m = self.runs_dir / r["name"] / "manifest.jsonl"
            if not m.exists():
                continue
            mt = m.stat().st_mtime
            cached = self._manifests.get(str(m))
            if not cached or cached[0] != mt:
                ids = set()
                for line in m.read_text().splitlines():
                    if line.strip():
                        x = json.loads(line)
                        if x.get("role") == "train":
                            ids.add(x.get("clip_id"))
                cached = self._manifests[str(m)] = (mt, ids)
            if clip_id in cached[1]:
                out.append(r["name"])
        return out

    # -- writing -----------------------------------------------------------------------------
    def authorised(self, supplied: str | None) -> bool:
        return not self.token or (supplied is not None and hmac.compare_digest(supplied, self.token))

    def curate(self, clip_id: str, **edit) -> dict:
        from catalog.curation import curate

        if not CLIP_RE.match(clip_id):
            raise BadRequest("not a clip id", 404)
        with self.lock:
            return curate(self.catalog, clip_id, **edit)


def parse_labelling(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    if not LABELLING_RE.match(value) or "@" not in value:
        raise BadRequest("a labelling is CAPTIONER@VERSION")
    cap, ver = value.rsplit("@", 1)
    return cap, ver


def playable(path: str, codec: str | None) -> bool:
    return (Path(path).suffix.lower(), (codec or "").lower()) in PLAYABLE


def _load_json(p: Path):
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def metrics_svg(metrics: list[dict], key: str, w: int = 520, h: int = 160) -> str | None:
    """A small line plot of one metric against step, as SVG text (numbers only: nothing to escape)."""
    pts = [(m["step"], float(m[key])) for m in metrics if key in m and "step" in m
           and isinstance(m[key], (int, float)) and m[key] == m[key] and abs(m[key]) != float("inf")]
    if len(pts) < 1:
        return None
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    pad = 36

    def sx(x):
        return pad + (x - x0) / (x1 - x0) * (w - 2 * pad)

    def sy(y):
        return h - pad + (y0 - y) / (y1 - y0) * (h - 2 * pad)

    line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
    dots = "".join(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5"/>' for x, y in pts)
    return (f'<svg class="plot" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{key}">'
            f'<polyline fill="none" stroke="#2a6fdb" stroke-width="1.5" points="{line}"/><g fill="#2a6fdb">{dots}</g>'
            f'<text x="{pad}" y="14" font-size="12">{key}</text>'
            f'<text x="4" y="{sy(y1) + 4:.0f}" font-size="10">{y1:.4g}</text>'
            f'<text x="4" y="{sy(y0) + 4:.0f}" font-size="10">{y0:.4g}</text>'
            f'<text x="{sx(x0):.0f}" y="{h - 8}" font-size="10">step {int(x0)}</text>'
            f'<text x="{sx(x1) - 40:.0f}" y="{h - 8}" font-size="10">step {int(x1)}</text></svg>')


def qs(base: dict, **changes) -> str:
    """A query string from the current filter with some keys changed (None drops a key)."""
    d = {k: v for k, v in {**base, **changes}.items() if v not in (None, "")}
    return "?" + urlencode(d) if d else "?"
