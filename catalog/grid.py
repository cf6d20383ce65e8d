"""The clip grid of `de serve` at library scale: keyset pages and a per-filter summary (the
browser's reads of the catalog; `dataengine.serve.app` serves them).

The grid is sorted by (video path, start, clip id). A filter's *summary* is one pass over the
matching clips grouped by video and duration bucket, plus the tag counts: it gives the total, the
facets, and the number of matching clips per video path in sort order. Page N then never scans
from the start: its first row is row (N-1)*48, which lies in a known path at a known offset inside
that path, and the page is read from the few paths it spans (`path BETWEEN lo AND hi ... OFFSET k`
with k below one video's clip count). Page 1 needs no summary at all, so a new filter shows its
first page at once while the summary is computed in the background (`Browser.grid`).

Filters without the user's SQL (the facets alone) read the base tables, which is what an index or
a zone map can serve; a filter with the user's SQL reads the `clips` view, in the sandbox.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass

PAGE_SIZE = 48
DURATION_BUCKETS = [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10), (10, 15), (15, 30), (30, None)]
TAG_RE = re.compile(r"^[a-z0-9_]{1,40}$")
HEX_RE = re.compile(r"^[0-9a-f]{8,64}$")
DUR_RE = re.compile(r"(\d{1,6}(?:\.\d{1,6})?)-(\d{1,6}(?:\.\d{1,6})?)?")
GRID_COLUMNS = ("clip_id, video_id, video_path, start_s, end_s, duration_s, motion_score, caption, tags, tag_list, "
                "rejected, keyframe_path, captioner, prompt_version")
BASE_FROM = "FROM clip_segments c JOIN videos v ON v.video_id = c.video_id AND v.status = 'ok'"


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Filter:
    """What a grid URL selects (the page aside). `lab` is (captioner, prompt version) or None."""
    q: str | None = None
    tag: str | None = None
    video: str | None = None
    dur: str | None = None
    lab: tuple[str, str] | None = None
    search: str | None = None  # ranked text search over captions and tags, within the rest

    def check(self) -> Filter:
        if self.tag and not TAG_RE.match(self.tag):
            raise BadRequest("a tag facet is lowercase letters, digits and _")
        if self.video and not HEX_RE.match(self.video):
            raise BadRequest("a video facet is a video id")
        if self.dur and not DUR_RE.fullmatch(self.dur):
            raise BadRequest("a duration facet looks like 2-4 or 30-")
        if self.search is not None:
            from catalog.search import terms

            if len(self.search) > 500:
                raise BadRequest("a search is at most 500 characters")
            from catalog.query import QueryError

            try:
                words = terms(self.search)
            except QueryError as e:
                raise BadRequest(str(e)) from e
            if not words:
                raise BadRequest(f"the search {self.search[:80]!r} has no word to search for (only stop words or "
                                 "punctuation)")
        return self


@dataclass
class Relation:
    """The matching clips as SQL: `sql` is FROM ... WHERE ...; `path`, `dur` and `tags` name the
    video path, duration and tag list of a row `c`."""
    sql: str
    params: list
    path: str
    dur: str
    view: bool

    @property
    def key(self) -> str:
        return f"{self.path}, c.start_s, c.clip_id"


def relation(con, f: Filter) -> Relation:
    """The filter as SQL: on the `clips` view when it holds the user's clause (checked like
    `de query`'s), else on the base tables. Facet values are bound parameters."""
    from catalog.query import check_where_clause, view_columns

    f.check()
    parts, params = [], []
    if f.q:
        rel = Relation("FROM clips c", [], "c.video_path", "c.duration_s", True)
        parts.append(f"({check_where_clause(f.q, view_columns(con))}\n)")
    else:
        rel = Relation(BASE_FROM, [], "v.path", "(c.end_s - c.start_s)", False)
    if f.tag:
        parts.append("list_contains(c.tag_list, ?)" if rel.view else
                     "c.clip_id IN (SELECT clip_id FROM clip_labels WHERE list_contains(tag_list, ?))")
        params.append(f.tag)
    if f.video:
        parts.append("c.video_id = ?")
        params.append(f.video)
    if f.dur:
        m = DUR_RE.fullmatch(f.dur)
        parts.append(f"{rel.dur} >= ?")
        params.append(float(m.group(1)))
        if m.group(2):
            parts.append(f"{rel.dur} < ?")
            params.append(float(m.group(2)))
    rel.sql += " WHERE " + (" AND ".join(parts) if parts else "true")
    rel.params = params
    return rel


# -- the summary -------------------------------------------------------------------------------
SEARCH_LIMIT = 480  # a search shows its best ten pages


