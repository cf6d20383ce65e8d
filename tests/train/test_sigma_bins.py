"""Loss by noise level on the toy models: a LoRA trained only on high-noise sigmas lowers the
held-out loss at high sigma and leaves the low-sigma loss where the base had it."""

from __future__ import annotations

import json

import pytest

from catalog.assets import assets_dir
from helpers import needs

pytestmark = [pytest.mark.slow,
              needs((assets_dir() / "toy" / "sana" / "model_index.json").exists(),
                    "needs the toy weights in assets/toy (train build-toy)")]


def by_sigma_change(toy_night, tmp_path, **range_) -> dict[float, float]:
    """Train the toy night LoRA (the toy_night recipe) with the given sigma range; the held-out
    loss per sigma at the last validation minus the base's (step 0). The validation videos are
    sampled in 2 steps: only the eval loss is read here."""
    from train.run import start_training

    out = tmp_path / "run"
    rc = start_training(query="time_of_day = 'night'", preset="toy",
                        overrides={"catalog": str(toy_night.parent / "c.duckdb"), "max_steps": 60,
                                   "validation_every": 60, "validation_steps": 2, **range_},
                        output_dir=str(out), resume=None, dry_run=False, progress=False, echo=lambda *a, **k: None)
    assert rc == 0
    evals = [m for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
             if "eval_loss_by_sigma" in m]
    assert [m["step"] for m in evals] == [0, 60], [m["step"] for m in evals]
    base, last = evals[0]["eval_loss_by_sigma"], evals[-1]["eval_loss_by_sigma"]
    train_bins = {k for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
                  for k in m.get("loss_by_sigma", {})}
    return {float(k): last[k] - base[k] for k in base}, train_bins


def test_a_lora_improves_most_where_its_noise_levels_were(toy_night, tmp_path):
    """Two night LoRAs from the same start, one trained on sigma 0.6-1.0 only, one on 0-0.4 only.
    A LoRA's weights are shared by every noise level, so both lower the held-out loss everywhere
    (the night palette helps at every sigma); what the bins show is where each learnt most: the
    high-noise LoRA gains more than the low-noise one at high sigma, and less at low sigma."""
    high, hbins = by_sigma_change(toy_night, tmp_path / "high", sigma_min=0.6)
    low, lbins = by_sigma_change(toy_night, tmp_path / "low", sigma_max=0.4)
    print("\nheld-out loss change by sigma, LoRA on 0.6-1.0 | on 0-0.4: "
          + ", ".join(f"{s:g}: {high[s]:+.4f} | {low[s]:+.4f}" for s in sorted(high)))
    assert hbins <= {"0.500-0.625", "0.625-0.750", "0.750-0.875", "0.875-1.000"}, hbins  # it trained only there
    assert lbins <= {"0.000-0.125", "0.125-0.250", "0.250-0.375", "0.375-0.500"}, lbins
    at_high = [s for s in high if s >= 0.7]
    at_low = [s for s in high if s <= 0.3]
    assert sum(high[s] for s in at_high) < sum(low[s] for s in at_high), (high, low)  # more negative: a larger gain
    assert sum(low[s] for s in at_low) < sum(high[s] for s in at_low), (high, low)
