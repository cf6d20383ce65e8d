"""Where the project's own small files live: see catalog.assets (kept here for old imports)."""

from catalog.assets import asset, assets_dir  # noqa: F401
