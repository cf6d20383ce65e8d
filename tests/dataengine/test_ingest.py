"""de ingest through the CLI and the library: cuts, idempotency, bad input, resplit, kill -9."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import ingest_cli, rows
from dataengine import synth
from dataengine.video import iter_frames, probe


def test_cuts_within_two_frames_in_every_codec(video_dir, runner, catalog_path):
    d, truth = video_dir
    r = ingest_cli(runner, catalog_path, d)
    assert r.exit_code == 0, r.output
    assert f"ingested {len(truth)} videos" in r.output
    for name, t in truth.items():
        clips = rows(catalog_path, "SELECT start_frame, end_frame, start_s, end_s FROM clips "
                                   "WHERE video_path LIKE ? ORDER BY start_frame", ["%" + name])
        assert clips, name
        # every true cut lies in a gap between consecutive clips (trim 2 on each side)
        starts = [c[0] for c in clips][1:]
        assert len(starts) == len(t.cut_frames), (name, clips, t.cut_frames)
        for cut, s in zip(t.cut_frames, starts):
            assert abs((s - 2) - cut) <= 2, (name, s, cut)
        # times come from timestamps
        for c in clips:
            assert c[2] == pytest.approx(t.frame_times[c[0]], abs=1e-3)


def test_vfr_clip_times_follow_timestamps(video_dir, runner, catalog_path):
    d, truth = video_dir
    ingest_cli(runner, catalog_path, d / "vfr.mkv")
    t = truth["vfr.mkv"]
    (fps,) = rows(catalog_path, "SELECT fps FROM videos")[0]
    last = rows(catalog_path, "SELECT max(end_s), max(end_frame) FROM clips")[0]
    assert last[0] == pytest.approx(6.0, abs=0.1)  # nominal-fps arithmetic would say 146/24 = 6.1 or worse
    assert last[1] == t.num_frames
    assert rows(catalog_path, "SELECT is_vfr FROM videos")[0][0] is True
    assert fps < 24  # average rate, not the nominal one


def test_stats_and_keyframes(video_dir, runner, catalog_path):
    d, _ = video_dir
    ingest_cli(runner, catalog_path, d)
    for motion, bright, colour, sharp, kf, det, params in rows(
            catalog_path, "SELECT c.motion_score, c.brightness, c.colorfulness, c.sharpness, c.keyframe_path, c.detector, "
                          "s.detector_params FROM clips c JOIN clip_segments s USING (clip_id)"):
        assert motion > 0.1  # the characters move
        assert 0 < bright < 1 and colour > 10 and sharp > 10
        assert os.path.getsize(kf) > 500 and kf.endswith(".jpg")
        assert det == "adaptive" and '"min_scene_len": 15' in params


def test_rerun_and_same_bytes_elsewhere_add_nothing(video_dir, runner, catalog_path, tmp_path):
    d, truth = video_dir
    ingest_cli(runner, catalog_path, d)
    before = rows(catalog_path, "SELECT count(*) FROM clip_segments")[0][0]
    other = tmp_path / "elsewhere"
    other.mkdir()
    shutil.copy(d / "mkv_h264.mkv", other / "renamed copy.mkv")
    r = ingest_cli(runner, catalog_path, d, other)
    assert r.exit_code == 0
    assert "ingested 0 videos" in r.output and f"skipped {len(truth)} already ingested, 1 duplicate" in r.output
    assert rows(catalog_path, "SELECT count(*) FROM clip_segments")[0][0] == before
    assert rows(catalog_path, "SELECT count(*) FROM videos")[0][0] == len(truth)


def test_resplit_rederives_clips(video_dir, runner, catalog_path):
    d, _ = video_dir
    ingest_cli(runner, catalog_path, d / "h264 cartoon.mp4")
    n1 = rows(catalog_path, "SELECT count(*) FROM clips")[0][0]
    r = ingest_cli(runner, catalog_path, d / "h264 cartoon.mp4", extra=["--max-duration", "1.2", "--min-duration", "0.5"])
    assert "skipped 1" in r.output  # without --resplit nothing changes
    assert rows(catalog_path, "SELECT count(*) FROM clips")[0][0] == n1
    r = ingest_cli(runner, catalog_path, d / "h264 cartoon.mp4",
                   extra=["--max-duration", "1.2", "--min-duration", "0.5", "--resplit"])
    assert r.exit_code == 0, r.output
    n2 = rows(catalog_path, "SELECT count(*) FROM clips")[0][0]
    assert n2 > n1
    kfs = [r[0] for r in rows(catalog_path, "SELECT keyframe_path FROM clips")]
    assert sorted(os.listdir(os.path.dirname(kfs[0]))) == sorted(os.path.basename(k) for k in kfs)  # no orphans
    assert rows(catalog_path, "SELECT max(duration_s) FROM clips")[0][0] <= 1.2 + 1e-6


def test_bad_inputs_are_recorded_and_run_goes_on(video_dir, runner, catalog_path):
    d, truth = video_dir
    synth.make_empty(d / "zero.mp4")
    synth.make_text_as_video(d / "text.mp4")
    synth.make_truncated(d / "h264 cartoon.mp4", d / "truncated.mp4", keep=0.3)
    synth.make_audio_only(d / "audio only.mkv")
    synth.make_cartoon(d / "one frame.mp4", duration_s=1 / 24, fps=24, size=(64, 48), cuts=[])
    r = ingest_cli(runner, catalog_path, d)
    assert r.exit_code == 1
    assert "Traceback" not in r.output
    assert f"ingested {len(truth)} videos" in r.output
    failed = dict(rows(catalog_path, "SELECT regexp_extract(path, '[^/]+$'), error_kind FROM videos WHERE status='failed'"))
    assert failed["zero.mp4"] == "empty file"
    assert failed["text.mp4"] == "unreadable"
    assert failed["audio only.mkv"] == "no video stream"
    assert failed["one frame.mp4"] == "too few frames"
    errors = rows(catalog_path, "SELECT error FROM videos WHERE status='failed'")
    assert all(e[0] for e in errors)
    # the truncated file either fails with a reason or yields clips only from its readable part
    trunc = rows(catalog_path, "SELECT status, error FROM videos WHERE path LIKE '%truncated.mp4'")
    assert trunc and (trunc[0][0] == "failed" and trunc[0][1] or trunc[0][0] == "ok")
    assert "failed 4" in r.output or "failed 5" in r.output
    # failed videos never show in the clips view
    assert rows(catalog_path, "SELECT count(*) FROM clips WHERE video_path LIKE '%zero.mp4'")[0][0] == 0
    # `de stats --failed` lists each failed video with its reason
    from dataengine.cli import main

    st = runner.invoke(main, ["stats", "--failed", "--catalog", str(catalog_path)])
    assert st.exit_code == 0, st.output
    listed = {line.split("\t")[0].rsplit("/", 1)[-1]: line.split("\t")[1] for line in st.stdout.splitlines()}
    assert set(listed) == set(failed)
    assert listed["zero.mp4"].startswith("empty file: ") and listed["audio only.mkv"].startswith("no video stream: ")
    assert f"{len(failed)} failed video(s)" in st.stderr
    js = runner.invoke(main, ["stats", "--failed", "--json", "--catalog", str(catalog_path)])
    assert {r["reason"] for r in json.loads(js.stdout)} == set(failed.values())


def test_missing_path_is_a_clear_error(runner, catalog_path, tmp_path):
    r = ingest_cli(runner, catalog_path, tmp_path / "nope")
    assert r.exit_code == 1 and "Error: no such file or folder" in r.output


def test_folder_without_videos_is_an_error_and_creates_no_catalog(runner, catalog_path, tmp_path):
    d = tmp_path / "notes"
    d.mkdir()
    (d / "readme.txt").write_text("no videos here")
    r = ingest_cli(runner, catalog_path, d)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "Error: no video files found (looked for .mp4 .mkv " in r.output and str(d) in r.output
    assert not catalog_path.exists()


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_metadata_is_applied(tmp_path, rotation):
    path = tmp_path / "rot.mp4"
    synth.make_cartoon(path, duration_s=0.5, fps=24, size=(160, 96), rotation=rotation, cuts=[])
    info = probe(path)
    assert info.rotation == rotation and (info.width, info.height) == (160, 96)
    want = synth.draw_frame(0.0, 0, 160, 96).astype(np.float32)
    for reader in ("opencv", "decord", "pyav"):
        fb = next(iter_frames(str(path), info, (160, 96), prefer=reader))
        got = fb.rgb[0].astype(np.float32)
        assert got.shape == (96, 160, 3)
        assert np.abs(got - want).mean() < 12, reader  # upright, not sideways or mirrored


def _spawn_ingest(catalog, folder):
    env = dict(os.environ)
    return subprocess.Popen([sys.executable, "-m", "dataengine", "ingest", str(folder), "--catalog", str(catalog),
                             "--no-progress", "--workers", "1"], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_kill_9_then_rerun_finishes_without_duplicates(tmp_path):
    folder = tmp_path / "many"
    for i in range(8):
        synth.make_cartoon(folder / f"v{i}.mp4", duration_s=4.0 + 0.25 * i, fps=24, size=(320, 240), cuts=[2.0])
    ref_cat = tmp_path / "ref.duckdb"
    ref = subprocess.run([sys.executable, "-m", "dataengine", "ingest", str(folder), "--catalog", str(ref_cat),
                          "--no-progress"], capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    want = rows(ref_cat, "SELECT video_id, start_frame, end_frame FROM clip_segments ORDER BY 1, 2")

    cat = tmp_path / "killed.duckdb"
    p = _spawn_ingest(cat, folder)
    kf = tmp_path / "killed_cache" / "keyframes"
    deadline = time.time() + 120
    while time.time() < deadline and (not kf.exists() or len(list(kf.iterdir())) < 3):
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    partial = rows(cat, "SELECT count(*) FROM videos")[0][0]
    assert partial < 8  # it really was interrupted
    again = subprocess.run([sys.executable, "-m", "dataengine", "ingest", str(folder), "--catalog", str(cat),
                            "--no-progress"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    got = rows(cat, "SELECT video_id, start_frame, end_frame FROM clip_segments ORDER BY 1, 2")
    assert got == want
    assert rows(cat, "SELECT count(*), count(DISTINCT video_id) FROM videos")[0] == (8, 8)


def test_export_writes_selected_clips_resampled_by_time(video_dir, runner, catalog_path, tmp_path):
    from dataengine.cli import main
    from dataengine.media import read_video

    d, truth = video_dir
    ingest_cli(runner, catalog_path, d / "h264 cartoon.mp4")
    out = tmp_path / "export"
    r = runner.invoke(main, ["export", str(out), "--catalog", str(catalog_path), "--fps", "16", "--no-progress"])
    assert r.exit_code == 0, r.output
    clips = rows(catalog_path, "SELECT clip_id, duration_s FROM clips")
    assert f"exported {len(clips)} clips" in r.output
    for cid, dur in clips:
        v = read_video(out / f"{cid}.mp4")
        assert abs(len(v) - dur * 16) <= 1  # 24 fps source -> 16 fps by time, not by stride
    index = [json.loads(l) for l in (out / "index.jsonl").read_text().splitlines()]
    assert {x["clip_id"] for x in index} == {c for c, _ in clips}
    r = runner.invoke(main, ["export", str(out), "--catalog", str(catalog_path), "--no-progress"])
    assert "exported 0 clips" in r.output and f"{len(clips)} already there" in r.output
    r = runner.invoke(main, ["export", str(out), "--catalog", str(catalog_path), "--query", "duration_s > 99"])
    assert r.exit_code == 1 and "no clips matched" in r.output


def test_large_resolution_is_decoded_at_the_analysis_size(tmp_path, runner, catalog_path):
    path = tmp_path / "big" / "uhd.mp4"
    synth.make_cartoon(path, duration_s=1.5, fps=12, size=(3840, 2160), cuts=[])
    r = ingest_cli(runner, catalog_path, path.parent)
    assert r.exit_code == 0, r.output
    assert rows(catalog_path, "SELECT width, height, status FROM videos")[0] == (3840, 2160, "ok")
    (kf,) = rows(catalog_path, "SELECT keyframe_path FROM clips")[0]
    import cv2

    assert cv2.imread(kf).shape[:2] == (144, 256)  # keyframes and stats come from the 256-px analysis frames


def test_other_split_options_are_reported_and_resplit_applies_them(runner, video_dir, tmp_path):
    from dataengine.cli import main

    folder, _ = video_dir
    cat = tmp_path / "c.duckdb"
    assert ingest_cli(runner, cat, folder).exit_code == 0
    r = ingest_cli(runner, cat, folder, extra=["--min-scene-len", "20"])
    n = len(list(folder.iterdir()))
    assert f"{n} video(s) were ingested with other split options: pass --resplit to apply these" in r.output
    r = ingest_cli(runner, cat, folder, extra=["--min-scene-len", "20", "--resplit"])
    assert "other split options" not in r.output and f"ingested {n} videos" in r.output
    # `de query` takes the clause as an option too
    a = runner.invoke(main, ["query", "duration_s > 1", "--catalog", str(cat), "--json"])
    b = runner.invoke(main, ["query", "--query", "duration_s > 1", "--catalog", str(cat), "--json"])
    assert a.exit_code == 0 and a.output == b.output
    c = runner.invoke(main, ["query", "1=1", "--query", "2=2", "--catalog", str(cat)])
    assert c.exit_code == 2 and "once" in c.output
