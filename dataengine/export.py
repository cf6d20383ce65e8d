"""`de export`: write selected clips to files (the one explicit step that re-encodes).

Clips stay virtual everywhere else; this is for sharing a subset, or for tools that need files.
Each clip becomes <out>/<clip_id>.mp4 (h264), optionally resampled by time to --fps and resized,
plus a JSONL index with its catalog row (caption, tags, times).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


class ExportError(Exception):
    """The export target cannot be used (a file, not creatable, out of space)."""


@dataclass
class ExportSummary:
    written: int = 0
    skipped_existing: int = 0
    failed: list = field(default_factory=list)


def check_target(out_dir) -> Path:
    """Refuse an empty name or a path that is not a folder, before anything is read or written."""
    if out_dir is None or not str(out_dir).strip():
        raise ExportError("the export folder is empty: give a folder such as chase_clips/")
    out = Path(out_dir)
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


def export_clips(rows: list[dict], out_dir: str | Path, *, fps: float | None = None, max_side: int | None = None,
                 overwrite: bool = False, progress: bool = True) -> ExportSummary:
    """Each clip to <out>/<clip_id>.mp4 through a temp file; index.jsonl lists exactly the clips
    whose file is there (written now or before), and is itself replaced atomically."""
    import errno

    from tqdm import tqdm

    from .identity import check_source
    from .media import save_mp4
    from .video import ClipReader, VideoError, fit_size

    out = _target(out_dir)
    s = ExportSummary()
    reader = None
    index_rows = []
    for r in tqdm(sorted(rows, key=lambda r: (r["video_path"], r["start_s"])), desc="export", unit="clip",
                  disable=not progress):
        path = out / f"{r['clip_id']}.mp4"
        row = {k: (v if isinstance(v, (str, int, float, list, type(None))) else str(v)) for k, v in r.items()}
        row["file"] = path.name
        if path.exists() and not overwrite:
            s.skipped_existing += 1
            index_rows.append(row)
            continue
        tmp = path.with_suffix(".tmp.mp4")
        try:
            check_source(r["video_path"], r.get("video_id"))
            if reader is None or reader.path != r["video_path"]:
                size = fit_size(r["width"], r["height"], max_side=max_side) if max_side else None
                reader = ClipReader(r["video_path"], size=size)
            rate = fps or r["fps"]
            frames, _ = reader.read(r["start_s"], r["end_s"], rate)
            save_mp4(frames, tmp, rate)
            tmp.replace(path)
            s.written += 1
            index_rows.append(row)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                _write_index(out, index_rows)  # what is on disk stays listed; a rerun continues
                raise ExportError(f"no space left on the device holding {out} ({s.written} clips written, "
                                  "listed in index.jsonl); free space and rerun to continue") from e
            s.failed.append((r["clip_id"], e.strerror or str(e)))
        except VideoError as e:
            tmp.unlink(missing_ok=True)
            s.failed.append((r["clip_id"], str(e)))
    try:
        _write_index(out, index_rows)
    except OSError as e:
        raise ExportError(f"cannot write {out / 'index.jsonl'}: {e.strerror or e}") from e
    return s


def _write_index(out: Path, index_rows: list[dict]) -> None:
    tmp = out / "index.jsonl.tmp"
    try:
        with open(tmp, "w") as f:
            for row in index_rows:
                f.write(json.dumps(row, default=str) + "\n")
        tmp.replace(out / "index.jsonl")
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
