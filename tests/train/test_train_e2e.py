"""train end to end on a tiny SANA-Video saved to disk and loaded by path (the real loader)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import duckdb
import pytest
from click.testing import CliRunner

from helpers import assert_same_training, free_port, metrics, rows, run_train

TINY = ["--preset", "tiny", "--no-progress"]


@pytest.mark.slow
def test_train_from_saved_tiny_model_writes_the_output_contract(tmp_path, train_catalog, tiny_sana_dir, trained_run):
    out = trained_run  # `train --query 1=1 --preset tiny --base-model <saved dir>` (see conftest)
    for f in ("pytorch_lora_weights.safetensors", "lora_metadata.json", "config.json", "manifest.jsonl",
              "metrics.jsonl", "gallery.md", "gallery.html"):
        assert (out / f).exists(), f
    from safetensors.torch import load_file

    sd = load_file(out / "pytorch_lora_weights.safetensors")
    assert sd and all(k.startswith("transformer.") for k in sd)
    assert any(".attn1.to_out.0.lora_A" in k for k in sd) and any(".attn2.to_out.0.lora_B" in k for k in sd)
    assert all("_orig_mod" not in k and "module." not in k for k in sd)
    assert any(v.abs().sum() > 0 for k, v in sd.items() if "lora_B" in k)  # it trained
    meta = json.loads((out / "lora_metadata.json").read_text())
    assert meta["rank"] == 4 and meta["is_random_base"] is True and meta["steps"] == 4
    m = metrics(out)
    steps = [x["step"] for x in m if "loss" in x]
    assert steps == [1, 2, 3, 4]
    assert all(k in m[1] for k in ("loss", "grad_norm", "lr", "loss_by_sigma", "steps_per_s", "peak_mem_mb"))
    assert [x["step"] for x in m if "eval_loss" in x] == [0, 2, 4]
    gallery = (out / "gallery.md").read_text()
    assert "| Base |" in gallery and "| 2 |" in gallery and "| 4 |" in gallery
    for step in ("base", "step_000002", "step_000004"):
        for i in range(5):
            assert (out / "validation" / step / f"p{i}.gif").exists() and (out / "validation" / step / f"p{i}.mp4").exists()
    manifest = [json.loads(l) for l in (out / "manifest.jsonl").read_text().splitlines()]
    assert {w["role"] for w in manifest} == {"train", "holdout"}
    assert all(w["prompt"].startswith("A vintage slapstick 2D cartoon") for w in manifest)
    con = duckdb.connect(str(train_catalog), read_only=True)
    status, counts = con.execute("SELECT status, counts FROM runs WHERE command = 'train' AND params LIKE ?",
                                 [f"%{out}%"]).fetchone()
    n_clips = con.execute("SELECT count(DISTINCT clip_id) FROM run_clips WHERE run_id = ?",
                          [json.loads((out / "run.json").read_text())["run_id"]]).fetchone()[0]
    con.close()
    assert status == "ok" and json.loads(counts)["steps"] == 4 and n_clips == len({w["clip_id"] for w in manifest})

    # the LoRA loads with the stock pipeline and changes its output
    import torch

    from train.models import build_tiny

    def gen(pipe):
        return pipe(prompt="a cat", negative_prompt="", num_inference_steps=2, height=64, width=64, frames=9,
                    generator=torch.Generator().manual_seed(0), use_resolution_binning=False, output_type="np").frames[0]

    base = build_tiny().pipeline()
    ref = gen(base)
    base.load_lora_weights(str(out))
    assert abs(gen(base) - ref).max() > 1e-6

    # train generate writes a video with the LoRA
    r = subprocess.run([sys.executable, "-m", "train.cli", "generate", "--lora", str(out), "--prompt", "a cat",
                        "--steps", "2", "--base-model", tiny_sana_dir, "--output", str(tmp_path / "g.mp4")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    from dataengine.media import read_video

    v = read_video(tmp_path / "g.mp4")
    assert v.shape == (9, 64, 64, 3) and (tmp_path / "g.gif").exists()


@pytest.mark.slow
def test_resume_after_kill_reproduces_the_uninterrupted_losses(tmp_path, train_catalog, tiny_sana_dir):
    common = ["--query", "1=1", *TINY, "--base-model", tiny_sana_dir, "--catalog", str(train_catalog),
              "--validation-every", "0", "--checkpoint-every", "2", "--max-steps", "5", "--lora-dropout", "0.1",
              "--caption-dropout", "0.3"]
    a = tmp_path / "a"
    ra = run_train(*common, "--output-dir", str(a), "--log-every", "2")
    # no terminal here: log lines every 2 steps and at the last, with loss, lr, steps/s and ETA
    logged = re.findall(r"^step (\d+)/5  loss (\S+)  lr (\S+)  ([\d.]+) steps/s  ETA (\S+)$", ra.stdout, re.M)
    assert [int(x[0]) for x in logged] == [2, 4, 5], ra.stdout
    la = {x["step"]: x["loss"] for x in metrics(a) if "loss" in x}
    assert all(abs(float(x[1]) - la[int(x[0])]) < 1e-4 and float(x[3]) > 0 for x in logged)
    assert all(float(x[3]) < 200 for x in logged), logged  # the step's own time (it printed ~4,700 steps/s)
    assert logged[-1][4] == "0s"
    b = tmp_path / "b"
    killed = run_train(*common, "--output-dir", str(b), env={"DE_FAULT_KILL_AT_STEP": "3"}, check=False)
    assert killed.returncode == -9
    assert (b / "checkpoints" / "step_000002").exists() and not (b / "pytorch_lora_weights.safetensors").exists()
    rb = run_train("--resume", "latest", "--output-dir", str(b), "--no-progress")
    assert re.search(r"resumed from step 2 \(checkpoint \S*step_000002\)", rb.stderr), rb.stderr
    la = [(x["step"], x["loss"]) for x in metrics(a) if "loss" in x]
    lb = [(x["step"], x["loss"]) for x in metrics(b) if "loss" in x]
    assert [s for s, _ in lb] == [1, 2, 3, 4, 5]  # the step logged after the checkpoint was replaced
    assert la == lb
    from safetensors.torch import load_file

    wa, wb = load_file(a / "pytorch_lora_weights.safetensors"), load_file(b / "pytorch_lora_weights.safetensors")
    assert all((wa[k] == wb[k]).all() for k in wa)


def test_errors_before_any_model_loads(tmp_path, train_catalog):
    from train.cli import main

    runner = CliRunner()
    r = runner.invoke(main, ["--query", "tags LIKE '%chase%'", "--catalog", str(train_catalog), "--dry-run"])
    assert r.exit_code == 1 and "matched no clips" in r.output  # nothing is captioned in this catalog
    r = runner.invoke(main, ["--query", "1=1; DROP TABLE videos", "--catalog", str(train_catalog)])
    assert r.exit_code == 1 and "Error:" in r.output
    r = runner.invoke(main, ["--query", "1=1", "--catalog", str(train_catalog), "--frames", "80"])
    assert r.exit_code == 1 and "1 + 4k" in r.output
    r = runner.invoke(main, ["--query", "1=1", "--catalog", str(train_catalog), "--dry-run", "--preset", "tiny",
                             "--output-dir", str(tmp_path / "x")])
    assert r.exit_code == 0 and "windows" in r.output and "dry run" in r.output
    assert not (tmp_path / "x").exists()
    r = runner.invoke(main, ["--query", "1=1", "--catalog", str(train_catalog), "--dry-run"])
    assert r.exit_code == 1 and "long enough for 81 frames" in r.output
    r = runner.invoke(main, ["--query", "1=1", "--catalog", str(train_catalog), "--prompt-template", "caption",
                             "--preset", "tiny", "--dry-run"])
    assert r.exit_code == 1 and "caption it first" in r.output
    r = runner.invoke(main, ["--query", "1=1", "--catalog", str(train_catalog), "--captioner", "nobody",
                             "--preset", "tiny", "--dry-run"])
    assert r.exit_code == 1 and "no captions by 'nobody'" in r.output


def test_existing_run_folder_is_never_overwritten(tmp_path, train_catalog):
    from train.cli import main

    out = tmp_path / "taken"
    out.mkdir()
    (out / "precious.txt").write_text("x")
    r = CliRunner().invoke(main, ["--query", "1=1", "--catalog", str(train_catalog), "--preset", "tiny",
                                  "--output-dir", str(out)])
    assert r.exit_code == 1 and "--resume latest" in r.output
    assert (out / "precious.txt").read_text() == "x"


def test_nonfinite_losses_are_skipped_then_abort(tmp_path, train_catalog, monkeypatch):
    import torch

    from train import flow
    from train.run import RunError, start_training

    real = flow.per_sample_loss
    calls = {"n": 0}

    def flaky(pred, tgt):
        calls["n"] += 1
        out = real(pred, tgt)
        return out * float("nan") if calls["n"] > 1 else out  # first step fine, then NaN forever

    monkeypatch.setattr(flow, "per_sample_loss", flaky)
    out = tmp_path / "nan"
    with pytest.raises(RunError, match="non-finite losses in a row"):
        start_training(query="1=1", preset="tiny", overrides={"catalog": str(train_catalog), "validation_every": 0,
                                                              "max_steps": 20, "checkpoint_every": 0},
                       output_dir=str(out), resume=None, dry_run=False, progress=False, echo=lambda *a, **k: None)
    m = metrics(out)
    assert [x["step"] for x in m if "loss" in x] == [1]
    assert sum(1 for x in m if x.get("nonfinite")) == 10
    assert torch.isfinite(torch.tensor([x["loss"] for x in m if "loss" in x])).all()


@pytest.mark.slow
def test_torchrun_two_cpu_processes_ddp(tmp_path, train_catalog, tiny_sana_dir):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    out = tmp_path / "ddp"
    cat = tmp_path / "fresh.duckdb"  # a catalog of its own, so its latent cache starts empty
    shutil.copy(train_catalog, cat)
    r = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", "29517", "-m", "train.cli",
                        "--query", "1=1", *TINY, "--base-model", tiny_sana_dir, "--catalog", str(cat),
                        "--max-steps", "2", "--validation-every", "0", "--checkpoint-every", "0",
                        "--output-dir", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("LoRA:") == 1  # rank 0 alone reports and writes
    assert list(out.glob("*.safetensors")) == [out / "pytorch_lora_weights.safetensors"]
    m = metrics(out)
    assert [x["step"] for x in m if "loss" in x] == [1, 2]
    # both ranks encoded their share of the held-out windows before step 1, then the windows their
    # own batches used; no window was encoded twice, and no more than 2 steps x 2 ranks x batch were
    st = [json.loads((out / "logs" / f"cache_rank{k}.json").read_text()) for k in (0, 1)]
    keys = [set(s["latents_encoded_keys"]) for s in st]
    assert all(keys) and not keys[0] & keys[1]
    man = [json.loads(l) for l in open(out / "manifest.jsonl") if l.strip()]
    held = sum(1 for w in man if w.get("role") == "holdout")
    batch = json.loads((out / "config.json").read_text())["batch_size"]
    assert st[0]["latents_total"] == held
    assert held < len(keys[0] | keys[1]) <= held + 2 * 2 * batch
    assert st[0]["text_encoded"] > 0 and st[1]["text_encoded"] > 0
    # per-clip losses: both ranks' samples gathered to rank 0 (2 steps x 2 ranks x the tiny batch)
    logged = [json.loads(l) for l in open(out / "logs" / "sample_losses.jsonl") if l.strip()]
    per_rank = json.loads((out / "config.json").read_text())["batch_size"]
    assert len(logged) == 2 * 2 * per_rank
    run_id = json.loads((out / "run.json").read_text())["run_id"]
    assert rows(cat, "SELECT sum(samples) FROM clip_losses WHERE run_id = ?", [run_id])[0][0] == len(logged)


@pytest.mark.slow
def test_two_node_torchrun_matches_one_process_with_the_same_global_batch(tmp_path, train_catalog, tiny_sana_dir):
    """Two "nodes" on localhost (torchrun --nnodes 2, static rendezvous on 127.0.0.1, gloo on CPU),
    one process each at batch 1, against one process at batch 2: the same LoRA after 3 steps."""
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    common = ["--query", "1=1", *TINY, "--base-model", tiny_sana_dir, "--catalog", str(train_catalog),
              "--max-steps", "3", "--validation-every", "0", "--checkpoint-every", "0", "--caption-dropout", "0.5"]
    single = tmp_path / "single"
    run_train(*common, "--batch-size", "2", "--output-dir", str(single))
    port = free_port()
    multi = tmp_path / "multi"
    procs = [subprocess.Popen([torchrun, "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(r),
                               "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "train.cli", *common,
                               "--batch-size", "1", "--output-dir", str(multi)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, o[-2000:] + e[-3000:]
    assert sum(o.count("LoRA:") for o, _ in outs) == 1  # node 0's rank 0 alone writes
    assert_same_training(single, multi)
