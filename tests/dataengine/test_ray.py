"""Ingest and caption on Ray (issue #10): the same rows as the local path, a killed worker retried
without loss or duplication, bad videos kept as data rows, and a two-node cluster on localhost."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from helpers import ingest_cli, rows

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")

CAP = ["--free", "--max-new-tokens", "8", "--fps", "2", "--max-frames", "4", "--max-pixels", "12544", "--no-progress",
       "--batch-size", "2"]
VIDEO_COLS = "video_id, status, error_kind, size_bytes, duration_s, fps, width, height, num_frames, codec, split_key"
CLIP_COLS = ("clip_id, video_id, scene_index, window_index, start_frame, end_frame, start_s, end_s, motion_score, "
             "brightness, colorfulness, sharpness, detector, detector_params, split_key")
CAPTION_COLS = ("clip_id, captioner, prompt_version, status, caption, tag_list, fields, raw_output, error, "
                "num_frames, visual_tokens, is_random_model")


def de(*args, env=None, timeout=600):
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "dataengine", *map(str, args)], capture_output=True, text=True,
                          env=e, timeout=timeout)


@pytest.fixture()
def lib(videos, tmp_path):
    d = tmp_path / "lib"
    shutil.copytree(videos[0], d)
    (d / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))  # a bad video: a data row
    return d


def catalog_rows(cat):
    return (rows(cat, f"SELECT {VIDEO_COLS} FROM videos ORDER BY video_id"),
            rows(cat, f"SELECT {CLIP_COLS} FROM clip_segments ORDER BY clip_id"))


def test_ray_ingest_equals_the_local_pool_and_survives_a_killed_worker(lib, tmp_path, runner):
    local = tmp_path / "local.duckdb"
    r = ingest_cli(runner, local, lib)
    assert r.exit_code == 1  # broken.mp4
    on_ray = tmp_path / "ray.duckdb"
    marker = tmp_path / "died-once"
    r = de("ingest", lib, "--catalog", on_ray, "--ray", "--no-progress", env={"DE_FAULT_EXIT_ONCE": str(marker)})
    assert r.returncode == 1, r.stderr[-3000:]
    assert marker.exists()  # one worker process really died mid-task, and Ray retried its video
    assert "on 1 Ray node(s)" in r.stdout and "failed 1" in r.stdout
    assert catalog_rows(on_ray) == catalog_rows(local)
    failed = rows(on_ray, "SELECT path, error_kind FROM videos WHERE status = 'failed'")
    assert len(failed) == 1 and failed[0][0].endswith("broken.mp4")
    # keyframes came back as bytes and the driver wrote them into the catalog's own folder
    kf = rows(on_ray, "SELECT keyframe_path FROM clip_segments")
    assert kf and all(p and os.path.getsize(p) > 0 and "ray_cache" in p for (p,) in kf)
    counts = json.loads(rows(on_ray, "SELECT counts FROM runs WHERE command = 'ingest'")[0][0])
    assert counts["executor"] == "ray" and sum(counts["nodes"].values()) == 7
    # rerun: idempotent on Ray too
    r = de("ingest", lib, "--catalog", on_ray, "--ray", "--no-progress")
    assert "ingested 0 videos" in r.stdout and "skipped 7 already ingested" in r.stdout


def test_ray_caption_gives_the_local_rows_even_when_an_actor_dies(train_catalog, tmp_path, tiny_vlm_dir):
    a, b = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    shutil.copy(train_catalog, a)
    shutil.copy(train_catalog, b)
    r = de("caption", "--catalog", a, "--model", tiny_vlm_dir, *CAP)
    assert r.returncode in (0, 1), r.stderr[-2000:]
    marker = tmp_path / "actor-died"
    r = de("caption", "--catalog", b, "--model", tiny_vlm_dir, *CAP, "--ray", "--workers", "2",
           env={"DE_FAULT_EXIT_ONCE": str(marker)})
    assert r.returncode in (0, 1), r.stderr[-3000:]
    assert marker.exists() and "on 1 Ray node(s)" in r.stdout
    n = rows(b, "SELECT count(*) FROM clips")[0][0]
    got = rows(b, f"SELECT {CAPTION_COLS} FROM captions ORDER BY clip_id")
    assert len(got) == n and len({g[0] for g in got}) == n  # nothing lost, nothing twice
    assert got == rows(a, f"SELECT {CAPTION_COLS} FROM captions ORDER BY clip_id")
    r = de("caption", "--catalog", b, "--model", tiny_vlm_dir, *CAP, "--ray")
    assert f"nothing to do: {n} clip(s) already labelled" in r.stderr


def test_a_two_node_cluster_on_localhost_uses_both_nodes(lib, tmp_path, runner, tiny_vlm_dir):
    from ray.cluster_utils import Cluster

    os.remove(lib / "broken.mp4")
    local = tmp_path / "local.duckdb"
    assert ingest_cli(runner, local, lib).exit_code == 0
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        cat = tmp_path / "two.duckdb"
        r = de("ingest", lib, "--catalog", cat, "--ray", cluster.address, "--no-progress")
        assert r.returncode == 0, r.stderr[-3000:]
        assert catalog_rows(cat) == catalog_rows(local)
        counts = json.loads(rows(cat, "SELECT counts FROM runs WHERE command = 'ingest'")[0][0])
        assert len(counts["nodes"]) == 2, counts["nodes"]
        r = de("caption", "--catalog", cat, "--model", tiny_vlm_dir, *CAP, "--ray", cluster.address, "--workers", "2")
        assert r.returncode in (0, 1), r.stderr[-3000:]
        counts = json.loads(rows(cat, "SELECT counts FROM runs WHERE command = 'caption'")[0][0])
        assert len(counts["nodes"]) == 2, counts["nodes"]
        assert rows(cat, "SELECT count(*) FROM captions")[0][0] == rows(cat, "SELECT count(*) FROM clips")[0][0]
    finally:
        cluster.shutdown()


def test_ray_constrained_closed_vocab_caption_equals_the_local_rows(train_catalog, tmp_path, tiny_vlm_dir):
    """The default labelling (schema-constrained, closed vocabulary) on Ray actors: every answer
    is in the schema, every tag in the vocabulary, and the rows are the local path's."""
    import json as _json

    from dataengine.caption.schema import vocab_tags

    con_args = ["--closed-vocab", "--fps", "2", "--max-frames", "4", "--max-pixels", "12544", "--no-progress",
                "--batch-size", "2", "--limit", "4"]
    a, b = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    shutil.copy(train_catalog, a)
    shutil.copy(train_catalog, b)
    r = de("caption", "--catalog", a, "--model", tiny_vlm_dir, *con_args)
    assert r.returncode == 0, r.stderr[-2000:]
    r = de("caption", "--catalog", b, "--model", tiny_vlm_dir, *con_args, "--ray", "--workers", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    got = rows(b, f"SELECT {CAPTION_COLS} FROM captions ORDER BY clip_id")
    assert len(got) == 4 and all(g[3] == "ok" for g in got)
    assert got == rows(a, f"SELECT {CAPTION_COLS} FROM captions ORDER BY clip_id")
    vocab = set(vocab_tags(_json.loads(open(os.path.join(os.path.dirname(__file__), "..", "..", "assets",
                                                         "vocab.json")).read())))
    assert all(set(g[5]) <= vocab and g[5] for g in got)
    assert len({g[2] for g in got}) == 1 and rows(b, "SELECT DISTINCT prompt_version FROM captions") == \
        rows(a, "SELECT DISTINCT prompt_version FROM captions")
