"""`train build-toy` (issue 21, mechanics only): a quick build writes both toy models, and `toy`
loads them by name through `from_pretrained`, for `train` and for `de caption`. The outcome
tests (PSNR, tag F1, a night LoRA) use the shipped full build: tests/train/test_toy_outcomes.py."""

from __future__ import annotations

import shutil

import pytest

from helpers import rows

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def toy_assets(tmp_path_factory):
    from click.testing import CliRunner

    from catalog.assets import assets_dir
    from train.cli import main

    root = tmp_path_factory.mktemp("assets")
    shutil.copytree(assets_dir(), root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("toy"))
    r = CliRunner().invoke(main, ["build-toy", "--out", str(root / "toy"), "--quick"])
    assert r.exit_code == 0, r.output
    assert "VAE PSNR" in r.output and "toy captioner: 40 + 20 + 10 steps" in r.output
    return root


def test_without_the_weights_toy_says_how_to_build_them(tmp_path, monkeypatch):
    from catalog.assets import assets_dir
    from dataengine.caption.models import CaptionModelError, load_captioner
    from train.models import ModelLoadError, load_components

    shutil.copytree(assets_dir(), tmp_path / "a", ignore=shutil.ignore_patterns("toy"))
    monkeypatch.setenv("DE_ASSETS", str(tmp_path / "a"))
    with pytest.raises(ModelLoadError, match="train build-toy"):
        load_components("toy")
    with pytest.raises(CaptionModelError, match="train build-toy"):
        load_captioner("toy", device="cpu")


def test_toy_loads_by_name_and_generates_and_captions(toy_assets, monkeypatch, train_catalog, tmp_path):
    import numpy as np
    import torch

    from dataengine.caption.models import load_captioner
    from train.models import load_components

    monkeypatch.setenv("DE_ASSETS", str(toy_assets))
    c = load_components("toy")
    assert c.name == "toy-sana-video" and not c.is_random and c.weights_id.startswith("local-weights:")
    from train.toy import Z_DIM

    assert c.vae.config.scale_factor_spatial == 4 and len(c.vae.config.latents_mean) == Z_DIM
    assert c.vae.config.temperal_downsample == [False, False]  # each frame coded on its own
    pipe = c.pipeline()
    pipe.set_progress_bar_config(disable=True)
    frames = pipe(prompt="A grey cat chases a small brown mouse in the kitchen at night; the camera is still.",
                  height=64, width=64, frames=9, num_inference_steps=2, guidance_scale=3.0,
                  use_resolution_binning=False, output_type="np",
                  generator=torch.Generator().manual_seed(0)).frames
    assert np.asarray(frames).shape == (1, 9, 64, 64, 3)
    cap = load_captioner("toy", device="cpu")
    assert cap.name == "toy-qwen2-vl" and not cap.is_random
    # de caption --model toy writes a labelling under the toy's name, not marked random
    from click.testing import CliRunner

    from dataengine.cli import main

    cat = tmp_path / "c.duckdb"
    shutil.copy(train_catalog, cat)
    r = CliRunner().invoke(main, ["caption", "--catalog", str(cat), "--model", "toy", "--limit", "2",
                                  "--max-frames", "4", "--no-progress"])
    assert r.exit_code in (0, 1), r.output  # a quick build may not answer well; it must answer
    got = rows(cat, "SELECT captioner, is_random_model, status FROM captions")
    assert len(got) == 2 and all(g[0] == "toy-qwen2-vl" and g[1] is False for g in got)


def test_vae_from_retrains_only_the_transformer_on_that_vae(toy_assets, tmp_path):
    """`--vae-from` keeps the given VAE bit for bit (its weights and latent statistics) and trains
    a new transformer; a folder without a VAE is a one-line error."""
    from click.testing import CliRunner
    from safetensors.torch import load_file

    from train.cli import main

    src = toy_assets / "toy" / "sana"
    r = CliRunner().invoke(main, ["build-toy", "--out", str(tmp_path), "--part", "sana", "--quick",
                                  "--vae-from", str(src)])
    assert r.exit_code == 0, r.output
    assert f"vae: reused from {src}" in r.output and "under the class prompt" in r.output
    old, new = (load_file(next((d / "vae").glob("*.safetensors"))) for d in (src, tmp_path / "sana"))
    assert old.keys() == new.keys() and all((old[k] == new[k]).all() for k in old)
    import json

    cfgs = [json.loads((d / "vae" / "config.json").read_text()) for d in (src, tmp_path / "sana")]
    assert cfgs[0]["latents_mean"] == cfgs[1]["latents_mean"] and cfgs[0]["latents_std"] == cfgs[1]["latents_std"]
    assert "_name_or_path" not in cfgs[1] and not (tmp_path / "qwen2-vl").exists()

    r = CliRunner().invoke(main, ["build-toy", "--out", str(tmp_path / "x"), "--vae-from", str(tmp_path / "nope")])
    assert r.exit_code == 1 and "no vae/config.json" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "x").exists()
    # a VAE to reuse with only the captioner to build would be silently ignored: an error instead
    r = CliRunner().invoke(main, ["build-toy", "--out", str(tmp_path / "y"), "--part", "captioner",
                                  "--vae-from", str(src)])
    assert r.exit_code == 1 and "add --part sana" in r.output and not (tmp_path / "y").exists()


def test_a_failing_side_build_fails_the_build_and_its_output_is_shown(tmp_path, monkeypatch):
    """The captioner builds in a side process; if it dies, `build-toy` still finishes the toy
    SANA-Video, shows the side process's last words, and exits 1 naming the captioner."""
    import sys

    from click.testing import CliRunner

    import train.cli as cli
    import train.toy as toy

    monkeypatch.setattr(toy, "side_build", lambda out, seed, quick, echo: toy.relayed(
        [sys.executable, "-c", "print('captioner: out of memory (planted)'); raise SystemExit(3)"], echo))
    r = CliRunner().invoke(cli.main, ["build-toy", "--out", str(tmp_path), "--quick"])
    assert r.exit_code == 1, r.output
    assert "captioner: out of memory (planted)" in r.output
    assert "the captioner's build failed (exit 3)" in r.output and "Traceback" not in r.output
    assert (tmp_path / "sana" / "model_index.json").exists()  # the other part is not lost
