"""`de export`: write selected clips to files (the one explicit step that re-encodes).

Clips stay virtual everywhere else; this is for sharing a subset, or for tools that need files.
Each clip becomes <out>/<clip_id>.mp4 (h264), optionally resampled by time to --fps and resized,
plus a JSONL index with its catalog row (caption, tags, times).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from catalog.errors import cannot_write, is_disk_full, no_space

from .atomic import atomic_text, atomic_write


class ExportError(Exception):
    """The export target cannot be used (a file, not creatable, out of space)."""


@dataclass
class ExportSummary:
    written: int = 0
    skipped_existing: int = 0
    failed: list = field(default_factory=list)


def _plain(row: dict) -> dict:
    """A catalog row with JSON-friendly values (timestamps and the like as text)."""
    return {k: (v if isinstance(v, (str, int, float, list, bool, type(None))) else str(v)) for k, v in row.items()}


def check_target(out_dir) -> Path:
    """Refuse an empty name or a path that is not a folder, before anything is read or written."""
    if out_dir is None or not str(out_dir).strip():
        raise ExportError("the export folder is empty: give a folder such as chase_clips/")
    out = Path(out_dir)
    if out.is_symlink() and not out.exists():
        raise ExportError(f"{out} is a symlink to {os.readlink(out)}, which does not exist: remove the link or "
                          "create its target")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder")
    return out


def _target(out_dir) -> Path:
    out = check_target(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot create the export folder {out}: {e.strerror or e}") from e
    return out


def _clip_frames(r: dict, reader, fps: float | None, max_side: int | None):
    """(reader, frames, rate): one clip's frames resampled by time to `fps` (default: its source
    rate), in square pixels, the long side at most `max_side`. The reader stays open while the
    (sorted) rows stay on one video; the bytes are checked to be the ones ingested."""
    from .identity import check_source
    from .clipread import ClipReader, fit_size
    from .video import display_size

    check_source(r["video_path"], r.get("video_id"))
    if reader is None or reader.path != r["video_path"]:
        size = fit_size(*display_size(r["width"], r["height"], r.get("sar")), max_side=max_side) if max_side else None
        reader = ClipReader(r["video_path"], size=size)
    rate = fps or r["fps"]
    frames, _ = reader.read(r["start_s"], r["end_s"], rate)
    return reader, frames, rate


def export_clips(rows: list[dict], out_dir: str | Path, *, fps: float | None = None, max_side: int | None = None,
                 overwrite: bool = False, progress: bool = True) -> ExportSummary:
    """Each clip to <out>/<clip_id>.mp4 through a temp file; index.jsonl lists exactly the clips
    whose file is there (written now or before), and is itself replaced atomically."""
    from tqdm import tqdm

    from .media import save_mp4
    from .video import VideoError

    out = _target(out_dir)
    s = ExportSummary()
    reader = None
    index_rows = []
    for r in tqdm(sorted(rows, key=lambda r: (r["video_path"], r["start_s"])), desc="export", unit="clip",
                  disable=not progress):
        path = out / f"{r['clip_id']}.mp4"
        row = _plain(r)
        row["file"] = path.name
        if path.exists() and not overwrite:
            s.skipped_existing += 1
            index_rows.append(row)
            continue
        try:
            reader, frames, rate = _clip_frames(r, reader, fps, max_side)
            with atomic_write(path) as f:
                save_mp4(frames, f, rate)
            s.written += 1
            index_rows.append(row)
        except OSError as e:
            if is_disk_full(e):
                _write_index(out, index_rows)  # what is on disk stays listed; a rerun continues
                raise ExportError(f"{no_space(out)} ({s.written} clips written, listed in index.jsonl); free space "
                                  "and rerun to continue") from e
            s.failed.append((r["clip_id"], e.strerror or str(e)))
        except VideoError as e:
            s.failed.append((r["clip_id"], str(e)))
    try:
        _write_index(out, index_rows)
    except OSError as e:
        raise ExportError(f"cannot write {out / 'index.jsonl'}: {e.strerror or e}") from e
    return s


def _write_index(out: Path, index_rows: list[dict]) -> None:
    with atomic_write(out / "index.jsonl", "w") as f:
        for row in index_rows:
            f.write(json.dumps(row, default=str) + "\n")


# --------------------------------------------------------------------------------------------
# Formats other trainers read
# --------------------------------------------------------------------------------------------

FORMATS = ("clips", "kohya", "musubi", "webdataset", "parquet")


@dataclass
class CaptionSource:
    """Where each clip's caption text comes from: the catalog caption, or a run's prompt template."""

    template: str = "{caption}"
    class_text: str = ""
    motion_score: bool = False
    motion_scale: float = 5.0
    origin: str = "the clips view's caption"

    def text(self, row: dict) -> str | None:
        from catalog.templates import TemplateError, fill

        try:
            return fill(self.template, row, self.class_text, motion_score=self.motion_score,
                        motion_scale=self.motion_scale) or None
        except TemplateError:
            return None


def caption_source(spec: str | None) -> CaptionSource:
    """--template: a run folder or its config.json (that run's template, class prompt and motion
    score), a built-in template name (class, caption, class+caption, tags), or a template string
    over the known fields. A bad template is one ExportError line naming it."""
    from catalog.templates import TEMPLATES, TemplateError, class_prompt, compile_template

    if not spec:
        return CaptionSource()
    p = Path(spec)
    try:
        if p.is_dir():
            p = p / "config.json"
        if p.suffix == ".json":
            try:
                if p.stat().st_size > 1 << 20:
                    raise ExportError(f"--template {spec}: {p} is too big to be a run config")
                cfg = json.loads(p.read_text())
            except (OSError, ValueError, RecursionError) as e:
                raise ExportError(f"--template {spec}: cannot read a run config ({' '.join(str(e).split())[:200]})") \
                    from e
            if not isinstance(cfg, dict):
                raise ExportError(f"--template {spec}: {p} is not a run config")
            t = cfg.get("prompt_template", "class")
            compile_template(t)
            return CaptionSource(TEMPLATES.get(t, t), class_prompt(cfg.get("class_prompt"), inside=p.parent),
                                 bool(cfg.get("motion_score")), float(cfg.get("motion_scale", 5.0)),
                                 f"the prompt template of {p.parent}")
        t = compile_template(spec).text
    except TemplateError as e:
        raise ExportError(f"--template: {e}") from e
    except (TypeError, ValueError) as e:  # a run config with a value of the wrong type
        raise ExportError(f"--template {spec}: not a usable run config ({e})") from e
    if spec not in TEMPLATES and "{" not in spec:
        raise ExportError(f"--template {spec!r}: give a run folder, one of {', '.join(TEMPLATES)}, or a template "
                          "string such as '{class_prompt} {caption}'")
    return CaptionSource(t, class_prompt(None), origin=f"template {spec!r}")


def _atomic_text(path: Path, text: str) -> None:
    atomic_text(path, text)


def export_as(fmt: str, rows: list[dict], out_dir, *, template: str | None = None, fps: float | None = None,
              max_side: int | None = None, overwrite: bool = False, progress: bool = True,
              shard_size: int = 1000) -> ExportSummary:
    """Export in one of FORMATS. Clips whose caption text is empty are skipped and reported."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown --format {fmt!r}; one of {', '.join(FORMATS)}")
    src = caption_source(template)
    if fmt == "parquet":
        return _export_parquet(rows, _target(out_dir), src)
    s_skip = ExportSummary()
    if fmt != "clips":
        keep = []
        for r in rows:
            r = dict(r)
            r["caption_text"] = src.text(r)
            if r["caption_text"]:
                keep.append(r)
            else:
                s_skip.failed.append((r["clip_id"], f"no caption text from {src.origin} (caption it, or --template)"))
        rows = keep
        if not rows:
            raise ExportError("no selected clip has caption text: " + s_skip.failed[0][1] if s_skip.failed
                              else "no clips")
    if fmt == "webdataset":
        s = _export_webdataset(rows, _target(out_dir), fps=fps, max_side=max_side, shard_size=shard_size,
                               progress=progress)
    else:
        out = _target(out_dir)
        clip_dir = out / "videos" if fmt == "musubi" else out
        s = export_clips(rows, clip_dir, fps=fps, max_side=max_side, overwrite=overwrite, progress=progress)
        written = [r for r in rows if (clip_dir / f"{r['clip_id']}.mp4").exists()]
        try:
            if fmt == "kohya":
                for r in written:  # kohya, ai-toolkit, SimpleTuner: <name>.txt beside <name>.mp4
                    _atomic_text(clip_dir / f"{r['clip_id']}.txt", r["caption_text"] + "\n")
            elif fmt == "musubi":
                _write_musubi(out, clip_dir, written, fps)
        except OSError as e:
            raise ExportError(f"cannot write the {fmt} files in {out}: {e.strerror or e}") from e
    s.failed = s_skip.failed + s.failed
    return s


