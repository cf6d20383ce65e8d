"""`de serve` over HTTP (Starlette's test client): safety, the filter sandbox, curation writes."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from helpers import rows

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>"


@pytest.fixture()
def client(served):
    from starlette.testclient import TestClient

    from catalog import db
    from dataengine.serve.app import Browser
    from dataengine.serve.web import create_app

    db.connect(served["catalog"]).close()

    def make(token=None):
        return TestClient(create_app(Browser(served["catalog"], served["runs"], token=token, summary_wait=None,
                                                  read_linger=0)),
                          base_url="http://127.0.0.1:8000")

    return make


def test_captions_are_escaped_text(client, served):
    c = client()
    html = c.get("/").text
    assert "<script>alert(1)</script>" not in html and "onerror=alert" not in html.replace("onerror=alert(2)&gt;", "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    page = c.get(f"/clip/{served['hostile']}").text
    assert "<script>alert" not in page and "&lt;script&gt;" in page


def test_the_filter_is_de_querys_sandbox(client, served):
    from catalog.query import QueryError, check_where_clause

    c = client()
    for bad in ("1=1; DROP TABLE videos", "read_csv('/etc/passwd') IS NOT NULL", "nosuchcolumn > 1"):
        r = c.get("/", params={"q": bad})
        assert r.status_code == 400
        try:
            check_where_clause(bad, {"clip_id", "duration_s", "tags", "tag_list", "video_path"})
            expected = None
        except QueryError as e:
            expected = str(e)
        assert "Error: " in r.text
        if expected:
            assert expected.replace('"', "&#34;").replace("'", "&#39;")[:60] in r.text
    r = c.get("/", params={"q": "duration_s > 2"})
    n = rows(served["catalog"], "SELECT count(*) FROM clips WHERE duration_s > 2")[0][0]
    assert r.status_code == 200 and f'id="count">{n} clip' in r.text
    # facets are bound parameters and allow-listed
    assert c.get("/", params={"tag": "x' OR 1=1 --"}).status_code == 400
    assert c.get("/", params={"dur": "1; DROP"}).status_code == 400
    assert c.get("/", params={"video": "../../etc"}).status_code == 400
    assert rows(served["catalog"], "SELECT count(*) FROM videos")[0][0] > 0


def test_media_only_by_clip_id_and_run_files_only_from_the_listing(client, served):
    c = client()
    assert c.get("/media/clip/..%2F..%2Fetc%2Fpasswd").status_code == 404
    assert c.get("/media/thumb/not-a-clip").status_code == 404
    assert c.get("/runs/tiny-run/file/../../cat.duckdb").status_code == 404
    assert c.get("/runs/tiny-run/file/config.json").status_code == 200
    assert c.get("/runs/..%2F/file/x").status_code == 404
    r = c.get(f"/media/thumb/{served['ids'][0]}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content[:2] == b"\xff\xd8"


def test_playable_sources_are_served_as_is_others_as_a_cached_preview(client, served):
    import av

    c = client()
    ids = dict(rows(served["catalog"], "SELECT video_path, min(clip_id) FROM clips GROUP BY 1"))
    mp4 = next(v for k, v in ids.items() if k.endswith("h264 cartoon.mp4"))
    r = c.get(f"/media/clip/{mp4}", headers={"Range": "bytes=0-99"})
    assert r.status_code == 206 and len(r.content) == 100  # the source itself, with range requests
    mkv = next(v for k, v in ids.items() if k.endswith("mkv_h264.mkv"))
    r = c.get(f"/media/clip/{mkv}")
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    preview = served["catalog"].parent / "cat_cache" / "previews" / f"{mkv}.mp4"
    assert preview.exists()
    with av.open(str(preview)) as f:
        s = f.streams.video[0]
        assert s.codec_context.name == "h264"
        dur = float(s.duration * s.time_base)
    start, end = rows(served["catalog"], "SELECT start_s, end_s FROM clips WHERE clip_id = ?", [mkv])[0]
    assert abs(dur - (end - start)) < 0.2  # just the clip's range


W = {"Accept": "application/json", "X-DE-Token": "any"}  # no token set: the header must still be there


def test_curation_writes_the_human_labelling_and_rejected(client, served):
    c = client()
    cid = served["ids"][1]
    r = c.post(f"/clip/{cid}/curate", data={"action": "save", "tags": "Chase, kitchen, chase", "caption": "fixed"},
               headers=W)
    assert r.status_code == 200 and r.json()["tags"] == ["chase", "kitchen"]
    r = c.post(f"/clip/{cid}/curate", data={"action": "reject"}, headers=W)
    assert r.json()["rejected"] is True
    got = rows(served["catalog"], "SELECT captioner, caption, tags, rejected FROM clips WHERE clip_id = ?", [cid])
    assert got == [("human", "fixed", "chase,kitchen", True)]
    n_all = rows(served["catalog"], "SELECT count(*) FROM clips")[0][0]
    assert rows(served["catalog"], "SELECT count(*) FROM clips WHERE NOT rejected")[0][0] == n_all - 1
    h = rows(served["catalog"], "SELECT count(*), any_value(fields) FROM captions WHERE captioner = 'human'")[0]
    assert h[0] == 1 and '"edited_at"' in h[1] and '"based_on": "seed-vlm@v1"' in h[1]
    # the other labelling is untouched
    assert rows(served["catalog"], "SELECT count(*) FROM captions WHERE captioner = 'seed-vlm'")[0][0] == n_all
    # `de query` sees the column
    from dataengine.cli import main
    from click.testing import CliRunner

    out = CliRunner().invoke(main, ["query", "NOT rejected", "--catalog", str(served["catalog"]), "--json"])
    assert out.exit_code == 0 and cid not in out.output
    # bad edits are refused, nothing written
    assert c.post(f"/clip/{cid}/curate", data={"action": "save", "caption": "x\x01"}, headers=W).status_code == 400
    assert c.post("/clip/ffffffffffffffff_1_2/curate", data={"action": "accept"}, headers=W).status_code == 404
    assert c.post(f"/clip/{cid}/curate", data={"action": "drop"}, headers=W).status_code == 400


def test_a_token_protects_writes(client, served):
    c = client(token="s3cret-token")
    cid = served["ids"][0]
    assert c.post(f"/clip/{cid}/curate", data={"action": "reject"}).status_code == 403
    assert "read-only" in c.get(f"/clip/{cid}").text
    r = c.post(f"/clip/{cid}/curate", data={"action": "reject"}, headers={"X-DE-Token": "wrong",
                                                                          "Accept": "application/json"})
    assert r.status_code == 403
    r = c.post(f"/clip/{cid}/curate", data={"action": "reject"}, headers={"X-DE-Token": "s3cret-token",
                                                                          "Accept": "application/json"})
    assert r.status_code == 200
    # the printed link sets the cookie and redirects to the page without the secret in the URL
    r = c.get("/?token=s3cret-token&page=1", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/?page=1" and "de_token_8000=s3cret-token" in \
        r.headers["set-cookie"] and "samesite=strict" in r.headers["set-cookie"].lower()
    page = c.get(f"/clip/{cid}").text  # the cookie lets the page render the forms and the header's value
    assert 'name="de-token" content="s3cret-token"' in page and "read-only" not in page
    # ... but the cookie alone does not write: a cross-site form would carry it
    assert c.post(f"/clip/{cid}/curate", data={"action": "accept"}).status_code == 403
    assert c.post(f"/clip/{cid}/curate", data={"action": "accept"},
                  headers={"X-DE-Token": "s3cret-token"}).status_code in (200, 303)
    assert rows(served["catalog"], "SELECT rejected FROM clips WHERE clip_id = ?", [cid]) == [(False,)]


def test_runs_pages_list_the_gallery_plots_and_reports(client, served):
    c = client()
    assert "tiny-run" in c.get("/runs").text
    page = c.get("/runs/tiny-run").text
    assert 'id="gallery"' in page and "/runs/tiny-run/file/validation/" in page and "<svg" in page
    assert c.get("/runs/nope").status_code == 404


def test_public_bind_warns_and_a_missing_catalog_is_an_error(tmp_path, served):
    r = subprocess.run([sys.executable, "-m", "dataengine", "serve", "--catalog", str(tmp_path / "none.duckdb")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "no catalog at" in r.stderr
    p = subprocess.Popen([sys.executable, "-m", "dataengine", "serve", "--catalog", str(served["catalog"]),
                          "--host", "0.0.0.0", "--port", "0"], stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(4)
    finally:
        p.terminate()
        err = p.communicate(timeout=30)[1]
    assert "warning: binding 0.0.0.0" in err and "edits still need the token" in err
    assert "/?token=" in err  # a fresh secret, printed in the link
    assert HOSTILE  # (imported for the escaping test)


def test_clip_page_shows_training_loss_and_near_duplicates(client, served):
    import duckdb

    a, b = served["ids"][0], served["ids"][1]
    con = duckdb.connect(str(served["catalog"]))
    con.execute("DELETE FROM clip_dups")
    con.execute("INSERT INTO clip_dups VALUES (?, 7, 1), (?, 7, 2)", [a, b])
    con.execute("INSERT INTO clip_losses (run_id, clip_id, samples, mean_loss, mean_z) VALUES ('r1', ?, 5, 1.25, 2.5)",
                [a])
    con.close()
    page = client().get(f"/clip/{a}").text
    assert "r1: z 2.50, loss 1.2500 over 5 samples" in page
    assert f'href="/clip/{b}"' in page and "group 7, rank 1" in page and "(kept by --dedup)" in page
