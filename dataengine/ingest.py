"""`de ingest`: find videos, skip what the catalog already has, analyse the rest in parallel,
and store each video with its clips in one short transaction as its result arrives.

A kill at any moment loses at most the videos still in flight; a rerun picks them up.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from catalog import db, store

from . import identity
from .analyze import IngestOptions, VideoResult, write_keyframes
from .executors import make_executor
from .video import VIDEO_EXTENSIONS

log = logging.getLogger(__name__)


class IngestError(Exception):
    """Bad arguments to ingest (e.g. a path that does not exist)."""


@dataclass
class IngestSummary:
    videos_ok: int = 0
    videos_failed: int = 0
    skipped: int = 0
    other_split: int = 0  # skipped videos whose clips came from other split options (--resplit applies these)
    duplicates: int = 0
    clips: int = 0
    dropped_short: int = 0
    hours: float = 0.0
    frames: int = 0
    seconds: float = 0.0
    replaced: int = 0  # older videos whose path now holds other bytes
    write_seconds: float = 0.0  # catalog connect + transaction + close, summed over videos
    executor: str = "local"
    nodes: Counter = field(default_factory=Counter)  # Ray node -> videos analysed there
    fatal: str = ""
    failures: Counter = field(default_factory=Counter)
    failed_paths: list[tuple[str, str]] = field(default_factory=list)
    dedup: str = ""  # the near-duplicate regrouping's one-line summary

    @property
    def ok(self) -> bool:
        return self.videos_failed == 0

    def line(self) -> str:
        fps = self.frames / self.seconds if self.seconds > 0 else 0.0
        s = (f"ingested {self.videos_ok} videos, {self.clips} clips, {self.hours:.3f} h of clips; "
             f"failed {self.videos_failed}")
        if self.failures:
            s += " (" + ", ".join(f"{k}: {v}" for k, v in sorted(self.failures.items())) + ")"
        if self.skipped or self.duplicates:
            s += f"; skipped {self.skipped} already ingested, {self.duplicates} duplicate files"

        if self.replaced:
            s += f"; {self.replaced} older video(s) replaced by new bytes at the same path"
        s += f"; {self.seconds:.1f} s, {fps:,.0f} frames/s (catalog writes {self.write_seconds:.2f} s)"
        if self.nodes:
            s += f"; on {len(self.nodes)} Ray node(s): " + ", ".join(f"{k} {v}" for k, v in sorted(self.nodes.items()))
        if self.dedup:
            s += "\n" + self.dedup
        if self.other_split:
            s += (f"\n{self.other_split} video(s) were ingested with other split options: pass --resplit to apply "
                  "these")
        return s

    def as_dict(self) -> dict:
        d = asdict(self)
        d["failures"] = dict(self.failures)
        d["nodes"] = dict(self.nodes)
        return d


def _printable(p: Path | str) -> str:
    """A path as text that round-trips to nothing but is safe to print and store: bytes that are
    not UTF-8 appear as \\xNN escapes."""
    return os.fsencode(str(p)).decode("utf-8", "backslashreplace")


def _utf8_ok(p: Path | str) -> bool:
    try:
        str(p).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _backfill_sar(catalog, vid: str, f: Path) -> None:
    from .video import VideoError, probe

    try:
        sar = probe(str(f)).sar
    except (VideoError, OSError):
        return  # stays unknown (shown as 1); the clips are still good
    with db.writing(catalog) as con:
        store.update_sar(con, vid, sar)


def discover(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[tuple[str, str]]]:
    """(video files, [(path, why it was not taken)]).

    Files given directly are taken whatever their suffix; folders are searched recursively for
    known video suffixes. Something named like a video that is not a regular file (a FIFO, a
    socket, a directory called x.mp4) is reported, never silently skipped, and never opened (a
    FIFO would block the read). A path that does not exist is an error before anything is written.
    Order is stable (sorted) so runs are reproducible.
    """
    found: list[Path] = []
    refused: list[tuple[str, str]] = []

    def kind(f: Path) -> str:
        import stat

        try:
            m = f.stat().st_mode
        except OSError as e:
            return f"cannot stat: {e.strerror or e}"
        if stat.S_ISDIR(m):
            return "a directory named like a video"
        if stat.S_ISFIFO(m):
            return "a FIFO (named pipe), not a regular file"
        if stat.S_ISSOCK(m):
            return "a socket, not a regular file"
        if stat.S_ISCHR(m) or stat.S_ISBLK(m):
            return "a device, not a regular file"
        return "not a regular file"

    for p in paths:
        p = Path(p)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.suffix.lower() not in VIDEO_EXTENSIONS:
                    continue
                if f.is_file():
                    found.append(f)
                else:
                    refused.append((_printable(f), kind(f)))
        elif p.is_file():
            found.append(p)
        elif p.exists() or p.is_symlink():
            refused.append((_printable(p), kind(p) if p.exists() else "a broken symlink"))
        else:
            raise IngestError(f"no such file or folder: {_printable(p)}")
    seen, out = set(), []
    for f in found:
        r = f.resolve()
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out, refused


@dataclass
class Decision:
    """What ingest does with one discovered file (plan_ingest)."""
    path: Path
    video_id: str | None
    action: str  # do | skip | duplicate | unreadable | bad name
    error: str | None = None  # why it is unreadable
    replaces: str | None = None  # an older video whose path now holds these other bytes
    follow_move: bool = False  # (skip) the video moved here from a path that no longer exists
    backfill_sar: bool = False  # (skip) ingested before the catalog kept the sample aspect ratio
    other_split: bool = False  # (skip) its clips were made with other split options


def plan_ingest(hashed: list[tuple[Path, str | OSError]], known: dict[str, dict], split_key: str, signatures: bool,
                *, resplit: bool = False, retry_failed: bool = False,
                exists: Callable[[str], bool] = os.path.exists) -> list[Decision]:
    """Which files to do, skip, resplit or replace: a pure function of the files (each with its
    content id, or the error that kept it from being read), the catalog's videos
    (`store.known_videos`) and the options. `exists` answers whether an older path is still there.

    - a file read twice in this run (the same bytes at two paths) is a duplicate;
    - a name that is not valid UTF-8 is stored as failed (the catalog could not reopen it);
    - other bytes at the path of a known video replace it (its clips are hidden);
    - a known video is skipped when its clips were made with the same split options, or with
      others and no --resplit; --resplit redoes it, and redoes clips made before signatures;
      a skipped video whose old path is gone is followed to the new one;
    - a video that failed before is skipped unless --retry-failed or --resplit."""
    by_path = {v["path"]: vid for vid, v in known.items() if v["status"] == "ok"}
    out: list[Decision] = []
    seen: set[str] = set()
    for f, vid in hashed:
        if isinstance(vid, OSError):
            out.append(Decision(f, None, "unreadable", error=vid.strerror or str(vid)))
            continue
        if vid in seen:
            out.append(Decision(f, vid, "duplicate"))
            continue
        seen.add(vid)
        if not _utf8_ok(f):
            out.append(Decision(f, vid, "bad name"))
            continue
        old = by_path.get(str(f))
        d = Decision(f, vid, "do", replaces=old if old is not None and old != vid else None)
        prev = known.get(vid)
        if prev is not None:
            same_split = prev["split_key"] == split_key and (prev.get("signed", True) or not signatures)
            if prev["status"] == "ok" and (same_split or not resplit):
                d.action = "skip"
                d.other_split = prev["split_key"] != split_key
                d.follow_move = prev["path"] != str(f) and not exists(prev["path"])
                d.backfill_sar = prev.get("sar") is None
            elif prev["status"] == "failed" and not retry_failed and not resplit:
                d.action = "skip"
        out.append(d)
    return out


def ingest_paths(
    catalog,
    paths: Iterable[str | os.PathLike],
    opts: IngestOptions,
    *,
    workers: int | None = None,
    resplit: bool = False,
    retry_failed: bool = False,
    progress: bool = True,
    on_result: Callable[[VideoResult], None] | None = None,
    ray_address: str | None = None,
) -> IngestSummary:
    """Ingest `paths` into the catalog at `catalog` (a path). The catalog is held only while a
    video's rows are written (connect, one transaction, close), so readers get in between."""
    t0 = time.perf_counter()
    paths = list(paths)
    files, refused = discover(paths)  # before the catalog is created or opened
    if not files and not refused:
        exts = " ".join(sorted(VIDEO_EXTENSIONS, key=lambda e: ({".mp4": 0, ".mkv": 1}.get(e, 2), e)))
        raise IngestError(f"no video files found (looked for {exts}) in {', '.join(_printable(p) for p in paths)}")
    executor = make_executor(ray_address, workers)
    executor.warm(len(files))  # worker start-up overlaps with opening the catalog and hashing
    summary = IngestSummary()
    for path, why in refused:
        summary.videos_failed += 1
        summary.failures["not a regular file"] += 1
        summary.failed_paths.append((path, why))
    try:
        with db.writing(catalog) as con:
            run = db.start_run(con, "ingest", {"paths": [_printable(p) for p in paths], "options": asdict(opts),
                                                "resplit": resplit, "retry_failed": retry_failed})
            known = store.known_videos(con)
    except BaseException:
        executor.close()
        raise
    try:
        hashed: list[tuple[Path, str | OSError]] = []
        for f in files:
            try:
                hashed.append((f, identity.video_id(f)))
            except OSError as e:
                hashed.append((f, e))
        decisions = plan_ingest(hashed, known, opts.split_key, opts.signatures, resplit=resplit,
                                retry_failed=retry_failed)
        todo = _carry_out(catalog, decisions, opts, summary)

        from tqdm import tqdm

        summary.executor = executor.name
        bar = tqdm(total=len(todo), unit="video", desc="ingest", disable=not progress or not todo,
                   dynamic_ncols=True)
        try:
            for res in executor.map_videos(todo, opts):
                _store(catalog, res, summary)
                if on_result:
                    on_result(res)
                bar.update(1)
                bar.set_postfix(clips=summary.clips, failed=summary.videos_failed)
        finally:
            bar.close()
    except BaseException as e:
        summary.fatal = f"{type(e).__name__}: {e}"
        raise
    finally:
        executor.close()
        if summary.clips and not summary.fatal:
            try:  # new clips: regroup near-duplicates across the whole catalog (one transaction)
                from .dedup import regroup

                with db.writing(catalog) as con:
                    summary.dedup = regroup(con).line()
            except Exception as e:  # noqa: BLE001 - the clips are committed; `de dedup` redoes this
                log.warning("could not group near-duplicates (run `de dedup`): %s", e)
        summary.seconds = time.perf_counter() - t0
        try:
            with db.writing(catalog) as con:
                db.finish_run(con, run, summary.as_dict(), summary.ok and not summary.fatal)
        except Exception as e:  # noqa: BLE001 - what was ingested is committed; the run row is a convenience
            log.warning("could not record the ingest run's end: %s", e)
    return summary


