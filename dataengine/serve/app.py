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

Media are served by clip id only: the path comes from the catalog, never from the request. How
the catalog is read is in serve.reading; the run folders (what may be served from them, and how a
run being written is shown) in serve.runs.
"""

from __future__ import annotations

import hmac
import re
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

from catalog.db import CatalogError
from catalog.query import QueryError

from catalog.grid import PAGE_SIZE, BadRequest, Filter, last_page, page_rows, plan, summarize  # noqa: F401

from .reading import Busy, SharedReader, Summaries, page_job, read_catalog, summary_job  # noqa: F401
from .runs import RunFolders

LABELLING_RE = re.compile(r"^[^\x00-\x1f]{1,300}$")
CLIP_RE = re.compile(r"^[0-9a-f]{8,64}_[0-9]+_[0-9]+$")
# containers and codecs a browser plays as they are; anything else gets a cached h264 preview
PLAYABLE = {(".mp4", "h264"), (".m4v", "h264"), (".mp4", "av1"), (".webm", "vp8"), (".webm", "vp9"),
            (".webm", "av1")}



class Browser(RunFolders):
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
        from ..clipread import ClipReader, fit_size

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


def qs(base: dict, **changes) -> str:
    """A query string from the current filter with some keys changed (None drops a key)."""
    d = {k: v for k, v in {**base, **changes}.items() if v not in (None, "")}
    return "?" + urlencode(d) if d else "?"
