"""`de caption`: label clips with a VLM, batch by batch, resumable.

One driver (`label_clips`) over three backends that only prepare frames and generate text:
`LocalBackend` here (a background thread reads and prepares the frames of batch i+1, decoding by
time from the source range and resizing with qwen-vl-utils, while the model generates batch i),
`api.ApiBackend` (a served endpoint) and `ray_pipeline.RayBackend` (a Ray Data pipeline). The
driver is the single writer: each batch's rows go in one short transaction, so a kill loses at
most the last batches and a rerun labels only clips without a row for (captioner, prompt version).
"""

from __future__ import annotations

import abc
import json
import logging
import os
import time
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator

from catalog import captions, db, labels
from catalog.query import run_query

from ..identity import check_source
from ..clipread import ClipReader
from ..video import VideoError
from .models import prepare_frames, video_metadata
from .parse import parse_output
from .prompts import Prompt

log = logging.getLogger(__name__)

FLUSH_EVERY_S = float(os.environ.get("DE_CAPTION_FLUSH_S", "2.0"))  # seconds between catalog writes



@dataclass
class CaptionSummary:
    captioner: str = ""
    prompt_version: str = ""
    selected: int = 0
    already_done: int = 0
    labelled: int = 0
    parse_failures: int = 0
    decode_failures: int = 0
    request_failures: int = 0  # --api: requests that failed after their retries
    retries: int = 0  # --api: requests retried (429/5xx/timeouts/malformed bodies)
    visual_tokens: int = 0
    frames: int = 0
    seconds: float = 0.0
    decode_seconds: float = 0.0
    generate_seconds: float = 0.0
    write_seconds: float = 0.0  # connect + one transaction + close, summed over writes
    flushes: int = 0
    nodes: dict = field(default_factory=dict)  # Ray node -> clips labelled there (--ray)
    is_random: bool = False
    fatal: str = ""
    errors: Counter = field(default_factory=Counter)
    notes: list = field(default_factory=list)  # how the run went, said once at the end (e.g. the endpoint kind)

    @property
    def attempted(self) -> int:
        return self.labelled + self.parse_failures + self.decode_failures + self.request_failures

    @property
    def ok(self) -> bool:
        return self.decode_failures == 0 and self.parse_failures == 0 and self.request_failures == 0

    def line(self) -> str:
        rate = self.attempted / self.seconds if self.seconds > 0 else 0.0
        model_done = self.labelled + self.parse_failures
        mean_tok = self.visual_tokens / model_done if model_done else 0.0
        s = (f"labelled {self.labelled} clips with {self.captioner} @ {self.prompt_version}; "
             f"parse failures {self.parse_failures}, decode failures {self.decode_failures}"
             + (f", request failures {self.request_failures} ({self.retries} retries)"
                if self.request_failures or self.retries else "") + "; "
             f"{self.already_done} already done; mean {mean_tok:.0f} visual tokens/clip; "
             f"{rate:.2f} clips/s")
        if self.nodes:
            s += f"; on {len(self.nodes)} Ray node(s): " + ", ".join(f"{k} {v}" for k, v in sorted(self.nodes.items()))
        if self.notes:
            s += "; " + "; ".join(self.notes)
        if self.is_random:
            s += "  [random tiny model: labels are noise]"
        return s


