"""`de ingest`: find videos, skip what the catalog already has, analyse the rest in parallel,
and store each video with its clips in one short transaction as its result arrives.

A kill at any moment loses at most the videos still in flight; a rerun picks them up.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from catalog import db, store

from . import identity
from .analyze import IngestOptions, VideoResult, analyze_video
from .video import VIDEO_EXTENSIONS

log = logging.getLogger(__name__)


class IngestError(Exception):
    """Bad arguments to ingest (e.g. a path that does not exist)."""


@dataclass
class IngestSummary:
    videos_ok: int = 0
    videos_failed: int = 0
    skipped: int = 0
    duplicates: int = 0
    clips: int = 0
    dropped_short: int = 0
    hours: float = 0.0
    frames: int = 0
    seconds: float = 0.0
    failures: Counter = field(default_factory=Counter)
    failed_paths: list[tuple[str, str]] = field(default_factory=list)

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
        s += f"; {self.seconds:.1f} s, {fps:,.0f} frames/s"
        return s

    def as_dict(self) -> dict:
        d = asdict(self)
        d["failures"] = dict(self.failures)
        return d


def discover(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files given directly are taken whatever their suffix; folders are searched recursively
    for known video suffixes. Order is stable (sorted) so runs are reproducible."""
    found: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS))
        elif p.is_file():
            found.append(p)
        else:
            raise IngestError(f"no such file or folder: {p}")
    seen, out = set(), []
    for f in found:
        r = f.resolve()
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out


def ingest_paths(
    con,
    paths: Iterable[str | os.PathLike],
    opts: IngestOptions,
    *,
    workers: int | None = None,
    resplit: bool = False,
    retry_failed: bool = False,
    progress: bool = True,
    on_result: Callable[[VideoResult], None] | None = None,
) -> IngestSummary:
    t0 = time.perf_counter()
    files = discover(paths)
    summary = IngestSummary()
    run = db.start_run(con, "ingest", {"paths": [str(p) for p in paths], "options": asdict(opts),
                                        "resplit": resplit, "retry_failed": retry_failed})
    known = store.known_videos(con)
    todo: list[tuple[str, str]] = []
    seen_ids: set[str] = set()
    for f in files:
        try:
            vid = identity.video_id(f)
        except OSError as e:
            summary.videos_failed += 1
            summary.failures["unreadable"] += 1
            summary.failed_paths.append((str(f), str(e)))
            continue
        if vid in seen_ids:
            summary.duplicates += 1
            continue
        seen_ids.add(vid)
        prev = known.get(vid)
        if prev is not None:
            same_split = prev["split_key"] == opts.split_key
            if prev["status"] == "ok" and (same_split or not resplit):
                if prev["path"] != str(f) and not os.path.exists(prev["path"]):
                    store.update_path(con, vid, str(f))  # the file moved: follow it
                summary.skipped += 1
                continue
            if prev["status"] == "failed" and not retry_failed and not resplit:
                summary.skipped += 1
                continue
        todo.append((str(f), vid))

    _run_pool(con, todo, opts, workers, progress, summary, on_result)
    summary.seconds = time.perf_counter() - t0
    db.finish_run(con, run, summary.as_dict(), summary.ok)
    return summary


def _store(con, res: VideoResult, summary: IngestSummary) -> None:
    with db.transaction(con):
        n = store.save_video(con, res.video_row(), (asdict(c) for c in res.clips))
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


def _run_pool(con, todo, opts, workers, progress, summary, on_result) -> None:
    if not todo:
        return
    from tqdm import tqdm

    workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
    if opts.decode_threads <= 1:
        # fewer videos than cores: let each decoder use the spare cores
        from dataclasses import replace

        opts = replace(opts, decode_threads=max(1, (os.cpu_count() or 1) // workers))
    bar = tqdm(total=len(todo), unit="video", desc="ingest", disable=not progress, dynamic_ncols=True)
    pending = list(todo)
    try:
        while pending:
            # A decoder can crash a worker outright (segfault on a hostile file). The pool is then
            # broken; the videos in flight are retried one at a time so the culprit is isolated.
            crashed = _pool_pass(con, pending, opts, workers, bar, summary, on_result)
            if not crashed:
                break
            pending = []
            for path, vid in crashed:
                if len(crashed) == 1 or workers == 1:
                    res = VideoResult(video_id=vid, path=path, size_bytes=os.path.getsize(path),
                                      status="failed", error="the decoder crashed on this file",
                                      error_kind="decoder crash", split_key=opts.split_key)
                    _store(con, res, summary)
                    bar.update(1)
                else:
                    pending.append((path, vid))
            workers = 1
    finally:
        bar.close()


def _pool_pass(con, todo, opts, workers, bar, summary, on_result) -> list[tuple[str, str]]:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # fork + decoder threads is unsafe; spawn is portable
    crashed: list[tuple[str, str]] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
        futs = {ex.submit(analyze_video, path, vid, opts): (path, vid) for path, vid in todo}
        for fut in as_completed(futs):
            try:
                res = fut.result()
            except BrokenProcessPool:
                crashed.append(futs[fut])
                continue
            _store(con, res, summary)
            if on_result:
                on_result(res)
            bar.update(1)
            bar.set_postfix(clips=summary.clips, failed=summary.videos_failed)
    return crashed
