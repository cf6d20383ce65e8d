"""Issue #9, data-engine side: every promise holds under changed sources, odd files, full disks,
foreign or newer catalogs, and a long job running beside a reader. Each test goes through the CLI.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from helpers import ingest_cli, rows
from dataengine.cli import main

FAST = ["--free", "--max-new-tokens", "8", "--fps", "2", "--max-frames", "4", "--max-pixels", "12544", "--no-progress"]


def digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture()
def two(videos, tmp_path):
    """A folder with two of the synthetic cartoons, and a catalog that has ingested it."""
    root, _ = videos
    d = tmp_path / "raw"
    d.mkdir()
    for name in ("h264 cartoon.mp4", "mkv_h264.mkv"):
        shutil.copy(root / name, d / name)
    return d, tmp_path / "cat.duckdb"


# --- 2. the bytes you trained on are the bytes you ingested ----------------------------------------

def test_a_replaced_source_fails_its_clips_then_reingest_retires_them(runner, two, videos, tmp_path):
    d, cat = two
    assert ingest_cli(runner, cat, d).exit_code == 0
    target = d / "h264 cartoon.mp4"
    old_vid = rows(cat, "SELECT video_id FROM videos WHERE path = ?", [str(target.resolve())])[0][0]
    n_old = rows(cat, "SELECT count(*) FROM clips WHERE video_id = ?", [old_vid])[0][0]
    assert n_old > 0
    shutil.copy(videos[0] / "vp8.webm", target)  # other bytes at the same path

    # caption: the old clips fail with the reason, the others are labelled
    r = runner.invoke(main, ["caption", "--catalog", str(cat), "--model", "tiny", *FAST])
    assert r.exit_code == 1
    got = rows(cat, "SELECT c.status, c.error FROM captions c JOIN clip_segments s USING (clip_id) "
                    "WHERE s.video_id = ?", [old_vid])
    assert len(got) == n_old and all(st == "decode_error" and "source changed since ingest" in e for st, e in got)
    assert "decode failures (source changed)" in r.output

    # export: the same, and index.jsonl lists only what was written
    out = tmp_path / "exp"
    r = runner.invoke(main, ["export", str(out), "--catalog", str(cat), "--no-progress"])
    assert r.exit_code == 1 and "source changed since ingest" in r.output
    index = [json.loads(l) for l in (out / "index.jsonl").read_text().splitlines()]
    assert index and all((out / row["file"]).exists() for row in index)
    assert not any(row["video_id"] == old_vid for row in index)
    assert not list(out.glob("*.tmp.mp4"))

    # train reads windows through the same check
    from dataengine.video import VideoError
    from train.data import Window, read_window

    w = Window(clip_id="c", video_id=old_vid, video_path=str(target.resolve()), start_s=0.0, clip_start_s=0.0,
               clip_end_s=1.0, frames=9, fps=16.0, prompt="p", role="train", window_index=0, labelling=None,
               motion_score=None)
    with pytest.raises(VideoError, match="source changed since ingest"):
        read_window(w, 64, 64)

    # re-ingest: the old video is 'replaced', its clips leave the view (rows kept for lineage)
    r = ingest_cli(runner, cat, d)
    assert r.exit_code == 0, r.output
    assert "1 older video(s) replaced" in r.output
    assert rows(cat, "SELECT status FROM videos WHERE video_id = ?", [old_vid]) == [("replaced",)]
    assert rows(cat, "SELECT count(*) FROM clips WHERE video_id = ?", [old_vid])[0][0] == 0
    assert rows(cat, "SELECT count(*) FROM clip_segments WHERE video_id = ?", [old_vid])[0][0] == n_old
    assert rows(cat, "SELECT count(*) FROM clips WHERE video_path = ?", [str(target.resolve())])[0][0] > 0
    r = runner.invoke(main, ["stats", "--catalog", str(cat)])
    assert "1 replaced" in r.output and "0 missing" in r.output
    os.remove(d / "mkv_h264.mkv")
    assert "1 missing" in runner.invoke(main, ["stats", "--catalog", str(cat)]).output


def test_window_fields_match_the_manifest():
    """The Window used above is the manifest's own record type (guards the test against drift)."""
    from dataclasses import fields

    from train.data import Window

    assert {"video_id", "video_path", "start_s", "clip_end_s", "frames", "fps"} <= {f.name for f in fields(Window)}


