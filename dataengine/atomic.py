"""Files written whole or not at all, and never through a link someone planted.

Every output goes to a fresh temp file made by `tempfile.mkstemp` in the target's own folder
(O_CREAT|O_EXCL: it fails rather than open an existing name, so a symlink planted at a
predictable `name.tmp` can never redirect the write) and is written through that descriptor,
then renamed over the target (a rename replaces a symlink at the target; it does not follow it).
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def _replaced(tmp: str, path: Path):
    """Rename tmp over path when the block succeeds; remove tmp when it does not."""
    try:
        yield
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb"):
    """`with atomic_write(p, "w") as f: f.write(...)`: p appears only when the block succeeds."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with _replaced(tmp, path), os.fdopen(fd, mode) as f:
        yield f


def atomic_text(path: str | Path, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def atomic_bytes(path: str | Path, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


@contextmanager
def atomic_path(path: str | Path):
    """`with atomic_path(p) as tmp: writer(tmp)`: for writers that take a file name (an encoder, a
    library's save). `tmp` is a fresh name made by mkstemp beside `p`, with p's suffix (encoders
    choose the container by it); p appears only when the block succeeds."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    with _replaced(tmp, path):
        yield Path(tmp)


@contextmanager
def atomic_dir(path: str | Path):
    """`with atomic_dir(final) as tmp: write everything into tmp`: `final` then holds the whole new
    folder, or, if the block fails or the process dies, what it held before. Never a mix of the two:
    a model folder that is half new and half old loads as complete.

    The new folder is built beside `final` (same filesystem, so the swap is two renames); the old
    one is renamed aside, the new one into place, and the old one removed. A kill between the two
    renames leaves `final` absent and the old folder whole beside it (`.NAME.old-*`), never mixed."""
    import shutil

    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.building-"))
    try:
        yield tmp
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old-"))
            os.rmdir(old)
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
