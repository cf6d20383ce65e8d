"""`de export --format`: each layout read back the way its tool documents."""

from __future__ import annotations

import io
import json
import shutil
import tomllib
from pathlib import Path

import pytest

from dataengine.cli import main
from helpers import rows


@pytest.fixture()
def cat(train_catalog, tmp_path):
    from helpers import caption_copy, rows as _rows

    n = _rows(train_catalog, "SELECT count(*) FROM clips")[0][0]
    p = tmp_path / "c.duckdb"
    # every clip but the last (it stays uncaptioned)
    caption_copy(train_catalog, p, [(f"a grey cat chases a mouse, scene {i}", ["chase", "kitchen"])
                                    for i in range(n - 1)])
    return p


def export(runner, cat, out, *args):
    return runner.invoke(main, ["export", str(out), "--catalog", str(cat), "--no-progress", "--max-side", "160", *args])


def frames_of(data: bytes | Path) -> int:
    import av

    src = io.BytesIO(data) if isinstance(data, bytes) else str(data)
    with av.open(src) as f:
        return sum(1 for _ in f.decode(video=0))


def captioned(cat):
    return dict(rows(cat, "SELECT clip_id, caption FROM clips WHERE caption IS NOT NULL"))


def test_kohya_caption_txt_beside_each_video(runner, cat, tmp_path):
    out = tmp_path / "kohya"
    r = export(runner, cat, out, "--format", "kohya", "--query", "video_path LIKE '%.mp4'")
    want = dict(rows(cat, "SELECT clip_id, caption FROM clips WHERE caption IS NOT NULL AND video_path LIKE '%.mp4'"))
    assert f"exported {len(want)} clips" in r.output
    # kohya / ai-toolkit / SimpleTuner: every media file's caption is the same name with .txt
    videos = sorted(out.glob("*.mp4"))
    assert {v.stem for v in videos} == set(want)
    for v in videos:
        assert (out / f"{v.stem}.txt").read_text().strip() == want[v.stem]
        assert frames_of(v) > 0
    # the uncaptioned clip (if selected) is reported, not exported with an empty caption
    n_sel = rows(cat, "SELECT count(*) FROM clips WHERE video_path LIKE '%.mp4'")[0][0]
    assert (r.exit_code == 1) == (n_sel > len(want))


def test_musubi_jsonl_and_dataset_toml(runner, cat, tmp_path):
    out = tmp_path / "musubi"
    r = export(runner, cat, out, "--format", "musubi", "--fps", "16")
    assert "exported" in r.output
    cfg = tomllib.loads((out / "dataset.toml").read_text())
    ds = cfg["datasets"][0]
    jsonl = Path(ds["video_jsonl_file"])
    assert jsonl.is_absolute() and jsonl.exists() and Path(ds["cache_directory"]).is_absolute()
    w, h = cfg["general"]["resolution"]
    assert w % 16 == 0 and h % 16 == 0 and w > 0 and h > 0
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    want = captioned(cat)
    assert len(lines) == len(want)
    shortest = min(frames_of(Path(x["video_path"])) for x in lines)
    for x in lines:
        assert Path(x["video_path"]).exists() and x["caption"] in want.values()
    assert all(t % 4 == 1 and t <= shortest for t in ds["target_frames"])
    assert ds["frame_extraction"] == "head"


