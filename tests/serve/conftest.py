"""A served catalog (the synthetic cartoons, one hostile caption) and a runs folder with one run."""

from __future__ import annotations

import json
import shutil
import threading
import time

import pytest

from helpers import free_port

LIVE_TOKEN = "live-test-token-0123"
HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>"


def seed_captions(cat) -> dict:
    """Give every clip a labelling; the first h264 clip gets the hostile caption."""
    import duckdb

    from catalog import labels

    con = duckdb.connect(str(cat))
    ids = [r[0] for r in con.execute("SELECT clip_id FROM clips ORDER BY video_path, start_s").fetchall()]
    hostile = con.execute("SELECT clip_id FROM clips WHERE video_path LIKE '%h264 cartoon.mp4' "
                          "ORDER BY start_s LIMIT 1").fetchone()[0]
    for i, cid in enumerate(ids):
        tags = ["chase", "kitchen"] if i % 3 == 0 else ["sneak", "night"] if i % 3 == 1 else ["fall"]
        caption = HOSTILE if cid == hostile else f"clip number {i}: a grey cat and a small brown mouse"
        con.execute("INSERT INTO captions (clip_id, captioner, prompt_version, status, caption, tag_list, fields, "
                    "raw_output, is_random_model, created_at) VALUES (?, 'seed-vlm', 'v1', 'ok', ?, ?, ?, ?, false, "
                    "current_timestamp)", [cid, caption, tags, json.dumps({"motion": "fast"}), caption])
    labels.refresh(con)
    con.close()
    return {"ids": ids, "hostile": hostile}


@pytest.fixture()
def served(train_catalog, trained_run, tmp_path):
    cat = tmp_path / "cat.duckdb"
    shutil.copy(train_catalog, cat)
    info = seed_captions(cat)
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(trained_run, runs / "tiny-run", ignore=shutil.ignore_patterns("checkpoints", "cache*"))
    return {"catalog": cat, "runs": runs, **info}




@pytest.fixture()
def live_server(served):
    """`de serve`'s app under uvicorn on a free loopback port, in a thread."""
    import uvicorn

    from dataengine.serve.app import Browser
    from dataengine.serve.web import create_app

    from catalog import db

    db.connect(served["catalog"]).close()
    browser = Browser(served["catalog"], served["runs"], token=LIVE_TOKEN)
    app = create_app(browser)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    # the tests read the catalog in this process: under the server's lock (DuckDB refuses two
    # connections with different settings to one file in one process at the same time)
    yield {"url": f"http://127.0.0.1:{port}", "lock": browser.lock, "token": LIVE_TOKEN, "browser": browser, **served}
    server.should_exit = True
    t.join(timeout=10)
