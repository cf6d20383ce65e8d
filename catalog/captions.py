"""The `captions` table: labellings written, what is done, and their counts.

Every statement on `captions` that is not the curation write (catalog.curation) or the chosen-label
refresh (catalog.labels) lives here; the writers (de caption's backends, the toy world's truth)
hand rows in the column order of SAVE_COLUMNS."""

from __future__ import annotations

SAVE_COLUMNS = ("clip_id", "captioner", "prompt_version", "status", "caption", "tag_list", "fields", "raw_output",
                "error", "num_frames", "visual_tokens", "seconds", "is_random_model", "model_kind")
_SAVE = (f"INSERT OR REPLACE INTO captions ({', '.join(SAVE_COLUMNS)}, created_at) "
         f"VALUES ({', '.join('?' for _ in SAVE_COLUMNS)}, current_timestamp)")


def save(con, rows: list[list]) -> None:
    """Write caption rows (SAVE_COLUMNS order); a rerun of the same labelling replaces its rows."""
    con.executemany(_SAVE, rows)


def done(con, captioner: str, version: str) -> dict[str, str]:
    """{clip_id: status} of the clips this labelling has a row for."""
    return dict(con.execute("SELECT clip_id, status FROM captions WHERE captioner = ? AND prompt_version = ?",
                            [captioner, version]).fetchall())


def labellings(con) -> list[dict]:
    """One row per labelling, newest first: counts by status, whether a random model made it,
    its model kind, and when it last wrote."""
    cur = con.execute(
        "SELECT captioner, prompt_version, count(*) FILTER (WHERE status='ok') AS ok, "
        "count(*) FILTER (WHERE status='parse_error') AS parse_errors, "
        "count(*) FILTER (WHERE status='decode_error') AS decode_errors, "
        "count(*) FILTER (WHERE status='request_error') AS request_errors, "
        "bool_or(is_random_model) AS random, max(created_at) AS last, "
        "any_value(coalesce(model_kind, 'real')) AS kind FROM captions GROUP BY 1, 2 ORDER BY last DESC")
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def of_clip(con, clip_id: str) -> list[dict]:
    """Every labelling of one clip, the human one first, then newest first."""
    cur = con.execute("SELECT captioner, prompt_version, status, caption, tag_list, fields, raw_output, error, "
                      "created_at, is_random_model, coalesce(model_kind, 'real') AS model_kind FROM captions "
                      "WHERE clip_id = ? ORDER BY (captioner = 'human') DESC, created_at DESC", [clip_id])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, x)) for x in cur.fetchall()]


def count(con, captioner: str, version: str) -> int:
    """How many clips this labelling has a row for."""
    return con.execute("SELECT count(*) FROM captions WHERE captioner = ? AND prompt_version = ?",
                       [captioner, version]).fetchone()[0]


def newest_version(con, captioner: str) -> str | None:
    """The prompt version this captioner last wrote, or None if it wrote nothing."""
    row = con.execute("SELECT prompt_version FROM captions WHERE captioner = ? GROUP BY 1 "
                      "ORDER BY max(created_at) DESC LIMIT 1", [captioner]).fetchone()
    return row[0] if row else None


def captioners(con) -> list[str]:
    return [r[0] for r in con.execute("SELECT DISTINCT captioner FROM captions ORDER BY 1").fetchall()]


def paired_tags(con, a: tuple[str, str], b: tuple[str, str]) -> list[tuple]:
    """(clip_id, tags of labelling a, tags of labelling b) for the clips both labelled ok."""
    return con.execute(
        "SELECT x.clip_id, x.tag_list, y.tag_list FROM captions x JOIN captions y USING (clip_id) "
        "WHERE x.captioner = ? AND x.prompt_version = ? AND y.captioner = ? AND y.prompt_version = ? "
        "AND x.status = 'ok' AND y.status = 'ok' ORDER BY clip_id", [*a, *b]).fetchall()


def ok_rows(con, captioner: str, version: str) -> list[tuple]:
    """(clip_id, caption, tag_list, fields) of this labelling's ok rows."""
    return con.execute("SELECT clip_id, caption, tag_list, fields FROM captions WHERE captioner = ? "
                       "AND prompt_version = ? AND status = 'ok'", [captioner, version]).fetchall()
