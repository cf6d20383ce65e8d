"""The grid's keyset pages and background summary (`catalog.grid`) against plain SQL.

A synthetic catalog through the real schema: 37 videos with 0 to 130 clips each (so pages span
one, two or several videos), two videos sharing one path (a file replaced in place), one video
whose status is not 'ok', labels with tags, and a second labelling. Every page of every filter
must hold exactly the clips `ORDER BY video_path, start_s, clip_id LIMIT 48 OFFSET ...` gives on
the `clips` view, and the count and facets must match a GROUP BY on the view."""

from __future__ import annotations

import threading

import pytest

TAGS = ["chase", "kitchen", "night", "fall", "sneak"]


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    import duckdb

    from catalog import db, labels

    cat = tmp_path_factory.mktemp("grid") / "grid.duckdb"
    db.connect(cat).close()
    con = duckdb.connect(str(cat))
    n_clips = 0
    for v in range(37):
        vid = f"{v:02d}" + "ab" * 15
        path = "/data/shared.mp4" if v in (3, 4) else f"/data/ep_{(v * 7) % 37:02d}.mp4"
        status = "failed" if v == 5 else "ok"
        con.execute("INSERT INTO videos (video_id, path, duration_s, fps, width, height, num_frames, codec, container,"
                    " status, split_key) VALUES (?, ?, 600, 24, 320, 240, 14400, 'h264', 'mp4', ?, 'k')",
                    [vid, path, status])
        k = (v * 53) % 131
        for i in range(k):
            start = (i * 37 % k) * 2.0 + (0.5 if v == 4 else 0.0)  # not inserted in time order
            cid = f"{vid[:16]}_{int(start * 24):07d}_{int(start * 24) + 30 + i % 90:07d}"
            con.execute("INSERT INTO clip_segments (clip_id, video_id, scene_index, window_index, start_frame, "
                        "end_frame, start_s, end_s, motion_score, detector, detector_params, split_key) VALUES "
                        "(?, ?, ?, 0, ?, ?, ?, ?, 1.0, 'adaptive', '{}', 'k')",
                        [cid, vid, i, int(start * 24), int(start * 24) + 30 + i % 90, start,
                         start + (30 + i % 90) / 24.0])
            tags = [TAGS[(i + v) % 5], TAGS[(i * 3) % 5]]
            con.execute("INSERT INTO captions (clip_id, captioner, prompt_version, status, caption, tag_list, fields, "
                        "raw_output) VALUES (?, 'vlm-a', 'v1', 'ok', ?, ?, '{}', '')", [cid, f"clip {i}", tags])
            if i % 2:
                con.execute("INSERT INTO captions (clip_id, captioner, prompt_version, status, caption, tag_list, "
                            "fields, raw_output) VALUES (?, 'vlm-b', 'v2', 'ok', ?, ?, '{}', '')",
                            [cid, f"other {i}", [TAGS[i % 5]]])
            n_clips += 1
    labels.refresh(con)
    con.close()
    return cat


FILTERS = [dict(), dict(tag="chase"), dict(dur="2-4"), dict(video="07" + "ab" * 15), dict(video="04" + "ab" * 15),
           dict(q="motion_score > 0 AND caption LIKE 'clip 1%'"), dict(q="tags LIKE '%night%'", dur="0-2"),
           dict(labelling="vlm-b@v2", tag="fall"), dict(tag="nosuchtag")]


def reference(cat, f: dict, lock=None):
    """The filter on the `clips` view, by plain SQL: (all ids in grid order, tag counts, durations).
    `lock`: a server's reader lock, held while reading (one process cannot open the file with
    two configurations at once)."""
    import contextlib

    with lock or contextlib.nullcontext():
        return _reference(cat, f)


def _reference(cat, f: dict):
    import duckdb

    where, params = ["true"], []
    if f.get("q"):
        where.append(f"({f['q']})")
    if f.get("tag"):
        where.append("list_contains(tag_list, ?)")
        params.append(f["tag"])
    if f.get("video"):
        where.append("video_id = ?")
        params.append(f["video"])
    if f.get("dur"):
        lo, hi = f["dur"].split("-")
        where.append("duration_s >= ? AND duration_s < ?")
        params += [float(lo), float(hi)]
    w = " AND ".join(where)
    con = duckdb.connect(str(cat), read_only=True)
    try:
        ids = [r[0] for r in con.execute(f"SELECT clip_id FROM clips WHERE {w} ORDER BY video_path, start_s, clip_id",
                                         params).fetchall()]
        if f.get("labelling"):
            cap, ver = f["labelling"].split("@")
            tags = con.execute(f"SELECT t, count(*) FROM (SELECT unnest(tag_list) t FROM captions WHERE captioner = ? "
                               f"AND prompt_version = ? AND status = 'ok' AND clip_id IN (SELECT clip_id FROM clips "
                               f"WHERE {w})) GROUP BY t", [cap, ver, *params]).fetchall()
        else:
            tags = con.execute(f"SELECT t, count(*) FROM (SELECT unnest(tag_list) t FROM clips WHERE {w}) GROUP BY t",
                               params).fetchall()
        short = con.execute(f"SELECT count(*) FROM clips WHERE {w} AND duration_s < 2", params).fetchone()[0]
    finally:
        con.close()
    return ids, dict(tags), short


