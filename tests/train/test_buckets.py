"""Aspect-ratio and frame-count buckets: synthetic clips of mixed shapes and lengths, through the CLI."""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from fractions import Fraction

import numpy as np
import pytest
from click.testing import CliRunner

from helpers import ingest_cli, run_train
from train.buckets import BucketError, crop_fraction, nearest, parse_frames, parse_sizes, sana_480_bins, scale_to_area
from train.loop import BucketOrder, DataOrder, make_order

# name -> (size, duration, cuts): 16:9, 4:3, 1:1 and 9:16 sources; scenes from ~0.9 s to ~2.6 s
SOURCES = {
    "wide.mp4": ((320, 180), 4.0, [1.5]),
    "tv.mp4": ((320, 240), 4.0, [2.8]),
    "square.mp4": ((240, 240), 3.0, [1.9]),
    "tall.mp4": ((180, 320), 2.5, [1.2]),
}
# what `auto` at 64x64 pixels must give each source (SANA's table scaled to 4,096 px: 96x32, 96x64,
# 64x64, 64x96, 32x96); 4:3 is nearer 3:2 than 1:1 in log ratio
EXPECTED_SIZE = {"wide.mp4": "96x64", "tv.mp4": "96x64", "square.mp4": "64x64", "tall.mp4": "64x96"}
FRAME_BUCKETS = [9, 17, 33]  # 0.56, 1.06, 2.06 s at 16 fps


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    from dataengine import synth

    root = tmp_path_factory.mktemp("mixed")
    for name, (size, dur, cuts) in SOURCES.items():
        synth.make_cartoon(root / "v" / name, size=size, duration_s=dur, fps=24, cuts=cuts)
    cat = root / "cat.duckdb"
    r = ingest_cli(CliRunner(), cat, root / "v")
    assert r.exit_code == 0, r.output
    return cat


def clip_table(cat):
    import duckdb

    con = duckdb.connect(str(cat), read_only=True)
    try:
        return con.execute("SELECT clip_id, regexp_extract(video_path, '[^/]+$'), end_s - start_s, width, height "
                           "FROM clips ORDER BY clip_id").fetchall()
    finally:
        con.close()


def expected_windows(cat, frame_buckets=FRAME_BUCKETS, fps=16.0):
    """bucket -> windows, worked out from the catalog without the code under test."""
    want = defaultdict(int)
    for _, name, dur, _, _ in clip_table(cat):
        fits = [f for f in frame_buckets if f / fps <= dur + 1e-6]
        if fits:
            want[f"{EXPECTED_SIZE[name]}x{max(fits)}"] += int(math.floor(dur / (max(fits) / fps) + 1e-6))
    return dict(want)


# --- the tables -------------------------------------------------------------------------------------

def test_auto_is_the_pipelines_480p_table_scaled_and_rounded_to_32():
    bins = sana_480_bins()
    assert (832, 480) in bins and (480, 832) in bins and len(bins) == 11
    at_480 = scale_to_area(bins, 480 * 832)
    assert (832, 480) in at_480 and (480, 832) in at_480 and (896, 448) in at_480
    for area in (224 * 224, 480 * 832, 64 * 64, 320 * 192):
        sizes = parse_sizes("auto", int(math.sqrt(area)), int(math.sqrt(area)))
        assert all(w % 32 == 0 and h % 32 == 0 for w, h in sizes)
        assert all(abs(w * h / area - 1) < 0.3 for w, h in sizes if min(w, h) > 64)  # about the target pixels
        # every table aspect has a rounded size near it (at 64x64, multiples of 32 are too coarse for that)
        assert area < 224 * 224 or max(min(abs(math.log(w / h) - math.log(bw / bh)) for w, h in sizes) for bw, bh in bins) < 0.2
    assert parse_sizes("auto", 224, 224) == [(160, 320), (160, 288), (192, 256), (224, 224), (256, 192),
                                            (288, 160), (320, 160)]