def summarize(con, f: Filter) -> dict:
    """Total, facets and the per-path counts the pages are planned from (for a search: the
    ranked clip ids, best first, instead of the per-path counts)."""
    if f.search:
        return summarize_search(con, f)
    rel = relation(con, f)
    cases = " ".join(f"WHEN {rel.dur} < {hi} THEN {i}" for i, (_, hi) in enumerate(DURATION_BUCKETS) if hi)
    groups = con.execute(f"SELECT {rel.path}, c.video_id, CASE {cases} ELSE {len(DURATION_BUCKETS) - 1} END, "
                         f"count(*) {rel.sql} GROUP BY ALL ORDER BY 1", rel.params).fetchall()
    paths: list[str] = []
    counts: list[int] = []
    per_video: dict[str, list] = {}
    buckets = [0] * len(DURATION_BUCKETS)
    for path, vid, b, n in groups:
        if paths and paths[-1] == path:
            counts[-1] += n
        else:
            paths.append(path)
            counts.append(n)
        per_video.setdefault(vid, [path, 0])[1] += n
        buckets[b] += n
    cum, total = [], 0
    for n in counts:
        total += n
        cum.append(total)
    videos = _top_videos(per_video)
    if f.lab:
        tag_sql = (f"SELECT t, count(*) FROM (SELECT unnest(x.tag_list) AS t FROM captions x WHERE x.captioner = ? "
                   f"AND x.prompt_version = ? AND x.status = 'ok' AND x.clip_id IN (SELECT c.clip_id {rel.sql})) "
                   "GROUP BY t ORDER BY 2 DESC, t LIMIT 40")
        tags = con.execute(tag_sql, [*f.lab, *rel.params]).fetchall()
    elif rel.view:
        tags = con.execute(f"SELECT t, count(*) FROM (SELECT unnest(c.tag_list) AS t {rel.sql}) GROUP BY t "
                           "ORDER BY 2 DESC, t LIMIT 40", rel.params).fetchall()
    elif not (f.tag or f.video or f.dur):
        # every label, less those of clips whose video is not 'ok': a scan of one table, not a join
        tags = con.execute("SELECT t, count(*) FROM (SELECT unnest(l.tag_list) AS t FROM clip_labels l WHERE NOT "
                           "EXISTS (SELECT 1 FROM clip_segments c JOIN videos v ON v.video_id = c.video_id AND "
                           "v.status <> 'ok' WHERE c.clip_id = l.clip_id)) GROUP BY t ORDER BY 2 DESC, t LIMIT 40"
                           ).fetchall()
    else:
        tags = con.execute(f"SELECT t, count(*) FROM (SELECT unnest(l.tag_list) AS t FROM clip_labels l WHERE "
                           f"l.clip_id IN (SELECT c.clip_id {rel.sql})) GROUP BY t ORDER BY 2 DESC, t LIMIT 40",
                           rel.params).fetchall()
    return {"total": total, "tags": tags, "videos": videos, "durations": _durations(buckets), **_labellings(con),
            "paths": paths, "cum": cum}


def _durations(buckets: list[int]) -> list[tuple[str, int]]:
    return [(f"{lo}-{hi if hi else ''}", buckets[i]) for i, (lo, hi) in enumerate(DURATION_BUCKETS)]


def _top_videos(per_video: dict) -> list[tuple]:
    return sorted(((vid, p, n) for vid, (p, n) in per_video.items()), key=lambda x: (-x[2], x[1]))[:40]


def _labellings(con) -> dict:
    """The labelling picker and the pin: the same for every filter."""
    labellings = con.execute("SELECT captioner, prompt_version, count(*) FILTER (WHERE status = 'ok'), "
                             "max(created_at) FROM captions GROUP BY 1, 2 ORDER BY 4 DESC").fetchall()
    pin = con.execute("SELECT value FROM settings WHERE key = 'caption_pin'").fetchone()
    return {"labellings": labellings, "pin": pin[0] if pin else None}


def summarize_search(con, f: Filter) -> dict:
    """BM25 over the clips the rest of the filter selects (catalog.search's scoring), best
    SEARCH_LIMIT first; the facets count those results."""
    from catalog.search import db_lower, search_sql, terms

    words = terms(f.search, db_lower(con, f.search))
    inner = relation(con, Filter(f.q, f.tag, f.video, f.dur, f.lab).check())
    where = f"clip_id IN (SELECT c.clip_id {inner.sql})"
    ranked = con.execute(search_sql(where, len(words)), [*inner.params, *words, SEARCH_LIMIT]).fetchall()
    ids = [r[0] for r in ranked]
    marks = ", ".join("?" for _ in ids) or "NULL"
    cases = " ".join(f"WHEN duration_s < {hi} THEN {i}" for i, (_, hi) in enumerate(DURATION_BUCKETS) if hi)
    buckets = [0] * len(DURATION_BUCKETS)
    per_video: dict[str, list] = {}
    for vid, path, b, n in con.execute(f"SELECT video_id, video_path, CASE {cases} ELSE {len(DURATION_BUCKETS) - 1} "
                                       f"END, count(*) FROM clips WHERE clip_id IN ({marks}) GROUP BY ALL",
                                       ids).fetchall():
        buckets[b] += n
        per_video.setdefault(vid, [path, 0])[1] += n
    if f.lab:
        tags = con.execute(f"SELECT t, count(*) FROM (SELECT unnest(tag_list) AS t FROM captions WHERE captioner = ? "
                           f"AND prompt_version = ? AND status = 'ok' AND clip_id IN ({marks})) GROUP BY t "
                           "ORDER BY 2 DESC, t LIMIT 40", [*f.lab, *ids]).fetchall()
    else:
        tags = con.execute(f"SELECT t, count(*) FROM (SELECT unnest(tag_list) AS t FROM clip_labels WHERE clip_id IN "
                           f"({marks})) GROUP BY t ORDER BY 2 DESC, t LIMIT 40", ids).fetchall()
    return {"total": len(ids), "tags": tags, "videos": _top_videos(per_video), "durations": _durations(buckets),
            **_labellings(con), "ranked": ids, "scores": {r[0]: round(float(r[1]), 3) for r in ranked},
            "limited": len(ids) == SEARCH_LIMIT}


