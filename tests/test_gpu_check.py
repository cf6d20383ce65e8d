"""benchmarks/gpu.py (`make gpu-check`, issue 35.8): without CUDA one line and exit 0; the same code
runs at the real widths with one block on the CPU (a GPU run changes only the device and sizes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

GPU = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def test_without_cuda_it_says_so_in_one_line_and_exits_0():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the check runs for real")
    r = subprocess.run([sys.executable, str(GPU)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().count("\n") == 0 and "no CUDA device" in r.stdout


@pytest.mark.slow
def test_the_check_runs_at_real_widths_with_one_block_on_the_cpu():
    r = subprocess.run([sys.executable, str(GPU), "--device", "cpu", "--layers", "1", "--batch", "1", "--frames", "9",
                        "--size", "64", "--clips", "1"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    step, cap = res["sana_lora_step"], res["qwen2_vl_captions"]
    assert step["blocks"] == 1 and step["seconds_per_step"] > 0 and step["loss"] == step["loss"]
    assert cap["parsed"] == cap["clips"] == 1  # constrained: a random model's answer still parses
    # Qwen2-VL-2B's widths: the tied 151,936 x 1,536 embedding alone is 233M parameters
    assert cap["params"] > 151936 * 1536
