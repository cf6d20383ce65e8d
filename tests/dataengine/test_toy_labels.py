"""Toy and random models say so, everywhere (issue 35.4): the catalog, `de captions list`, `de serve`,
exports (refused unless asked), and a warning with counts when the clips are not the toy world's."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from dataengine.cli import main
from helpers import needs, rows
from catalog.assets import assets_dir

pytestmark = needs((assets_dir() / "toy" / "qwen2-vl" / "model.safetensors").exists(),
                   "needs the toy captioner in assets/toy")


@pytest.fixture(scope="module")
def toy_labelled(tmp_path_factory):
    """Two toy-world videos and one sample cartoon de synth wrote outside the world, captioned by the toy."""
    d = tmp_path_factory.mktemp("toylabels")
    r = CliRunner()
    assert r.invoke(main, ["synth", str(d / "world"), "--world", "2", "--scenes", "2", "--scene-seconds", "1.5"]).exit_code == 0
    assert r.invoke(main, ["synth", str(d / "other"), "--seconds", "4"]).exit_code == 0
    cat = d / "c.duckdb"
    assert r.invoke(main, ["ingest", str(d / "world"), str(d / "other"), "--catalog", str(cat),
                           "--no-progress"]).exit_code == 0
    out = r.invoke(main, ["caption", "--model", "toy", "--catalog", str(cat), "--no-progress"])
    assert out.exit_code == 0, out.output
    return {"dir": d, "catalog": cat, "caption_output": out.output}


def test_the_toy_captioner_warns_once_with_counts_on_other_footage(toy_labelled):
    out = toy_labelled["caption_output"]
    other = rows(toy_labelled["catalog"], "SELECT count(*) FROM clips WHERE video_path LIKE '%/other/%'")[0][0]
    total = rows(toy_labelled["catalog"], "SELECT count(*) FROM clips")[0][0]
    assert other and out.count("warning:") == 1
    assert f"{other} of {total} clips come from videos that `de synth --world` did not write" in out


def test_the_catalog_and_captions_list_say_toy(toy_labelled):
    kinds = rows(toy_labelled["catalog"], "SELECT DISTINCT model_kind FROM captions")
    assert kinds == [("toy",)]
    r = CliRunner().invoke(main, ["captions", "list", "--catalog", str(toy_labelled["catalog"])])
    assert "[toy model: it knows only the toy world" in r.output


@pytest.mark.parametrize("fmt", ["clips", "kohya", "parquet"])
def test_exports_refuse_toy_labels_unless_asked_and_then_say_so(toy_labelled, tmp_path, fmt):
    cat = toy_labelled["catalog"]
    r = CliRunner().invoke(main, ["export", str(tmp_path / "no"), "--catalog", str(cat), "--format", fmt,
                                  "--no-progress", "--max-side", "96"])
    assert r.exit_code == 1 and "toy model" in r.output and "--allow-toy-labels" in r.output, r.output
    assert not (tmp_path / "no").exists() or not any((tmp_path / "no").iterdir())
    r = CliRunner().invoke(main, ["export", str(tmp_path / "yes"), "--catalog", str(cat), "--format", fmt,
                                  "--no-progress", "--max-side", "96", "--allow-toy-labels"])
    assert r.exit_code == 0, r.output
    if fmt == "parquet":
        import pyarrow.parquet as pq

        assert set(pq.read_table(tmp_path / "yes" / "clips.parquet").column("label_model_kind").to_pylist()) == {"toy"}
    elif fmt == "clips":
        recs = [json.loads(x) for x in (tmp_path / "yes" / "index.jsonl").read_text().splitlines() if x.strip()]
        assert recs and {x["label_model_kind"] for x in recs} == {"toy"}


def test_de_serve_shows_a_toy_badge_on_the_grid_and_the_clip_page(toy_labelled, tmp_path):
    from starlette.testclient import TestClient

    from dataengine.serve.app import Browser
    from dataengine.serve.web import create_app

    cat = tmp_path / "c.duckdb"
    shutil.copy(toy_labelled["catalog"], cat)
    c = TestClient(create_app(Browser(cat, None, summary_wait=None, read_linger=0)), base_url="http://127.0.0.1:8000")
    grid = c.get("/").text
    assert 'class="badge toy"' in grid
    cid = grid.split('href="/clip/')[1].split('"')[0]
    page = c.get(f"/clip/{cid}").text
    assert 'id="label-kind"' in page and "toy model" in page


def test_training_the_toy_on_other_footage_warns(toy_labelled):
    from helpers import run_train

    r = run_train("--preset", "toy", "--query", "1=1", "--catalog", str(toy_labelled["catalog"]), "--dry-run")
    assert "come from videos that `de synth --world` did not write" in r.stderr