class LabelWriter:
    """Caption rows to the catalog, coalesced: batches are written together at most every
    FLUSH_EVERY_S. Each write opens the catalog, commits (rows plus the clips' chosen labels) and
    closes it, so readers get in; that costs ~40 ms, and a crash loses at most the last couple of
    seconds of labels, which a rerun redoes. Local and Ray runs write through this one path."""

    def __init__(self, catalog_path, summary: "CaptionSummary"):
        self.catalog_path, self.s = catalog_path, summary
        self.pending: list[list] = []
        self.last = time.perf_counter()

    def add(self, rows: list[list]) -> None:
        self.pending.extend(rows)
        if time.perf_counter() - self.last >= FLUSH_EVERY_S:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            t0 = time.perf_counter()
            with db.writing(self.catalog_path) as con:
                captions.save(con, self.pending)
                labels.refresh(con, [r[0] for r in self.pending])  # the clips view shows the new labels
            self.s.write_seconds += time.perf_counter() - t0
            self.s.flushes += 1
            self.pending.clear()
        self.last = time.perf_counter()

    def salvage(self, e: BaseException) -> None:
        """The run is failing: note why, and keep what was labelled before the failure."""
        self.s.fatal = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        try:
            self.flush()
        except Exception as e2:  # noqa: BLE001
            log.warning("could not write the last labels: %s", e2)

    def finish(self, run, started: float) -> None:
        """Record the run's end and counts (the labels are already written; this is a convenience)."""
        self.s.seconds = time.perf_counter() - started
        counts = {k: v for k, v in self.s.__dict__.items() if k != "errors"}
        try:
            with db.writing(self.catalog_path) as con:
                db.finish_run(con, run, counts, self.s.ok and not self.s.fatal)
        except Exception as e:  # noqa: BLE001
            log.warning("could not record the caption run's end: %s", e)


@dataclass
class Prepared:
    row: dict
    video: object | None = None
    frames: int = 0
    error: str = ""
    seconds: float = 0.0
    metadata: dict | None = None  # transformers VideoMetadata: when each frame was taken
    failed_at: str = "decode"  # with `error`: "decode" or "request" (--api)


def select_clips(catalog_path, captioner: str, version: str, *, query: str | None, limit: int | None,
                 overwrite: bool, retry_failed: bool, timeout: float | None = None) -> tuple[list[dict], int]:
    """The clips still to label. The user's query runs on the sandboxed read-only connection,
    like every --query; what is already done is read on a short read-only connection."""
    kw = {} if timeout is None else {"timeout": timeout}
    rows = run_query(query, catalog_path, columns="clip_id, video_id, video_path, start_s, end_s", **kw)
    con = db.connect(catalog_path, read_only=True)
    try:
        done = captions.done(con, captioner, version)
    finally:
        con.close()
    todo, skipped = [], 0
    for r in rows:
        status = done.get(r["clip_id"])
        if status is None or overwrite or (retry_failed and status != "ok"):
            todo.append(r)
        else:
            skipped += 1
    # group by video so one open decoder serves consecutive clips
    todo.sort(key=lambda r: (r["video_path"], r["start_s"]))
    if limit is not None:
        todo = todo[:limit]
    return todo, skipped


class Preparer:
    """Decodes and prepares clips for any backend; keeps the last video open (clips come grouped by
    video). `captioner` is anything with `prepare(frames, sampling)`: a loaded model, a served
    model's geometry (`api.ApiCaptioner`) or a bare `FrameGeometry` (the Ray frame stage)."""

    def __init__(self, captioner, sampling):
        self.captioner = captioner
        self.sampling = sampling
        self._reader: ClipReader | None = None

    def _reader_for(self, path: str) -> ClipReader:
        if self._reader is None or self._reader.path != path:
            self._reader = ClipReader(path, max_pixels=self.sampling.max_pixels)
        return self._reader

    def one(self, row: dict) -> Prepared:
        t0 = time.perf_counter()
        try:
            check_source(row["video_path"], row.get("video_id"))
            reader = self._reader_for(row["video_path"])
            frames, times = reader.read(row["start_s"], row["end_s"], self.sampling.fps,
                                        max_frames=self.sampling.max_frames)
            video = self.captioner.prepare(frames, self.sampling)
            meta = video_metadata(times, int(video.shape[0]), self.sampling.fps)
            return Prepared(row, video, int(video.shape[0]), seconds=time.perf_counter() - t0, metadata=meta)
        except VideoError as e:
            return Prepared(row, error=f"{e.kind}: {e}", seconds=time.perf_counter() - t0)
        except Exception as e:  # a broken file must not stop the run
            return Prepared(row, error=f"{type(e).__name__}: {e}", seconds=time.perf_counter() - t0)

    def __call__(self, batch: list[dict]) -> list[Prepared]:
        return [self.one(row) for row in batch]


