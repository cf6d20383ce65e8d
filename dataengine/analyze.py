"""One decode pass per video feeds everything: scene cuts, per-frame stats, keyframe candidates.

`analyze_video` is a pure function of (file, options) -> VideoResult: it runs in worker processes
and never touches the catalog; the single writer stores what it returns.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, make_dataclass
from pathlib import Path

import numpy as np

from catalog.store import CLIP_FIELDS

from . import identity
from .scenes import DetectorOptions, SceneFeeder, SplitOptions, split_key, split_scenes
from .dedup import clip_signature, small_luma
from .camera import CameraTracker, clip_camera
from .stats import FrameStats, clip_stats, luma
from .purity import PurityResult, Thumbs, merge, purify
from .video import VideoError, analysis_size, iter_frames, prefetch, probe


@dataclass
class IngestOptions:
    detector: DetectorOptions = field(default_factory=DetectorOptions)
    split: SplitOptions = field(default_factory=SplitOptions)
    # long side of the frames used for detection, stats and keyframes: PySceneDetect's effective
    # width (256), downscaled its way, so `--detector X` finds the cuts `scenedetect detect-X` finds
    analysis_side: int = 256
    keyframe_dir: str = ""
    keyframe_every_s: float = 0.25
    reader: str = "opencv"  # opencv | decord | pyav (PyAV is the fallback of the first two)
    decode_threads: int = 1
    signatures: bool = True  # near-duplicate signatures (off only to measure what they cost)
    purity: bool = True  # the clip-purity stage (dataengine.purity): transitions, flashes, pans

    def __post_init__(self) -> None:
        if self.analysis_side < 32:
            raise ValueError("--analysis-side must be at least 32")
        if self.reader not in ("opencv", "decord", "pyav"):
            raise ValueError("--reader must be opencv, decord or pyav")

    @property
    def split_key(self) -> str:
        return split_key(self.detector, self.split, self.analysis_side, self.purity)


# One clip as ingest records it: the catalog's clip row (`catalog.store.CLIP_FIELDS`, declared once).
ClipRecord = make_dataclass("ClipRecord", [f if len(f) == 2 else (f[0], f[1], field(default=f[2]))
                                           for f in CLIP_FIELDS])
ClipRecord.__module__ = __name__  # picklable: results travel from worker processes and Ray tasks


@dataclass
class VideoResult:
    video_id: str
    path: str
    size_bytes: int
    status: str = "ok"
    error: str = ""
    error_kind: str = ""
    duration_s: float | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    num_frames: int | None = None
    codec: str | None = None
    container: str | None = None
    rotation: int = 0
    sar: float = 1.0
    is_vfr: bool = False
    reader: str | None = None
    split_key: str = ""
    clips: list[ClipRecord] = field(default_factory=list)
    dropped_short: int = 0
    cuts: list[int] = field(default_factory=list)
    cut_times: list[float] = field(default_factory=list)  # presentation time of each cut's first frame
    excluded: list = field(default_factory=list)  # the purity stage's spans and dropped cuts (JSON rows)
    seconds: float = 0.0
    keyframes: dict = field(default_factory=dict)  # keyframe path -> JPEG bytes, written by the driver
    node: str = ""  # where it ran (a Ray node id; empty for the local pool)

    def video_row(self) -> dict:
        d = asdict(self)
        for k in ("clips", "dropped_short", "cuts", "cut_times", "seconds", "keyframes", "node"):
            d.pop(k)
        d["excluded"] = json.dumps(self.excluded)
        return d


def analyze_video(path: str, vid: str, opts: IngestOptions) -> VideoResult:
    """Decode `path` once and return its video facts and clips; failures come back as data."""
    t0 = time.perf_counter()
    size = os.path.getsize(path) if os.path.exists(path) else 0
    res = VideoResult(video_id=vid, path=os.path.abspath(path), size_bytes=size, split_key=opts.split_key)
    try:
        _analyze(path, opts, res)
    except VideoError as e:
        res.status, res.error, res.error_kind = "failed", str(e), e.kind
        res.clips = []
    except MemoryError:
        res.status, res.error, res.error_kind = "failed", "out of memory while decoding", "out of memory"
        res.clips = []
    except Exception as e:  # a decoder bug must not take the run down; record it
        res.status, res.error_kind = "failed", "internal error"
        res.error = f"{type(e).__name__}: {str(e)[:300]}"
        res.clips = []
    res.seconds = time.perf_counter() - t0
    return res


def _analyze(path: str, opts: IngestOptions, res: VideoResult) -> None:
    info = probe(path)
    res.codec, res.container, res.rotation = info.codec, info.container, info.rotation
    res.width, res.height, res.sar = info.width, info.height, info.sar
    size = analysis_size(info.width, info.height, opts.analysis_side)
    feeder = SceneFeeder(opts.detector, info.nominal_fps)
    stats = FrameStats(stride=max(1, round((info.nominal_fps or 24.0) / 8)))
    camera = CameraTracker(stride=stats.stride)
    times_parts: list[np.ndarray] = []
    keyframes: list[tuple[int, bytes]] = []  # (frame index, jpeg)
    smalls: list[tuple[int, np.ndarray]] = []  # (frame index, 32x32 luma): near-duplicate signatures
    thumbs = Thumbs() if opts.purity else None
    next_kf_t = -1.0
    n = 0
    reader = None
    for fb in prefetch(iter_frames(path, info, size, prefer=opts.reader, threads=opts.decode_threads)):
        reader = fb.reader
        feeder.update(fb.frames, bgr=fb.bgr)
        gray = luma(fb.frames, fb.bgr)  # once, for the stats and the camera
        stats.update(fb.frames, fb.times, bgr=fb.bgr, gray=gray)
        camera.update(fb.frames, bgr=fb.bgr, gray=gray)
        if thumbs is not None:
            thumbs.update(fb.frames, bgr=fb.bgr)
        times_parts.append(fb.times)
        for i, t in enumerate(fb.times):
            if t >= next_kf_t:
                keyframes.append((n + i, _jpeg(fb.frames[i], bgr=fb.bgr, sar=info.sar)))
                if opts.signatures:
                    smalls.append((n + i, small_luma(fb.frames[i], bgr=fb.bgr)))
                next_kf_t = t + opts.keyframe_every_s
        n += len(fb.times)
    times = np.concatenate(times_parts) if times_parts else np.zeros(0)
    if n < 2:
        raise VideoError("too few frames", f"the video has {n} decodable frame(s); a clip needs at least 2")
    if np.any(np.diff(times) <= 0):
        # out-of-order or repeated timestamps: keep decode order, but make time monotonic
        times = np.maximum.accumulate(times + np.arange(n) * 1e-6)
    cuts = feeder.finish()
    pure = purify(thumbs.array(), cuts) if thumbs is not None else PurityResult(cuts, [], {})
    if feeder.spans:  # a detector that marks transitions itself (TransNetV2)
        pure = PurityResult(pure.cuts, merge(pure.spans + feeder.spans), pure.dropped_cuts, pure.inside_shot,
                            pure.found_cuts)
    split = split_scenes(pure.cuts, times, opts.split, pure.spans)
    per_frame = stats.arrays()
    cam = camera.arrays()
    steps = np.diff(times)
    res.reader = reader
    res.num_frames = n
    res.duration_s = float(split_end(times))
    res.fps = float(n / res.duration_s) if res.duration_s > 0 else info.nominal_fps
    res.is_vfr = bool(len(steps) > 2 and (steps.max() - steps.min()) > 0.25 * np.median(steps))
    res.cuts = cuts
    res.cut_times = [float(times[c]) for c in cuts]
    res.dropped_short = split.dropped_short
    res.excluded = ([sp.to_json() for sp in pure.spans]
                    + [{"start": c, "end": c, "reason": f"not a cut: {why}"} for c, why in sorted(pure.dropped_cuts.items())]
                    + [{"start": c, "end": c, "reason": "cut added: the detector missed it"} for c in pure.found_cuts])
    det_params = _json(opts.detector.params())
    kf_dir = Path(opts.keyframe_dir) / res.video_id if opts.keyframe_dir else None
    for c in split.clips:
        cid = identity.clip_id(res.video_id, c.start_frame, c.end_frame)
        kf_path = None
        if kf_dir is not None and keyframes:
            kf_path = str(kf_dir / f"{cid}.jpg")
            # the bytes travel back with the result: workers (processes or Ray tasks on other
            # machines) never write into the catalog's folder; the driver writes them
            res.keyframes[kf_path] = _pick_keyframe(keyframes, c.start_frame, c.end_frame)
        sig = clip_signature(smalls, c.start_frame, c.end_frame) if smalls else None
        res.clips.append(ClipRecord(
            clip_id=cid, video_id=res.video_id, scene_index=c.scene_index, window_index=c.window_index,
            start_frame=c.start_frame, end_frame=c.end_frame, start_s=c.start_s, end_s=c.end_s,
            **clip_stats(per_frame, c.start_frame, c.end_frame),
            keyframe_path=kf_path, detector=opts.detector.name, detector_params=det_params,
            split_key=opts.split_key, **(dict(zip(("sig0", "sig1", "sig2"), sig)) if sig else {}),
            **clip_camera(cam, c.start_frame, c.end_frame, res.fps or 24.0),
        ))


def split_end(times: np.ndarray) -> float:
    from .scenes import frame_end_time

    return frame_end_time(times) - float(times[0]) if len(times) else 0.0


def _jpeg(img: np.ndarray, bgr: bool = False, sar: float = 1.0) -> bytes:
    """A keyframe as people see it: non-square pixels are stretched to the display aspect."""
    import cv2

    if abs(sar - 1.0) > 1e-3:
        h, w = img.shape[:2]
        img = cv2.resize(img, (max(2, int(round(w * sar))), h), interpolation=cv2.INTER_AREA if sar < 1 else
                         cv2.INTER_LINEAR)
    ok, buf = cv2.imencode(".jpg", img if bgr else cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 90])
    return buf.tobytes() if ok else b""


def _pick_keyframe(keyframes: list[tuple[int, bytes]], start: int, end: int) -> bytes:
    """The candidate nearest the clip's middle, preferring ones inside the clip."""
    mid = (start + end - 1) / 2
    inside = [k for k in keyframes if start <= k[0] < end]
    pool = inside or keyframes
    return min(pool, key=lambda k: abs(k[0] - mid))[1]


def write_keyframes(res: "VideoResult") -> None:
    """Driver side: write a result's keyframe JPEGs (atomically) before its rows are committed."""
    from .atomic import atomic_bytes

    for path, data in res.keyframes.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_bytes(path, data)


def _json(d: dict) -> str:
    import json

    return json.dumps(d, sort_keys=True)
