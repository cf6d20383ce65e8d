"""Reads for the pages of `de serve` and the listings of `de stats` / `de dedup` that name catalog
tables (the grid's pages and summaries are in catalog/grid.py)."""

from __future__ import annotations


class NoClip(LookupError):
    """No clip with this id in the catalog."""


def clip_row(con, clip_id: str) -> dict:
    cur = con.execute("SELECT * FROM clips WHERE clip_id = ?", [clip_id])
    cols = [d[0] for d in cur.description]
    r = cur.fetchone()
    if r is None:
        raise NoClip(clip_id)
    return dict(zip(cols, r))


def neighbours(con, video_id: str, clip_id: str, around: int = 3) -> list[tuple]:
    """(clip_id, start_s, end_s, caption) of the clips around `clip_id` in its video. The video's
    clips come from the base table, then the captions of the ones shown: the view's joins would
    read every clip's label for one video's list."""
    order = [x[0] for x in con.execute("SELECT clip_id FROM clip_segments WHERE video_id = ? "
                                        "ORDER BY start_s, clip_id", [video_id]).fetchall()]
    i = order.index(clip_id) if clip_id in order else 0
    shown = order[max(0, i - around): i + around + 1]
    return con.execute(f"SELECT s.clip_id, s.start_s, s.end_s, l.caption FROM clip_segments s LEFT JOIN "
                       f"clip_labels l ON l.clip_id = s.clip_id WHERE s.clip_id IN "
                       f"({', '.join('?' for _ in shown)}) ORDER BY s.start_s, s.clip_id", shown).fetchall()


def video_codec(con, video_id: str) -> str | None:
    r = con.execute("SELECT codec FROM videos WHERE video_id = ?", [video_id]).fetchone()
    return r[0] if r else None


def clip_losses(con, clip_id: str) -> list[dict]:
    cur = con.execute("SELECT run_id, samples, mean_loss, mean_z, updated_at FROM clip_losses "
                      "WHERE clip_id = ? ORDER BY updated_at DESC", [clip_id])
    return [dict(zip([d[0] for d in cur.description], x)) for x in cur.fetchall()]


def dup_group_members(con, group, clip_id: str) -> list[dict]:
    """The other clips of a near-duplicate group, representative first."""
    return [dict(zip(("clip_id", "video_path", "start_s", "end_s", "dup_rank"), x)) for x in con.execute(
        "SELECT s.clip_id, v.path, s.start_s, s.end_s, d.dup_rank FROM clip_dups d JOIN clip_segments s "
        "USING (clip_id) JOIN videos v ON v.video_id = s.video_id AND v.status = 'ok' "
        "WHERE d.dup_group = ? AND d.clip_id <> ? ORDER BY d.dup_rank", [group, clip_id]).fetchall()]


MEDIA_COLUMNS = ("clip_id", "video_id", "video_path", "start_s", "end_s", "keyframe_path", "width", "height", "fps",
                 "codec")


def media_row(con, clip_id: str) -> dict:
    """What serving a clip's media needs: its source, range, size and the video's codec."""
    r = con.execute("SELECT c.clip_id, c.video_id, c.video_path, c.start_s, c.end_s, c.keyframe_path, "
                    "c.width, c.height, c.fps, v.codec FROM clips c JOIN videos v USING (video_id) "
                    "WHERE c.clip_id = ?", [clip_id]).fetchone()
    if r is None:
        raise NoClip(clip_id)
    return dict(zip(MEDIA_COLUMNS, r))


def failed_videos(con) -> list[tuple]:
    """(path, error kind, error) of every video ingest could not read."""
    return con.execute("SELECT path, error_kind, error FROM videos WHERE status = 'failed' ORDER BY path").fetchall()


def dup_groups(con) -> tuple[dict, dict]:
    """({clip_id: video path} of grouped clips, {group: [clip_id, ... representative first]})."""
    paths = dict(con.execute("SELECT s.clip_id, v.path FROM clip_segments s JOIN videos v USING (video_id) "
                             "WHERE s.clip_id IN (SELECT clip_id FROM clip_dups)").fetchall())
    members: dict = {}
    for cid, g, _ in con.execute("SELECT clip_id, dup_group, dup_rank FROM clip_dups ORDER BY dup_group, "
                                 "dup_rank").fetchall():
        members.setdefault(g, []).append(cid)
    return paths, members


def clip_ranges(con) -> list[dict]:
    """(clip_id, video_path, start_s, end_s) of every clip the clips view shows."""
    cur = con.execute("SELECT clip_id, video_path, start_s, end_s FROM clips")
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def video_paths(con, video_ids: list[str]) -> dict[str, str]:
    """{video_id: path} of these videos where they are ingested and readable now."""
    return dict(con.execute("SELECT video_id, path FROM videos WHERE status = 'ok' AND video_id IN "
                            "(SELECT unnest(?::VARCHAR[]))", [list(video_ids)]).fetchall())
