"""From a catalog query to training windows: the frozen manifest, frame reading, and batching.

The manifest is written before any model loads. Each row is one training window: a clip, the
window's start time inside it, and the exact prompt text. Long clips give several windows that
never leave the clip (so never cross a cut); clips shorter than one window are counted and
reported, never silently dropped.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .config import TrainConfig
from .prompts import PromptError, class_prompt, fill, template_fields


class DataError(ValueError):
    """The selection cannot be trained on (empty, too short, missing captions...)."""


@dataclass(slots=True)  # a manifest can hold 500k of these: slots halve the memory and the build time
class Window:
    clip_id: str
    video_id: str
    video_path: str
    clip_start_s: float
    clip_end_s: float
    window_index: int
    start_s: float
    frames: int
    fps: float
    prompt: str
    labelling: str | None
    motion_score: float | None
    role: str = "train"  # train | holdout
    width: int | None = None  # the bucket (train.buckets); None in manifests from before buckets
    height: int | None = None
    crop: float = 0.0  # share of the source frame cut away to fit the bucket

    @property
    def key(self) -> str:
        return f"{self.clip_id}#w{self.window_index}"

    @property
    def bucket(self) -> str:
        return f"{self.width}x{self.height}x{self.frames}"


@dataclass
class Manifest:
    windows: list[Window]
    clips: int
    too_short: int
    hours: float
    buckets: Counter = field(default_factory=Counter)  # windows per clip -> clips
    # counted while the manifest is built (a pass over 500k windows costs ~0.5 s); None when read back
    train_sizes: Counter | None = None
    max_crop: float | None = None

    def sizes(self) -> Counter:
        """bucket (WxHxF) -> training windows."""
        if self.train_sizes is not None:
            return self.train_sizes
        return Counter(w.bucket for w in self.windows if w.role == "train")

    def summary(self) -> str:
        sizes = self.sizes()
        tr = sum(sizes.values())
        ho = len(self.windows) - tr
        b = ", ".join(f"{k}: {v}" for k, v in sorted(self.buckets.items()))
        order = sorted(sizes, key=lambda k: (-sizes[k], k))
        worst = self.max_crop if self.max_crop is not None else max((w.crop for w in self.windows), default=0.0)
        return (f"{self.clips} clips ({self.hours:.3f} h) -> {len(self.windows)} windows ({tr} train, {ho} held out); "
                f"{self.too_short} clips shorter than one window skipped; windows per clip: {b}\n"
                f"buckets (WxHxF: train windows): {', '.join(f'{k}: {sizes[k]}' for k in order)}; "
                f"largest crop {worst:.0%} of a frame")

    def write(self, path: str | Path) -> None:
        with open(path, "w") as f:
            for w in self.windows:
                f.write(json.dumps(asdict(w), sort_keys=True) + "\n")

    @classmethod
    def read(cls, path: str | Path) -> "Manifest":
        ws = [Window(**json.loads(line)) for line in Path(path).read_text().splitlines() if line.strip()]
        return cls(ws, len({w.clip_id for w in ws}), 0, 0.0)


# What a manifest needs of each clip: always these, plus the label columns its template uses
# (fetching every view column of 300k clips costs seconds).
TRAIN_COLUMNS = ("clip_id, video_id, video_path, start_s, end_s, width, height, sar, motion_score, captioner, "
                 "prompt_version")
LABEL_COLUMNS = ("caption", "caption_fields", "action", "setting", "time_of_day", "camera", "motion", "characters")


def _needs(template: str) -> set[str]:
    return template_fields(template)


def select_rows(cfg: TrainConfig, extra_columns: tuple[str, ...] = ()) -> list[dict]:
    """Run the user's query (sandboxed) and attach the chosen labelling's caption fields."""
    from catalog import db
    from catalog.query import run_query

    cols = TRAIN_COLUMNS + "".join(f", {c}" for c in LABEL_COLUMNS
                                   if c in _needs(cfg.template) or (c == "caption_fields" and _needs(cfg.template)
                                                                    & {"action", "setting", "time_of_day", "camera",
                                                                       "motion", "characters"}))
    if "tags" in _needs(cfg.template) or "tag_tokens" in _needs(cfg.template) or "tag_list" in extra_columns:
        cols += ", tag_list"
    cols += "".join(f", {c}" for c in extra_columns if c not in cols.split(", "))
    query = f"({cfg.query}\n) AND dup_rank = 1" if cfg.dedup and cfg.query else cfg.query
    rows = run_query(query, cfg.catalog, columns=cols, timeout=cfg.query_timeout)
    if not cfg.captioner or not rows:
        return rows
    from dataengine.caption.compare import resolve_labelling

    con = db.connect(cfg.catalog, read_only=True)
    try:
        try:
            cap, ver = resolve_labelling(con, cfg.captioner)
        except LookupError as e:
            raise DataError(e.args[0] if e.args else str(e)) from e
        from catalog.captions import ok_rows

        caps = {r[0]: r[1:] for r in ok_rows(con, cap, ver)}
    finally:
        con.close()
    for r in rows:
        c = caps.get(r["clip_id"])
        r["caption"], r["tag_list"], r["caption_fields"] = c if c else (None, None, None)
        r["captioner"], r["prompt_version"] = (cap, ver) if c else (None, None)
        for k in ("action", "setting", "time_of_day", "camera", "motion", "characters"):
            r[k] = None
    return rows


def build_manifest(cfg: TrainConfig, rows: list[dict]) -> Manifest:
    """One Window per training window of every selected clip. The cyclic garbage collector is
    paused while it runs: the windows hold no cycles, and at 500k windows its repeated scans of
    the growing list cost about a third of the build."""
    import gc

    paused = gc.isenabled()
    gc.disable()
    try:
        return _build_manifest(cfg, rows)
    finally:
        if paused:
            gc.enable()


def _build_manifest(cfg: TrainConfig, rows: list[dict]) -> Manifest:
    if not rows:
        raise DataError(f"the query matched no clips: {cfg.query!r}" if cfg.query else "the catalog has no clips")
    from .buckets import crop_fraction, nearest

    sizes, frame_buckets = cfg.bucket_sizes(), cfg.frame_bucket_list()
    longest_first = sorted(((f / cfg.fps, f) for f in frame_buckets), reverse=True)
    one_length = len(frame_buckets) == 1
    target_aspect = cfg.width / cfg.height
    shapes: dict = {}  # (width, height, sar) -> (bucket width, bucket height, crop): a few per catalog
    per_bucket: Counter = Counter()
    worst_crop = 0.0
    cls_text = class_prompt(cfg.class_prompt)
    template = cfg.template
    # the class template without a motion score gives every clip the same prompt: fill it once
    constant = fill(template, {}, cls_text) if template_fields(template) == {"class_prompt"} \
        and not cfg.motion_score else None
    windows, too_short, buckets, hours = [], 0, Counter(), 0.0
    missing = []
    for r in rows:
        dur = r["end_s"] - r["start_s"]
        # the longest frame bucket that fits
        frames = frame_buckets[0] if one_length else next(
            (f for secs, f in longest_first if secs <= dur + 1e-6), frame_buckets[-1])
        win = frames / cfg.fps
        n = int(math.floor(dur / win + 1e-6))
        if n < 1:
            too_short += 1
            buckets["0 (too short)"] += 1
            continue
        try:
            prompt = constant or fill(template, r, cls_text, motion_score=cfg.motion_score,
                                      motion_scale=cfg.motion_scale)
        except PromptError as e:
            missing.append(str(e))
            continue
        buckets[str(n) if n < 5 else "5+"] += 1
        hours += dur / 3600
        shape_key = (r.get("width"), r.get("height"), r.get("sar"))
        shape = shapes.get(shape_key)
        if shape is None:
            # the aspect a player shows: anamorphic pixels (sar != 1) are stretched back (ClipReader does too)
            src_aspect = (r["width"] * (r.get("sar") or 1.0) / r["height"]) if r.get("width") and r.get("height") \
                else target_aspect
            bw, bh = nearest(sizes, src_aspect)
            shape = shapes[shape_key] = (bw, bh, round(crop_fraction(src_aspect, bw / bh), 4))
            worst_crop = max(worst_crop, shape[2])
        bw, bh, crop = shape
        per_bucket[bw, bh, frames] += n
        lab = f"{r['captioner']}@{r['prompt_version']}" if r.get("captioner") else None
        # windows tile the clip evenly: spare time is spread between them, never past the clip end
        spare = (dur - n * win) / n
        for i in range(n):
            windows.append(Window(r["clip_id"], r["video_id"], r["video_path"], r["start_s"], r["end_s"], i,
                                  r["start_s"] + i * (win + spare) + spare / 2, frames, cfg.fps, prompt, lab,
                                  r.get("motion_score"), "train", bw, bh, crop))
    if missing:
        raise DataError(f"{len(missing)} clip(s) cannot fill --prompt-template {cfg.prompt_template!r}: {missing[0]}")
    if not windows:
        shortest = frame_buckets[0]
        raise DataError(f"none of the {len(rows)} selected clips is long enough for {shortest} frames at "
                        f"{cfg.fps:g} fps ({shortest / cfg.fps:.2f} s); lower --frames (or add a shorter "
                        "--frame-buckets entry) or select longer clips")
    for w in _assign_holdout(windows, cfg.holdout, cfg.seed):
        per_bucket[w.width, w.height, w.frames] -= 1
    train_sizes = Counter({f"{w}x{h}x{f}": n for (w, h, f), n in per_bucket.items() if n > 0})
    if not train_sizes:
        raise DataError(f"only {len(windows)} window(s): nothing left to train on after --holdout {cfg.holdout}")
    return Manifest(windows, len(rows) - too_short, too_short, hours, buckets, train_sizes, worst_crop)


def _assign_holdout(windows: list[Window], k: int, seed: int) -> list[Window]:
    """Hold out whole clips (never one window of a clip used for training), chosen by a seeded hash.
    Returns the held-out windows."""
    import heapq

    if k <= 0 or len(windows) < 2:
        return []
    per_clip = Counter(w.clip_id for w in windows)
    # at most k clips are needed (each has >= 1 window): the k smallest hashes, not a sort of all
    clips = heapq.nsmallest(k, per_clip, key=lambda c: hashlib.sha1(f"{seed}:{c}".encode()).hexdigest())
    held, n = set(), 0
    for c in clips:
        if n >= k or len(held) + 1 >= len(per_clip):
            break
        held.add(c)
        n += per_clip[c]
    out = []
    for w in windows:
        if w.clip_id in held:
            w.role = "holdout"
            out.append(w)
    return out


def resize_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale the short side to fit, then centre-crop to (height, width)."""
    import cv2

    n, h, w, _ = frames.shape
    s = max(height / h, width / w)
    nh, nw = max(height, int(round(h * s))), max(width, int(round(w * s)))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    out = np.empty((n, height, width, 3), np.uint8)
    y0, x0 = (nh - height) // 2, (nw - width) // 2
    for i, f in enumerate(frames):
        out[i] = cv2.resize(f, (nw, nh), interpolation=interp)[y0 : y0 + height, x0 : x0 + width]
    return out