# --- 6. files, disks and catalogs ---------------------------------------------------------------

def test_odd_files_are_reported_and_the_rest_is_ingested(runner, two):
    d, cat = two
    bad = os.path.join(os.fsencode(d), b"bad\xff.mp4")
    shutil.copy(d / "mkv_h264.mkv", bad)  # a real video, under a name that is not UTF-8
    os.mkfifo(d / "pipe.mp4")
    (d / "folder.mp4").mkdir()
    r = ingest_cli(runner, cat, d)
    assert r.exit_code == 1
    assert "Traceback" not in r.output and r.exc_info[0] is SystemExit
    assert "pipe.mp4: a FIFO" in r.output and "folder.mp4: a directory named like a video" in r.output
    failed = rows(cat, "SELECT path, error FROM videos WHERE status = 'failed'")
    assert len(failed) == 1 and "\\xff" in failed[0][0] and "not valid UTF-8" in failed[0][1]
    assert rows(cat, "SELECT count(*) FROM videos WHERE status = 'ok'")[0][0] == 1  # mkv_h264 is a duplicate
    r = ingest_cli(runner, cat, d)  # the folder is not blocked for good
    assert r.exit_code == 1 and "Traceback" not in r.output and "skipped" in r.output


def test_missing_path_creates_no_catalog(runner, tmp_path):
    cat = tmp_path / "c.duckdb"
    r = ingest_cli(runner, cat, tmp_path / "missing.mp4")
    assert r.exit_code == 1 and "no such file or folder" in r.output
    assert not cat.exists()


def test_newer_schema_refuses_to_write(runner, two):
    d, cat = two
    assert ingest_cli(runner, cat, d).exit_code == 0
    con = duckdb.connect(str(cat))
    con.execute("INSERT INTO schema_migrations (version, name) VALUES (99, 'from the future')")
    con.close()
    before = digest(cat)
    for args in (["ingest", str(d), "--catalog", str(cat)], ["caption", "--model", "tiny", "--catalog", str(cat)]):
        r = runner.invoke(main, args)
        assert r.exit_code == 1 and "newer than this tool's" in r.output and "Upgrade the tool" in r.output
    assert digest(cat) == before


def test_a_foreign_duckdb_file_is_refused_untouched(runner, two):
    d, cat = two
    con = duckdb.connect(str(cat))
    con.execute("CREATE TABLE videos (id INTEGER, title VARCHAR)")
    con.execute("INSERT INTO videos VALUES (1, 'mine')")
    con.close()
    before = digest(cat)
    for args in (["ingest", str(d)], ["query", "1=1"], ["stats"]):
        r = runner.invoke(main, [*args, "--catalog", str(cat)])
        assert r.exit_code == 1 and "not a catalog of this tool" in r.output, r.output
    assert digest(cat) == before


def test_export_targets(runner, two, tmp_path):
    d, cat = two
    assert ingest_cli(runner, cat, d).exit_code == 0
    f = tmp_path / "afile"
    f.write_text("x")
    r = runner.invoke(main, ["export", str(f), "--catalog", str(cat)])
    assert r.exit_code != 0 and "is a file" in r.output or "not a folder" in r.output
    r = runner.invoke(main, ["export", "", "--catalog", str(cat)])
    assert r.exit_code != 0 and "Error" in r.output and "Traceback" not in r.output
    r = runner.invoke(main, ["export", str(f / "sub"), "--catalog", str(cat)])
    assert r.exit_code == 1 and "cannot create the export folder" in r.output


