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
def atomic_write(path: str | Path, mode: str = "wb"):
    """`with atomic_write(p, "w") as f: f.write(...)`: p appears only when the block succeeds."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_text(path: str | Path, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)