def test_explicit_lists_and_errors():
    assert parse_sizes("square", 224, 160) == [(224, 160)]
    assert parse_sizes("224x224, 320x192", 0, 0) == [(224, 224), (320, 192)]
    for bad in ("224", "224x", "x224", "300x224", "-32x32", "0x32", "axb"):
        with pytest.raises(BucketError):
            parse_sizes(bad, 224, 224)
    assert parse_frames("81,33,49,33", 81) == [33, 49, 81] and parse_frames(None, 81) == [81]
    for bad in ("80", "33,x", "0", "-3"):
        with pytest.raises(BucketError):
            parse_frames(bad, 81)


def test_nearest_bucket_and_crop():
    sizes = parse_sizes("auto", 224, 224)
    assert nearest(sizes, 16 / 9) == (288, 160)
    assert nearest(sizes, 4 / 3) == (256, 192)
    assert nearest(sizes, 1.0) == (224, 224)
    # the square crop throws away 44% of a 16:9 frame; its bucket, 1%
    assert crop_fraction(16 / 9, 1.0) == pytest.approx(0.4375)
    assert crop_fraction(16 / 9, 288 / 160) < 0.02


# --- batches ----------------------------------------------------------------------------------------

def test_every_batch_is_one_bucket_and_every_window_is_seen_each_epoch():
    names = ["a"] * 7 + ["b"] * 2 + ["c"] * 5
    order = BucketOrder(names, 3, seed=1)
    seen_by_epoch = defaultdict(set)
    for _ in range(40):
        ep = order.epoch if order.pos < len(order._plan) else order.epoch + 1
        batch = order.take(3)
        assert len({names[i] for i in batch}) == 1, batch
        seen_by_epoch[ep].update(batch)
    assert all(s == set(range(len(names))) for e, s in seen_by_epoch.items() if e < max(seen_by_epoch))
    # resuming from (epoch, pos) continues the same stream
    a = BucketOrder(names, 3, seed=1)
    stream = [a.take(3) for _ in range(12)]
    b = BucketOrder(names, 3, seed=1, epoch=0, pos=0)
    for _ in range(5):
        b.take(3)
    c = BucketOrder(names, 3, seed=1, epoch=b.epoch, pos=b.pos)
    assert [c.take(3) for _ in range(7)] == stream[5:]


def test_one_bucket_keeps_the_plain_order_the_seed_experiment_used():
    class W:
        bucket = "224x224x81"

    o = make_order([W()] * 10, 4, seed=42)
    assert isinstance(o, DataOrder)
    assert o.take(4) == DataOrder(10, 42).take(4)


# --- through the CLI ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_dry_run_prints_each_buckets_count(mixed):
    r = run_train("--query", "1=1", "--preset", "tiny", "--catalog", str(mixed), "--buckets", "auto",
                  "--frame-buckets", "9,17,33", "--holdout", "0", "--dry-run")
    m = re.search(r"^buckets \(WxHxF: train windows\): (.+); largest crop (\d+)% of a frame$", r.stdout, re.M)
    assert m, r.stdout
    printed = dict((k, int(v)) for k, v in re.findall(r"(\d+x\d+x\d+): (\d+)", m.group(1)))
    assert printed == expected_windows(mixed)
    assert len({k.rsplit("x", 1)[0] for k in printed}) == 3 and len({k.rsplit("x", 1)[1] for k in printed}) >= 2
    # the default stays one square crop: every window 64x64 at the preset's 9 frames
    r = run_train("--query", "1=1", "--preset", "tiny", "--catalog", str(mixed), "--holdout", "0", "--dry-run")
    m = re.search(r"^buckets \(WxHxF: train windows\): (\S+): (\d+); largest crop (\d+)%", r.stdout, re.M)
    assert m.group(1) == "64x64x9" and int(m.group(3)) == 44  # the 16:9 and 9:16 sources lose 44%


