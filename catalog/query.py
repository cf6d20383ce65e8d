"""Safe user queries: `--query` text is a WHERE clause over the `clips` view, nothing more.

Defence in depth, because the text comes from a command line that may be scripted:

1. a lexical check (outside string literals): no `;`, no comments, balanced parentheses that
   never close the WHERE clause's own parenthesis, and none of the keywords or functions that
   could start another statement, a subquery, or read files / settings;
2. DuckDB's own parser must see exactly one SELECT statement;
3. it runs on a connection opened read-only, with external access disabled and the
   configuration locked, so even an expression we failed to foresee cannot write, attach,
   install or read files.
"""

from __future__ import annotations

import os
import re
from typing import Any

import duckdb

from .db import CatalogError, resolve_path


class QueryError(CatalogError):
    """The user's --query text was refused or failed; the message says why."""


# Words that have no business inside a boolean expression over one view. Matched as whole
# identifiers outside string literals, case-insensitively.
FORBIDDEN_WORDS = {
    # other statements / subqueries
    "select", "from", "with", "union", "intersect", "except", "into", "values", "returning",
    "insert", "update", "delete", "merge", "upsert", "truncate", "create", "drop", "alter",
    "attach", "detach", "copy", "export", "import", "install", "load", "force", "set", "reset",
    "pragma", "call", "execute", "prepare", "deallocate", "vacuum", "checkpoint", "begin",
    "commit", "rollback", "transaction", "use", "summarize", "describe", "show", "explain",
    "analyze", "grant", "revoke", "table", "secret",
    # functions that touch files, the environment, settings or other catalogs
    "read_csv", "read_csv_auto", "read_parquet", "parquet_scan", "read_json", "read_json_auto",
    "read_json_objects", "read_ndjson", "read_ndjson_auto", "read_ndjson_objects", "read_text",
    "read_blob", "glob", "getenv", "current_setting", "duckdb_settings", "duckdb_extensions",
    "duckdb_databases", "duckdb_tables", "duckdb_secrets", "sniff_csv", "query", "query_table",
    "parquet_metadata", "parquet_schema", "iceberg_scan", "delta_scan", "sqlite_scan",
    "postgres_scan", "mysql_scan", "load_extension", "system", "shell",
}

_TOKEN = re.compile(
    r"""
    (?P<str>'(?:[^']|'')*')            # string literal
  | (?P<qid>"(?:[^"]|"")*")            # quoted identifier
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)  # identifier / keyword
  | (?P<comment>--|/\*|\*/)
  | (?P<semi>;)
  | (?P<open>\()
  | (?P<close>\))
  | (?P<dollar>\$\$|\$[A-Za-z_]*\$)   # dollar-quoted strings could hide anything
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


def check_where_clause(text: str) -> str:
    """Return the stripped clause, or raise QueryError saying what was refused."""
    if text is None or not text.strip():
        raise QueryError("the query is empty: give a WHERE clause such as \"tags LIKE '%chase%'\"")
    clause = text.strip()
    if len(clause) > 10_000:
        raise QueryError("the query is longer than 10,000 characters")
    if "\x00" in clause:
        raise QueryError("the query contains a NUL byte")
    depth = 0
    pos = 0
    for m in _TOKEN.finditer(clause):
        pos = m.end()
        kind = m.lastgroup
        if kind == "comment":
            raise QueryError("comments are not allowed in a query")
        if kind == "semi":
            raise QueryError("only one expression is allowed: ';' is refused")
        if kind == "dollar":
            raise QueryError("dollar-quoted strings are not allowed in a query")
        if kind == "open":
            depth += 1
        elif kind == "close":
            depth -= 1
            if depth < 0:
                raise QueryError("unbalanced ')': the query must be a single expression over the clips view")
        elif kind == "word" and m.group("word").lower() in FORBIDDEN_WORDS:
            raise QueryError(
                f"'{m.group('word')}' is not allowed: the query must be a single WHERE expression over the "
                "clips view (no statements, subqueries, settings or file access)"
            )
        elif kind == "str" and m.group("str").count("'") % 2:
            raise QueryError("unterminated string literal")
    if pos != len(clause):
        raise QueryError("unterminated string or identifier")
    if depth != 0:
        raise QueryError("unbalanced '(' in the query")
    if clause.count("'") % 2:
        raise QueryError("unterminated string literal")
    return clause


def build_sql(clause: str | None, columns: str = "*", order_by: str = "video_path, start_s",
              limit: int | None = None) -> str:
    where = f"WHERE ({check_where_clause(clause)})" if clause is not None else ""
    sql = f"SELECT {columns} FROM clips {where} ORDER BY {order_by}"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return sql


def open_sandboxed(path: str | os.PathLike | None) -> duckdb.DuckDBPyConnection:
    """A read-only connection that cannot reach files, the network, or change its own settings."""
    p = resolve_path(path)
    if not p.exists():
        raise CatalogError(f"no catalog at {p} (run `de ingest` first, or pass --catalog)")
    try:
        con = duckdb.connect(
            str(p),
            read_only=True,
            config={
                "enable_external_access": False,
                "autoload_known_extensions": False,
                "autoinstall_known_extensions": False,
                "lock_configuration": True,
            },
        )
    except duckdb.Error as e:
        raise CatalogError(f"cannot open catalog {p} read-only: {e}") from e
    return con


def run_query(
    clause: str | None,
    catalog: str | os.PathLike | None = None,
    *,
    columns: str = "*",
    limit: int | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
) -> list[dict[str, Any]]:
    """Rows of the `clips` view matching the user's WHERE clause, as dicts.

    `con` lets a process that already holds the catalog read-write (the single writer) run the
    same checked query on its own connection; everyone else gets the sandboxed one.
    """
    sql = build_sql(clause, columns=columns, limit=limit)
    own = con is None
    if own:
        # Refuse before touching anything, so a hostile string never reaches a connection.
        con = open_sandboxed(catalog)
    try:
        statements = con.extract_statements(sql)
        if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
            raise QueryError("the query must be a single expression over the clips view")
        try:
            cur = con.execute(sql)
        except duckdb.Error as e:
            msg = str(e).splitlines()[0]
            raise QueryError(f"query failed: {msg}") from e
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]
    finally:
        if own:
            con.close()
