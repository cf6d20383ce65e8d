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

import atexit
import hmac
import json
import re
import threading
import time
import weakref
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

from catalog.db import CatalogError
from catalog.query import QueryError

from catalog.grid import PAGE_SIZE, BadRequest, Filter, last_page, page_rows, plan, summarize

LABELLING_RE = re.compile(r"^[^\x00-\x1f]{1,300}$")
CLIP_RE = re.compile(r"^[0-9a-f]{8,64}_[0-9]+_[0-9]+$")
# containers and codecs a browser plays as they are; anything else gets a cached h264 preview
PLAYABLE = {(".mp4", "h264"), (".m4v", "h264"), (".mp4", "av1"), (".webm", "vp8"), (".webm", "vp9"),
            (".webm", "av1")}



_READERS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_readers() -> None:
    """Close lingering connections before the interpreter tears down (not from a timer thread)."""
    for r in list(_READERS):
        r.close()


class SharedReader:
    """The in-process readers' one sandboxed connection, and the writer's exclusion.

    Readers run at once, each on its own cursor of one sandboxed connection that the first reader
    opens. It stays open `linger` s after the last reader leaves, so a curator's next click finds
    DuckDB's buffers warm (at 1M clips, reopening cost 15-40 ms a page), but never once it has been
    open `max_hold` s: a writer in another process waits for the file at most that long while
    pages keep coming (`de caption` waits up to $DE_LOCK_WAIT, 10 s). Under a steady stream of
    overlapping requests the readers never all leave, so once the connection has been open
    `max_hold` s new readers wait for it to close and then for `yield_s` more: the file is free
    long enough for a writer's retry (catalog.db backs off to 0.5 s) to land. Without that window
    a grid reloading every 60 ms held the file for good and `de caption` gave up "busy".
    (Separate connections cannot overlap: the sandbox locks the configuration of DuckDB's shared
    instance, and a second connect then sees "a different configuration".) A write waits for the
    readers and excludes them: DuckDB refuses a read-write connection beside read-only ones in one
    process. `with reader:` is the writer's side (tests hold it to read the catalog in-process)."""

    def __init__(self, catalog, linger: float = 1.0, max_hold: float = 2.0, yield_s: float = 0.7):
        self.catalog = catalog
        self.linger, self.max_hold, self.yield_s = linger, max_hold, yield_s
        self._free_until = 0.0  # readers wait until then: the file is left to other processes' writers
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._con = None
        self._opened = 0.0
        self._gen = 0  # bumped by every leave: a pending close is for the latest idle spell only
        _READERS.add(self)

    def _may_read(self) -> bool:
        """(Under the condition.) Whether a new reader may start now; False while a writer holds
        the file here, while the connection drains after max_hold, or during the writers' window."""
        now = time.monotonic()
        if self._writer or now < self._free_until:
            return False
        return not (self._readers and self._opened and now - self._opened >= self.max_hold)

    def _wait_turn(self) -> None:
        while not self._may_read():
            wait = self._free_until - time.monotonic()
            self._cond.wait(timeout=max(0.01, wait) if wait > 0 else 0.05)

    @contextmanager
    def holding(self):
        """Count as a reader without a cursor (a worker process reads the file meanwhile)."""
        with self._cond:
            self._wait_turn()
            self._opened = self._opened or time.monotonic()  # the reading spell starts with its first reader
            self._readers += 1
        try:
            yield
        finally:
            self._leave()

    @contextmanager
    def cursor(self):
        from catalog.query import open_sandboxed

        with self._cond:
            self._wait_turn()
            if self._con is None:
                self._con = open_sandboxed(self.catalog)
            self._opened = self._opened or time.monotonic()
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
                self._gen += 1
                held = time.monotonic() - self._opened
                if self._con is not None and self.linger > 0 and held < self.max_hold:
                    t = threading.Timer(self.linger, self._expire, (self._gen,))
                    t.daemon = True
                    t.start()
                else:
                    self._close()
                    if held >= self.max_hold:  # readers held the file that long: give writers a turn
                        self._free_until = time.monotonic() + self.yield_s
                    self._opened = 0.0
                self._cond.notify_all()

    def _expire(self, gen: int) -> None:
        with self._cond:
            if gen == self._gen and self._readers == 0:
                self._close()
                self._opened = 0.0

    def _close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def close(self) -> None:
        """Let go of the file now (the server is stopping)."""
        with self._cond:
            self._gen += 1
            if self._readers == 0:
                self._close()

    def __enter__(self):
        with self._cond:
            self._cond.wait_for(lambda: not self._writer and self._readers == 0)
            self._writer = True
            self._gen += 1
            self._close()  # a lingering read-only connection would refuse the write
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