def _banded_video(path, size=(320, 180), seconds=2.0, band=0.12):
    """Grey frames with a red band at the left edge and a blue one at the right, `band` of the width each."""
    import av

    w, h = size
    img = np.full((h, w, 3), 128, np.uint8)
    k = int(round(w * band))
    img[:, :k] = (255, 0, 0)
    img[:, w - k:] = (0, 0, 255)
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=24, options={"crf": "10"})
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.codec_context.time_base = Fraction(1, 24)
        for i in range(int(seconds * 24)):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            for p in st.encode(f):
                out.mux(p)
        for p in st.encode():
            out.mux(p)
    return k / w


def _measured_crop(frames, band):
    """Solve the visible red band's width for the share of the source cropped away."""
    row = frames[0, frames.shape[1] // 2].astype(int)
    red = (row[:, 0] > 180) & (row[:, 2] < 80)
    visible = red[: len(row) // 2].sum() / len(row)  # of the output width
    # visible = (band - c/2) / (1 - c)  ->  c = (band - visible) / (0.5 - visible)
    return (band - visible) / (0.5 - visible) if visible > 0 else None


def test_windows_are_cropped_by_no_more_than_their_buckets_aspect_error(tmp_path):
    from train.config import TrainConfig
    from train.data import build_manifest, read_window

    band = _banded_video(tmp_path / "banded.mp4")
    from dataengine.identity import video_id

    row = dict(clip_id="c", video_id=video_id(tmp_path / "banded.mp4"), video_path=str(tmp_path / "banded.mp4"),
               start_s=0.0, end_s=2.0, width=320, height=180, motion_score=1.0, captioner=None, prompt_version=None)
    for buckets, want_size in (("auto", (288, 160)), ("square", (224, 224))):
        cfg = TrainConfig(base_model="tiny", frames=9, holdout=0, buckets=buckets)
        (w,) = build_manifest(cfg, [row]).windows[:1]
        assert (w.width, w.height) == want_size
        assert w.crop == pytest.approx(crop_fraction(320 / 180, want_size[0] / want_size[1]), abs=1e-3)
        frames = read_window(w, cfg.height, cfg.width)
        assert frames.shape == (9, want_size[1], want_size[0], 3)
        got = _measured_crop(frames, band)
        if buckets == "auto":
            assert got is not None and got <= w.crop + 0.02, (got, w.crop)  # the red band is still there
        else:
            assert got is None and w.crop > band * 2  # the square crop cut the whole band away


@pytest.mark.slow
def test_bucketed_training_runs_end_to_end_with_one_bucket_per_batch(mixed, tiny_sana_dir, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "run"
    # validation prompts with their own settings: one widescreen at its own seed, frames and cfg
    prompts = tmp_path / "val.toml"
    prompts.write_text('[[prompt]]\nsummary = "wide"\nprompt = "a cat runs"\nseed = 7\nsize = "96x64"\nframes = 5\n'
                       'cfg = 2.5\n\n[[prompt]]\nprompt = "a mouse hides"\n')
    r = run_train("--query", "1=1", "--preset", "tiny", "--no-progress", "--base-model", tiny_sana_dir,
                  "--catalog", str(mixed), "--buckets", "auto", "--frame-buckets", "9,17", "--max-steps", "6",
                  "--validation-every", "3", "--validation-steps", "1", "--holdout", "1", "--output-dir", str(out),
                  "--validation-prompts", str(prompts))
    def shape(path):
        import av

        with av.open(str(path)) as c:
            frames = [f for f in c.decode(video=0)]
        return frames[0].width, frames[0].height, len(frames)

    for step in ("base", "step_000003", "step_000006"):
        d = out / "validation" / step
        assert shape(d / "p0.mp4") == (96, 64, 5)
        assert shape(d / "p1.mp4") == (64, 64, 17)  # the run's size, and its longest frame bucket
        settings = json.loads((d / "prompts.json").read_text())
        assert settings[0] == {"summary": "wide", "prompt": "a cat runs", "seed": 7, "width": 96, "height": 64,
                               "frames": 5, "cfg": 2.5}
        assert settings[1]["seed"] == 69420 and settings[1]["cfg"] == 4.0
    assert "**wide** (seed 7, 96x64, 5 frames, cfg 2.5): a cat runs" in (out / "gallery.md").read_text()
    manifest = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    bucket_of = {}
    for w in manifest:
        name = w["video_path"].rsplit("/", 1)[-1]
        assert w["width"] and w["height"] and f"{w['width']}x{w['height']}x{w['frames']}" == \
            f"{EXPECTED_SIZE[name]}x{w['frames']}"
        bucket_of[w["clip_id"]] = (w["width"], w["height"], w["frames"])
        # cropped by exactly the source's aspect error against its bucket, and never by more than
        # the square crop would have
        (sw, sh), bucket_aspect = SOURCES[name][0], w["width"] / w["height"]
        err = 1 - min(sw / sh / bucket_aspect, bucket_aspect / (sw / sh))
        assert w["crop"] == pytest.approx(err, abs=1e-3) and w["crop"] <= crop_fraction(sw / sh, 1.0) + 1e-9
    assert len(set(bucket_of.values())) >= 3
    steps = defaultdict(set)
    for line in (out / "logs" / "sample_losses.jsonl").read_text().splitlines():
        s = json.loads(line)
        steps[s["step"]].add(bucket_of[s["clip_id"]])
    assert sorted(steps) == [1, 2, 3, 4, 5, 6] and all(len(b) == 1 for b in steps.values()), steps
    assert len(set().union(*steps.values())) >= 2  # the run really trained on more than one bucket
    # the cached latents have each bucket's shape: (C, 1 + (F-1)/4, H/8, W/8)
    from catalog.db import cache_dir

    files = list((cache_dir(mixed) / "train" / "latents").glob("*.safetensors"))
    shapes = {tuple(load_file(f)["latents"].shape[1:]) for f in files}
    want = {(1 + (f - 1) // 4, h // 8, w // 8) for w, h, f in bucket_of.values()}
    assert len(files) == len(manifest) and shapes == want
    assert (out / "pytorch_lora_weights.safetensors").exists() and "trained 6 steps" in r.stdout


@pytest.mark.slow
def test_bucketed_batches_are_the_same_on_one_process_and_two(mixed, tiny_sana_dir, tmp_path):
    """torchrun with 2 CPU processes at batch 1 against 1 process at batch 2, with mixed buckets:
    each step's global batch is one bucket, split across ranks, so the LoRA is the same."""
    import os
    import shutil
    import subprocess
    import sys

    from helpers import assert_same_training, free_port

    common = ["--query", "1=1", "--preset", "tiny", "--no-progress", "--base-model", tiny_sana_dir,
              "--catalog", str(mixed), "--buckets", "auto", "--frame-buckets", "9,17", "--max-steps", "3",
              "--validation-every", "0", "--checkpoint-every", "0", "--holdout", "0"]
    single = tmp_path / "single"
    run_train(*common, "--batch-size", "2", "--output-dir", str(single))
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    port = free_port()
    multi = tmp_path / "multi"
    r = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(port),
                        "-m", "train.cli", *common, "--batch-size", "1", "--output-dir", str(multi)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    bucket_of = {}
    for line in (single / "manifest.jsonl").read_text().splitlines():
        w = json.loads(line)
        bucket_of[w["clip_id"]] = (w["width"], w["height"], w["frames"])
    for run in (single, multi):
        steps = defaultdict(set)
        for line in (run / "logs" / "sample_losses.jsonl").read_text().splitlines():
            s = json.loads(line)
            steps[s["step"]].add(bucket_of[s["clip_id"]])
        assert sorted(steps) == [1, 2, 3] and all(len(b) == 1 for b in steps.values())
    assert_same_training(single, multi)