def _carry_out(catalog, decisions: list[Decision], opts: IngestOptions,
               summary: IngestSummary) -> list[tuple[str, str]]:
    """Count what the plan skips, store what it refuses, replace and follow what it says; returns
    the (path, video id) pairs to analyse."""
    todo: list[tuple[str, str]] = []
    for d in decisions:
        if d.action == "unreadable":
            summary.videos_failed += 1
            summary.failures["unreadable"] += 1
            summary.failed_paths.append((_printable(d.path), d.error))
            continue
        if d.action == "duplicate":
            summary.duplicates += 1
            continue
        if d.action == "bad name":
            _store(catalog, VideoResult(video_id=d.video_id, path=_printable(d.path),
                                        size_bytes=d.path.stat().st_size, status="failed",
                                        error_kind="non-UTF-8 name", split_key=opts.split_key,
                                        error="the file name is not valid UTF-8, so the catalog cannot store "
                                              "a path that opens it; rename the file"), summary)
            continue
        if d.replaces:  # other bytes at a path an older video holds: its clips no longer describe this file
            with db.writing(catalog) as con:
                store.mark_replaced(con, d.replaces)
            summary.replaced += 1
        if d.action == "skip":
            summary.other_split += d.other_split
            if d.follow_move:
                with db.writing(catalog) as con:
                    store.update_path(con, d.video_id, str(d.path))  # the file moved: follow it
            if d.backfill_sar:  # ingested before the catalog kept it: a probe, once
                _backfill_sar(catalog, d.video_id, d.path)
            summary.skipped += 1
            continue
        todo.append((str(d.path), d.video_id))
    return todo


