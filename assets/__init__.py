"""The project's own small files, shipped in the wheel as `cartoon_dataengine_assets` (see catalog.assets)."""
