"""`de caption --api`: over real HTTP, against a local OpenAI-compatible server running the tiny
Qwen2-VL through transformers and enforcing the schema (dataengine.caption.local_server)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from dataengine.cli import main
from helpers import rows

pytestmark = pytest.mark.slow  # a served model in another process, retries, kill -9

SMALL = ["--fps", "2", "--max-frames", "4", "--max-pixels", "12544", "--no-progress"]
NAME = "tiny-random-qwen2-vl"



@pytest.fixture(scope="module")
def served_model(tiny_vlm_dir):
    from dataengine.caption.models import load_captioner

    return load_captioner(tiny_vlm_dir, device="cpu", name=NAME)


@pytest.fixture()
def server(served_model):
    from dataengine.caption.local_server import CaptionServer, Faults

    started = []

    def make(faults=None, **kw):
        srv = CaptionServer(served_model, NAME, faults=faults or Faults(), **kw).start()
        started.append(srv)
        return srv

    yield make
    for s in started:
        s.stop()


def api_caption(runner, cat, url, *extra, model=NAME):
    return runner.invoke(main, ["caption", "--catalog", str(cat), "--api", url, "--model", model, *SMALL, *extra])


def test_rows_equal_the_in_process_backend_on_the_same_pixels(runner, cat, server, tiny_vlm_dir, monkeypatch):
    """Same sampling rule, prompt, schema and parsing: given the pixels the server decodes (JPEG
    is lossy), the API rows are the in-process rows."""
    srv = server()
    r = api_caption(runner, cat, srv.url, "--concurrency", "4")
    assert r.exit_code == 0, r.output
    n = rows(cat, "SELECT count(*) FROM clips")[0][0]
    assert f"labelled {n} clips with {NAME}" in r.output and srv.requests == n
    assert max(srv.batches) > 1  # concurrent requests were batched by the server

    from dataengine.caption import api, local_server
    from dataengine.caption.models import QwenVLCaptioner

    orig = QwenVLCaptioner.prepare

    def through_jpeg(self, frames, sampling):
        video = orig(self, frames, sampling).numpy().astype("uint8")
        url = "data:video/jpeg;base64," + ",".join(api.encode_frames(video, 90))
        import torch

        return torch.from_numpy(local_server._decode_video(url)).float()

    monkeypatch.setattr(QwenVLCaptioner, "prepare", through_jpeg)
    r = runner.invoke(main, ["caption", "--catalog", str(cat), "--model", tiny_vlm_dir, "--name", "ref",
                             "--batch-size", "4", *SMALL])
    assert r.exit_code == 0, r.output
    pairs = rows(cat, "SELECT a.status, a.caption, a.tag_list, a.fields, a.num_frames, a.visual_tokens, "
                      "b.status, b.caption, b.tag_list, b.fields, b.num_frames, b.visual_tokens "
                      "FROM captions a JOIN captions b USING (clip_id) WHERE a.captioner = ? AND b.captioner = 'ref'",
                 [NAME])
    assert len(pairs) == n
    assert all(p[:6] == p[6:] for p in pairs)
    # the endpoint kind is part of the version: API and in-process labellings never mix
    assert len(rows(cat, "SELECT DISTINCT prompt_version FROM captions")) == 2


def test_500s_slow_answers_and_malformed_bodies_are_retried(runner, cat, server):
    from dataengine.caption.local_server import Faults

    # a slow answer takes 20 s and the client gives up after 10: a normal answer from the tiny
    # model takes about a second, and on a loaded 2-core machine (the whole suite running) several,
    # so a 4 s timeout against 5 s answers failed requests that were not slow
    srv = server(Faults(fail_every=3, malformed_every=4, slow_every=7, slow_s=20))
    r = api_caption(runner, cat, srv.url, "--concurrency", "3", "--request-timeout", "10", "--retries", "8",
                    "--retry-backoff", "0.05")
    assert r.exit_code == 0, (r.output, r.exception)
    n = rows(cat, "SELECT count(*) FROM clips")[0][0]
    got = rows(cat, "SELECT status, count(*) FROM captions GROUP BY 1")
    assert got == [("ok", n)]
    import re

    m = re.search(r"request failures 0 \((\d+) retries\)", r.output)
    retries = int(m.group(1)) if m else 0
    assert retries >= 1 and srv.requests > n
    assert rows(cat, "SELECT count(*), count(DISTINCT clip_id) FROM captions")[0] == (n, n)


def test_a_request_that_keeps_failing_is_recorded_and_redone_with_retry_failed(runner, cat, server):
    from dataengine.caption.local_server import Faults

    bad = server(Faults(fail_every=1))
    r = api_caption(runner, cat, bad.url, "--limit", "3", "--retries", "1", "--retry-backoff", "0")
    assert r.exit_code == 1
    assert "request failures 3" in r.output and "Traceback" not in r.output
    errs = rows(cat, "SELECT status, error FROM captions")
    assert len(errs) == 3 and all(s == "request_error" and "HTTP 500" in e for s, e in errs)
    good = server()
    r = api_caption(runner, cat, good.url, "--limit", "3", "--retry-failed")
    assert r.exit_code == 0, r.output
    assert rows(cat, "SELECT status, count(*) FROM captions GROUP BY 1") == [("ok", 3)]


def test_wrong_model_key_or_url_fail_fast_with_what_to_do(runner, cat, server, monkeypatch):
    srv = server(api_key="s3cret")
    monkeypatch.setenv("MY_KEY", "s3cret")
    t0 = time.perf_counter()
    r = api_caption(runner, cat, srv.url, "--api-key-env", "MY_KEY", model="Qwen/Qwen2-VL-7B-Instruct")
    assert r.exit_code == 1 and "does not serve 'Qwen/Qwen2-VL-7B-Instruct'" in r.output and NAME in r.output
    monkeypatch.setenv("MY_KEY", "wrong")
    r = api_caption(runner, cat, srv.url, "--api-key-env", "MY_KEY")
    assert r.exit_code == 1 and "refused the key" in r.output
    r = api_caption(runner, cat, srv.url, "--api-key-env", "NOT_SET_ANYWHERE")
    assert r.exit_code == 2 and "NOT_SET_ANYWHERE" in r.output
    r = api_caption(runner, cat, "http://127.0.0.1:9/v1")
    assert r.exit_code == 1 and "cannot reach http://127.0.0.1:9/v1" in r.output
    r = api_caption(runner, cat, "file:///etc/passwd")
    assert r.exit_code == 2 and "http(s) URL" in r.output
    r = api_caption(runner, cat, srv.url, "--ray")
    assert r.exit_code == 2 and "give one" in r.output
    assert time.perf_counter() - t0 < 30
    assert rows(cat, "SELECT count(*) FROM captions")[0][0] == 0


def test_kill_9_mid_run_then_rerun_has_no_duplicates(cat, server):
    from dataengine.caption.local_server import Faults

    srv = server(Faults(slow_every=1, slow_s=0.4))  # slow enough to kill the client mid-run
    n = rows(cat, "SELECT count(*) FROM clips")[0][0]
    env = dict(os.environ, DE_CATALOG=str(cat), DE_CAPTION_FLUSH_S="0")
    cmd = [sys.executable, "-m", "dataengine", "caption", "--api", srv.url, "--model", NAME, "--concurrency", "2",
           *SMALL]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                done = rows(cat, "SELECT count(*) FROM captions")[0][0]
            except Exception:  # noqa: BLE001 - the writer holds the file for a moment
                done = 0
            if done >= 2:
                break
            time.sleep(0.2)
        assert p.poll() is None, p.stderr.read()[-2000:]
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    before = dict(rows(cat, "SELECT clip_id, raw_output FROM captions"))
    assert 2 <= len(before) < n
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"{len(before)} already done" in r.stdout
    after = rows(cat, "SELECT clip_id, raw_output, status FROM captions")
    assert len(after) == n == len({a[0] for a in after}) and all(a[2] == "ok" for a in after)
    assert all(before[c] == raw for c, raw, _ in after if c in before)  # nothing written was touched
