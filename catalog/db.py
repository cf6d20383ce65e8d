"""Open the DuckDB catalog: path resolution, migrations on open, small typed helpers.

The catalog has one writer: the CLI process. Workers hand rows back; they never open it.
Writers keep transactions short (a batch at a time) so a crash loses at most the batch in flight.
"""

from __future__ import annotations

import json
import os
import time
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


class QueryError(CatalogError):
    """The user's --query text was refused or failed; the message says why."""


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


LOCK_WAIT_S = 10.0  # how long an open waits for another process's short write to finish


def _wait_s() -> float:
    try:
        return float(os.environ.get("DE_LOCK_WAIT", LOCK_WAIT_S))
    except ValueError:
        return LOCK_WAIT_S


def is_lock_error(e: BaseException) -> bool:
    """DuckDB's own words for another process holding the file ("Could not set lock on file ...:
    Conflicting lock is held in ..."); not any message that happens to contain "lock" (a damaged
    file's "block" does)."""
    msg = str(e)
    return "Could not set lock on file" in msg or "Conflicting lock is held" in msg


def open_duckdb(p: Path, *, read_only: bool, config: dict | None = None) -> duckdb.DuckDBPyConnection:
    """duckdb.connect that waits out another process's lock for a few seconds.

    Writers hold the file only for one batch (a transaction of a few rows), so a reader or a
    second writer that meets the lock gets in within moments; after $DE_LOCK_WAIT seconds
    (default 10) it gives up with a clear error.
    """
    deadline = time.monotonic() + _wait_s()
    delay = 0.05
    while True:
        try:
            cfg = dict(config or {})
            lock = cfg.pop("lock_configuration", False)
            con = duckdb.connect(str(p), read_only=read_only, config=cfg)
            con.execute("SET enable_progress_bar = false")  # our commands print their own progress
            if lock:
                con.execute("SET lock_configuration = true")  # nothing after this can change a setting
            return con
        except duckdb.Error as e:
            if not is_lock_error(e) or time.monotonic() >= deadline:
                if is_lock_error(e):
                    raise CatalogError(f"catalog {p} is busy: another process has held it for more than "
                                       f"{_wait_s():g} s (set DE_LOCK_WAIT to wait longer): "
                                       f"{str(e).splitlines()[0]}") from e
                raise CatalogError(f"cannot open catalog {p}{' read-only' if read_only else ''}: "
                                   f"{str(e).splitlines()[0]}") from e
            time.sleep(delay)
            delay = min(0.5, delay * 2)


def _inspect(con: duckdb.DuckDBPyConnection, p: Path) -> int:
    """The file's schema version (0 for a new file), in one catalog lookup. A DuckDB file with
    tables of its own but no schema_migrations is not ours: it is refused and left alone."""
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    if tables and "schema_migrations" not in tables:
        raise CatalogError(f"{p} is a DuckDB file but not a catalog of this tool (it has tables "
                           f"{', '.join(sorted(tables)[:5])} and no schema_migrations); refusing to touch it. "
                           "Pass another --catalog.")
    if not tables:
        return 0
    return int(con.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] or 0)


