"""`de ingest --detector X` finds the cuts `scenedetect detect-X` finds.

PySceneDetect's own SceneManager runs in-process on the same files (its default OpenCV backend,
auto downscale to 256 px, the same detector with its default parameters and min_scene_len 15).
Our cut list, before trimming and windowing, must equal theirs within one frame, compared in
seconds (PySceneDetect times VFR cuts by their pts; frame numbers differ there). The agreement
is printed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


import pytest

from dataengine.analyze import IngestOptions, analyze_video
from dataengine.scenes import PYSCENEDETECT, DetectorOptions

pytestmark = pytest.mark.slow  # decodes real footage with PySceneDetect and with our pass

MEDIA = Path(__file__).resolve().parents[1] / "media"  # tests/media: real footage, with its licence
REAL = sorted(MEDIA.glob("*.mp4")) if MEDIA.is_dir() else []


def theirs(path: str, name: str) -> list[float]:
    import scenedetect as sd

    video = sd.open_video(path)
    sm = sd.SceneManager()
    sm.add_detector(DetectorOptions(name=name).build())
    sm.detect_scenes(video)
    return [s[0].get_seconds() for s in sm.get_scene_list()[1:]]


def frame_step(path: str) -> float:
    import av

    with av.open(path) as f:
        st = f.streams.video[0]
        rate = float(st.average_rate or st.guessed_rate or 24)
    return 1.0 / rate


def compare(paths: list[str]) -> dict:
    report, failures = {}, []
    for path in paths:
        step = frame_step(path)
        for name in PYSCENEDETECT:  # TransNetV2 is not PySceneDetect's: parity is for its own
            res = analyze_video(path, "parity", IngestOptions(detector=DetectorOptions(name=name)))
            assert res.status == "ok", res.error
            want = theirs(path, name)
            got = res.cut_times
            ok = len(got) == len(want) and all(abs(a - b) <= step * 1.01 for a, b in zip(got, want))
            report[f"{Path(path).name} {name}"] = {"cuts": len(want), "agree": ok,
                                                   "max_diff_frames": round(max((abs(a - b) / step for a, b in
                                                                                 zip(got, want)), default=0), 2)}
            if not ok:
                failures.append((Path(path).name, name, got, want))
    print(json.dumps(report, indent=1))
    agree = sum(v["agree"] for v in report.values())
    print(f"agreement: {agree}/{len(report)} (file, detector) pairs")
    return {"failures": failures, "report": report}


def test_cuts_match_pyscenedetect_on_synthetic_cartoons(videos):
    root, truth = videos
    out = compare(sorted(str(p) for p in root.iterdir()))
    assert not out["failures"], out["failures"]
    # and the cuts are where the cartoons cut
    assert any(v["cuts"] > 0 for v in out["report"].values())


def test_cuts_match_pyscenedetect_on_real_footage():
    assert len(REAL) == 2, f"the real footage of {MEDIA} is missing: a parity check over nothing proves nothing"
    out = compare([str(p) for p in REAL])
    assert not out["failures"], out["failures"]


def test_defaults_follow_pyscenedetect():
    from dataengine.video import analysis_size

    assert DetectorOptions().min_scene_len == 15 and IngestOptions().analysis_side == 256
    # compute_downscale_factor on the long side, then round(w / f), round(h / f)
    from scenedetect.scene_manager import compute_downscale_factor

    for w, h in ((768, 432), (1280, 720), (240, 180), (1080, 1920), (853, 480)):
        f = compute_downscale_factor(max(w, h))
        assert analysis_size(w, h, 256) == (max(1, round(w / f)), max(1, round(h / f)))
    assert np.isclose(analysis_size(1280, 720, 256)[0], 256)
