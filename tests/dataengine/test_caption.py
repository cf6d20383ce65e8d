"""de caption with a tiny random Qwen2-VL saved to disk and loaded by path (the real loader)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import duckdb
import pytest

from helpers import rows
from dataengine.cli import main

FAST = ["--free", "--max-new-tokens", "12", "--fps", "2", "--max-frames", "4", "--max-pixels", "12544", "--no-progress"]



def caption(runner, cat, model, *extra):
    return runner.invoke(main, ["caption", "--catalog", str(cat), "--model", model, *FAST, *extra])


def test_caption_by_path_stores_versioned_rows_and_resumes(runner, cat, tiny_vlm_dir):
    n_clips = rows(cat, "SELECT count(*) FROM clips")[0][0]
    r = caption(runner, cat, tiny_vlm_dir, "--batch-size", "3", "--limit", "4")
    assert "random tiny model" in r.output
    got = rows(cat, "SELECT clip_id, captioner, prompt_version, status, raw_output, num_frames, visual_tokens, "
                    "seconds, is_random_model FROM captions")
    assert len(got) == 4
    for cid, cap, ver, status, raw, nf, vt, secs, rnd in got:
        assert cap.startswith("local:") and ver.startswith("caption_v1-")
        assert status in ("ok", "parse_error") and raw is not None
        assert nf >= 2 and vt > 0 and secs > 0 and rnd is True
    assert "labelled" in r.output and "visual tokens/clip" in r.output and "clips/s" in r.output
    # rerun: only the missing clips are labelled, nothing already written changes
    before = {g[0]: g[4] for g in got}
    r2 = caption(runner, cat, tiny_vlm_dir, "--batch-size", "3")
    assert "4 already done" in r2.output
    after = rows(cat, "SELECT clip_id, raw_output, count(*) OVER () FROM captions")
    assert len(after) == n_clips
    assert all(before[c] == raw for c, raw, _ in after if c in before)
    # the run is recorded
    runs = rows(cat, "SELECT params, counts FROM runs WHERE command = 'caption' ORDER BY started_at")
    assert len(runs) == 2 and json.loads(runs[0][0])["limit"] == 4


def test_parse_failures_are_recorded_and_exit_nonzero(runner, cat, tiny_vlm_dir):
    r = caption(runner, cat, tiny_vlm_dir, "--limit", "2")
    pe = rows(cat, "SELECT count(*) FROM captions WHERE status = 'parse_error' AND error <> '' AND raw_output IS NOT NULL")[0][0]
    ok = rows(cat, "SELECT count(*) FROM captions WHERE status = 'ok'")[0][0]
    assert pe + ok == 2
    assert (r.exit_code == 1) == (pe > 0)
    # --retry-failed redoes exactly the failed ones
    r = caption(runner, cat, tiny_vlm_dir, "--limit", "2", "--retry-failed")
    assert f"{ok} already done" in r.output or pe == 0


def test_batch_equals_sequential_with_greedy_decoding(runner, cat, tiny_vlm_dir):
    caption(runner, cat, tiny_vlm_dir, "--batch-size", "1", "--name", "seq")
    caption(runner, cat, tiny_vlm_dir, "--batch-size", "4", "--name", "batch")
    pairs = rows(cat, "SELECT a.raw_output, b.raw_output, a.visual_tokens, b.visual_tokens FROM captions a "
                      "JOIN captions b USING (clip_id, prompt_version) WHERE a.captioner = 'seq' AND b.captioner = 'batch'")
    assert len(pairs) == rows(cat, "SELECT count(*) FROM clips")[0][0]
    # clips of different lengths share batches: visual token counts differ within the set
    assert len({p[2] for p in pairs}) > 1
    assert all(a == b for a, b, _, _ in pairs)
    assert all(ta == tb for _, _, ta, tb in pairs)


def test_query_limits_the_subset(runner, cat, tiny_vlm_dir):
    r = caption(runner, cat, tiny_vlm_dir, "--query", "video_path LIKE '%.webm'")
    n_webm = rows(cat, "SELECT count(*) FROM clips WHERE video_path LIKE '%.webm'")[0][0]
    assert rows(cat, "SELECT count(*) FROM captions")[0][0] == n_webm
    r = caption(runner, cat, tiny_vlm_dir, "--query", "1=1; DROP TABLE videos")
    assert r.exit_code == 1 and "Error:" in r.output


def test_missing_video_is_a_decode_failure_and_the_run_goes_on(runner, cat, tiny_vlm_dir, tmp_path):
    import shutil

    from helpers import ingest_cli, rows

    vids = tmp_path / "v"
    vids.mkdir()
    from dataengine import synth

    synth.make_cartoon(vids / "gone.mp4", duration_s=3, fps=24, size=(160, 120), cuts=[1.5])
    ingest_cli(runner, cat, vids)
    shutil.rmtree(vids)
    r = caption(runner, cat, tiny_vlm_dir, "--batch-size", "4")
    assert r.exit_code == 1
    dec = rows(cat, "SELECT error FROM captions WHERE status = 'decode_error'")
    assert len(dec) == 2 and all("missing" in e[0] for e in dec)
    n = rows(cat, "SELECT count(*) FROM clips")[0][0]
    assert rows(cat, "SELECT count(*) FROM captions")[0][0] == n
    assert "decode failures 2" in r.output


def test_unknown_model_is_a_clear_error(runner, cat, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = runner.invoke(main, ["caption", "--catalog", str(cat), "--model", "Qwen/No-Such-Model-VL", "--no-progress"])
    assert r.exit_code == 1
    assert "Qwen/No-Such-Model-VL" in r.output and "huggingface-cli download" in r.output
    assert "Traceback" not in r.output
    r = runner.invoke(main, ["caption", "--catalog", str(cat), "--model", "qwen2-vl", "--no-progress"])
    assert r.exit_code == 1 and "Qwen/Qwen2-VL-2B-Instruct" in r.output


def test_view_shows_pinned_labelling(runner, cat):
    """Two labellings side by side; `captions use` pins which one the clips view shows."""
    cid = rows(cat, "SELECT clip_id FROM clips ORDER BY clip_id LIMIT 1")[0][0]
    con = duckdb.connect(str(cat))
    for who, ver, tags, ts in (("A", "v1", ["chase"], "2026-01-01"), ("B", "v1", ["night"], "2026-01-02"),
                               ("A", "v2", ["run"], "2025-12-31")):
        con.execute("INSERT INTO captions (clip_id, captioner, prompt_version, status, caption, tag_list, fields, "
                    "created_at) VALUES (?, ?, ?, 'ok', ?, ?, '{}', ?)", [cid, who, ver, f"by {who}", tags, ts])
    con.execute("INSERT INTO captions (clip_id, captioner, prompt_version, status, raw_output, created_at) "
                "VALUES (?, 'C', 'v1', 'parse_error', 'garbage', '2026-02-01')", [cid])
    from catalog import labels

    labels.refresh(con, [cid])  # as every caption writer does
    con.close()
    shown = lambda: rows(cat, "SELECT captioner, prompt_version, tags FROM clips WHERE clip_id = ?", [cid])[0]  # noqa
    assert shown() == ("B", "v1", "night")  # newest *parsed* caption; C's parse error is never shown
    r = runner.invoke(main, ["captions", "use", "A", "--catalog", str(cat)])
    assert r.exit_code == 0, r.output
    assert shown() == ("A", "v1", "chase")  # A's newest version
    runner.invoke(main, ["captions", "use", "A@v2", "--catalog", str(cat)])
    assert shown() == ("A", "v2", "run")
    r = runner.invoke(main, ["query", "tags LIKE '%run%'", "--catalog", str(cat), "--json"])
    assert [x["clip_id"] for x in json.loads(r.output)] == [cid]
    r = runner.invoke(main, ["captions", "use", "Nobody", "--catalog", str(cat)])
    assert r.exit_code == 1 and "no captions by 'Nobody'" in r.output
    runner.invoke(main, ["captions", "use", "--clear", "--catalog", str(cat)])
    assert shown() == ("B", "v1", "night")
    r = runner.invoke(main, ["captions", "diff", "A@v1", "B", "--catalog", str(cat), "--json"])
    d = json.loads(r.output)
    assert d["clips_compared"] == 1 and d["mean_jaccard"] == 0.0
    r = runner.invoke(main, ["stats", "--catalog", str(cat)])
    assert "night" in r.output and "tags" in r.output


@pytest.mark.slow
def test_kill_9_mid_caption_then_rerun(cat, tiny_vlm_dir):
    n = rows(cat, "SELECT count(*) FROM clips")[0][0]
    cmd = [sys.executable, "-m", "dataengine", "caption", "--catalog", str(cat), "--model", tiny_vlm_dir,
           "--batch-size", "1", "--max-new-tokens", "48", "--max-frames", "4", "--max-pixels", "12544"]
    # write every batch (the default coalesces writes to one every 2 s), so "3 clips done" means 3 rows
    env = dict(os.environ, DE_CAPTION_FLUSH_S="0")
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
                         env=env)
    seen = []

    def watch():
        buf = ""
        while True:
            ch = p.stderr.read(1)
            if not ch:
                return
            buf += ch
            if f" 3/{n}" in buf[-200:]:
                seen.append(True)
                return

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    deadline = time.time() + 240
    while not seen and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert seen, "the run never got to 3 clips"
    first = rows(cat, "SELECT clip_id, raw_output, created_at FROM captions")
    assert 3 <= len(first) < n
    again = subprocess.run(cmd + ["--no-progress"], capture_output=True, text=True)
    assert f"{len(first)} already done" in again.stdout, again.stdout + again.stderr
    final = rows(cat, "SELECT clip_id, raw_output, created_at FROM captions")
    assert len(final) == n and len({r[0] for r in final}) == n
    assert set(first) <= set(final)  # nothing written before the kill was lost or rewritten
