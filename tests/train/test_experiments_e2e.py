"""train eval / sweep-steps / compress on a finished tiny run: the files and values reports use."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import duckdb
import pytest
import torch

pytestmark = pytest.mark.slow  # eval, sweep-steps and compress on a trained tiny run

CLI = [sys.executable, "-m", "train.cli"]


@pytest.fixture()
def run_copy(trained_run, tmp_path):
    d = tmp_path / trained_run.name
    shutil.copytree(trained_run, d)
    return d


def test_compress_at_full_rank_reproduces_the_lora(trained_run):
    from safetensors.torch import load_file

    from train.experiments.compress import delta_weights, truncate

    sd = load_file(trained_run / "pytorch_lora_weights.safetensors")
    meta = json.loads((trained_run / "lora_metadata.json").read_text())
    r, alpha = meta["rank"], meta["alpha"]
    full, st = truncate(sd, r, alpha, r)
    assert st["retained_energy"] == pytest.approx(1.0)
    want, got = delta_weights(sd, r, alpha), delta_weights(full, r, r)
    assert want.keys() == got.keys()
    for k in want:
        assert torch.allclose(want[k], got[k], atol=1e-6), k
    half, st2 = truncate(sd, r, alpha, r // 2)
    assert 0 < st2["retained_energy"] < 1
    assert all(v.shape[0] == r // 2 for k, v in half.items() if ".lora_A." in k)


def test_compress_command_writes_valid_diffusers_loras(run_copy, tiny_sana_dir):
    r = subprocess.run(CLI + ["compress", str(run_copy), "--ranks", "4,2", "--steps", "2", "--limit-prompts", "1",
                              "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((run_copy / "compress" / "metrics.json").read_text())
    v = {x["variant"]: x for x in res["variants"]}
    assert set(v) == {"full", "rank4", "rank2"}
    assert v["rank4"]["retained_energy"] == pytest.approx(1.0) and v["rank2"]["retained_energy"] < 1
    assert v["rank4"]["eval_loss"] == pytest.approx(v["full"]["eval_loss"], rel=1e-4)  # same weights, same loss
    assert v["rank4"]["psnr_vs_full"] > 40 and v["rank2"]["file_bytes"] < v["full"]["file_bytes"]
    assert (run_copy / "compress" / "rank_tradeoff.png").exists()
    from train.models import build_tiny

    pipe = build_tiny().pipeline()
    pipe.load_lora_weights(str(run_copy / "compress" / "rank2"))  # loads with the stock pipeline
    assert pipe.transformer.peft_config[next(iter(pipe.transformer.peft_config))].r == 2


def test_sweep_steps_reports_fidelity_against_the_reference(run_copy):
    r = subprocess.run(CLI + ["sweep-steps", str(run_copy), "--steps-list", "2,3", "--cfg-list", "4", "--limit-prompts", "1",
                              "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((run_copy / "sweep_steps" / "metrics.json").read_text())
    s = {x["steps"]: x for x in res["summary"]}
    assert res["reference_steps"] == 3
    assert s[3]["ssim"] == pytest.approx(1.0) and s[3]["psnr"] == float("inf")
    assert s[2]["ssim"] < 1.0 and s[2]["seconds_per_video"] > 0
    v = res["videos"][0]
    assert len(v["psnr_per_frame"]) == 9 and len(v["ssim_per_frame"]) == 9
    assert (run_copy / "sweep_steps" / "quality_vs_time.png").exists()
    assert "| 4 | 2 |" in (run_copy / "sweep_steps" / "report.md").read_text()


def test_eval_video_text_video_with_tiny_captioner(run_copy, train_catalog, tiny_vlm_dir, tmp_path):
    # give two clips real source labels so tag metrics have something to compare with
    cat = tmp_path / "eval.duckdb"
    shutil.copy(train_catalog, cat)
    con = duckdb.connect(str(cat))
    ids = [r[0] for r in con.execute("SELECT clip_id FROM clips ORDER BY clip_id LIMIT 2").fetchall()]
    for cid in ids:
        con.execute("INSERT INTO captions (clip_id, captioner, prompt_version, status, caption, tag_list, fields) "
                    "VALUES (?, 'human', 'v1', 'ok', 'a cat chases a mouse', ['chase', 'kitchen'], '{}')", [cid])
    from catalog import labels

    labels.refresh(con, ids)  # as every caption writer does
    con.close()
    r = subprocess.run(CLI + ["eval", str(run_copy), "--query", "caption IS NOT NULL", "--catalog", str(cat),
                              "--captioner", tiny_vlm_dir, "--steps", "2",
                              "--caption-max-frames", "4", "--caption-max-pixels", "12544", "--no-progress"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((run_copy / "eval" / "metrics.json").read_text())
    assert [c["clip_id"] for c in res["clips"]] == ids
    c = res["clips"][0]
    assert c["source_tags"] == ["chase", "kitchen"]
    for side in ("base", "lora"):
        assert 0 <= c[side]["palette_distance"] <= 1
        assert {"saturation", "edge_density", "flicker", "motion_score"} <= set(c[side])
        # re-captions are schema-constrained: even the random captioner's answers parse and are scored
        assert c[side]["recaption_ok"] and not c[side]["parse_error"]
        assert 0 <= c[side]["jaccard"] <= 1
    assert res["random_models"] == {"base": True, "captioner": True}
    assert res["eval_loss"]["base"] > 0 and res["eval_loss"]["lora"] > 0
    assert set(res["eval_loss"]["lora_by_sigma"]) == {f"{s / 10:.1f}" for s in range(1, 10)}
    for cid in ids:
        assert (run_copy / "eval" / "strips" / f"{cid}.gif").exists()
    md = (run_copy / "eval" / "report.md").read_text()
    from helpers import assert_well_formed

    assert_well_formed(md)  # header, delimiter and rows have as many cells
    assert "FVD: not computed" in md and "Random tiny models" in md and "## Tag agreement" in md
    assert (run_copy / "eval" / "report.html").exists()
