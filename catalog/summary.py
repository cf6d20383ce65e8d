"""`de stats`: what the catalog holds, as plain data (the CLI formats it)."""

from __future__ import annotations

from typing import Any

DURATION_BINS = [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10), (10, 15), (15, 30), (30, None)]


def catalog_stats(con, top_tags: int = 20) -> dict[str, Any]:
    v = dict(con.execute("SELECT status, count(*) FROM videos GROUP BY status").fetchall())
    failed = con.execute(
        "SELECT error_kind, count(*) FROM videos WHERE status = 'failed' GROUP BY 1 ORDER BY 2 DESC"
    ).fetchall()
    # one pass over the clips for counts, hours, the duration histogram and the means
    bins = ", ".join(
        f"count(*) FILTER (WHERE duration_s >= {lo}" + (f" AND duration_s < {hi})" if hi is not None else ")")
        for lo, hi in DURATION_BINS)
    r = con.execute(
        f"SELECT count(*), coalesce(sum(duration_s), 0), count(caption), avg(motion_score), avg(brightness), "
        f"avg(colorfulness), avg(sharpness), {bins} FROM clips").fetchone()
    n_clips, secs, captioned = r[0], r[1], r[2]
    means = r[3:7]
    hist = [(f">= {lo} s" if hi is None else f"{lo}-{hi} s", n) for (lo, hi), n in zip(DURATION_BINS, r[7:])]
    src_secs = con.execute("SELECT coalesce(sum(duration_s), 0) FROM videos WHERE status = 'ok'").fetchone()[0]
    tags = con.execute(
        "SELECT tag, count(*) AS n FROM (SELECT unnest(tag_list) AS tag FROM clips WHERE tag_list IS NOT NULL) "
        "GROUP BY tag ORDER BY n DESC, tag LIMIT ?",
        [top_tags],
    ).fetchall()
    labellings = con.execute(
        "SELECT captioner, prompt_version, count(*) FILTER (WHERE status = 'ok'), "
        "count(*) FILTER (WHERE status = 'parse_error'), count(*) FILTER (WHERE status = 'decode_error'), "
        "bool_or(is_random_model) FROM captions GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall()
    import os

    from .db import runs_by_state

    missing = sum(1 for (path,) in con.execute("SELECT path FROM videos WHERE status = 'ok'").fetchall()
                  if not os.path.exists(path))
    # what the clip-purity stage kept out of clips: spans (frames) and detector cuts, by reason
    excluded = con.execute(
        "SELECT json_extract_string(e, '$.reason') AS reason, count(*), "
        "sum(CAST(json_extract(e, '$.end') AS BIGINT) - CAST(json_extract(e, '$.start') AS BIGINT)) "
        "FROM (SELECT unnest(CAST(excluded AS JSON[])) AS e FROM videos "
        "      WHERE status = 'ok' AND excluded IS NOT NULL AND excluded <> '[]') GROUP BY 1 ORDER BY 2 DESC"
    ).fetchall()
    # ... and per video: the videos it took the largest share of, so a stage that removes a lot
    # from footage with hard cuts only shows at once
    per_video = con.execute(
        "SELECT path, num_frames, sum(CAST(json_extract(e, '$.end') AS BIGINT) "
        "                             - CAST(json_extract(e, '$.start') AS BIGINT)) AS frames, "
        "       string_agg(DISTINCT json_extract_string(e, '$.reason'), ', ') "
        "         FILTER (WHERE CAST(json_extract(e, '$.end') AS BIGINT) > CAST(json_extract(e, '$.start') AS BIGINT)) "
        "FROM (SELECT path, num_frames, unnest(CAST(excluded AS JSON[])) AS e FROM videos "
        "      WHERE status = 'ok' AND excluded IS NOT NULL AND excluded <> '[]') "
        "GROUP BY 1, 2 HAVING frames > 0 ORDER BY frames / greatest(num_frames, 1) DESC, 1 LIMIT 5"
    ).fetchall()
    camera = con.execute("SELECT coalesce(camera_measured, 'not measured'), count(*) FROM clips "
                         "GROUP BY 1 ORDER BY 2 DESC, 1").fetchall()
    return {
        "camera_measured": camera,
        "excluded_by_reason": [(r, n, int(f or 0)) for r, n, f in excluded],
        "excluded_by_video": [(p, int(nf or 0), int(f), why or "") for p, nf, f, why in per_video],
        "videos_ok": v.get("ok", 0),
        "videos_failed": v.get("failed", 0),
        "videos_replaced": v.get("replaced", 0),
        "videos_missing": missing,
        "runs": runs_by_state(con),
        "failed_by_reason": failed,
        "clips": n_clips,
        "clip_hours": secs / 3600.0,
        "source_hours": src_secs / 3600.0,
        "duration_histogram": hist,
        "captioned_clips": captioned,
        "tag_histogram": tags,
        "labellings": labellings,
        "means": dict(zip(["motion_score", "brightness", "colorfulness", "sharpness"], means)),
    }
