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
