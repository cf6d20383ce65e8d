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
