"""Content identity: a video's id is a hash of its bytes, so a file moved or copied elsewhere is
the same video.

Hashing whole multi-GB files would dominate ingest, so the id is blake2b over the file size and
three 1 MiB samples (head, middle, tail). Container headers and the tail index differ between any
two real encodes, so collisions need deliberately crafted files; a `--full-hash` option is not
offered because the catalog never trusts the id for anything but deduplication.
"""

from __future__ import annotations

import hashlib
import os

SAMPLE = 1 << 20


def video_id(path: str | os.PathLike) -> str:
    size = os.path.getsize(path)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"size:{size};".encode())
    with open(path, "rb") as f:
        if size <= 3 * SAMPLE:
            h.update(f.read())
        else:
            for off in (0, size // 2 - SAMPLE // 2, size - SAMPLE):
                f.seek(off)
                h.update(f.read(SAMPLE))
    return h.hexdigest()


def clip_id(vid: str, start_frame: int, end_frame: int) -> str:
    """Readable and stable: the video id prefix plus the frame range [start, end)."""
    return f"{vid[:16]}_{start_frame:07d}_{end_frame:07d}"


_CHECKED: dict[tuple[str, int, int], str] = {}


def check_source(path: str | os.PathLike, expected_id: str | None) -> None:
    """Refuse to read a clip whose source file no longer holds the bytes that were ingested.

    The check is the cheap content identity used at ingest (size plus three sampled MiB), cached
    per process by (path, size, mtime), so a long caption or training run pays it once per video.
    Raises VideoError('source changed'), which every reader records like a decode error.
    """
    from .video import VideoError

    if not expected_id:
        return
    try:
        st = os.stat(path)
    except FileNotFoundError as e:
        raise VideoError("missing", f"source file is gone: {path} (moved? re-ingest it at its new path)") from e
    key = (str(path), st.st_size, st.st_mtime_ns)
    got = _CHECKED.get(key)
    if got is None:
        got = _CHECKED[key] = video_id(path)
    if got != expected_id:
        raise VideoError("source changed", f"source changed since ingest: re-ingest {path} "
                                           f"(its bytes are not the video {expected_id[:16]} the clip came from)")
