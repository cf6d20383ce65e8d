"""Ranked text search over the clips' captions and tags: `de query --search "..."`.

BM25 (k1 1.2, b 0.75) computed in DuckDB SQL over the `clips` view, on the sandboxed read-only
connection every user query uses. DuckDB's `fts` extension would build an index, but an extension
must match the installed DuckDB exactly and is downloaded on first use, which a machine without
network (and our sandbox, which forbids extension loading) cannot do; so the scoring is plain SQL,
with no index to keep in step with label edits. The query's words are bound parameters, never SQL.

Words are lowercase runs of letters and digits (any script: "ŞİMDİ" and "café" are words); a few English stop words are dropped, and a
light suffix rule (-ing, -ed, -es, -s on words of five letters or more) is applied the same way to
the captions and to the query, so "chases", "chased" and "chasing" meet "chase" half-way.
"""

from __future__ import annotations

import os
import re
from typing import Any

STOP = frozenset("a an and are as at be by for from has have in into is it its of on or that the their then "
                 "there they this to was were while with".split())
K1, B = 1.2, 0.75
MAX_TERMS = 32
_WORD = re.compile(r"[^\W_]+")  # Unicode letters and digits: the SQL below splits on [^\p{L}\p{N}]
_SUFFIX = r"(ing|ed|es|s)$"


def stem(w: str) -> str:
    return re.sub(_SUFFIX, "", w) if len(w) > 4 else w


def terms(text: str, lowered: str | None = None) -> list[str]:
    """The query's distinct search terms, in order. `lowered` is the text as DuckDB's lower()
    gives it (search() asks the catalog's connection), so the query and the captions are
    lowercased by the same function: Python's str.lower and DuckDB's differ on letters such as
    "İ". More than MAX_TERMS distinct terms is an error, not a silent cut."""
    from .query import QueryError

    seen: dict[str, None] = {}  # ordered and O(1) per word: term extraction stays linear in the query
    for w in _WORD.findall(text.lower() if lowered is None else lowered):
        if w not in STOP:
            seen.setdefault(stem(w), None)
    if len(seen) > MAX_TERMS:
        raise QueryError(f"--search has {len(seen)} distinct words; at most {MAX_TERMS} are searched: shorten it")
    return list(seen)


def db_lower(con, text: str) -> str:
    """`text` lowercased by DuckDB, as the captions are in search_sql."""
    return con.execute("SELECT lower(?)", [text]).fetchone()[0]


# the same tokenisation in SQL: split on anything that is not a-z0-9, drop stop words, stem
_DOC = "lower(coalesce(caption, '') || ' ' || coalesce(array_to_string(tag_list, ' '), ''))"
_STEM = f"CASE WHEN length(w) > 4 THEN regexp_replace(w, '{_SUFFIX}', '') ELSE w END"


def search_sql(where: str | None, n_terms: int) -> str:
    """BM25 over the clips matching `where` (already checked), for n_terms bound terms; returns
    (clip_id, score) best first, with the limit as the last parameter."""
    stop = ", ".join(f"'{w}'" for w in sorted(STOP))
    marks = ", ".join("?" for _ in range(n_terms))
    filt = f"WHERE ({where}\n)" if where else ""
    return f"""
WITH docs AS (SELECT clip_id, {_DOC} AS t FROM clips {filt}),
raw AS (SELECT clip_id, unnest(regexp_split_to_array(t, '[^\\p{{L}}\\p{{N}}]+')) AS w FROM docs),
toks AS (SELECT clip_id, {_STEM} AS w FROM raw WHERE w <> '' AND w NOT IN ({stop})),
dl AS (SELECT d.clip_id, count(t.w) AS len FROM docs d LEFT JOIN toks t USING (clip_id) GROUP BY d.clip_id),
stats AS (SELECT count(*) AS n, greatest(avg(len), 1) AS avgdl FROM dl),
tf AS (SELECT clip_id, w, count(*) AS f FROM toks WHERE w IN ({marks}) GROUP BY clip_id, w),
df AS (SELECT w, count(*) AS d FROM tf GROUP BY w)
SELECT tf.clip_id, sum(ln(1 + (stats.n - df.d + 0.5) / (df.d + 0.5))
                       * tf.f * {K1 + 1} / (tf.f + {K1} * (1 - {B} + {B} * dl.len / stats.avgdl))) AS score
FROM tf JOIN df USING (w) JOIN dl USING (clip_id) CROSS JOIN stats
GROUP BY tf.clip_id ORDER BY score DESC, tf.clip_id LIMIT ?"""


def search(text: str, catalog: str | os.PathLike | None = None, *, where: str | None = None, limit: int = 20,
           columns: str = "*", timeout: float | None = 30.0) -> list[dict[str, Any]]:
    """Clips ranked by BM25 against `text` (best first), each row with a `score`; `where`
    narrows the clips first. Raises QueryError on a query with no searchable word."""
    import duckdb

    from .db import CatalogError, resolve_path
    from .query import QueryError, check_where_clause, open_sandboxed, view_columns
    from .timeouts import query_deadline

    words = terms(text)
    if not words:
        raise QueryError(f"--search {text[:80]!r} has no word to search for (only stop words or punctuation)")
    if where is not None:
        check_where_clause(where)
    if limit < 1:
        raise QueryError("--limit must be at least 1 for --search")
    con = open_sandboxed(catalog)
    try:
        words = terms(text, db_lower(con, text))
        if not words:
            raise QueryError(f"--search {text[:80]!r} has no word to search for (only stop words or punctuation)")
        try:
            cols = view_columns(con)
        except duckdb.Error as e:
            raise CatalogError(f"{resolve_path(catalog)} has no clips view: it is not a catalog of this tool") from e
        clause = check_where_clause(where, cols) if where is not None else None
        with query_deadline(con, timeout, what="the search", hint="narrow the words or the filter"):
            ranked = con.execute(search_sql(clause, len(words)), [*words, int(limit)]).fetchall()
            if not ranked:
                return []
            marks = ", ".join("?" for _ in ranked)
            cur = con.execute(f"SELECT clip_id AS __key, {columns} FROM clips WHERE clip_id IN ({marks})",
                              [r[0] for r in ranked])
            names = [d[0] for d in cur.description][1:]
            rows = {r[0]: dict(zip(names, r[1:])) for r in cur.fetchall()}
        return [{**rows[cid], "score": round(float(s), 4)} for cid, s in ranked if cid in rows]
    finally:
        con.close()
