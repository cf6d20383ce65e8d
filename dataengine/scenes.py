"""Scene detection with PySceneDetect fed from our own decoded frames, and the clip policy.

We run PySceneDetect's detectors directly on the low-resolution frames of the single decode pass
(instead of letting it open the file again), and give it sequential frame numbers; times come
from the container's timestamps afterwards, so VFR sources are timed correctly.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

PYSCENEDETECT = ("adaptive", "content", "threshold", "histogram", "hash")  # PySceneDetect's own detectors
DETECTORS = (*PYSCENEDETECT, "transnetv2")


@dataclass
class DetectorOptions:
    name: str = "adaptive"
    threshold: float | None = None  # detector's main threshold; None = PySceneDetect default
    min_scene_len: int = 15  # frames between cuts (PySceneDetect's default)

    def __post_init__(self) -> None:
        if self.name not in DETECTORS:
            raise ValueError(f"unknown detector {self.name!r}; choose from {', '.join(DETECTORS)}")
        if self.min_scene_len < 1:
            raise ValueError("min_scene_len must be at least 1 frame")

    def params(self) -> dict:
        return {"detector": self.name, "threshold": self.threshold, "min_scene_len": self.min_scene_len}

    def build(self):
        import scenedetect as sd

        if self.name == "transnetv2":
            raise ValueError("transnetv2 is not a PySceneDetect detector (SceneFeeder runs it)")

        kw: dict = {"min_scene_len": self.min_scene_len}
        t = self.threshold
        if self.name == "adaptive":
            return sd.AdaptiveDetector(adaptive_threshold=t if t is not None else 3.0, **kw)
        if self.name == "content":
            return sd.ContentDetector(threshold=t if t is not None else 27.0, **kw)
        if self.name == "threshold":
            return sd.ThresholdDetector(threshold=t if t is not None else 12.0, **kw)
        if self.name == "histogram":
            return sd.HistogramDetector(threshold=t if t is not None else 0.05, **kw)
        return sd.HashDetector(threshold=t if t is not None else 0.395, **kw)


@dataclass
class SplitOptions:
    min_duration: float = 1.0  # drop clips shorter than this (s)
    # Longer scenes are cut into ceil(d / max) equal windows, each at least max/2 = 5.1 s, so 81
    # frames at 16 fps (5.06 s), SANA-Video's default clip, always fit in one window.
    max_duration: float = 10.2
    trim_frames: int = 2  # frames dropped on each side of a cut
    # ... and of an excluded span (the purity stage's spans carry a frame of margin of their own)
    span_trim_frames: int = 1

    def __post_init__(self) -> None:
        if self.min_duration < 0 or self.max_duration <= 0:
            raise ValueError("durations must be positive")
        if self.max_duration < self.min_duration:
            raise ValueError("--max-duration must be at least --min-duration")
        if self.trim_frames < 0 or self.span_trim_frames < 0:
            raise ValueError("--trim-frames and --trim-span-frames must be >= 0")


@dataclass
class ClipRange:
    scene_index: int
    window_index: int
    start_frame: int  # inclusive
    end_frame: int  # exclusive
    start_s: float
    end_s: float


@dataclass
class SplitResult:
    clips: list[ClipRange] = field(default_factory=list)
    dropped_short: int = 0


def split_key(det: DetectorOptions, split: SplitOptions, analysis_side: int, purity: bool = False) -> str:
    """A short stable key of everything that decides clip boundaries."""
    import hashlib

    d = {"det": det.params(), "split": asdict(split), "side": analysis_side}
    if not purity:  # without spans their trim decides nothing: keys made before it stay what they were
        d["split"].pop("span_trim_frames")
    if purity:  # keys of catalogs made before the purity stage stay what they were
        # v2: one-sided motion floor, stretches inside runs, palette test, tightening; v3: camera moves
        # are not cuts, gradual spans settle where the picture arrives
        d["purity"] = "v4"
    blob = json.dumps(d, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


class SceneFeeder:
    """Feeds a PySceneDetect detector batch by batch; collects cut frame numbers."""

    def __init__(self, det: DetectorOptions, fps: float):
        from scenedetect import FrameTimecode

        self._tc = FrameTimecode
        self.fps = fps if fps and fps > 0 else 24.0
        self.net = None
        self.spans: list = []  # transition spans a detector reports itself (TransNetV2)
        if det.name == "transnetv2":
            from .transnet import TransNetFeeder

            self.net = TransNetFeeder(threshold=det.threshold if det.threshold is not None else 0.5)
        else:
            self.detector = det.build()
        self.cuts: list[int] = []
        self.n = 0

    def update(self, frames: np.ndarray, bgr: bool = False) -> None:
        import cv2

        if self.net is not None:
            self.net.update(frames, bgr)
            self.n += len(frames)
            return

        for img in frames:
            if not bgr:
                img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
            for tc in self.detector.process_frame(self._tc(self.n, self.fps), img):
                self.cuts.append(tc.frame_num)
            self.n += 1

    def finish(self) -> list[int]:
        if self.net is not None:
            cuts = self.net.finish()
            self.spans = self.net.spans
            return cuts
        if self.n:
            for tc in self.detector.post_process(self._tc(max(self.n - 1, 0), self.fps)):
                self.cuts.append(tc.frame_num)
        return sorted({c for c in self.cuts if 0 < c < self.n})


def frame_end_time(times: np.ndarray) -> float:
    """Time just after the last frame: last pts + the typical frame step."""
    if len(times) >= 2:
        return float(times[-1] + np.median(np.diff(times[-min(len(times), 25):])))
    return float(times[-1]) + 1.0 / 24.0


def shots_between(cuts: list[int], spans, n: int) -> list[tuple[int, int, str, str]]:
    """The frame ranges between barriers: each cut (an empty barrier at its first new frame) and
    each excluded span [start, end). (start, end, before, after) per range, where before/after
    is what bounds it on that side: "cut", "span" or "" (the video's start or end)."""
    barriers = sorted([(c, c, "cut") for c in cuts if 0 < c < n]
                      + [(max(0, s.start), min(n, s.end), "span") for s in spans])
    out, pos, before = [], 0, ""
    for a, b, kind in barriers:
        if a > pos:
            out.append((pos, a, before, kind))
        if b >= pos:  # the barrier that ends last bounds what follows
            before = kind
        pos = max(pos, b)
    if pos < n:
        out.append((pos, n, before, ""))
    return out


def time_gaps(times: np.ndarray, longest: float) -> list[int]:
    """Frames that start after a jump in time longer than `longest` (the longest clip): a broken
    timestamp, or a frame no clip could hold. They bound clips like cuts, so no clip spans them."""
    if len(times) < 2:
        return []
    return [int(i) + 1 for i in np.nonzero(np.diff(times) > longest)[0]]


def _windows(times: np.ndarray, s: int, e: int, t_end: float, longest: float,
             slack: float) -> list[tuple[int, int]]:
    """[s, e) cut into windows of near-equal real duration, none longer than `longest` (plus
    `slack`, the frame step that snapping an edge to a frame may add) by the frames' own times: a
    long-held frame of a VFR file can make an equal split uneven, and such a window is split again."""
    t = lambda i: float(times[i]) if i < e else t_end  # noqa: E731
    dur = t_end - float(times[s])
    k = max(1, math.ceil(dur / longest - 1e-9))
    edges = [s] + [int(np.searchsorted(times, float(times[s]) + dur * j / k - 1e-6)) for j in range(1, k)] + [e]
    edges = sorted({min(max(x, s), e) for x in edges})
    out: list[tuple[int, int]] = []
    todo = list(zip(edges[:-1], edges[1:]))[::-1]
    while todo:
        a, b = todo.pop()
        if t(b) - t(a) > longest + slack and b - a >= 2:
            mid = int(np.searchsorted(times, (t(a) + t(b)) / 2, side="right"))
            mid = min(max(mid, a + 1), b - 1)
            todo += [(mid, b), (a, mid)]
            continue
        out.append((a, b))
    return out


def split_scenes(cuts: list[int], times: np.ndarray, opts: SplitOptions, spans=()) -> SplitResult:
    """Turn cut frame numbers (and excluded spans: dataengine.purity) into clips: trim at cuts and
    spans, drop short ones, window long ones. No clip contains a frame of an excluded span, and
    no clip spans a jump in the frames' times longer than a clip may be (time_gaps)."""
    n = len(times)
    end_t = frame_end_time(times)
    gaps = time_gaps(times, opts.max_duration)
    step = float(np.median(np.diff(times))) if n >= 2 else 1.0 / 24.0
    gap_set = set(gaps)

    def t_end(e: int) -> float:
        """When the range ending before frame e ends: e's start, or, across a gap, the last frame's
        own step."""
        if e >= n:
            return end_t
        return float(times[e - 1]) + step if e in gap_set else float(times[e])

    res = SplitResult()
    trim = {"cut": opts.trim_frames, "span": opts.span_trim_frames, "": 0, "gap": 0}
    barriers = sorted(set(cuts) | gap_set)
    for si, (s, e, before, after) in enumerate(shots_between(barriers, spans, n)):
        before = "gap" if before == "cut" and s in gap_set else before
        after = "gap" if after == "cut" and e in gap_set else after
        s += trim[before]
        e -= trim[after]
        if e - s < 2 or t_end(e) - float(times[s]) < opts.min_duration:
            res.dropped_short += 1
            continue
        for wi, (a, b) in enumerate(_windows(times, s, e, t_end(e), opts.max_duration, 1.5 * step)):
            if b - a < 1:
                continue
            res.clips.append(ClipRange(si, wi, a, b, float(times[a]), float(times[b]) if b < e else t_end(e)))
    return res
