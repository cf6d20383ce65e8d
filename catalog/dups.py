"""The `clip_dups` table: near-duplicate groups over the clips' signatures (dataengine.dedup
computes the groups; this module reads the signatures and writes the groups)."""

from __future__ import annotations


def signatures(con) -> list[tuple]:
    """(clip_id, sig0, sig1, sig2, duration_s, sharpness) of every clip of an ok video, by clip id
    (the signature is NULL for clips ingested before signatures)."""
    return con.execute("SELECT s.clip_id, s.sig0, s.sig1, s.sig2, s.end_s - s.start_s, s.sharpness "
                       "FROM clip_segments s JOIN videos v USING (video_id) WHERE v.status = 'ok' "
                       "ORDER BY s.clip_id").fetchall()


def replace_groups(con, rows: list[tuple[str, int, int]]) -> None:
    """Replace every group with `rows` of (clip_id, dup_group, dup_rank); the caller holds the
    transaction. Many rows go through Arrow in one statement."""
    con.execute("DELETE FROM clip_dups")
    if len(rows) > 5000:
        import pyarrow as pa

        tbl = pa.table({"clip_id": [o[0] for o in rows], "dup_group": [o[1] for o in rows],
                        "dup_rank": [o[2] for o in rows]})
        con.register("_dups", tbl)
        try:
            con.execute("INSERT INTO clip_dups SELECT clip_id, dup_group, dup_rank FROM _dups")
        finally:
            con.unregister("_dups")
    elif rows:
        con.executemany("INSERT INTO clip_dups VALUES (?, ?, ?)", [list(o) for o in rows])
