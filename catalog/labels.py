"""The chosen labelling per clip, kept in `clip_labels` so the `clips` view is a plain join.

Every writer of captions or of the pin calls `refresh` in the same transaction: for the clips
whose captions it wrote (a batch), or for all clips (a pin changed). Readers never compute the
choice; at a million clips that is what keeps `de query` under half a second.
"""

from __future__ import annotations

from typing import Iterable

# The chosen labelling per clip: a human correction when there is one (`de serve`), else the pinned
# labelling when `settings.caption_pin` names one ('captioner' or 'captioner@version'), else the most
# recent successfully parsed caption of any labelling.
# {where} narrows it to some clips (refresh fills it with bound parameters). Migrations 4 and 5 ran
# this text (with no {where}) as it stood then; they keep their own copy, so editing it here changes
# what the next refresh does and never an old migration.
REFRESH_LABELS_SQL = """
INSERT INTO clip_labels
WITH pin AS (
    SELECT split_part(value, '@', 1) AS captioner,
           CASE WHEN strpos(value, '@') > 0 THEN split_part(value, '@', 2) END AS prompt_version
    FROM settings WHERE key = 'caption_pin'
)
SELECT c.clip_id, c.captioner, c.prompt_version, c.caption,
       CASE WHEN c.tag_list IS NULL THEN NULL ELSE array_to_string(c.tag_list, ',') END,
       c.tag_list,
       json_extract_string(c.fields, '$.characters'),
       json_extract_string(c.fields, '$.action'),
       json_extract_string(c.fields, '$.setting'),
       json_extract_string(c.fields, '$.time_of_day'),
       json_extract_string(c.fields, '$.camera'),
       json_extract_string(c.fields, '$.motion'),
       c.fields
FROM captions c
WHERE c.status = 'ok' {where}
  AND (NOT EXISTS (SELECT 1 FROM pin)
       OR c.captioner = 'human'
       OR EXISTS (SELECT 1 FROM pin p WHERE p.captioner = c.captioner
                  AND (p.prompt_version IS NULL OR p.prompt_version = c.prompt_version)))
QUALIFY row_number() OVER (PARTITION BY c.clip_id
                           ORDER BY (c.captioner = 'human') DESC, c.created_at DESC, c.prompt_version) = 1
"""



def refresh(con, clip_ids: Iterable[str] | None = None) -> None:
    """Recompute the chosen caption of `clip_ids` (all clips when None); caller holds the transaction."""
    if clip_ids is None:
        con.execute("DELETE FROM clip_labels")
        con.execute(REFRESH_LABELS_SQL.format(where=""))
        return
    ids = sorted(set(clip_ids))
    if not ids:
        return
    for i in range(0, len(ids), 500):  # bound IN-lists use the primary-key indexes (a batch is a few clips)
        chunk = ids[i : i + 500]
        marks = ", ".join("?" for _ in chunk)
        con.execute(f"DELETE FROM clip_labels WHERE clip_id IN ({marks})", chunk)
        con.execute(REFRESH_LABELS_SQL.format(where=f"AND c.clip_id IN ({marks})"), chunk)


def set_pin(con, value: str | None) -> None:
    """Pin a labelling ('captioner' or 'captioner@version'; None clears) and re-choose every clip's."""
    from .db import set_setting, transaction

    with transaction(con):
        set_setting(con, "caption_pin", value)
        refresh(con)


NOT_REAL = ("toy", "random")  # label kinds an export leaves out unless asked (catalog migration 10)


def labelling_kinds(con, pairs) -> dict:
    """{(captioner, prompt_version): model kind} for the labellings in `pairs` ('real' when a row
    predates the record). One row per labelling is read (LIMIT 1), not the labelling's every
    caption: the grid asks this on every page of a million-clip catalog."""
    out = {}
    for c, v in sorted({(c, v) for c, v in pairs if c is not None}):
        r = con.execute("SELECT coalesce(model_kind, 'real') FROM captions WHERE captioner = ? AND prompt_version = ? "
                        "LIMIT 1", [c, v]).fetchone()
        out[(c, v)] = r[0] if r else "real"
    return out