def connect(path: str | os.PathLike | None = None, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the catalog. Read-write opens create the file and run pending migrations.

    Open, use briefly, close: a long job connects per batch (`writing`) so readers get in between.
    """
    p = resolve_path(path)
    if read_only:
        if not p.exists():
            raise CatalogError(f"no catalog at {p} (run `de ingest` first, or pass --catalog)")
        con = open_duckdb(p, read_only=True)
        try:
            version = _inspect(con, p)
        except BaseException:
            con.close()
            raise
        if version < LATEST_VERSION:
            con.close()
            raise CatalogError(
                f"catalog {p} is at schema version {version}, this tool needs {LATEST_VERSION}; "
                "run any writing command (e.g. `de ingest`) to migrate it"
            )
        return con
    if p.exists() and p.is_dir():
        raise CatalogError(f"--catalog {p} is a directory; give a file path such as {p / DEFAULT_CATALOG}")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CatalogError(f"cannot create the catalog's folder {p.parent}: {e.strerror or e}") from e
    con = open_duckdb(p, read_only=False)
    try:
        version = _inspect(con, p)
        if version > LATEST_VERSION:
            raise CatalogError(f"catalog {p} has schema version {version}, newer than this tool's {LATEST_VERSION}: "
                               "it was written by a newer release. Upgrade the tool (pip install -U "
                               "cartoon-dataengine); nothing was written.")
        if version < LATEST_VERSION:
            migrate(con)
    except duckdb.Error as e:
        con.close()
        raise CatalogError(describe_write_error(e, p)) from e
    except BaseException:
        con.close()
        raise
    return con


def describe_write_error(e: BaseException, p: Path) -> str:
    from .errors import cannot_write, is_disk_full, no_space

    if is_disk_full(e):
        return f"{no_space(f'the catalog {p}')}: nothing of the batch in flight was kept; free space and rerun to continue"
    return cannot_write(f"to catalog {p}", e)


@contextmanager
def writing(path: str | os.PathLike | None) -> Iterator[duckdb.DuckDBPyConnection]:
    """Connect, run one transaction, close: how long jobs write, a batch at a time. A failed
    write (full disk, read-only file) rolls the batch back and is a CatalogError."""
    p = resolve_path(path)
    con = connect(path)
    try:
        with transaction(con):
            yield con
    except duckdb.Error as e:
        raise CatalogError(describe_write_error(e, p)) from e
    finally:
        try:
            con.close()
        except duckdb.Error:
            pass


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
        try:
            con.execute("ROLLBACK")
        except duckdb.Error:
            pass  # the transaction is already gone (e.g. a failed commit); the original error matters
        raise
    else:
        con.execute("COMMIT")


# --- runs: every command that changes the catalog records itself ---------------------------

SQL_RUN_START = ("INSERT OR REPLACE INTO runs (run_id, command, params, status, pid, host) "
                 "VALUES (?, ?, ?, 'running', ?, ?)")
SQL_RUN_END = ("UPDATE runs SET counts = ?, status = ?, error = ?, finished_at = current_timestamp "
               "WHERE run_id = ?")


@dataclass
class RunRecord:
    run_id: str
    command: str


def start_run(con, command: str, params: dict[str, Any], run_id: str | None = None) -> RunRecord:
    import socket

    run_id = run_id or f"{command}-{uuid.uuid4().hex[:12]}"
    con.execute(SQL_RUN_START, [run_id, command, json.dumps(params, default=str, sort_keys=True), os.getpid(),
                                socket.gethostname()])
    return RunRecord(run_id, command)


def finish_run(con, run: RunRecord, counts: dict[str, Any], ok: bool, error: str | None = None) -> None:
    error = error or (counts.get("error") if isinstance(counts, dict) else None) or \
        (counts.get("fatal") if isinstance(counts, dict) else None) or None
    con.execute(SQL_RUN_END, [json.dumps(counts, default=str, sort_keys=True), "ok" if ok else "failed", error,
                              run.run_id])


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_state(status: str | None, pid: int | None, host: str | None) -> str:
    """A 'running' row whose process (on this host) is gone was interrupted (kill -9, power cut)."""
    import socket

    if status == "running" and host == socket.gethostname() and not _pid_alive(pid):
        return "interrupted"
    return status or "?"


def runs_by_state(con) -> dict[str, int]:
    out: dict[str, int] = {}
    for status, pid, host in con.execute("SELECT status, pid, host FROM runs").fetchall():
        k = run_state(status, pid, host)
        out[k] = out.get(k, 0) + 1
    return out


# --- settings ---------------------------------------------------------------------------------

def get_setting(con, key: str) -> str | None:
    row = con.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
    return row[0] if row else None


def set_setting(con, key: str, value: str | None) -> None:
    con.execute("DELETE FROM settings WHERE key = ?", [key])
    if value is not None:
        con.execute("INSERT INTO settings (key, value) VALUES (?, ?)", [key, value])


def add_run_clips(con, run_id: str, rows) -> None:
    """A run's clips: (clip_id, role, prompt) each; a clip already recorded for the run is kept."""
    con.executemany("INSERT OR IGNORE INTO run_clips (run_id, clip_id, role, prompt) VALUES (?, ?, ?, ?)",
                    [[run_id, c, r, p] for c, r, p in rows])