class FrameGeometry:
    """A captioner's frame side without its weights: what the Ray frame stage prepares with."""

    def __init__(self, patch_size: int, merge_size: int):
        self.patch_size, self.merge_size = patch_size, merge_size

    def prepare(self, frames, sampling):
        return prepare_frames(frames, sampling, self.patch_size, self.merge_size)


def _batches(rows: list[dict], size: int) -> Iterator[list[dict]]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def prefetched(fn, batches: list[list[dict]], overlap: bool) -> Iterator[tuple[list[Prepared], float]]:
    """Yield fn(batch) for each batch; with overlap, batch i+1 is prepared while i is consumed.
    Also yields how long the consumer waited for the batch (time the decode was *not* hidden)."""
    if not overlap:
        for b in batches:
            t0 = time.perf_counter()
            res = fn(b)
            yield res, time.perf_counter() - t0
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="caption-decode") as ex:
        fut = ex.submit(fn, batches[0]) if batches else None
        for i in range(len(batches)):
            t0 = time.perf_counter()
            res = fut.result()
            waited = time.perf_counter() - t0
            fut = ex.submit(fn, batches[i + 1]) if i + 1 < len(batches) else None
            yield res, waited


@dataclass
class Step:
    """What a backend hands the driver: clips with their generation (None when the clip failed
    before the model), the model's seconds per clip, and what made the labels when the backend
    learns it only from its workers (Ray)."""
    pairs: list
    per_clip: float = 0.0
    kind: str | None = None


class Backend(abc.ABC):
    """Where the text is generated: in this process, on a Ray cluster, or by a served endpoint.
    A backend prepares frames and generates; the driver (`label_clips`) owns the summary, the run
    record, the progress bar, the writer and the salvage."""

    desc = "caption"
    name: str = ""
    is_random: bool = False
    kind: str = "real"

    def run_params(self) -> dict:
        """What the run record says about this backend (beyond the prompt, query and sampling)."""
        return {}

    @abc.abstractmethod
    def steps(self, todo: list[dict], prompt: Prompt, s: CaptionSummary) -> Iterator[Step]:
        """Label `todo`, yielding results as they come; may add counts and notes to `s`."""

    def close(self, s: CaptionSummary, failed: bool) -> None:
        """Release workers; on failure do not wait for work in flight (a rerun redoes it)."""


def label_clips(catalog_path, backend: Backend, prompt: Prompt, todo: list[dict], *, already_done: int = 0,
                query: str | None = None, limit: int | None = None, overwrite: bool = False,
                progress: bool = True) -> CaptionSummary:
    """The one labelling driver. The catalog is held only while a batch is written (connect, one
    transaction, close), so `de query` and `de stats` work during a long run; a failure keeps what
    was labelled before it and records the run's end."""
    t_start = time.perf_counter()
    s = CaptionSummary(captioner=backend.name, prompt_version=prompt.version, is_random=backend.is_random,
                       already_done=already_done, selected=len(todo) + already_done)
    with db.writing(catalog_path) as con:
        run = db.start_run(con, "caption", {"captioner": backend.name, "prompt_version": prompt.version,
                                             "query": query, "limit": limit, "overwrite": overwrite,
                                             "sampling": prompt.sampling.__dict__, **backend.run_params()})
    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="clip", desc=backend.desc, disable=not progress, dynamic_ncols=True)
    writer = LabelWriter(catalog_path, s)
    failed = False
    try:
        for step in backend.steps(todo, prompt, s):
            writer.add(catalog_rows(step.pairs, backend.name, step.kind or backend.kind, prompt, s, step.per_clip))
            bar.update(len(step.pairs))
            bar.set_postfix(clips_per_s=f"{s.attempted / (time.perf_counter() - t_start):.2f}",
                            fail=s.parse_failures + s.decode_failures + s.request_failures)
        writer.flush()
    except BaseException as e:
        failed = True
        writer.salvage(e)
        raise
    finally:
        backend.close(s, failed)
        bar.close()
        writer.finish(run, t_start)
    return s