# -- jobs for a worker process (the user's SQL runs there) --------------------------------------
def page_job(catalog: str, timeout: float, f: Filter, span, first_page: bool) -> list[dict]:
    return read_catalog(_own_connection(catalog), timeout, page_rows, f, span, first_page)


def summary_job(catalog: str, timeout: float, f: Filter) -> dict:
    return read_catalog(_own_connection(catalog), timeout, summarize, f)


class Busy(Exception):
    """The server's user-SQL capacity is full: answered at once (503), never queued."""

    status = 503


class Summaries:
    """Per-filter summaries (total, facets, page plan), each computed once per catalog version
    on a background thread and kept for the most recent filters. A failed one is not kept: the
    next request tries again.

    Nobody waits on work nobody wants: a summary whose page stopped asking for it (the page's
    script asks every fraction of a second while it shows "counting") for `abandon_after` s is
    skipped when its turn comes, and at most `max_pending` wait for a thread: the oldest waiting
    one is cancelled to make room, so thirty abandoned filters cannot hold every user's filter
    behind them."""

    def __init__(self, compute, max_entries: int = 64, threads: int = 2, abandon_after: float = 5.0,
                 max_pending: int = 4):
        from collections import OrderedDict
        from concurrent.futures import ThreadPoolExecutor

        self._compute = compute
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="de-serve-summary")
        self._lock = threading.Lock()
        self._entries: OrderedDict = OrderedDict()  # Filter -> (catalog version, Future)
        self._asked: dict = {}  # Filter -> when a request last asked for it (monotonic)
        self._waiters: dict = {}  # Filter -> requests blocked in result() on it now
        self.max_entries, self.abandon_after, self.max_pending = max_entries, abandon_after, max_pending
        self.computed = 0  # summaries started (tests read it)
        self.abandoned = 0  # skipped because no request asked for them any more (tests read it)

    def _run(self, f):
        with self._lock:
            idle = time.monotonic() - self._asked.get(f, 0.0)
            waited_on = self._waiters.get(f, 0) > 0
        if idle > self.abandon_after and not waited_on:
            with self._lock:
                self.abandoned += 1
            raise Busy("nobody is waiting for this summary any more")
        return self._compute(f)

    def get(self, f: Filter, version):
        with self._lock:
            self._asked[f] = time.monotonic()
            hit = self._entries.get(f)
            if hit and hit[0] == version and not (hit[1].done() and hit[1].exception() is not None):
                self._entries.move_to_end(f)
                return hit[1]
            waiting = [(k, v[1]) for k, v in self._entries.items() if not v[1].done() and not v[1].running()]
            while len(waiting) >= self.max_pending:
                k, fut = waiting.pop(0)  # the oldest request that has not started: cancelled, not queued
                if fut.cancel():
                    self._entries.pop(k, None)
            fut = self._pool.submit(self._run, f)
            self.computed += 1
            self._entries[f] = (version, fut)
            self._entries.move_to_end(f)
            while len(self._entries) > self.max_entries:
                old, _ = self._entries.popitem(last=False)
                self._asked.pop(old, None)
            return fut

    def peek(self, f: Filter, version) -> dict | None:
        """The summary if it is already computed for this version (nothing is started)."""
        with self._lock:
            hit = self._entries.get(f)
        if hit and hit[0] == version and hit[1].done() and not hit[1].cancelled() and hit[1].exception() is None:
            return hit[1].result()
        return None

    def result(self, f: Filter, version, wait: float | None) -> dict | None:
        """The summary, waiting up to `wait` s (None: until done); None if it is not ready."""
        from concurrent.futures import CancelledError
        from concurrent.futures import TimeoutError as FutureTimeout

        fut = self.get(f, version)
        with self._lock:
            self._waiters[f] = self._waiters.get(f, 0) + 1
        try:
            return fut.result(timeout=wait)
        except (FutureTimeout, CancelledError):
            return None
        finally:
            with self._lock:
                self._waiters[f] -= 1
                if not self._waiters[f]:
                    del self._waiters[f]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class Browser:
    """The catalog and runs behind the pages; every method opens and closes its connection."""

    def __init__(self, catalog, runs_dir=None, token: str | None = None, query_timeout: float = 30.0,
                 isolate: bool = True, query_memory_mb: int | None = None, summary_wait: float | None = 0.05,
                 read_linger: float = 1.0, sql_slots: int = 6):
        from catalog.db import resolve_path

        self.catalog = resolve_path(catalog)
        self.runs_dir = Path(runs_dir).resolve() if runs_dir else None
        self.token = token
        self.timeout = query_timeout
        # how long a first page waits for its filter's count and facets before it is sent without
        # them (the page's script then fetches them); None waits for them (tests, scripts)
        self.summary_wait = summary_wait
        self.lock = SharedReader(self.catalog, linger=read_linger)
        self.preview_dir = self.catalog.parent / f"{self.catalog.stem}_cache" / "previews"
        self._preview_locks: dict[str, threading.Lock] = {}
        self._manifests: dict[str, tuple[float, set]] = {}
        self.summaries = Summaries(self._summarize)
        self._sql_slots = threading.BoundedSemaphore(sql_slots)
        self.workers = None
        if isolate:
            from catalog.isolate import DEFAULT_MEMORY_MB, QueryWorkers

            self.workers = QueryWorkers(n=2, memory_mb=query_memory_mb or DEFAULT_MEMORY_MB)

    # -- reading ---------------------------------------------------------------------------
    def _read(self, fn, *args):
        """fn(con, *args) on a sandboxed read-only cursor, beside other readers, with a timeout."""
        return read_catalog(self.lock.cursor(), self.timeout, fn, *args)

    def _isolated(self, job, *args):
        """A job with the user's SQL in a worker process with a memory ceiling, killed at the
        deadline. It holds a read-only handle in another process, so this process counts it as a
        reader. At most `sql_slots` such jobs run or wait at once; one more is answered "busy" at
        once instead of holding a request thread for the query timeout."""
        if not self._sql_slots.acquire(blocking=False):
            raise Busy("the server is busy with other filters; try again in a moment")
        try:
            with self.lock.holding():
                return self.workers.run(job, (str(self.catalog), self.timeout, *args), self.timeout)
        finally:
            self._sql_slots.release()

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

    def _summarize(self, f: Filter) -> dict:
        if f.q and self.workers is not None:
            return self._isolated(summary_job, f)
        return self._read(summarize, f)

    def warm(self) -> None:
        """Start the unfiltered grid's summary (the first page a curator opens) and the filter
        workers, in the background."""
        self.summaries.get(Filter(), self._version())
        if self.workers is not None:
            threading.Thread(target=self.workers.prestart, daemon=True, name="de-serve-prestart").start()

    def summary(self, q=None, tag=None, video=None, dur=None, labelling=None, search=None,
                wait: float | None = 0.0) -> dict | None:
        """The filter's total and facets, or None while they are being computed (after `wait` s)."""
        f = Filter(q or None, tag or None, video or None, dur or None, parse_labelling(labelling),
                   search if search and search.strip() else None).check()
        return self.summaries.result(f, self._version(), wait)

    def grid(self, q=None, tag=None, video=None, dur=None, labelling=None, page=1, search=None) -> dict:
        """One grid page. Page 1 is read at once; a later page is planned from the filter's
        summary (computed once per filter and catalog version, in the background)."""
        t0 = time.monotonic()
        page = max(1, min(int(page), 10**9))
        f = Filter(q or None, tag or None, video or None, dur or None, parse_labelling(labelling),
                   search if search and search.strip() else None).check()
        version = self._version()
        # page 1 of a filter not yet counted is read first, alone on the CPU; its count starts after.
        # A search's pages all come from its ranking.
        summary = (self.summaries.result(f, version, self.timeout) if page > 1 or f.search
                   else self.summaries.peek(f, version))
        span = None
        if summary is not None:
            page, span = plan(summary, page)
        # Without a summary only page 1 can be read (a later page's place in the order needs the
        # count): a later page then shows no rows and says it is still counting, never page 1's rows.
        first = summary is None and page == 1
        counting = summary is None and page > 1
        if counting:
            rows = []
        elif f.q and self.workers is not None:
            rows = self._isolated(page_job, f, span, first)
        else:
            rows = self._read(page_rows, f, span, first)
        for r in rows:
            r["direct"] = playable(r["video_path"], r.pop("video_codec", None))
        out = {"rows": rows, "page": page, "summary_error": None, "counting": counting}
        if summary is None:
            wait = None if self.summary_wait is None else max(0.0, self.summary_wait - (time.monotonic() - t0))
            try:
                summary = self.summaries.result(f, version, wait)
            except (QueryError, CatalogError, Busy) as e:
                out["summary_error"] = e.args[0] if e.args else str(e)
        if summary is not None:
            out.update({k: v for k, v in summary.items() if k not in ("paths", "cum", "ranked", "scores")})
            out["pages"] = last_page(summary["total"])
            for r in rows:
                r["score"] = summary.get("scores", {}).get(r["clip_id"])
        else:
            out.update(total=None, pages=None, tags=[], videos=[], durations=[], labellings=[], pin=None)
        out.update(q=q or "", tag=tag, video=video, dur=dur, labelling=labelling, search=f.search or "")
        return out

    def close(self) -> None:
        self.summaries.close()
        self.lock.close()
        if self.workers is not None:
            self.workers.close()

    def clip(self, clip_id: str) -> dict:
        if not CLIP_RE.match(clip_id):
            raise BadRequest("not a clip id", 404)

        def run(con):
            from catalog import browse, captions

            try:
                row = browse.clip_row(con, clip_id)
            except browse.NoClip:
                raise BadRequest(f"no clip {clip_id}", 404) from None
            dups = browse.dup_group_members(con, row["dup_group"], clip_id) if row.get("dup_group") is not None else []
            return (row, captions.of_clip(con, clip_id), browse.neighbours(con, row["video_id"], clip_id),
                    browse.video_codec(con, row["video_id"]), browse.clip_losses(con, clip_id), dups)

        row, labellings, nb, codec, losses, dups = self._read(run)
        neighbours = [dict(clip_id=x[0], start_s=x[1], end_s=x[2], caption=x[3], here=x[0] == clip_id) for x in nb]
        direct = playable(row["video_path"], codec)
        shown = next((l for l in labellings if (l["captioner"], l["prompt_version"]) ==
                      (row.get("captioner"), row.get("prompt_version"))), None)
        row["label_kind"] = shown["model_kind"] if shown else None
        return {"row": row, "labellings": labellings, "neighbours": neighbours, "codec": codec, "direct": direct,
                "runs": self.runs_using(clip_id), "losses": losses, "dups": dups}

    def media_row(self, clip_id: str) -> dict:
        if not CLIP_RE.match(clip_id):
            raise BadRequest("not a clip id", 404)

        def run(con):
            from catalog import browse

            try:
                return browse.media_row(con, clip_id)
            except browse.NoClip:
                raise BadRequest(f"no clip {clip_id}", 404) from None

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
            from ..atomic import atomic_path

            with atomic_path(out) as tmp:
                save_mp4(frames, tmp, row["fps"])
        return out

    # -- runs --------------------------------------------------------------------------------
    def _confined(self, p: Path) -> Path | None:
        """p's real path if it lies under the real --runs folder (symlinks resolved), else None."""
        try:
            real = p.resolve(strict=True)
        except (OSError, RuntimeError, ValueError):  # ValueError: an embedded NUL byte
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
        if not rel or "\x00" in rel or "\x00" in name or any(x in ("", ".", "..") for x in parts):
            return None  # a NUL byte is no file name (pathlib raises on it)
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
