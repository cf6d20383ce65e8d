"""Human corrections: the `human` labelling.

A person accepts or rejects a clip, edits its tags or fixes its caption (`de serve`'s clip page).
Each edit writes one row per clip in `captions` with captioner 'human' and prompt_version 'human',
started from the label the clip showed, with `rejected`, the edit time and what it was based on in
its fields. The chosen label prefers a human row, and the `clips` view has `rejected`. One short
transaction per edit (the single-writer rule: the lock is not held between edits).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

HUMAN = "human"
MAX_CAPTION = 2000
MAX_TAGS = 64


class CurationError(ValueError):
    """The edit is not acceptable (unknown clip, bad text); the message says why."""


def clean_caption(text: str | None) -> str | None:
    if text is None:
        return None
    t = str(text).strip()
    if not t:
        return None
    if len(t) > MAX_CAPTION:
        raise CurationError(f"the caption is longer than {MAX_CAPTION} characters")
    if re.search(r"[\x00-\x08\x0b-\x1f\x7f]", t):
        raise CurationError("the caption contains control characters")
    return t


def clean_tags(tags) -> list[str]:
    from .tags import TagError, normalize_tags

    try:
        out = normalize_tags(tags)
    except TagError as e:
        raise CurationError(str(e)) from e
    if len(out) > MAX_TAGS:
        raise CurationError(f"more than {MAX_TAGS} tags")
    return out


def curate(catalog, clip_id: str, *, rejected: bool | None = None, tags=None, caption: str | None = None) -> dict:
    """Apply one edit; returns the clip's human row as a dict. Raises CurationError/LookupError."""
    from . import db, labels

    new_caption = clean_caption(caption) if caption is not None else None
    new_tags = clean_tags(tags) if tags is not None else None
    with db.writing(catalog) as con:
        if not con.execute("SELECT 1 FROM clip_segments WHERE clip_id = ?", [clip_id]).fetchone():
            raise LookupError(f"no clip {clip_id!r} in the catalog")
        row = con.execute("SELECT caption, tag_list, fields FROM captions WHERE clip_id = ? AND captioner = ? "
                          "AND prompt_version = ?", [clip_id, HUMAN, HUMAN]).fetchone()
        if row is None:  # start from what the clip shows now
            base = con.execute("SELECT caption, tag_list, fields, captioner, prompt_version FROM clip_labels "
                               "WHERE clip_id = ?", [clip_id]).fetchone()
            cap, tag_list, fields = (base[0], base[1], json.loads(base[2] or "{}")) if base else (None, [], {})
            fields["based_on"] = f"{base[3]}@{base[4]}" if base else None
        else:
            cap, tag_list, fields = row[0], row[1], json.loads(row[2] or "{}")
        if new_caption is not None or (caption is not None and not str(caption).strip()):
            cap = new_caption
        if new_tags is not None:
            tag_list = new_tags
        if rejected is not None:
            fields["rejected"] = bool(rejected)
        fields.setdefault("rejected", False)
        fields["edited_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        con.execute(
            "INSERT OR REPLACE INTO captions (clip_id, captioner, prompt_version, status, caption, tag_list, fields, "
            "raw_output, error, num_frames, visual_tokens, seconds, is_random_model, model_kind, created_at) "
            "VALUES (?, ?, ?, 'ok', ?, ?, ?, NULL, '', NULL, NULL, NULL, false, 'human', current_timestamp)",
            [clip_id, HUMAN, HUMAN, cap, list(tag_list or []), json.dumps(fields)])
        labels.refresh(con, [clip_id])
    return {"clip_id": clip_id, "caption": cap, "tags": list(tag_list or []), **fields}
