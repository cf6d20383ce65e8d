"""`train prune`: depth pruning by block importance on a toy-world run, then healing (issue 23)."""

from __future__ import annotations

import json

import pytest

from helpers import needs
from click.testing import CliRunner

from catalog.assets import assets_dir

pytestmark = [pytest.mark.slow,
              needs((assets_dir() / "toy" / "sana" / "model_index.json").exists(),
                    "needs the toy weights in assets/toy (train build-toy)")]


@pytest.fixture(scope="module")
def night_run(toy_night, tmp_path_factory):
    from helpers import night_copy

    return night_copy(toy_night, tmp_path_factory.mktemp("prune"))


@pytest.fixture(scope="module")
def pruned(night_run):
    """`train prune --drop 1` on the run (4 blocks), healed for 30 steps."""
    from train.cli import main

    r = CliRunner().invoke(main, ["prune", str(night_run), "--drop", "1", "--heal-steps", "30", "--random-draws", "6",
                                  "--no-progress"])
    assert r.exit_code == 0, r.output
    return night_run / "prune" / "drop1"


def test_pruning_the_least_important_block_costs_less_than_a_random_one_and_heals(pruned):
    rec = json.loads((pruned / "pruned.json").read_text())
    rand = [x["eval_loss"] for x in rec["random"]]
    print(f"\nimportance {[round(v, 4) for v in rec['importance']]}; eval loss full {rec['eval_loss_full']:.4f}, "
          f"least important dropped {rec['eval_loss_pruned']:.4f}, random drops {[round(v, 4) for v in rand]}, "
          f"healed {rec['eval_loss_healed']:.4f}")
    assert rec["dropped"] == [min(range(4), key=lambda i: rec["importance"][i])]
    assert rec["eval_loss_pruned"] < sum(rand) / len(rand)
    assert rec["eval_loss_pruned"] > rec["eval_loss_full"]
    recovered = (rec["eval_loss_pruned"] - rec["eval_loss_healed"]) / (rec["eval_loss_pruned"] - rec["eval_loss_full"])
    assert recovered >= 0.5, recovered
    assert (pruned / "importance.png").stat().st_size > 1000


def test_the_pruned_model_loads_and_generates_with_its_healing_lora(pruned):
    import numpy as np
    import torch
    from diffusers import SanaVideoPipeline

    model = pruned / "model"
    pipe = SanaVideoPipeline.from_pretrained(str(model))
    assert len(pipe.transformer.transformer_blocks) == 3 and pipe.transformer.config.num_layers == 3
    assert json.loads((model / "PRUNED").read_text())["from_blocks"] == 4
    heal = pruned / "heal" / "pytorch_lora_weights.safetensors"
    pipe.load_lora_weights(str(heal.parent), weight_name=heal.name)
    pipe.set_progress_bar_config(disable=True)

    def video():
        return np.asarray(pipe(prompt="A grey cat rests alone in the kitchen at night; the camera is still.",
                               height=64, width=64, frames=9, num_inference_steps=4, guidance_scale=3.0,
                               use_resolution_binning=False, output_type="np",
                               generator=torch.Generator().manual_seed(0)).frames)

    healed = video()
    pipe.disable_lora()
    unhealed = video()
    assert healed.shape[1:4] == (9, 64, 64) and np.isfinite(healed).all()
    print(f"\nmean |healed - unhealed| {np.abs(healed - unhealed).mean():.4f}")
    assert np.abs(healed - unhealed).mean() > 0.005  # diffusers applies the healing LoRA to the 3-block model


def test_dropping_every_block_is_a_clear_error(night_run):
    from train.cli import main

    r = CliRunner().invoke(main, ["prune", str(night_run), "--drop", "4", "--heal-steps", "0"])
    assert r.exit_code == 1 and "--drop must be between 1 and 3" in r.output and "Traceback" not in r.output


def test_prune_dry_run_projects_the_real_2b_config(night_run):
    from train.cli import main

    r = CliRunner().invoke(main, ["prune", str(night_run), "--drop", "4", "--dry-run"])
    assert r.exit_code == 0, r.output
    print("\n" + r.output)
    assert "projected for the real 2B at 224x224x81" in r.output
    assert "pruned model: 16 of 20 blocks" in r.output and "healing run: projected GPU peak" in r.output
    assert not (night_run / "prune" / "drop4").exists()  # nothing was pruned
    bad = CliRunner().invoke(main, ["prune", str(night_run), "--drop", "20", "--dry-run"])
    assert bad.exit_code == 1 and "between 1 and 19" in bad.output