class LocalBackend(Backend):
    """The model in this process; a background thread prepares batch i+1 while batch i generates."""

    def __init__(self, captioner, batch_size: int = 4, overlap: bool = True):
        self.captioner, self.batch_size, self.overlap = captioner, batch_size, overlap
        self.name, self.is_random, self.kind = captioner.name, captioner.is_random, captioner.kind

    def run_params(self) -> dict:
        return {"executor": "local", "batch_size": self.batch_size}

    def steps(self, todo, prompt, s):
        if self.overlap and str(getattr(self.captioner, "device", "cpu")).startswith("cpu"):
            # On CPU the model and the decoder share cores: leave one core to the decode thread so
            # prefetching overlaps instead of time-slicing with generation.
            import torch

            torch.set_num_threads(max(1, (os.cpu_count() or 1) - 1))
        text = prompt.render()
        prep = Preparer(self.captioner, prompt.sampling)
        for prepared, waited in prefetched(prep, list(_batches(todo, self.batch_size)), self.overlap):
            s.decode_seconds += waited
            yield self._generate(prepared, text, prompt, s)

    def _generate(self, prepared: list[Prepared], text: str, prompt: Prompt, s: CaptionSummary) -> Step:
        good = [p for p in prepared if not p.error]
        gens, per_clip = [], 0.0
        if good:
            t0 = time.perf_counter()
            gens = self.captioner.generate([p.video for p in good], text, prompt.sampling,
                                           [p.metadata for p in good], schema=prompt.schema,
                                           seed=zlib.crc32(good[0].row["clip_id"].encode()))
            dt = time.perf_counter() - t0
            s.generate_seconds += dt
            per_clip = dt / len(good)
        return Step([(p, None) for p in prepared if p.error] + list(zip(good, gens)), per_clip)


def caption_clips(catalog_path, captioner, prompt: Prompt, todo: list[dict], *, batch_size: int = 4,
                  overlap: bool = True, **driver) -> CaptionSummary:
    """Label `todo` (from `select_clips`) with a loaded captioner in this process."""
    return label_clips(catalog_path, LocalBackend(captioner, batch_size, overlap), prompt, todo, **driver)


def catalog_rows(results, name: str, kind: str, prompt: Prompt, s: CaptionSummary,
                 per_clip: float = 0.0) -> list[list]:
    """`captions` rows from (prepared clip, generation or None) pairs; counts go into `s`. The one
    place rows are made, whichever executor generated the text. `kind`: what made them (real, toy
    or random; catalog migration 10)."""
    rows = []
    is_random = kind == "random"
    schema = prompt.schema  # every backend's answer passes the same check, served or in-process
    for p, g in results:
        cid = p.row["clip_id"]
        if p.error and p.failed_at == "request":
            s.request_failures += 1
            s.errors["request"] += 1
            rows.append([cid, name, prompt.version, "request_error", None, None, None, None, p.error,
                         p.frames, None, p.seconds, is_random, kind])
            continue
        if p.error:
            s.decode_failures += 1
            s.errors[p.error.split(":")[0]] += 1
            rows.append([cid, name, prompt.version, "decode_error", None, None, None, None, p.error,
                         None, None, p.seconds, is_random, kind])
            continue
        parsed = parse_output(g.text, prompt.synonyms, schema)
        s.visual_tokens += g.visual_tokens
        s.frames += g.num_frames
        if parsed.ok:
            s.labelled += 1
            rows.append([cid, name, prompt.version, "ok", parsed.caption, parsed.tags, json.dumps(parsed.fields),
                         g.text, "", g.num_frames, g.visual_tokens, p.seconds + per_clip, is_random, kind])
        else:
            s.parse_failures += 1
            rows.append([cid, name, prompt.version, "parse_error", None, None, None, g.text, parsed.error,
                         g.num_frames, g.visual_tokens, p.seconds + per_clip, is_random, kind])
    return rows
