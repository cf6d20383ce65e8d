"""Helpers shared by tests (import as `from helpers import ...`)."""


def ingest_cli(runner, catalog, *paths, extra=()):
    from dataengine.cli import main

    return runner.invoke(main, ["ingest", *map(str, paths), "--catalog", str(catalog), "--no-progress",
                                "--workers", "2", *extra])
