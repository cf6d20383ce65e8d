"""The run page's plots: the held-out loss per noise level, one line per validation."""

from __future__ import annotations

from dataengine.serve.runs import by_sigma_svg, metrics_svg


def test_one_line_per_validation_and_only_numbers_reach_the_svg():
    metrics = [{"step": 0, "eval_loss_by_sigma": {"0.1": 0.5, "0.5": 0.7, "0.9": 1.1}},
               {"step": 5, "loss": 0.9},
               {"step": 60, "eval_loss_by_sigma": {"0.1": 0.5, "0.5": 0.6, "0.9": 0.8, "<b>": 1.0, "0.3": True}},
               {"step": "x", "eval_loss_by_sigma": {"0.1": 0.4, "0.2": 0.3}},
               {"step": 90, "eval_loss_by_sigma": {"0.1": float("nan"), "0.2": float("inf")}}]
    svg = by_sigma_svg(metrics)
    assert svg.count("<polyline") == 2 and "step 0 (light) to 60 (dark)" in svg
    assert "<b>" not in svg and "nan" not in svg and "inf" not in svg
    assert by_sigma_svg([{"step": 1, "loss": 1.0}]) is None
    assert metrics_svg(metrics, "loss").count("<circle") == 1
