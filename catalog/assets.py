"""Where the project's own small files live (`assets/` at the repository root).

`$DE_ASSETS` overrides the location, e.g. for a wheel install that ships assets elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path


def assets_dir() -> Path:
    env = os.environ.get("DE_ASSETS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / "assets"


def asset(*parts: str) -> Path:
    p = assets_dir().joinpath(*parts)
    if not p.exists():
        raise FileNotFoundError(f"missing asset {p} (set $DE_ASSETS to the project's assets/ folder)")
    return p
