"""Safe user queries: `--query` text is a WHERE clause over the `clips` view, nothing more.

Every path that takes user SQL (`de query`, `de export`, `de caption`, `train`) goes through
`run_query`, which defends in depth:

1. an **allow-list over DuckDB's own parse tree** (`json_serialize_sql` on an in-memory
   connection that has no catalog and no external access): the statement must be exactly
   `SELECT * FROM clips WHERE (<expr>)`, and the expression may hold only column references to
   the `clips` view, constants, operators, comparisons, AND/OR/NOT, BETWEEN, IN-lists, CASE, CAST
   and the scalar functions named in `ALLOWED_FUNCTIONS`. Anything else (subqueries, other
   tables, lambdas, window or aggregate functions, file and settings functions) is refused, and
   the refusal names what was refused. DuckDB parses its own string forms (`E'...'`, `$$...$$`),
   so no string trick hides a function from this check;
2. it runs on a connection opened read-only, with external access disabled and the
   configuration locked, so even an expression we failed to foresee cannot write, attach,
   install or read files;
3. a time limit (`--query-timeout`, 30 s by default) interrupts a runaway filter.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import gc
import json
import os
from typing import Any

import duckdb

from .db import CatalogError, QueryError, open_duckdb, resolve_path
from .timeouts import query_deadline


DEFAULT_TIMEOUT_S = 30.0
MAX_DEPTH = 128  # nesting of the expression tree; DuckDB's own limit is far deeper than any filter needs

# Scalar functions a filter over clips may call (names as DuckDB's parser reports them, which
# is also how operators such as LIKE (~~) and || appear). Nothing here reads files, settings,
# the environment, other tables, or is non-deterministic.
ALLOWED_FUNCTIONS = frozenset("""
~~ !~~ ~~* !~~* ~~~ !~~~ || + - * / // % ** ^ & | << >> ! @ ~
lower upper lcase ucase length strlen char_length character_length octet_length bit_length
substr substring contains starts_with ends_with prefix suffix trim ltrim rtrim replace
concat concat_ws lpad rpad left right strpos instr position reverse repeat split_part
string_split str_split string_split_regex str_split_regex string_to_array ascii chr unicode ord
like_escape ilike_escape not_like_escape not_ilike_escape format printf
regexp_matches regexp_full_match regexp_extract regexp_extract_all regexp_replace regexp_split_to_array
levenshtein editdist3 damerau_levenshtein hamming mismatches jaccard jaro_similarity
jaro_winkler_similarity nfc_normalize strip_accents md5 hash
list_contains list_has array_contains array_has list_has_any array_has_any list_has_all array_has_all
len array_length list_value list_pack list_extract list_element array_extract list_position
list_indexof array_position array_indexof list_distinct array_distinct list_unique array_unique
list_sort array_sort list_reverse_sort array_reverse_sort list_slice array_slice flatten
array_to_string list_concat list_cat array_concat array_cat list_intersect array_intersect
list_zip list_resize array_resize list_select array_select list_where array_where list_any_value
list_min list_max list_sum list_avg list_count list_bool_or list_bool_and
abs round floor ceil ceiling sqrt cbrt pow power ln log log10 log2 exp greatest least sign mod
trunc even factorial gcd lcm isnan isinf isfinite pi degrees radians sin cos tan
date_part datepart date_trunc datetrunc year month day hour minute second epoch dayofweek
dayofyear week weekofyear quarter strftime strptime to_timestamp age date_diff datediff
date_sub datesub make_date make_timestamp to_days to_seconds last_day
coalesce ifnull nullif if typeof struct_extract row
""".split())

# Parse-tree node classes the expression may contain (others: SUBQUERY, WINDOW, LAMBDA,
# STAR, PARAMETER, COLLATE, POSITIONAL_REFERENCE... are refused by name).
ALLOWED_CLASSES = frozenset({"CONJUNCTION", "COMPARISON", "CONSTANT", "COLUMN_REF", "FUNCTION", "OPERATOR",
                             "BETWEEN", "CASE", "CAST", "TYPE"})

_PARSER_CONFIG = {"enable_external_access": False, "autoload_known_extensions": False,
                  "autoinstall_known_extensions": False}


@functools.lru_cache(maxsize=32)
def _parse(sql: str) -> dict:
    """DuckDB's parse tree of `sql` (cached: one command checks the same clause more than once;
    callers only read the tree)."""
    con = duckdb.connect(":memory:", config=_PARSER_CONFIG)
    try:
        out = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0]
    finally:
        con.close()
    try:
        tree = json.loads(out)
    except RecursionError as e:
        raise QueryError(f"the query is nested too deeply (more than {MAX_DEPTH} levels)") from e
    if tree.get("error"):
        msg = tree.get("error_message") or "cannot parse the query"
        if "expression depth" in msg:
            raise QueryError(f"the query is nested too deeply (DuckDB: {msg.split('. ')[0]})")
        raise QueryError(f"query failed: Parser Error: {msg}")
    return tree


def _expect(cond: bool, what: str) -> None:
    if not cond:
        raise QueryError(f"{what} is not allowed: the query must be a single WHERE expression over the clips view")


def _check_statement(tree: dict) -> dict:
    stmts = tree.get("statements") or []
    _expect(len(stmts) == 1, "a second statement")
    node = stmts[0].get("node") or {}
    _expect(node.get("type") == "SELECT_NODE", f"a {str(node.get('type', '?')).replace('_NODE', '').lower()}")
    ft = node.get("from_table") or {}
    _expect(ft.get("type") == "BASE_TABLE" and ft.get("table_name") == "clips" and not ft.get("schema_name")
            and not ft.get("catalog_name") and not ft.get("sample"), "reading another table")
    sel = node.get("select_list") or []
    _expect(len(sel) == 1 and sel[0].get("class") == "STAR", "changing the select list")
    for key in ("group_expressions", "modifiers"):
        _expect(not node.get(key), key.replace("_", " "))
    _expect(not (node.get("cte_map") or {}).get("map"), "a WITH clause")
    for key in ("having", "qualify", "sample"):
        _expect(node.get(key) is None, key.upper())
    return node.get("where_clause")


def _walk(expr, columns: set[str] | None, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise QueryError(f"the query is nested too deeply (more than {MAX_DEPTH} levels)")
    if isinstance(expr, list):
        for x in expr:
            _walk(x, columns, depth + 1)
        return
    if not isinstance(expr, dict):
        return
    cls = expr.get("class")
    if cls is not None:
        if cls not in ALLOWED_CLASSES:
            name = {"SUBQUERY": "a subquery", "WINDOW": "a window function", "LAMBDA": "a lambda",
                    "STAR": "'*'", "PARAMETER": "a parameter", "COLLATE": "COLLATE"}.get(cls, cls.lower())
            raise QueryError(f"{name} is not allowed in a query: only columns of the clips view, constants, "
                             "operators, CASE/CAST and scalar functions")
        if cls == "FUNCTION":
            fname = str(expr.get("function_name", "")).lower()
            if expr.get("schema") or expr.get("catalog") or fname not in ALLOWED_FUNCTIONS:
                shown = ".".join(x for x in (expr.get("catalog"), expr.get("schema"), fname) if x)
                raise QueryError(f"function '{shown}' is not allowed in a query (allowed: string, list, regexp, "
                                 "math and date functions; see the README)")
            _expect(not expr.get("distinct") and expr.get("filter") is None, "an aggregate")
        if cls == "COLUMN_REF":
            names = [n.lower() for n in expr.get("column_names") or []]
            if len(names) == 2 and names[0] == "clips":
                names = names[1:]
            _expect(len(names) == 1, f"the column reference '{'.'.join(expr.get('column_names') or [])}'")
            if columns is not None and names[0] not in columns:
                raise QueryError(unknown_column_message(names[0], columns))
    for k, v in expr.items():
        if isinstance(v, (dict, list)):
            _walk(v, columns, depth + 1)


def unknown_column_message(name: str, columns: set[str]) -> str:
    near = difflib.get_close_matches(name, sorted(columns), n=3, cutoff=0.7)
    hint = f" (did you mean {' or '.join(near)}?)" if near else ""
    return f'query failed: no column "{name}" in the clips view{hint}; its columns: {", ".join(sorted(columns))}'


def check_where_clause(text: str | None, columns: set[str] | None = None) -> str:
    """Return the stripped clause, or raise QueryError saying what was refused.

    `columns` (the clips view's) also checks every column reference; without it only the shape
    and the functions are checked (pure: no catalog needed).
    """
    if text is None or not str(text).strip():
        raise QueryError("the query is empty: give a WHERE clause such as \"tags LIKE '%chase%'\"")
    clause = str(text).strip()
    if len(clause) > 10_000:
        raise QueryError("the query is longer than 10,000 characters")
    if "\x00" in clause:
        raise QueryError("the query contains a NUL byte")
    where = _check_statement(_parse(f"SELECT * FROM clips WHERE ({clause}\n)"))
    _expect(where is not None, "an empty expression")
    try:
        _walk(where, columns)
    except RecursionError as e:
        raise QueryError(f"the query is nested too deeply (more than {MAX_DEPTH} levels)") from e
    return clause


def build_sql(clause: str | None, columns: str = "*", order_by: str = "video_path, start_s, clip_id",
              limit: int | None = None, view_columns: set[str] | None = None) -> str:
    where = f"WHERE ({check_where_clause(clause, view_columns)}\n)" if clause is not None else ""
    sql = f"SELECT {columns} FROM clips {where} ORDER BY {order_by}"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return sql


def open_sandboxed(path: str | os.PathLike | None, limits: dict | None = None) -> duckdb.DuckDBPyConnection:
    """A read-only connection that cannot reach files, the network, or change its own settings.
    `limits` adds settings such as memory_limit and threads (catalog.isolate's workers use them)."""
    p = resolve_path(path)
    if not p.exists():
        raise CatalogError(f"no catalog at {p} (run `de ingest` first, or pass --catalog)")
    return open_duckdb(p, read_only=True, config={
        "enable_external_access": False,
        "autoload_known_extensions": False,
        "autoinstall_known_extensions": False,
        **(limits or {}),
        "lock_configuration": True,
    })


def view_columns(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {d[0].lower() for d in con.execute("SELECT * FROM clips LIMIT 0").description}


@contextlib.contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector while building many acyclic objects (rows, dicts)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def run_query(
    clause: str | None,
    catalog: str | os.PathLike | None = None,
    *,
    columns: str = "*",
    limit: int | None = None,
    timeout: float | None = DEFAULT_TIMEOUT_S,
) -> list[dict[str, Any]]:
    """Rows of the `clips` view matching the user's WHERE clause, as dicts, read on the
    sandboxed connection (the only way user SQL ever reaches a catalog)."""
    if clause is not None:
        check_where_clause(clause)  # refuse before touching anything: no catalog, no connection
    con = open_sandboxed(catalog)
    try:
        try:
            cols_here = view_columns(con)
        except duckdb.Error as e:
            raise CatalogError(f"{resolve_path(catalog)} has no clips view: it is not a catalog of this tool, or an "
                               "old one (run `de ingest` on it to migrate)") from e
        sql = build_sql(clause, columns=columns, limit=limit, view_columns=cols_here)
        statements = con.extract_statements(sql)
        if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
            raise QueryError("the query must be a single expression over the clips view")
        with query_deadline(con, timeout, hint="simplify it or raise --query-timeout"):
            if limit is not None and 0 < limit <= 1000:
                # top-N on the narrow key first, then the wide rows of just those clips: sorting
                # every matching row with all its columns is what costs at a million clips
                ids = [r[0] for r in con.execute(build_sql(clause, columns="clip_id", limit=limit,
                                                           view_columns=cols_here)).fetchall()]
                marks = ", ".join("?" for _ in ids) or "NULL"
                cur = con.execute(f"SELECT {columns} FROM clips WHERE clip_id IN ({marks}) "
                                  "ORDER BY video_path, start_s, clip_id", ids)
            else:
                cur = con.execute(sql)
            cols = [d[0] for d in cur.description]
            with _gc_paused():  # 300k+ row tuples: the cyclic collector's rescans cost seconds
                rows = cur.fetchall()
        with _gc_paused():
            return [dict(zip(cols, r)) for r in rows]
    finally:
        con.close()