@pytest.fixture(scope="module")
def browser(big):
    from dataengine.serve.app import Browser

    b = Browser(big, isolate=True, summary_wait=None)
    yield b
    b.close()


@pytest.mark.parametrize("f", FILTERS, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()) or "none")
def test_every_page_matches_offset_on_the_view(browser, big, f):
    from catalog.grid import PAGE_SIZE

    ids, tags, short = reference(big, f, browser.lock)
    first = browser.grid(**f)
    assert first["total"] == len(ids)
    assert dict(first["tags"]) == tags
    assert dict(first["durations"])["0-2"] == short
    pages = first["pages"]
    assert pages == max(1, -(-len(ids) // PAGE_SIZE))
    got = []
    for p in range(1, pages + 1):
        g = browser.grid(page=p, **f)
        assert g["page"] == p
        got += [r["clip_id"] for r in g["rows"]]
    assert got == ids
    # past the last page: the last page
    assert [r["clip_id"] for r in browser.grid(page=pages + 5, **f)["rows"]] == ids[(pages - 1) * PAGE_SIZE:]


def test_the_catalog_spans_the_cases_the_planner_must_handle(big, browser):
    """Guard on the fixture: pages that start inside a video, span several videos, and a path
    shared by two videos (interleaved by start time)."""
    ids, _, _ = reference(big, {}, browser.lock)
    per_path: dict = {}
    import duckdb

    with browser.lock:
        con = duckdb.connect(str(big), read_only=True)
        counts = con.execute("SELECT video_path, count(DISTINCT video_id), count(*) FROM clips GROUP BY 1").fetchall()
        con.close()
    for p, nv, n in counts:
        per_path[p] = (nv, n)
    assert per_path["/data/shared.mp4"][0] == 2
    assert any(n > 96 for _, n in per_path.values()) and any(0 < n < 20 for _, n in per_path.values())
    assert len(ids) > 1000


def test_a_first_page_does_not_wait_for_its_count(big):
    """A filter whose summary is slow: page 1 comes back with its rows and no count; the
    summary endpoint says 202 until it is done, then sends the count, facets and pager."""
    from starlette.testclient import TestClient

    from dataengine.serve.app import Browser
    from dataengine.serve.web import create_app

    gate = threading.Event()
    b = Browser(big, isolate=False, summary_wait=0.0)
    real = b.summaries._compute

    def slow(f):
        gate.wait(30)
        return real(f)

    b.summaries._compute = slow
    try:
        c = TestClient(create_app(b), base_url="http://127.0.0.1:8000")
        r = c.get("/", params={"tag": "chase"})
        assert r.status_code == 200
        assert 'id="counting"' in r.text and 'data-pending="1"' in r.text and r.text.count('class="card') == 48
        assert 'id="next"' in r.text and 'id="last"' not in r.text  # a full page: there may be more
        s = c.get("/grid/summary", params={"tag": "chase"})
        assert s.status_code == 202
        gate.set()
        for _ in range(100):
            s = c.get("/grid/summary", params={"tag": "chase"})
            if s.status_code == 200:
                break
        ids, tags, _ = reference(big, {"tag": "chase"}, b.lock)
        assert s.status_code == 200 and f'{len(ids)} clips' in s.text and 'id="last"' in s.text
        assert 'id="facets"' in s.text and "counting" not in s.text
        # page 2 waits for the plan rather than scanning from the start
        r2 = c.get("/", params={"tag": "chase", "page": 2})
        assert f'{len(ids)} clips' in r2.text and "page 2 of" in r2.text
        assert c.get("/grid/summary", params={"tag": "BAD TAG"}).status_code == 400
    finally:
        gate.set()
        b.close()


def test_a_summary_is_computed_once_per_filter_until_the_catalog_is_written(big, tmp_path):
    import shutil

    from catalog import db, labels
    from dataengine.serve.app import Browser

    cat = tmp_path / "copy.duckdb"
    shutil.copy(big, cat)
    b = Browser(cat, isolate=False, summary_wait=None)
    try:
        first = b.grid(tag="chase")
        b.grid(tag="chase", page=2)
        b.grid(tag="chase", page=3)
        assert b.summaries.computed == 1
        b.grid(tag="night")
        assert b.summaries.computed == 2
        cid = first["rows"][0]["clip_id"]
        with b.lock:  # another writer: a human label adds a tag
            con = db.connect(cat)
            con.execute("INSERT INTO captions (clip_id, captioner, prompt_version, caption, tag_list, status) "
                        "VALUES (?, 'human', 'edit', 'x', ['brandnewtag', 'chase'], 'ok')", [cid])
            labels.refresh(con, [cid])
            con.close()
        third = b.grid(tag="chase")
        assert b.summaries.computed == 3 and dict(third["tags"])["brandnewtag"] == 1
    finally:
        b.close()


def test_the_read_connection_lingers_briefly_and_never_blocks_a_writer_for_long(big, tmp_path):
    """After a page the file stays open `linger` s (warm buffers for the next click), is let go
    after that, is closed at once for a write, and is never kept past `max_hold` s of use."""
    import shutil
    import subprocess
    import sys
    import time

    from dataengine.serve.app import Browser

    cat = tmp_path / "linger.duckdb"
    shutil.copy(big, cat)
    linger = 2.0
    b = Browser(cat, isolate=False, summary_wait=None, read_linger=linger)
    # The other process imports duckdb once, up front, then tries a write on each request, so
    # a probe costs only the connect: on a loaded machine a fresh interpreter can take longer
    # than the linger to start, and would then not test the lingering at all.
    code = ("import duckdb, sys\n"
            "for _ in sys.stdin:\n"
            "    try:\n"
            "        c = duckdb.connect(sys.argv[1])\n"
            "        c.execute(\"INSERT INTO settings VALUES ('probe', 'x') ON CONFLICT DO UPDATE SET value = 'y'\")\n"
            "        c.close(); print('ok', flush=True)\n"
            "    except Exception:\n"
            "        print('refused', flush=True)\n")
    other = subprocess.Popen([sys.executable, "-c", code, str(cat)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)

    def other_process_can_write() -> bool:
        other.stdin.write("go\n")
        other.stdin.flush()
        return other.stdout.readline().strip() == "ok"

    try:
        assert other_process_can_write()  # warm: the probe works before any page
        b.grid()
        t0 = time.monotonic()
        assert b.lock._con is not None  # lingering
        assert not other_process_can_write()
        assert time.monotonic() - t0 < linger, "the probe outlasted the linger; it tested nothing"
        time.sleep(linger + 0.5)
        assert b.lock._con is None and other_process_can_write()
        b.grid(tag="chase")
        with b.lock:  # a write in this process (curation) closes it first
            assert b.lock._con is None
        # kept busy past max_hold: closed as soon as the readers leave, not lingering again
        b.lock.max_hold = 0.0
        b.grid(tag="night")
        assert b.lock._con is None
    finally:
        other.stdin.close()
        other.wait(timeout=30)
        b.close()


def test_the_search_box_ranks_within_the_filter_like_de_query_search(big, browser):
    """`?search=` gives catalog.search's ranking (the same BM25 as `de query --search`), within
    the rest of the filter, best first, paged; words that are not searchable are a clear error."""
    from catalog.search import search
    from catalog.grid import BadRequest

    with browser.lock:
        want = [r["clip_id"] for r in search("clip 12", big, where="list_contains(tag_list, 'chase')", limit=480)]
    got = browser.grid(search="clip 12", tag="chase")
    assert got["total"] == len(want) and 0 < len(want)
    ids = [r["clip_id"] for r in got["rows"]]
    assert ids == want[:48]
    assert all(r["score"] is not None for r in got["rows"])
    assert [r["score"] for r in got["rows"]] == sorted((r["score"] for r in got["rows"]), reverse=True)
    if len(want) > 48:
        assert [r["clip_id"] for r in browser.grid(search="clip 12", tag="chase", page=2)["rows"]] == want[48:96]
    # the best match of the whole catalog for an exact caption comes first
    top = browser.grid(search="clip 120")["rows"][0]
    assert top["caption"] == "clip 120"
    with pytest.raises(BadRequest, match="no word to search for"):
        browser.grid(search="the of and")


def test_the_search_box_over_http(big, browser):
    from starlette.testclient import TestClient

    from dataengine.serve.web import create_app

    c = TestClient(create_app(browser), base_url="http://127.0.0.1:8000")
    r = c.get("/", params={"search": "clip 7", "q": "motion_score > 0"})
    assert r.status_code == 200 and "best first" in r.text and 'id="search" value="clip 7"' in r.text
    assert "score " in r.text
    bad = c.get("/", params={"search": "'; DROP TABLE clips; --"})
    assert bad.status_code == 200 and "best first" in bad.text  # words only: drop, table, clips
    assert c.get("/", params={"search": "!!!"}).status_code == 400
