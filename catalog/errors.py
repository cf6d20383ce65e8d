"""The words every command uses for a failed write, so a full disk reads the same everywhere.

Each caller adds what it kept and how to continue ("3 clips written, listed in index.jsonl; free
space and rerun to continue")."""

from __future__ import annotations

import errno


def is_disk_full(e: BaseException) -> bool:
    """A full disk or an exhausted quota: an OSError with ENOSPC/EDQUOT, or a library's own error
    that says so (DuckDB's IOException and safetensors' errors are not OSErrors)."""
    if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "no space left" in str(e).lower()


def no_space(where) -> str:
    return f"no space left on the device holding {where}"


def cannot_write(where, e: BaseException) -> str:
    detail = getattr(e, "strerror", None) or (str(e).splitlines()[0] if str(e) else type(e).__name__)
    return f"cannot write {where}: {detail}"
