import numpy as np
import pytest

from dataengine.scenes import DetectorOptions, SplitOptions, split_scenes


def times(n, fps=24.0):
    return np.arange(n) / fps


def test_trim_at_cuts_only_and_times_from_timestamps():
    res = split_scenes([48], times(96), SplitOptions(min_duration=0.5, max_duration=100, trim_frames=2))
    assert [(c.start_frame, c.end_frame) for c in res.clips] == [(0, 46), (50, 96)]
    assert res.clips[0].start_s == 0.0
    assert res.clips[1].end_s == pytest.approx(96 / 24.0)


def test_short_clips_dropped_and_counted():
    res = split_scenes([10, 60], times(120), SplitOptions(min_duration=1.0, max_duration=100, trim_frames=0))
    assert [(c.start_frame, c.end_frame) for c in res.clips] == [(10, 60), (60, 120)]
    assert res.dropped_short == 1


def test_long_scene_windows_never_cross_cuts_and_fit_81_frames_at_16fps():
    t = times(24 * 40)  # 40 s, cut at 25 s
    res = split_scenes([600], t, SplitOptions())
    assert all(c.end_frame <= 600 - 2 or c.start_frame >= 600 + 2 for c in res.clips)
    for c in res.clips:
        assert c.end_s - c.start_s <= 10.2 + 1e-6
        assert c.end_s - c.start_s >= 81 / 16
    # windows tile their scene without gaps
    scene0 = [c for c in res.clips if c.scene_index == 0]
    assert [c.window_index for c in scene0] == list(range(len(scene0)))
    assert all(a.end_frame == b.start_frame for a, b in zip(scene0, scene0[1:]))


def test_vfr_times_are_used_not_frame_over_fps():
    t = np.concatenate([np.arange(24) / 24, 1 + np.arange(12) / 12, 2 + np.arange(24) / 24])
    res = split_scenes([], t, SplitOptions(min_duration=0.5, max_duration=100, trim_frames=0))
    (c,) = res.clips
    assert c.end_s == pytest.approx(3.0, abs=0.05)  # 60 frames but 3 s, not 60/24 = 2.5 s


def test_options_validate():
    with pytest.raises(ValueError):
        DetectorOptions("nope")
    with pytest.raises(ValueError):
        SplitOptions(min_duration=5, max_duration=2)