def read_window(w: Window, height: int, width: int, reader_cache: dict | None = None) -> np.ndarray:
    """uint8 (frames, H, W, 3): the window's frames resampled by time to w.fps, at the window's
    bucket (height x width when the manifest predates buckets)."""
    height, width = w.height or height, w.width or width
    from dataengine.clipread import ClipReader

    from dataengine.identity import check_source

    check_source(w.video_path, w.video_id)  # the bytes we train on are the bytes we ingested
    cache = reader_cache if reader_cache is not None else {}
    reader = cache.get(w.video_path)
    if reader is None:
        cache.clear()  # windows come grouped by video; keep one decoder open
        reader = cache[w.video_path] = ClipReader(w.video_path, max_pixels=max(height * width * 4, 64 * 64))
    frames, _ = reader.read(w.start_s, w.clip_end_s, w.fps, exact=w.frames)
    return resize_crop(frames, height, width)


def resolve_video_paths(manifest: Manifest, catalog: str) -> int:
    """The manifest freezes *what* is trained (video ids, times, prompts); *where* each video lives
    is looked up in the catalog now, so a library that was moved and re-ingested still resumes.
    Returns how many windows changed path. A catalog that cannot be read leaves the frozen paths."""
    from catalog import db

    ids = sorted({w.video_id for w in manifest.windows})
    try:
        con = db.connect(catalog, read_only=True)
    except db.CatalogError:
        return 0
    try:
        from catalog.browse import video_paths

        now = video_paths(con, ids)
    finally:
        con.close()
    changed = 0
    for w in manifest.windows:
        p = now.get(w.video_id)
        if p and p != w.video_path:
            w.video_path = p
            changed += 1
    return changed
