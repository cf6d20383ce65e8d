"""`plan_ingest`: which files ingest does, skips, resplits or replaces, as a pure function (issue 36.6).

No video is decoded and no catalog opened: the plan is a function of the files (with their content
ids), the catalog's videos and the options, so every rule has a line here."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataengine.ingest import plan_ingest


def known(**videos) -> dict:
    """video id -> the row store.known_videos gives."""
    base = {"status": "ok", "split_key": "K", "path": "/v/a.mp4", "signed": True, "sar": 1.0}
    return {vid: {**base, **row} for vid, row in videos.items()}


def one(hashed, cat, **kw):
    kw.setdefault("exists", lambda p: True)
    return plan_ingest(hashed, cat, kw.pop("split_key", "K"), kw.pop("signatures", True), **kw)


def test_a_new_file_is_done():
    [d] = one([(Path("/v/new.mp4"), "n1")], {})
    assert (d.action, d.video_id, d.replaces) == ("do", "n1", None)


def test_an_unreadable_file_and_a_duplicate_are_counted_not_done():
    ds = one([(Path("/v/a.mp4"), PermissionError(13, "Permission denied")), (Path("/v/b.mp4"), "x"),
              (Path("/v/copy of b.mp4"), "x")], {})
    assert [d.action for d in ds] == ["unreadable", "do", "duplicate"]
    assert ds[0].error == "Permission denied"


def test_a_name_that_is_not_utf8_is_stored_as_failed():
    bad = Path(b"/v/\xff.mp4".decode("utf-8", "surrogateescape"))
    [d] = one([(bad, "b1")], {})
    assert d.action == "bad name"


@pytest.mark.parametrize("split_key,resplit,action,other", [
    ("K", False, "skip", False),  # the same split: nothing to redo
    ("K", True, "skip", False),  # --resplit with the same options: still nothing
    ("K2", False, "skip", True),  # other options without --resplit: kept, counted
    ("K2", True, "do", False),  # --resplit with other options: redone
])
def test_a_known_video_is_skipped_unless_resplit_changes_it(split_key, resplit, action, other):
    [d] = one([(Path("/v/a.mp4"), "a")], known(a={}), split_key=split_key, resplit=resplit)
    assert (d.action, d.other_split) == (action, other)


def test_clips_made_before_signatures_are_redone_by_resplit_only():
    cat = known(a={"signed": False})
    assert one([(Path("/v/a.mp4"), "a")], cat)[0].action == "skip"
    assert one([(Path("/v/a.mp4"), "a")], cat, resplit=True)[0].action == "do"
    assert one([(Path("/v/a.mp4"), "a")], cat, resplit=True, signatures=False)[0].action == "skip"


@pytest.mark.parametrize("retry,resplit,action", [(False, False, "skip"), (True, False, "do"), (False, True, "do")])
def test_a_failed_video_is_retried_only_when_asked(retry, resplit, action):
    [d] = one([(Path("/v/a.mp4"), "a")], known(a={"status": "failed"}), retry_failed=retry, resplit=resplit)
    assert d.action == action


def test_other_bytes_at_a_known_path_replace_the_old_video():
    [d] = one([(Path("/v/a.mp4"), "new")], known(old={"path": "/v/a.mp4"}))
    assert (d.action, d.replaces) == ("do", "old")
    # the same bytes at the same path replace nothing
    assert one([(Path("/v/a.mp4"), "old")], known(old={"path": "/v/a.mp4"}))[0].replaces is None


def test_a_moved_video_is_followed_only_when_its_old_path_is_gone():
    cat = known(a={"path": "/old/a.mp4"})
    assert one([(Path("/new/a.mp4"), "a")], cat, exists=lambda p: False)[0].follow_move
    assert not one([(Path("/new/a.mp4"), "a")], cat, exists=lambda p: True)[0].follow_move


def test_a_video_ingested_before_the_sample_aspect_ratio_is_probed_once():
    assert one([(Path("/v/a.mp4"), "a")], known(a={"sar": None}))[0].backfill_sar
    assert not one([(Path("/v/a.mp4"), "a")], known(a={}))[0].backfill_sar
