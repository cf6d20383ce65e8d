"""`de export`: write selected clips to files (the one explicit step that re-encodes).

Clips stay virtual everywhere else; this is for sharing a subset, or for tools that need files.
Each clip becomes <out>/<clip_id>.mp4 (h264), optionally resampled by time to --fps and resized,
plus a JSONL index with its catalog row (caption, tags, times).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ExportSummary:
    written: int = 0
    skipped_existing: int = 0
    failed: list = field(default_factory=list)


def export_clips(rows: list[dict], out_dir: str | Path, *, fps: float | None = None, max_side: int | None = None,
                 overwrite: bool = False, progress: bool = True) -> ExportSummary:
    from tqdm import tqdm

    from .media import save_mp4

    from .video import ClipReader, VideoError, fit_size

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = ExportSummary()
    reader = None
    index_rows = []
    for r in tqdm(sorted(rows, key=lambda r: (r["video_path"], r["start_s"])), desc="export", unit="clip",
                  disable=not progress):
        path = out / f"{r['clip_id']}.mp4"
        index_rows.append({k: (v if isinstance(v, (str, int, float, list, type(None))) else str(v)) for k, v in r.items()}
                          | {"file": path.name})
        if path.exists() and not overwrite:
            s.skipped_existing += 1
            continue
        try:
            if reader is None or reader.path != r["video_path"]:
                size = fit_size(r["width"], r["height"], max_side=max_side) if max_side else None
                reader = ClipReader(r["video_path"], size=size)
            rate = fps or r["fps"]
            frames, _ = reader.read(r["start_s"], r["end_s"], rate)
            tmp = path.with_suffix(".tmp.mp4")
            save_mp4(frames, tmp, rate)
            tmp.replace(path)
            s.written += 1
        except (VideoError, OSError) as e:
            s.failed.append((r["clip_id"], str(e)))
    with open(out / "index.jsonl", "w") as f:
        for row in index_rows:
            f.write(json.dumps(row, default=str) + "\n")
    return s
