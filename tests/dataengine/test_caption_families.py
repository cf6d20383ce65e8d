"""Each Qwen-VL family sees the clip's real time (issue #8.2).

transformers 5.x ignores `fps` for pre-sampled frames and assumes 24 fps unless it is given
`video_metadata`: Qwen2.5-VL then got second_per_grid_ts = 2/24 and Qwen3-VL labelled a 5 s clip
0.0-0.4 s. These tests caption through the CLI with a tiny random model of each architecture,
saved and loaded by path, and assert what the processor handed to `generate`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import rows
from dataengine.cli import main

pytestmark = pytest.mark.slow  # builds and runs three model families

FPS = 2.0
FAST = ["--free", "--max-new-tokens", "8", "--fps", str(FPS), "--max-frames", "8", "--max-pixels", "12544", "--no-progress",
        "--limit", "1", "--query", "duration_s >= 2"]
FAMILY_CLASS = {"qwen2-vl": "Qwen2VLForConditionalGeneration", "qwen2.5-vl": "Qwen2_5_VLForConditionalGeneration",
                "qwen3-vl": "Qwen3VLForConditionalGeneration"}



@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    from dataengine.caption.tiny import save_tiny

    return {f: save_tiny(tmp_path_factory.mktemp(f"tiny-{f}"), family=f) for f in FAMILY_CLASS}


def _spy_generate(monkeypatch, family):
    import transformers

    cls = getattr(transformers, FAMILY_CLASS[family])
    seen = []
    orig = cls.generate

    def spy(self, *a, **kw):
        seen.append(kw)
        return orig(self, *a, **kw)

    monkeypatch.setattr(cls, "generate", spy)
    return seen


def _expected_times(cat):
    """The clip the caption run picks (first by path and start) and its sampled frame times."""
    from dataengine.clipread import ClipReader

    path, s, e = rows(cat, "SELECT video_path, start_s, end_s FROM clips WHERE duration_s >= 2 "
                           "ORDER BY video_path, start_s LIMIT 1")[0]
    _, times = ClipReader(path, max_pixels=12544).read(s, e, FPS, max_frames=8)
    return e - s, [float(t) for t in times]


@pytest.mark.parametrize("family", list(FAMILY_CLASS))
def test_each_family_loads_by_path_captions_and_sees_real_time(runner, cat, family_dirs, family, monkeypatch):
    seen = _spy_generate(monkeypatch, family)
    r = runner.invoke(main, ["caption", "--catalog", str(cat), "--model", family_dirs[family], *FAST])
    assert r.exit_code in (0, 1), r.output  # 1 = the random model's text did not parse: still recorded
    assert rows(cat, "SELECT count(*) FROM captions WHERE raw_output IS NOT NULL")[0][0] == 1
    assert len(seen) == 1
    duration, times = _expected_times(cat)
    eff = (len(times) - 1) / (times[-1] - times[0])  # the sampling rate the frames really have
    assert eff == pytest.approx(FPS, rel=0.1)
    n = len(times) + len(times) % 2  # padded to temporal pairs
    grid_t = int(seen[0]["video_grid_thw"][0][0])
    assert grid_t == n // 2
    if family == "qwen2.5-vl":
        # each temporal patch holds 2 frames sampled at 2 fps: 1.0 s, not 2/24 = 0.083 s
        assert float(seen[0]["second_per_grid_ts"][0]) == pytest.approx(2 / eff, rel=1e-3)
    if family == "qwen3-vl":
        from transformers import AutoProcessor

        text = AutoProcessor.from_pretrained(family_dirs[family]).tokenizer.decode(seen[0]["input_ids"][0])
        stamps = [float(x) for x in re.findall(r"<([0-9.]+) seconds>", text)]
        # one stamp per temporal pair, at the pair's mean time: 0.25, 1.25, ... at 2 fps
        assert stamps == [pytest.approx((2 * k + 0.5) / eff, abs=0.051) for k in range(grid_t)]
        assert stamps[-1] > 0.5 * duration  # not 0.0-0.4 s for a multi-second clip


def test_qwen25_and_qwen3_aliases_resolve_load_and_caption(cat, family_dirs, tmp_path):
    """`--model qwen2.5-vl` / `qwen3-vl` go alias -> hub id -> from_pretrained, here from an offline
    Hugging Face cache that holds the tiny models under the real ids."""
    from dataengine.caption.models import ALIASES

    hub = tmp_path / "hub"
    for alias, family in (("qwen2.5-vl", "qwen2.5-vl"), ("qwen3-vl", "qwen3-vl")):
        repo = hub / ("models--" + ALIASES[alias].replace("/", "--"))
        shutil.copytree(family_dirs[family], repo / "snapshots" / ("0" * 40))
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text("0" * 40)
    env = dict(os.environ, HF_HUB_CACHE=str(hub), HF_HUB_OFFLINE="1", DE_CATALOG=str(cat))
    for alias in ("qwen2.5-vl", "qwen3-vl"):
        r = subprocess.run([sys.executable, "-m", "dataengine", "caption", "--model", alias, *FAST],
                           capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode in (0, 1), r.stderr[-2000:]
        assert "Traceback" not in r.stderr
        got = rows(cat, "SELECT captioner, is_random_model FROM captions WHERE captioner = ?", [ALIASES[alias]])
        assert got == [(ALIASES[alias], True)], r.stdout + r.stderr