def _write_musubi(out: Path, clip_dir: Path, rows: list[dict], fps: float | None) -> None:
    """musubi-tuner's video dataset: a metadata JSONL of video_path + caption, and the TOML that
    points at it (`video_jsonl_file`; a JSONL dataset needs its own `cache_directory`)."""
    import av

    lines, frames, sizes = [], [], []
    for r in rows:
        p = (clip_dir / f"{r['clip_id']}.mp4").resolve()
        with av.open(str(p)) as f:
            st = f.streams.video[0]
            frames.append(st.frames or int(float(st.duration * st.time_base) * float(st.average_rate)))
            sizes.append((st.codec_context.width, st.codec_context.height))
        lines.append(json.dumps({"video_path": str(p), "caption": r["caption_text"]}))
    _atomic_text(out / "metadata.jsonl", "\n".join(lines) + "\n")
    shortest = min(frames)
    # frame counts must be 4k+1 (the Wan/Hunyuan VAEs); the longest that every clip has, and 1
    longest = max(1, (shortest - 1) // 4 * 4 + 1)
    targets = sorted({1, min(longest, 81), longest} - {0})
    w, h = sorted(sizes)[len(sizes) // 2]
    toml = (
        "# written by `de export --format musubi`; see musubi-tuner's docs/dataset_config.md\n"
        "[general]\n"
        f"resolution = [{w - w % 16}, {h - h % 16}]\n"
        "batch_size = 1\n"
        "enable_bucket = true\n"
        "bucket_no_upscale = true\n\n"
        "[[datasets]]\n"
        f"video_jsonl_file = {json.dumps(str((out / 'metadata.jsonl').resolve()))}\n"
        f"cache_directory = {json.dumps(str((out / 'cache').resolve()))}\n"
        f"target_frames = [{', '.join(map(str, targets))}]\n"
        'frame_extraction = "head"\n'
        + (f"source_fps = {float(fps)}\n" if fps else "")
    )
    _atomic_text(out / "dataset.toml", toml)


def _export_webdataset(rows: list[dict], out: Path, *, fps, max_side, shard_size: int, progress: bool) -> ExportSummary:
    """video2dataset's layout: shards 00000.tar, 00001.tar ... each holding, per clip, KEY.mp4,
    KEY.txt (the caption) and KEY.json (the catalog row), KEY = shard (5 digits) + index (4).
    A shard is written to a temp file and renamed when complete, so a shard on disk is whole."""
    import io
    import tarfile
    import tempfile

    from tqdm import tqdm

    from .media import save_mp4
    from .video import VideoError

    if shard_size < 1:
        raise ExportError("--shard-size must be at least 1")
    s = ExportSummary()
    rows = sorted(rows, key=lambda r: (r["video_path"], r["start_s"]))
    reader = None
    shard, tar, tmp_path, tmp_file, in_shard = -1, None, None, None, 0

    def close_shard():
        nonlocal tar, tmp_path
        if tar is not None:
            tar.close()
            tmp_file.close()
            os.replace(tmp_path, out / f"{shard:05d}.tar")
            tar, tmp_path = None, None

    def add(name: str, data: bytes):
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        ti.mtime = 0
        tar.addfile(ti, io.BytesIO(data))

    index = []
    try:
        with tempfile.TemporaryDirectory(dir=out) as scratch:
            for r in tqdm(rows, desc="export", unit="clip", disable=not progress):
                try:
                    reader, frames, rate = _clip_frames(r, reader, fps, max_side)
                    mp4 = Path(scratch) / "clip.mp4"  # a folder only this process made (mkdtemp)
                    save_mp4(frames, mp4, rate)
                except VideoError as e:
                    s.failed.append((r["clip_id"], str(e)))
                    continue
                if tar is None or in_shard >= shard_size:
                    close_shard()
                    shard, in_shard = shard + 1, 0
                    fd, tmp_path = tempfile.mkstemp(dir=out, prefix=f".{shard:05d}.tar.", suffix=".tmp")
                    tmp_file = os.fdopen(fd, "wb")
                    tar = tarfile.open(fileobj=tmp_file, mode="w")
                key = f"{shard:05d}{in_shard:04d}"
                meta = _plain(r)
                meta.update(key=key, caption=r["caption_text"])
                add(f"{key}.mp4", mp4.read_bytes())
                add(f"{key}.txt", r["caption_text"].encode())
                add(f"{key}.json", json.dumps(meta).encode())
                index.append({"key": key, "shard": f"{shard:05d}.tar", "clip_id": r["clip_id"]})
                in_shard += 1
                s.written += 1
            close_shard()
        _write_index(out, index)
    except OSError as e:
        if tmp_path is not None:
            tmp_file.close()
            Path(tmp_path).unlink(missing_ok=True)
        if is_disk_full(e):
            raise ExportError(f"{no_space(out)} ({shard} whole shard(s) written); free space and rerun") from e
        raise ExportError(cannot_write(f"shards in {out}", e)) from e
    return s


def _export_parquet(rows: list[dict], out: Path, src: CaptionSource) -> ExportSummary:
    """The rows, virtual clips and all (video_path + times), with the caption text, as one file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    recs = []
    for r in rows:
        rec = _plain(r)
        rec["caption_text"] = src.text(r)
        recs.append(rec)
    try:
        with atomic_write(out / "clips.parquet") as f:
            pq.write_table(pa.Table.from_pylist(recs), f)
    except OSError as e:
        raise ExportError(f"cannot write {out / 'clips.parquet'}: {e.strerror or e}") from e
    return ExportSummary(written=len(recs))
