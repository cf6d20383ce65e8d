"""Open the DuckDB catalog: path resolution, migrations on open, small typed helpers.

The catalog has one writer: the CLI process. Workers hand rows back; they never open it.
Writers keep transactions short (a batch at a time) so a crash loses at most the batch in flight.
"""

from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import duckdb

from .migrations import LATEST_VERSION, MIGRATIONS

DEFAULT_CATALOG = "catalog.duckdb"
ENV_VAR = "DE_CATALOG"


class CatalogError(Exception):
    """A catalog that cannot be opened or used; the message is meant for the user."""


def resolve_path(path: str | os.PathLike | None) -> Path:
    """`--catalog PATH`, else $DE_CATALOG, else ./catalog.duckdb."""
    if path:
        return Path(path).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path(DEFAULT_CATALOG)


def cache_dir(catalog_path: str | os.PathLike) -> Path:
    """Folder beside the catalog for keyframes, latents and other derived files."""
    p = Path(catalog_path).resolve()
    return p.parent / f"{p.stem}_cache"


def connect(path: str | os.PathLike | None = None, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the catalog. Read-write opens create the file and run pending migrations."""
    p = resolve_path(path)
    if read_only:
        if not p.exists():
            raise CatalogError(f"no catalog at {p} (run `de ingest` first, or pass --catalog)")
        try:
            con = duckdb.connect(str(p), read_only=True)
        except duckdb.Error as e:  # e.g. locked by a running writer
            raise CatalogError(f"cannot open catalog {p} read-only: {e}") from e
        version = schema_version(con)
        if version < LATEST_VERSION:
            con.close()
            raise CatalogError(
                f"catalog {p} is at schema version {version}, this tool needs {LATEST_VERSION}; "
                "run any writing command (e.g. `de ingest`) to migrate it"
            )
        return con
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(p))
    except duckdb.Error as e:
        raise CatalogError(f"cannot open catalog {p}: {e}") from e
    migrate(con)
    return con


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'"
    ).fetchone()[0]
    if not exists:
        return 0
    v = con.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
    return int(v or 0)


def migrate(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Apply every migration newer than the file's version, each in its own transaction."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMP DEFAULT current_timestamp)"
    )
    current = schema_version(con)
    applied = []
    for version, name, sql in MIGRATIONS:
        if version <= current:
            continue
        with transaction(con):
            con.execute(sql)
            con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, name])
        applied.append(version)
    return applied


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    else:
        con.execute("COMMIT")


def rows_as_dicts(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row)) for row in cur.fetchall()]


# --- runs: every command that changes the catalog records itself ---------------------------

SQL_RUN_START = "INSERT INTO runs (run_id, command, params, status) VALUES (?, ?, ?, 'running')"
SQL_RUN_END = "UPDATE runs SET counts = ?, status = ?, finished_at = current_timestamp WHERE run_id = ?"


@dataclass
class RunRecord:
    run_id: str
    command: str


def start_run(con, command: str, params: dict[str, Any], run_id: str | None = None) -> RunRecord:
    run_id = run_id or f"{command}-{uuid.uuid4().hex[:12]}"
    con.execute(SQL_RUN_START, [run_id, command, json.dumps(params, default=str, sort_keys=True)])
    return RunRecord(run_id, command)


def finish_run(con, run: RunRecord, counts: dict[str, Any], ok: bool) -> None:
    con.execute(SQL_RUN_END, [json.dumps(counts, default=str, sort_keys=True), "ok" if ok else "failed", run.run_id])


# --- settings ---------------------------------------------------------------------------------

def get_setting(con, key: str) -> str | None:
    row = con.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
    return row[0] if row else None


def set_setting(con, key: str, value: str | None) -> None:
    con.execute("DELETE FROM settings WHERE key = ?", [key])
    if value is not None:
        con.execute("INSERT INTO settings (key, value) VALUES (?, ?)", [key, value])