def last_page(total: int) -> int:
    return max(1, -(-total // PAGE_SIZE))


def plan(summary: dict, page: int) -> tuple[int, tuple | None]:
    """(page, (first path, last path, offset in the first path)) for a page, clamped to the last
    page; None when the filter matches nothing. A search's page is its slice of the ranking."""
    page = min(page, last_page(summary["total"]))
    if "ranked" in summary:
        ids = summary["ranked"][(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
        return page, ({"ids": ids} if ids else None)
    cum, paths = summary["cum"], summary["paths"]
    if not cum:
        return page, None
    first = (page - 1) * PAGE_SIZE
    i = bisect_right(cum, first)
    j = min(bisect_right(cum, first + PAGE_SIZE - 1), len(cum) - 1)
    return page, (paths[i], paths[j], first - (cum[i - 1] if i else 0))


# -- a page ------------------------------------------------------------------------------------
def page_rows(con, f: Filter, span: tuple | dict | None, first_page: bool) -> list[dict]:
    """The page's rows: its ids on the narrow sort key (within `span`'s paths, or the first page
    when there is no span yet), then the wide rows of just those clips."""
    if span is None and not first_page:
        return []
    if isinstance(span, dict):  # a search's page: its ranked ids, in rank order
        rank = {cid: k for k, cid in enumerate(span["ids"])}
        return sorted(wide_rows(con, span["ids"], f.lab), key=lambda r: rank[r["clip_id"]])
    rel = relation(con, f)
    if span is None:
        ids = con.execute(f"SELECT c.clip_id {rel.sql} ORDER BY {rel.key} LIMIT ?",
                          rel.params + [PAGE_SIZE]).fetchall()
    else:
        lo, hi, off = span
        ids = con.execute(f"SELECT c.clip_id {rel.sql} AND {rel.path} BETWEEN ? AND ? ORDER BY {rel.key} "
                          "LIMIT ? OFFSET ?", rel.params + [lo, hi, PAGE_SIZE, off]).fetchall()
    return wide_rows(con, [r[0] for r in ids], f.lab)


def wide_rows(con, ids: list[str], lab) -> list[dict]:
    """The grid's rows of these clips, each with its video's codec (`video_codec`), in grid order;
    with `lab`, that labelling's caption and tags instead of the chosen one's."""
    marks = ", ".join("?" for _ in ids) or "NULL"
    cur = con.execute(f"SELECT {GRID_COLUMNS} FROM clips WHERE clip_id IN ({marks}) "
                      "ORDER BY video_path, start_s, clip_id", ids)
    cols = [d[0] for d in cur.description]
    rows = [dict(zip(cols, r)) for r in cur.fetchall()]
    vids = sorted({r["video_id"] for r in rows})
    codecs = dict(con.execute(f"SELECT video_id, codec FROM videos WHERE video_id IN "
                              f"({', '.join('?' for _ in vids) or 'NULL'})", vids).fetchall())
    for r in rows:
        r["video_codec"] = codecs.get(r["video_id"])
        r["score"] = None
    if lab:
        picked = {r[0]: r[1:] for r in con.execute(
            f"SELECT clip_id, caption, tag_list, status FROM captions WHERE captioner = ? AND "
            f"prompt_version = ? AND clip_id IN ({marks})", [lab[0], lab[1], *ids]).fetchall()}
        for r in rows:
            cap, tags, status = picked.get(r["clip_id"], (None, None, None))
            r["caption"], r["tag_list"] = cap, tags
            r["status"] = status
            r["tags"] = ",".join(tags) if tags else None
            r["captioner"], r["prompt_version"] = (lab[0], lab[1]) if cap is not None else (None, None)
    from catalog.labels import labelling_kinds

    kinds = labelling_kinds(con, ((r["captioner"], r["prompt_version"]) for r in rows))  # the page's few labellings
    for r in rows:
        r["label_kind"] = kinds.get((r["captioner"], r["prompt_version"]))
    return rows
