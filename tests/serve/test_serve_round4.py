"""Issue 33 (trust, round 4): de serve."""

from __future__ import annotations

import pytest


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
