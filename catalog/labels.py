"""The chosen labelling per clip, kept in `clip_labels` so the `clips` view is a plain join.

Every writer of captions or of the pin calls `refresh` in the same transaction: for the clips
whose captions it wrote (a batch), or for all clips (a pin changed). Readers never compute the
choice; at a million clips that is what keeps `de query` under half a second.
"""

from __future__ import annotations

from typing import Iterable

from .migrations import REFRESH_LABELS_SQL


def refresh(con, clip_ids: Iterable[str] | None = None) -> None:
    """Recompute the chosen caption of `clip_ids` (all clips when None); caller holds the transaction."""
    if clip_ids is None:
        con.execute("DELETE FROM clip_labels")
        con.execute(REFRESH_LABELS_SQL.format(where=""))
        return
    ids = sorted(set(clip_ids))
    if not ids:
        return
    con.execute("DELETE FROM clip_labels WHERE clip_id IN (SELECT unnest(?::VARCHAR[]))", [ids])
    con.execute(REFRESH_LABELS_SQL.format(where="AND c.clip_id IN (SELECT unnest(?::VARCHAR[]))"), [ids])


def set_pin(con, value: str | None) -> None:
    """Pin a labelling ('captioner' or 'captioner@version'; None clears) and re-choose every clip's."""
    from .db import set_setting, transaction

    with transaction(con):
        set_setting(con, "caption_pin", value)
        refresh(con)