def _store(catalog, res: VideoResult, summary: IngestSummary) -> None:
    if res.node:
        summary.nodes[res.node] += 1
    try:
        write_keyframes(res)  # before the rows that point at them are committed
    except OSError as e:
        from catalog.errors import cannot_write, is_disk_full, no_space

        where = Path(next(iter(res.keyframes))).parent if res.keyframes else "the keyframe folder"
        if is_disk_full(e):
            raise IngestError(f"{no_space(where)}: this video was not stored; free space and rerun to continue") from e
        raise IngestError(cannot_write(f"keyframes to {where}", e)) from e
    t0 = time.perf_counter()
    with db.writing(catalog) as con:
        n = store.save_video(con, res.video_row(), (asdict(c) for c in res.clips))
    summary.write_seconds += time.perf_counter() - t0
    _drop_orphan_keyframes(res)
    if res.status == "ok":
        summary.videos_ok += 1
        summary.clips += n
        summary.dropped_short += res.dropped_short
        summary.hours += sum(c.end_s - c.start_s for c in res.clips) / 3600.0
        summary.frames += res.num_frames or 0
    else:
        summary.videos_failed += 1
        summary.failures[res.error_kind or "failed"] += 1
        summary.failed_paths.append((res.path, res.error))


def _drop_orphan_keyframes(res: VideoResult) -> None:
    """After a resplit, keyframes of clips that no longer exist are removed (only once the new
    clips are committed, so a crash never leaves rows pointing at deleted files)."""
    keep = {c.keyframe_path for c in res.clips if c.keyframe_path}
    if not keep:
        return
    folder = Path(next(iter(keep))).parent
    for f in folder.glob("*.jpg"):
        if str(f) not in keep:
            f.unlink(missing_ok=True)
