"""`de serve`: a web browser over the catalog and the run folders (Starlette, server-rendered).

Reads go through the same sandbox as `de query` (the user's WHERE clause is checked by
`check_where_clause` and runs on the read-only connection with external access off); facet
conditions are bound parameters. A page whose filter holds the user's SQL runs in a worker
process with a memory ceiling that is killed at the deadline (catalog.isolate), so one slow or
greedy filter cannot freeze or exhaust the server. The only write is human curation
(`catalog.curation`), one short transaction per edit. Readers share the catalog; a write waits
for them and excludes them (DuckDB refuses a read-write connection beside read-only ones in one
process). Every connection is closed at the end of its request, so the file is never held
between requests and `de caption`/`de ingest` elsewhere can write.

Media are served by clip id only: the path comes from the catalog, never from the request. A run
file is served only if it is in the listing of that run folder made by this server, and its real
path (symlinks resolved) lies under the real --runs folder. Run files are read while training may
be writing them: a cut last line or a file of the wrong shape marks that run as damaged and the
rest of the page still renders.
"""

from __future__ import annotations

import hmac
import json
import re
import threading
import time
from contextlib import contextmanager
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


class SharedReader:
    """The in-process readers' one sandboxed connection, and the writer's exclusion.

    Readers run at once, each on its own cursor of one sandboxed connection that the first reader
    opens and the last one closes, so the catalog file is held only while some request reads it.
    (Separate connections cannot overlap: the sandbox locks the configuration of DuckDB's shared
    instance, and a second connect then sees "a different configuration".) A write waits for the
    readers and excludes them: DuckDB refuses a read-write connection beside read-only ones in one
    process. `with reader:` is the writer's side (tests hold it to read the catalog in-process)."""

    def __init__(self, catalog):
        self.catalog = catalog
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._con = None

    @contextmanager
    def holding(self):
        """Count as a reader without a cursor (a worker process reads the file meanwhile)."""
        with self._cond:
            self._cond.wait_for(lambda: not self._writer)
            self._readers += 1
        try:
            yield
        finally:
            self._leave()

    @contextmanager
    def cursor(self):
        from catalog.query import open_sandboxed

        with self._cond:
            self._cond.wait_for(lambda: not self._writer)
            if self._con is None:
                self._con = open_sandboxed(self.catalog)
            self._readers += 1
            try:
                cur = self._con.cursor()
            except BaseException:
                self._readers -= 1
                raise
        try:
            yield cur
        finally:
            cur.close()
            self._leave()

    def _leave(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                if self._con is not None:
                    self._con.close()
                    self._con = None
                self._cond.notify_all()

    def __enter__(self):
        with self._cond:
            self._cond.wait_for(lambda: not self._writer and self._readers == 0)
            self._writer = True
        return self

    def __exit__(self, *exc):
        with self._cond:
            self._writer = False
            self._cond.notify_all()
        return False


@contextmanager
def _own_connection(catalog):
    from catalog.query import open_sandboxed

    con = open_sandboxed(catalog)
    try:
        yield con
    finally:
        con.close()


def read_catalog(connection, timeout: float, fn, *args):
    """fn(con, *args) on the connection the context manager `connection` gives, interrupted at
    `timeout`, with DuckDB's errors as QueryError."""
    import duckdb

    from catalog.query import QueryError

    with connection as con:
        timer = threading.Timer(timeout, con.interrupt)
        timer.daemon = True
        timer.start()
        try:
            return fn(con, *args)
        except duckdb.InterruptException as e:
            raise QueryError(f"the query ran longer than {timeout:g} s and was stopped; simplify it") from e
        except duckdb.Error as e:
            raise QueryError(f"query failed: {str(e).splitlines()[0][:300]}") from e
        finally:
            timer.cancel()


def grid_job(catalog, timeout: float, q, tag, video, dur, lab, page, known_total=None) -> dict:
    """The grid page's data on a connection of its own: what a worker process runs."""
    return read_catalog(_own_connection(catalog), timeout, _grid_on, q, tag, video, dur, lab, page, known_total)


def where_clause(con, q: str | None, tag: str | None, video: str | None, dur: str | None):
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
        m = re.fullmatch(r"(\d{1,6}(?:\.\d{1,6})?)-(\d{1,6}(?:\.\d{1,6})?)?", dur)
        if not m:
            raise BadRequest("a duration facet looks like 2-4 or 30-")
        parts.append("duration_s >= ?")
        params.append(float(m.group(1)))
        if m.group(2):
            parts.append("duration_s < ?")
            params.append(float(m.group(2)))
    return ("WHERE " + " AND ".join(parts)) if parts else "", params


def _grid_on(con, q, tag, video, dur, lab, page, known_total=None) -> dict:
    """One grid page, plus the total and the facets unless `known_total` says they are cached."""
    where, params = where_clause(con, q, tag, video, dur)
    total = known_total if known_total is not None else \
        con.execute(f"SELECT count(*) FROM clips {where}", params).fetchone()[0]
    page = min(page, max(1, -(-total // PAGE_SIZE)))  # past the last page: the last page
    # the page's ids on the narrow sort key first, then the wide rows of just those clips: sorting
    # every matching row with all its columns is what costs at a million clips
    ids = [r[0] for r in con.execute(f"SELECT clip_id FROM clips {where} ORDER BY video_path, start_s, clip_id "
                                     "LIMIT ? OFFSET ?", params + [PAGE_SIZE, (page - 1) * PAGE_SIZE]).fetchall()]
    cur = con.execute(f"SELECT {GRID_COLUMNS} FROM clips WHERE clip_id IN ({', '.join('?' for _ in ids) or 'NULL'}) "
                      "ORDER BY video_path, start_s, clip_id", ids)
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
    if known_total is not None:
        return {"total": total, "rows": rows, "page": page}
    if lab:
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
            "pin": pin[0] if pin else None, "page": page}


class Browser:
    """The catalog and runs behind the pages; every method opens and closes its connection."""

    def __init__(self, catalog, runs_dir=None, token: str | None = None, query_timeout: float = 30.0,
                 isolate: bool = True, query_memory_mb: int | None = None):
        from catalog.db import resolve_path

        self.catalog = resolve_path(catalog)
        self.runs_dir = Path(runs_dir).resolve() if runs_dir else None
        self.token = token
        self.timeout = query_timeout
        self.lock = SharedReader(self.catalog)
        self.preview_dir = self.catalog.parent / f"{self.catalog.stem}_cache" / "previews"
        self._preview_locks: dict[str, threading.Lock] = {}
        self._manifests: dict[str, tuple[float, set]] = {}
        self._facets: dict[tuple, tuple[tuple, dict]] = {}  # filter -> (catalog version, total + facets)
        self.workers = None
        if isolate:
            from catalog.isolate import DEFAULT_MEMORY_MB, QueryWorkers

            self.workers = QueryWorkers(n=2, memory_mb=query_memory_mb or DEFAULT_MEMORY_MB)

    # -- reading ---------------------------------------------------------------------------
    def _read(self, fn, *args):
        """fn(con, *args) on a sandboxed read-only cursor, beside other readers, with a timeout."""
        return read_catalog(self.lock.cursor(), self.timeout, fn, *args)

    def _version(self) -> tuple:
        """Changes whenever the catalog is written (by this server or any other process)."""
        out = []
        for p in (self.catalog, Path(f"{self.catalog}.wal")):
            try:
                st = p.stat()
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append(None)
        return tuple(out)

    def grid(self, q=None, tag=None, video=None, dur=None, labelling=None, page=1) -> dict:
        page = max(1, min(int(page), 10**9))
        lab = parse_labelling(labelling)
        # the total and the facets depend on the filter and the catalog, not on the page: computed
        # once per filter and kept until the catalog is written
        key, version = (q or None, tag, video, dur, lab), self._version()
        hit = self._facets.get(key)
        known = hit[1]["total"] if hit and hit[0] == version else None
        if q and self.workers is not None:
            # the user's SQL: in a worker process with a memory ceiling, killed at the deadline. It
            # holds a read-only handle in another process, so this process counts it as a reader
            with self.lock.holding():
                out = self.workers.run(grid_job, (str(self.catalog), self.timeout, q, tag, video, dur, lab, page,
                                                  known), self.timeout)
        else:
            out = self._read(_grid_on, q or None, tag, video, dur, lab, page, known)
        if known is None:
            if len(self._facets) >= 256:
                self._facets.pop(next(iter(self._facets)))
            self._facets[key] = (version, {k: v for k, v in out.items() if k not in ("rows", "page")})
        else:
            out = {**hit[1], **out}
        out.update(pages=max(1, -(-out["total"] // PAGE_SIZE)), q=q or "", tag=tag, video=video, dur=dur,
                   labelling=labelling)
        return out

    def close(self) -> None:
        if self.workers is not None:
            self.workers.close()

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
    def _confined(self, p: Path) -> Path | None:
        """p's real path if it lies under the real --runs folder (symlinks resolved), else None."""
        try:
            real = p.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        return real if self.runs_dir and real.is_relative_to(self.runs_dir) else None

    def runs(self) -> list[dict]:
        if not self.runs_dir or not self.runs_dir.is_dir():
            return []
        out = []
        for d in sorted(self.runs_dir.iterdir()):
            real = self._confined(d)
            if real is None or not real.is_dir() or real.parent != self.runs_dir:
                continue  # a run folder that is a link to elsewhere is not one of --runs' runs
            if any((real / f).is_file() for f in ("run.json", "config.json", "compare.json")):
                info = _load_json(real / "run.json")
                info = info if isinstance(info, dict) else {}
                step = info.get("steps", info.get("step"))
                out.append({"name": d.name, "status": info.get("state") if isinstance(info.get("state"), str) else None,
                            "step": step if isinstance(step, int) and not isinstance(step, bool) else None,
                            "mtime": time.strftime("%Y-%m-%d %H:%M", time.localtime(real.stat().st_mtime))})
        return out

    def run_dir(self, name: str) -> Path:
        names = {r["name"] for r in self.runs()}
        if name not in names:
            raise BadRequest(f"no run {name!r} under {self.runs_dir}", 404)
        return self.runs_dir / name

    def run_files(self, name: str) -> dict[str, Path]:
        """Every servable file of a run (the listing the run page links to)."""
        import os

        d = self.run_dir(name).resolve()
        files = {}
        for root, dirs, names in os.walk(d):  # os.walk does not descend into linked folders
            for fn in names:
                rel = (Path(root) / fn).relative_to(d).as_posix()
                real = self._servable(d, rel)
                if real is not None:
                    files[rel] = real
        return files

    def run_file(self, name: str, rel: str) -> Path | None:
        """One file of a run, by the same rule as the listing, without walking the folder (a
        gallery page asks for dozens of videos)."""
        parts = rel.split("/")
        if not rel or any(x in ("", ".", "..") for x in parts):
            return None
        return self._servable(self.run_dir(name).resolve(), rel)

    def _servable(self, d: Path, rel: str) -> Path | None:
        """A regular file of a served type, outside checkpoints, caches and logs, whose real path
        (links resolved) stays inside the run's folder."""
        p = d / rel
        if rel.startswith(("checkpoints/", "cache", "logs/")) or p.suffix.lower() not in RUN_FILE_TYPES:
            return None
        real = self._confined(p)
        return real if real is not None and real.is_relative_to(d) and real.is_file() else None

    def run_page(self, name: str) -> dict:
        d = self.run_dir(name).resolve()
        files = self.run_files(name)
        damaged: list[str] = []
        steps = []
        vdir = d / "validation"
        if vdir.is_dir() and self._confined(vdir):
            for sd in sorted(vdir.iterdir(), key=lambda p: (p.name != "base", p.name)):
                if not sd.is_dir() or self._confined(sd) is None:
                    continue
                prompts = _load_json(self._confined(sd / "prompts.json"))
                if prompts is None:
                    prompts = []
                if not isinstance(prompts, list) or not all(isinstance(x, dict) for x in prompts):
                    damaged.append(f"validation/{sd.name}/prompts.json is not a list of prompts")
                    prompts = []
                cells = []
                for k, pr in enumerate(prompts[:256]):
                    vid = f"validation/{sd.name}/p{k}.mp4"
                    gif = f"validation/{sd.name}/p{k}.gif"
                    cells.append({"video": vid if vid in files else None, "gif": gif if gif in files else None,
                                  "summary": str(pr.get("summary", "")), "prompt": str(pr.get("prompt", ""))})
                tail = sd.name.split("_")[-1]
                label = "base" if sd.name == "base" else str(int(tail)) if "_" in sd.name and tail.isdigit() \
                    else sd.name
                steps.append({"step": label, "cells": cells})
        metrics, bad = read_jsonl(self._confined(d / "metrics.jsonl"))
        if bad:
            damaged.append(f"metrics.jsonl: {bad}")
        reports = sorted(f for f in files if f.endswith((".html", ".md")) and f not in ("gallery.html", "gallery.md"))
        images = sorted(f for f in files if f.endswith(".png"))
        run, config = _load_json(d / "run.json"), _load_json(d / "config.json")
        for fname, v in (("run.json", run), ("config.json", config)):
            if (d / fname).exists() and not isinstance(v, dict):
                damaged.append(f"{fname} is not readable JSON (being written, or damaged)")
        return {"name": name, "run": run if isinstance(run, dict) else {},
                "config": config if isinstance(config, dict) else {},
                "steps": steps, "loss_svg": metrics_svg(metrics, "loss"), "lr_svg": metrics_svg(metrics, "lr"),
                "eval_svg": metrics_svg(metrics, "eval_loss"), "reports": reports, "images": images,
                "damaged": damaged}

    def runs_using(self, clip_id: str) -> list[str]:
        out = []
        for r in self.runs():
            m = self._confined(self.runs_dir / r["name"] / "manifest.jsonl")
            if m is None:
                continue
            mt = m.stat().st_mtime
            cached = self._manifests.get(str(m))
            if not cached or cached[0] != mt:
                lines, _ = read_jsonl(m)  # a manifest being written: what is whole so far
                ids = {x.get("clip_id") for x in lines if x.get("role") == "train"}
                cached = self._manifests[str(m)] = (mt, ids)
            if clip_id in cached[1]:
                out.append(r["name"])
        return out

    # -- writing -----------------------------------------------------------------------------
    def authorised(self, supplied: str | None) -> bool:
        return not self.token or (isinstance(supplied, str) and hmac.compare_digest(supplied.encode(),
                                                                                     self.token.encode()))

    def keyframe(self, row: dict) -> Path | None:
        """The clip's keyframe: a regular .jpg file that is a JPEG. Keyframes stay where ingest
        wrote them (a copied catalog still points at them), so the check is on what the file is,
        not where: whatever a catalog row says, this route serves JPEG images and nothing else."""
        kp = row.get("keyframe_path")
        if not kp:
            return None
        try:
            real = Path(kp).resolve(strict=True)
            if real.suffix.lower() not in (".jpg", ".jpeg") or not real.is_file():
                return None
            with open(real, "rb") as f:
                return real if f.read(3) == b"\xff\xd8\xff" else None
        except (OSError, RuntimeError):
            return None

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


RUN_FILE_TYPES = (".mp4", ".gif", ".png", ".jpg", ".html", ".md", ".json", ".jsonl", ".csv", ".svg")
MAX_RUN_JSON_BYTES = 64 * 2**20


def _load_json(p: Path | None):
    """A JSON file's value, or None if it is missing, too big, being written or damaged."""
    try:
        if p is None or p.stat().st_size > MAX_RUN_JSON_BYTES:
            return None
        return json.loads(p.read_text(errors="replace"))
    except (OSError, ValueError, RecursionError):
        return None


def read_jsonl(p: Path | None) -> tuple[list[dict], str | None]:
    """(objects, problem). A last line without its newline is a line still being written and is
    left out quietly; any other line that is not a JSON object is reported (the rest is kept)."""
    if p is None:
        return [], None
    try:
        if p.stat().st_size > MAX_RUN_JSON_BYTES:
            return [], f"larger than {MAX_RUN_JSON_BYTES // 2**20} MB, not read"
        text = p.read_text(errors="replace")
    except OSError as e:
        return [], f"cannot read it ({e.strerror or e})"
    lines = text.split("\n")
    lines.pop()  # "" when the file ends with a newline; else a line still being written
    out, bad = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            x = json.loads(line)
        except (ValueError, RecursionError):
            bad += 1
            continue
        if isinstance(x, dict):
            out.append(x)
        else:
            bad += 1
    return out, (f"{bad} damaged line(s) left out" if bad else None)


def metrics_svg(metrics: list[dict], key: str, w: int = 520, h: int = 160) -> str | None:
    """A small line plot of one metric against step, as SVG text (numbers only: nothing to escape)."""
    pts = [(m["step"], float(m[key])) for m in metrics if key in m and "step" in m
           and isinstance(m["step"], (int, float)) and not isinstance(m["step"], bool)
           and isinstance(m[key], (int, float)) and not isinstance(m[key], bool)
           and m[key] == m[key] and abs(m[key]) != float("inf") and abs(m["step"]) != float("inf")]
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
