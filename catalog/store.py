"""Writes by the single catalog writer. Every function takes an open read-write connection and
runs inside the caller's transaction; values are always bound parameters."""

from __future__ import annotations

from typing import Any, Iterable

VIDEO_COLUMNS = [
    "video_id", "path", "size_bytes", "duration_s", "fps", "width", "height", "num_frames", "codec",
    "container", "rotation", "is_vfr", "reader", "status", "error", "error_kind", "split_key", "sar", "excluded",
]
# A clip row, declared once: (column, Python type, default if optional). The ingest's record of a
# clip (`dataengine.analyze.ClipRecord`) is made from this list, the writer binds these columns,
# and tests/catalog check that a fresh catalog's clip_segments table has exactly these columns.
CLIP_FIELDS: tuple = (
    ("clip_id", str), ("video_id", str), ("scene_index", int), ("window_index", int),
    ("start_frame", int), ("end_frame", int), ("start_s", float), ("end_s", float),
    ("motion_score", float), ("brightness", float), ("colorfulness", float), ("sharpness", float),
    ("keyframe_path", "str | None"), ("detector", str), ("detector_params", str), ("split_key", str),
    # visual signature: pHashes at 25/50/75% of the clip (dataengine.dedup); None before migration 6
    ("sig0", "int | None", None), ("sig1", "int | None", None), ("sig2", "int | None", None),
    # camera motion measured in the decode pass (dataengine.camera); None before migration 11
    ("cam_pan", "float | None", None), ("cam_tilt", "float | None", None), ("cam_zoom", "float | None", None),
    ("cam_rotation", "float | None", None), ("cam_shake", "float | None", None),
    ("camera_measured", "str | None", None),
)
CLIP_COLUMNS = [f[0] for f in CLIP_FIELDS]

SQL_UPSERT_VIDEO = (
    f"INSERT OR REPLACE INTO videos ({', '.join(VIDEO_COLUMNS)}, ingested_at) "
    f"VALUES ({', '.join('?' for _ in VIDEO_COLUMNS)}, current_timestamp)"
)
SQL_INSERT_CLIP = (
    f"INSERT OR REPLACE INTO clip_segments ({', '.join(CLIP_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in CLIP_COLUMNS)})"
)
SQL_DELETE_CLIPS_OF_VIDEO = "DELETE FROM clip_segments WHERE video_id = ?"
SQL_VIDEO_STATE = (
    "SELECT v.video_id, v.path, v.status, v.split_key, coalesce(s.signed, true), v.sar FROM videos v "
    "LEFT JOIN (SELECT video_id, bool_and(sig0 IS NOT NULL) AS signed FROM clip_segments GROUP BY 1) s "
    "USING (video_id)"
)


def known_videos(con) -> dict[str, dict[str, Any]]:
    """video_id -> {path, status, split_key, signed} for every video the catalog has seen
    (`signed`: its clips have near-duplicate signatures; clips from before signatures do not)."""
    return {r[0]: {"path": r[1], "status": r[2], "split_key": r[3], "signed": r[4], "sar": r[5]}
            for r in con.execute(SQL_VIDEO_STATE).fetchall()}


def save_video(con, video: dict[str, Any], clips: Iterable[dict[str, Any]]) -> int:
    """Replace a video's row and all its clips (caller holds the transaction)."""
    con.execute(SQL_UPSERT_VIDEO, [video.get(c) for c in VIDEO_COLUMNS])
    con.execute(SQL_DELETE_CLIPS_OF_VIDEO, [video["video_id"]])
    rows = [[clip.get(c) for c in CLIP_COLUMNS] for clip in clips]
    if rows:
        con.executemany(SQL_INSERT_CLIP, rows)
    return len(rows)


def update_sar(con, video_id: str, sar: float) -> None:
    con.execute("UPDATE videos SET sar = ? WHERE video_id = ?", [sar, video_id])


def update_path(con, video_id: str, path: str) -> None:
    con.execute("UPDATE videos SET path = ? WHERE video_id = ?", [path, video_id])


def mark_replaced(con, video_id: str) -> None:
    """Other bytes now live at this video's path: its clips leave the clips view (the rows stay
    for lineage: runs that trained on them still resolve)."""
    con.execute("UPDATE videos SET status = 'replaced', error = 'another file now has this path', "
                "error_kind = 'replaced' WHERE video_id = ?", [video_id])