@pytest.fixture()
def small_fs(tmp_path):
    """A 3 MiB tmpfs: a real full disk (needs root and mount; skipped where unavailable)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            f"needs a tmpfs mount (root or CAP_SYS_ADMIN): {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


def test_export_to_a_full_disk_is_a_clear_error_and_resumes(runner, two, small_fs):
    d, cat = two
    assert ingest_cli(runner, cat, d).exit_code == 0
    n = rows(cat, "SELECT count(*) FROM clips")[0][0]
    filler = small_fs / "filler"
    with open(filler, "wb") as fh:  # leave room for about one clip
        fh.write(b"\0" * (3 * 2**20 - 24 * 1024))
    out = small_fs / "exp"
    r = runner.invoke(main, ["export", str(out), "--catalog", str(cat), "--no-progress", "--max-side", "480"])
    assert r.exit_code == 1 and r.output.startswith("Error: no space left on the device"), r.output
    assert not list(out.glob("*.tmp*"))
    index = [json.loads(l) for l in (out / "index.jsonl").read_text().splitlines()] if (out / "index.jsonl").exists() else []
    assert all((out / row["file"]).exists() for row in index)
    filler.unlink()
    r = runner.invoke(main, ["export", str(out), "--catalog", str(cat), "--no-progress", "--max-side", "480"])
    assert r.exit_code == 0, r.output
    index = [json.loads(l) for l in (out / "index.jsonl").read_text().splitlines()]
    assert len(index) == n and len({row["clip_id"] for row in index}) == n


def test_ingest_with_the_catalog_on_a_full_disk(runner, two, small_fs):
    d, _ = two
    cat = small_fs / "cat.duckdb"
    filler = small_fs / "filler"
    with open(filler, "wb") as fh:
        fh.write(b"\0" * (3 * 2**20 - 64 * 1024))
    r = ingest_cli(runner, cat, d)
    assert r.exit_code == 1 and r.output.startswith("Error: ") and "Traceback" not in r.output, r.output
    assert "space" in r.output.lower()
    filler.unlink()
    r = ingest_cli(runner, cat, d)  # the same catalog, as the full disk left it
    assert r.exit_code == 0, r.output
    assert rows(cat, "SELECT count(*) FROM videos WHERE status = 'ok'")[0][0] == 2


# --- 7. readers are not locked out by a long job ------------------------------------------------

@pytest.mark.slow
def test_query_stats_and_dry_run_work_during_a_long_caption(train_catalog, tmp_path, tiny_vlm_dir):
    cat = tmp_path / "c.duckdb"
    shutil.copy(train_catalog, cat)
    env = dict(os.environ, DE_CATALOG=str(cat))
    p = subprocess.Popen([sys.executable, "-m", "dataengine", "caption", "--model", tiny_vlm_dir, "--batch-size", "1", "--free",
                          "--max-new-tokens", "400", "--fps", "2", "--max-frames", "4", "--max-pixels", "12544",
                          "--no-progress"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not rows_or_none(cat):
            time.sleep(0.5)  # wait until the first batch is written: the job is under way
        assert p.poll() is None, "caption finished too early for this test: " + p.stderr.read()[-2000:]
        for args in (["query", "1=1", "--json"], ["stats"]):
            r = subprocess.run([sys.executable, "-m", "dataengine", *args], env=env, capture_output=True, text=True,
                               timeout=120)
            assert r.returncode == 0, r.stderr
        r = subprocess.run([sys.executable, "-m", "train.cli", "--query", "1=1", "--preset", "tiny", "--dry-run"],
                           env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        # the caption run was still going while all three read the catalog
        assert p.poll() is None, p.stderr.read()[-2000:]
    finally:
        p.kill()
        p.wait()
    # killed mid-run: its row shows as interrupted
    r = subprocess.run([sys.executable, "-m", "dataengine", "stats"], env=env, capture_output=True, text=True)
    assert "1 interrupted" in r.stdout, r.stdout


def rows_or_none(cat):
    try:
        con = duckdb.connect(str(cat), read_only=True)
    except duckdb.Error:
        return None
    try:
        return con.execute("SELECT count(*) FROM captions").fetchone()[0]
    finally:
        con.close()


# --- issue 20: decompression bombs --------------------------------------------------------------

def _png_mov(path, side: int, frames: int = 2) -> None:
    import av
    import numpy as np

    with av.open(str(path), "w") as c:
        st = c.add_stream("png", rate=1)
        st.width, st.height, st.pix_fmt = side, side, "rgb24"
        f = np.zeros((side, side, 3), np.uint8)
        f[..., 0] = 200
        for _ in range(frames):
            for p in st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in st.encode():
            c.mux(p)


@pytest.mark.slow
def test_a_decompression_bomb_is_refused_and_the_rest_is_ingested(runner, videos, tmp_path):
    """A 0.5 MB MOV whose PNG frames declare 9000x9000 (81 Mpx, 243 MB of RGB each): refused
    before a frame is decoded, with a failed row that says why; the good videos go on."""
    root, _ = videos
    d = tmp_path / "raw"
    d.mkdir()
    shutil.copy(root / "h264 cartoon.mp4", d / "good.mp4")
    _png_mov(d / "bomb.mov", 9000)
    _png_mov(d / "bomb2.mov", 9000, frames=3)  # other bytes: a second video
    assert (d / "bomb.mov").stat().st_size < 2_000_000
    cat = tmp_path / "c.duckdb"
    r = ingest_cli(runner, cat, d)
    assert r.exit_code == 1 and "Traceback" not in r.output
    got = dict(rows(cat, "SELECT regexp_extract(path, '[^/]+$'), status FROM videos"))
    assert got == {"good.mp4": "ok", "bomb.mov": "failed", "bomb2.mov": "failed"}
    errs = rows(cat, "SELECT error FROM videos WHERE status = 'failed'")
    assert all("9000x9000" in e and "per-frame budget" in e for (e,) in errs), errs
    assert "resolution too large: 2" in r.output


def test_the_frame_budget_applies_to_every_reader(videos, monkeypatch):
    """A smaller budget ($DE_MAX_FRAME_PIXELS) refuses a 240x180 video at probe and, for a
    frame larger than its header said, in each reader's loop."""
    from dataengine import video

    root, _ = videos
    path = str(root / "h264 cartoon.mp4")
    monkeypatch.setenv("DE_MAX_FRAME_PIXELS", str(240 * 180 - 1))
    with pytest.raises(video.VideoError, match="per-frame budget"):
        video.probe(path)
    monkeypatch.setenv("DE_MAX_FRAME_PIXELS", str(240 * 180))
    info = video.probe(path)
    monkeypatch.setenv("DE_MAX_FRAME_PIXELS", str(240 * 180 - 1))
    for reader in (video._iter_pyav, video._iter_opencv):
        with pytest.raises(video.VideoError, match="a decoded frame of 240x180"):
            next(reader(path, info, (64, 48), 8, 1))


def test_workers_share_the_machine_instead_of_multiplying_its_peak(monkeypatch):
    from concurrent.futures import wait

    from dataengine import executors

    avail = next(int(l.split()[1]) * 1024 for l in open("/proc/meminfo") if l.startswith("MemAvailable:"))
    for n in (1, 2, 8, 64):
        b = executors.worker_memory_budget(n)
        assert b == max(2 * 2**30, int(0.8 * avail / n))
    monkeypatch.setenv("DE_WORKER_MEMORY_MB", "3000")
    assert executors.worker_memory_budget(4) == 3000 * 2**20
    pool = executors.LocalPool(2)._new_pool(2)
    try:
        futs = [pool.submit(_data_limit) for _ in range(2)]
        wait(futs)
        assert {f.result() for f in futs} == {3000 * 2**20}
    finally:
        pool.shutdown()


def _data_limit() -> int:
    import resource

    return resource.getrlimit(resource.RLIMIT_DATA)[0]
