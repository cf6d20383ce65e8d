"""Issue 33 (trust, round 4): de serve."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow  # floods a served browser with concurrent requests


@pytest.fixture()
def app_on(served):
    from starlette.testclient import TestClient

    from catalog import db
    from dataengine.serve.app import Browser
    from dataengine.serve.web import create_app

    db.connect(served["catalog"]).close()

    def make(port, token=None, **kw):
        return TestClient(create_app(Browser(served["catalog"], served["runs"], token=token, read_linger=0, **kw)),
                          base_url=f"http://127.0.0.1:{port}")

    return make


def test_a_nul_byte_in_a_run_file_path_is_404(app_on):
    c = app_on(8000)
    assert c.get("/runs/tiny-run/file/config.json%00.png").status_code == 404
    assert c.get("/runs/tiny%00run/file/config.json").status_code == 404


def test_two_servers_on_two_ports_keep_their_own_login(app_on, served):
    """One browser holds both login cookies and sends both to every port of 127.0.0.1."""
    a, b = app_on(8001, token="token-a"), app_on(8002, token="token-b")
    ra = a.get("/?token=token-a", follow_redirects=False)
    rb = b.get("/?token=token-b", follow_redirects=False)
    assert "de_token_8001=token-a" in ra.headers["set-cookie"] and "de_token_8002=token-b" in rb.headers["set-cookie"]
    jar = {"de_token_8001": "token-a", "de_token_8002": "token-b"}
    cid = served["ids"][0]
    for c, tok in ((a, "token-a"), (b, "token-b")):
        page = c.get(f"/clip/{cid}", cookies=jar).text
        assert f'name="de-token" content="{tok}"' in page and "read-only" not in page


def test_page_two_never_shows_page_ones_clips_while_the_summary_is_counting(served, monkeypatch):
    from catalog import db
    from dataengine.serve import app as app_mod
    from dataengine.serve.app import Browser

    db.connect(served["catalog"]).close()
    b = Browser(served["catalog"], served["runs"], read_linger=0)
    try:
        first = b.grid(page=1)
        assert first["rows"]
        monkeypatch.setattr(b.summaries, "result", lambda *a, **k: None)  # the count is not ready
        monkeypatch.setattr(b.summaries, "peek", lambda *a, **k: None)
        two = b.grid(page=2)
        assert two["page"] == 2 and two["counting"] is True
        assert not ({r["clip_id"] for r in two["rows"]} & {r["clip_id"] for r in first["rows"]})
    finally:
        b.close()
    assert app_mod  # the module under test


# --- 6. no web page can stall the server ------------------------------------------------------------

def test_abandoned_summaries_are_cancelled_or_skipped_not_queued():
    import threading
    import time

    from dataengine.serve.app import Summaries
    from catalog.grid import Filter

    gate, started = threading.Event(), []

    def compute(f):
        started.append(f)
        if f.q == "first":
            gate.wait(10)
        return {"total": 1}

    s = Summaries(compute, threads=1, max_pending=4, abandon_after=0.2)
    try:
        s.get(Filter(q="first"), 0)
        for i in range(30):  # thirty pages asked once and closed
            s.get(Filter(q=f"abandoned {i}"), 0)
        time.sleep(0.4)
        gate.set()
        got = s.result(Filter(q="a user's filter"), 0, wait=5)
        assert got == {"total": 1}
        assert len(started) <= 2, [f.q for f in started]  # the first and the user's: none of the thirty ran
    finally:
        gate.set()
        s.close()


def test_a_flood_of_filters_is_answered_busy_and_the_clip_page_still_answers(live_server, monkeypatch):
    import threading

    import requests

    b = live_server["browser"]
    gate = threading.Event()
    real = b._isolated

    def slow(job, *args):
        gate.wait(20)
        return real(job, *args)

    monkeypatch.setattr(b, "_isolated", slow)
    codes: list[int] = []

    def hit(i):
        try:
            codes.append(requests.get(f"{live_server['url']}/", params={"q": f"duration_s > {i}"}, timeout=30).status_code)
        except requests.RequestException:
            codes.append(-1)

    flood = [threading.Thread(target=hit, args=(i,)) for i in range(60)]
    for t in flood:
        t.start()
    try:
        import time

        deadline = time.monotonic() + 20  # a loaded machine starts 60 threads slowly; the busy answers need no query
        while codes.count(503) < 40 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert codes.count(503) >= 40, codes  # answered "busy" at once, not queued behind the stuck filters
        cid = live_server["ids"][0]
        r = requests.get(f"{live_server['url']}/clip/{cid}", timeout=5)  # a page served from the index
        assert r.status_code == 200
    finally:
        gate.set()
        for t in flood:
            t.join(30)
    assert set(codes) <= {200, 503}, codes


def test_another_sites_page_may_not_run_filters(app_on):
    c = app_on(8000)
    assert c.get("/", params={"q": "duration_s > 1"}, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert c.get("/grid/summary", params={"search": "cat"}, headers={"Sec-Fetch-Site": "same-site"}).status_code == 403
    assert c.get("/", params={"q": "duration_s > 1"}, headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200
    assert c.get("/", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200  # the plain grid is no SQL


# --- 17. a steady stream of page loads never keeps a writer out ---------------------------------------

WRITER = """
import sys, time
from catalog import db
t0 = time.monotonic()
con = db.connect(sys.argv[1])
con.execute("SELECT 1")
con.close()
print(f"{time.monotonic() - t0:.2f}")
"""


def test_overlapping_readers_leave_the_file_to_a_writer_in_another_process(served, tmp_path):
    import os
    import subprocess
    import sys
    import threading
    import time

    from catalog import db
    from dataengine.serve.app import SharedReader

    db.connect(served["catalog"]).close()
    r = SharedReader(served["catalog"], linger=1.0, max_hold=1.0)
    stop = threading.Event()

    def page_loads():  # a new page every 30 ms, each reading for 80 ms: never zero readers
        def one():
            with r.cursor() as cur:
                cur.execute("SELECT count(*) FROM clips").fetchall()
                time.sleep(0.08)
        while not stop.is_set():
            threading.Thread(target=one, daemon=True).start()
            time.sleep(0.03)

    t = threading.Thread(target=page_loads, daemon=True)
    t.start()
    try:
        time.sleep(0.5)
        w = subprocess.run([sys.executable, "-c", WRITER, str(served["catalog"])], capture_output=True, text=True,
                           env={**os.environ, "DE_LOCK_WAIT": "6"}, timeout=60)
    finally:
        stop.set()
        t.join(5)
        time.sleep(0.3)
        r.close()
    assert w.returncode == 0, w.stderr[-500:]
    assert float(w.stdout.strip()) < 6