def test_webdataset_shards_read_by_webdataset(runner, cat, tmp_path):
    import webdataset as wds

    out = tmp_path / "wds"
    r = export(runner, cat, out, "--format", "webdataset", "--shard-size", "4")
    want = captioned(cat)
    shards = sorted(out.glob("*.tar"))
    assert len(shards) == -(-len(want) // 4) and not list(out.glob("*.tmp"))
    seen = {}
    for sample in wds.WebDataset([str(s) for s in shards], shardshuffle=False):
        meta = json.loads(sample["json"])
        assert sample["txt"].decode() == want[meta["clip_id"]] == meta["caption"]
        assert sample["__key__"] == meta["key"] and len(meta["key"]) == 9
        assert frames_of(sample["mp4"]) > 0
        seen[meta["clip_id"]] = sample["__key__"]
    assert set(seen) == set(want), r.output


def test_parquet_rows_and_template_captions(runner, cat, tmp_path, trained_run):
    import pyarrow.parquet as pq

    out = tmp_path / "pq"
    r = export(runner, cat, out, "--format", "parquet")
    assert r.exit_code == 0, r.output
    t = pq.read_table(out / "clips.parquet").to_pylist()
    n = rows(cat, "SELECT count(*) FROM clips")[0][0]
    assert len(t) == n and {"clip_id", "video_path", "start_s", "end_s", "caption_text"} <= set(t[0])
    assert sum(1 for x in t if x["caption_text"] is None) == 1  # the uncaptioned clip, kept with no text
    # --template RUN: the text that run trained on (tiny preset: the class prompt)
    out2 = tmp_path / "pq2"
    r = export(runner, cat, out2, "--format", "parquet", "--template", str(trained_run))
    assert r.exit_code == 0, r.output
    cfg = json.loads((trained_run / "config.json").read_text())
    from train.prompts import class_prompt

    texts = {x["caption_text"] for x in pq.read_table(out2 / "clips.parquet").to_pylist()}
    assert cfg["prompt_template"] == "class" and texts == {class_prompt(cfg.get("class_prompt"))}
    out3 = tmp_path / "k"
    r = export(runner, cat, out3, "--format", "kohya", "--template", "{caption} [{tags}]", "--query",
               "caption IS NOT NULL AND video_path LIKE '%.webm'")
    assert r.exit_code == 0, r.output
    for txt in out3.glob("*.txt"):
        assert txt.read_text().strip().endswith("[chase,kitchen]") or txt.read_text().strip().endswith("[chase, kitchen]")
    r = export(runner, cat, tmp_path / "bad", "--format", "kohya", "--template", "{nosuchfield}")
    assert r.exit_code == 1 and "--template" in r.output


# --- issue 20: temp files never follow a planted link; a dangling OUT_DIR is named --------------

@pytest.mark.parametrize("fmt", ["clips", "kohya", "musubi", "webdataset", "parquet"])
def test_links_planted_at_temp_names_are_never_written_through(runner, cat, tmp_path, fmt):
    """Every name an earlier version wrote its temp files to, and the final names' neighbours,
    are links to a victim file: the export writes its own files and the victim is unchanged."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / f"out-{fmt}"
    out.mkdir()
    clip_dir = out / "videos" if fmt == "musubi" else out
    clip_dir.mkdir(exist_ok=True)
    ids = [r[0] for r in rows(cat, "SELECT clip_id FROM clips")]
    planted = ["index.jsonl.tmp", "clips.parquet.tmp", "00000.tar.tmp", "dataset.toml.tmp", "metadata.jsonl.tmp"]
    planted += [f"{c}.tmp.mp4" for c in ids] + [f"{c}.txt.tmp" for c in ids]
    for name in planted:
        for d in {out, clip_dir}:
            (d / name).symlink_to(victim)
    r = export(runner, cat, out, "--format", fmt)
    assert r.exit_code in (0, 1), r.output  # (the uncaptioned clip is reported for caption formats)
    assert victim.read_text() == "precious"
    assert "Traceback" not in r.output
    left = [p.name for p in out.rglob("*") if p.name.endswith(".tmp") and not p.is_symlink()]
    assert left == []  # no temp file of ours is left behind
    written = {"clips": "index.jsonl", "kohya": "index.jsonl", "musubi": "metadata.jsonl",
               "webdataset": "00000.tar", "parquet": "clips.parquet"}[fmt]
    assert (out / written).is_file() and not (out / written).is_symlink()


def test_a_dangling_link_as_the_export_folder_is_named(runner, cat, tmp_path):
    out = tmp_path / "gone"
    out.symlink_to(tmp_path / "missing-target")
    r = export(runner, cat, out)
    assert r.exit_code == 1 and "is a symlink to" in r.output and "does not exist" in r.output, r.output
    assert "File exists" not in r.output


def test_exit_codes_per_format_are_what_docs_query_md_says(runner, cat, tmp_path):
    """docs/query.md's format table says, per format, what happens to a clip with no caption text
    (`cat` leaves its last clip uncaptioned); each format exits as its row says."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "query.md").read_text()
    rows = re.findall(r"^\| `(\w+)`(?: \(default\))? \|.*\| (kept|left out) \(exit (\d)\) \|$", doc, re.M)
    assert {r[0] for r in rows} == {"clips", "kohya", "musubi", "webdataset", "parquet"}, rows
    for fmt, fate, code in rows:
        r = export(runner, cat, tmp_path / fmt, "--format", fmt)
        assert r.exit_code == int(code), (fmt, r.output)
        assert ("failed 1" in r.output or "no caption" in r.output) == (fate == "left out"), (fmt, r.output)
