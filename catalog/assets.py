"""Where the project's own small files live: presets, prompts, the caption vocabulary, the tiny
tokenizer and the toy models (`assets/` in the repository).

The wheel ships `assets/` as the package `cartoon_dataengine_assets` (pyproject.toml), so an
installed tool finds them through importlib.resources wherever it runs from; an editable install
maps the same name onto the repository's folder. `$DE_ASSETS` overrides both.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = "cartoon_dataengine_assets"


def assets_dir() -> Path:
    env = os.environ.get("DE_ASSETS")
    if env:
        return Path(env)
    try:
        from importlib.resources import files

        root = Path(str(files(PACKAGE)))
        if root.is_dir():
            return root
    except (ImportError, TypeError, OSError):  # not installed: running from a checkout without install
        pass
    return Path(__file__).resolve().parents[1] / "assets"


def asset(*parts: str) -> Path:
    p = assets_dir().joinpath(*parts)
    if not p.exists():
        raise FileNotFoundError(f"missing asset {p} (reinstall the package, or set $DE_ASSETS to an assets/ folder)")
    return p
