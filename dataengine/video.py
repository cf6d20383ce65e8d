"""Reading video: probe with PyAV, decode with decord (PyAV as the fallback).

Everything downstream works in *presentation time*: each decoded frame comes with its
timestamp in seconds, so variable-frame-rate files and odd time bases are handled by the
container's own clock rather than frame index / nominal fps. Rotation metadata (display
matrix) is applied, so frames and sizes are what a player shows.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = {".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv"}
MAX_SIDE = 16384  # beyond the H.264/HEVC/VP9 level limits; refuse rather than try


def max_frame_pixels() -> int:
    """The decoded-pixel budget of one frame (default a little over 8K UHD, 8192x4320: ~106 MB of
    RGB). A 9 MB file of PNG frames that each declare 16000x16000 would otherwise cost ~770 MB per
    frame in every decoder thread. $DE_MAX_FRAME_PIXELS changes it."""
    try:
        return max(1, int(os.environ.get("DE_MAX_FRAME_PIXELS", "") or 8192 * 4320))
    except ValueError:
        return 8192 * 4320


def check_frame_pixels(width: int, height: int, where: str = "frames") -> None:
    budget = max_frame_pixels()
    if width * height > budget:
        raise VideoError("resolution too large", f"{where} of {width}x{height} ({width * height / 1e6:.0f} Mpx) "
                                                 f"exceed the {budget / 1e6:.0f} Mpx per-frame budget "
                                                 "($DE_MAX_FRAME_PIXELS)")


class VideoError(Exception):
    """A video that cannot be used. `kind` is a short reason code for summaries."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class VideoInfo:
    path: str
    size_bytes: int
    container: str
    codec: str
    width: int  # displayed (after rotation)
    height: int
    coded_width: int
    coded_height: int
    rotation: int  # degrees counter-clockwise, one of 0, 90, 180, 270
    nominal_fps: float
    duration_s: float
    frame_count_hint: int  # from the container; may be 0 or wrong, never trusted for timing
    # pixel aspect ratio of width x height as stored (DVD rips: 720x480 at 8:9 is 4:3 on screen);
    # the display size is (width * sar) x height
    sar: float = 1.0
    extra: dict = field(default_factory=dict)


def probe(path: str | os.PathLike) -> VideoInfo:
    """Container-level facts about a file, or VideoError with a readable reason."""
    import av

    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise VideoError("missing", f"cannot read file: {e.strerror or e}") from e
    if size == 0:
        raise VideoError("empty file", "file is empty (0 bytes)")
    try:
        container = av.open(path, metadata_errors="ignore")
    except Exception as e:  # PyAV raises a family of FFmpeg errors
        raise VideoError("unreadable", f"not a readable media file: {_short(e)}") from e
    try:
        if not container.streams.video:
            raise VideoError("no video stream", "the file has no video stream")
        st = container.streams.video[0]
        cc = st.codec_context
        if not cc.width or not cc.height:
            raise VideoError("unreadable", "video stream has no frame size (corrupt header?)")
        if max(cc.width, cc.height) > MAX_SIDE:
            raise VideoError("resolution too large", f"{cc.width}x{cc.height} exceeds {MAX_SIDE} px on a side")
        check_frame_pixels(cc.width, cc.height, "the stream's frames")
        rate = st.average_rate or st.guessed_rate or st.base_rate
        fps = float(rate) if rate else 0.0
        if st.duration is not None and st.time_base is not None:
            duration = float(st.duration * st.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000.0
        else:
            duration = 0.0
        rotation = _first_frame_rotation(container, st)
        w, h = cc.width, cc.height
        sar = _sample_aspect(st)
        if rotation in (90, 270):
            w, h = h, w
            sar = 1.0 / sar
        return VideoInfo(
            path=path,
            size_bytes=size,
            container=container.format.name,
            codec=cc.name,
            width=w,
            height=h,
            coded_width=cc.width,
            coded_height=cc.height,
            rotation=rotation,
            nominal_fps=fps,
            duration_s=duration,
            frame_count_hint=int(st.frames or 0),
            sar=sar,
        )
    finally:
        container.close()


def _sample_aspect(stream) -> float:
    """The stream's sample (pixel) aspect ratio; 1 when absent, 0/0 or implausible."""
    for src in (stream, stream.codec_context):
        try:
            r = src.sample_aspect_ratio
        except Exception:  # noqa: BLE001 - PyAV raises for some codecs
            r = None
        if r and r.denominator and 0.25 <= float(r) <= 4.0:
            return round(float(r), 6)
    return 1.0


def display_size(width: int, height: int, sar: float | None) -> tuple[int, int]:
    """What a player shows: square pixels, the stored width stretched by the sample aspect ratio."""
    return max(2, int(round(width * (sar or 1.0)))), height


def _first_frame_rotation(container, stream) -> int:
    """Rotation from the first decoded frame's display matrix (PyAV exposes it per frame)."""
    try:
        for frame in container.decode(stream):
            rot = int(round(getattr(frame, "rotation", 0) or 0)) % 360
            return rot if rot in (0, 90, 180, 270) else 0
    except Exception as e:
        raise VideoError("corrupt", f"cannot decode the first frame: {_short(e)}") from e
    raise VideoError("no frames", "the video stream holds no decodable frames")


def _short(e: Exception) -> str:
    """FFmpeg errors carry an errno and the path; keep the human part."""
    import re

    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    msg = re.sub(r"^\[Errno -?\d+\]\s*", "", msg)
    msg = re.sub(r":\s*'[^']*'$", "", msg)
    return msg[:300]


def analysis_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """PySceneDetect's own rule (`compute_downscale_factor` on the long side, then `round(w / f)`),
    so its detectors see the frames `scenedetect` would give them: factor = long side / max_side
    when the long side is at least max_side (256 by default, PySceneDetect's effective width)."""
    long_side = max(width, height)
    f = long_side / float(max_side) if long_side >= max_side else 1.0
    return max(1, round(width / f)), max(1, round(height / f))


def _unrotate(frames: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display rotation (degrees counter-clockwise) to (N,H,W,C) frames."""
    if rotation == 0:
        return frames
    # FFmpeg's convention: rotation=90 means the coded picture is shown turned 90 degrees
    # counter-clockwise; np.rot90 with k=1 turns counter-clockwise too. Tested with a file
    # written with a display rotation (tests/dataengine/test_video.py).
    k = {90: 1, 180: 2, 270: 3}[rotation]
    return np.ascontiguousarray(np.rot90(frames, k=k, axes=(1, 2)))


@dataclass
class FrameBatch:
    times: np.ndarray  # (N,) presentation time in seconds of each frame, from the container
    frames: np.ndarray  # (N, H, W, 3) uint8 at the requested size, display orientation; RGB unless `bgr`
    reader: str = ""  # which decoder produced it
    bgr: bool = False  # channel order BGR (OpenCV's own; what PySceneDetect's detectors take)

    @property
    def rgb(self) -> np.ndarray:
        return self.frames[..., ::-1] if self.bgr else self.frames


def iter_frames(
    path: str,
    info: VideoInfo,
    size: tuple[int, int],
    *,
    batch: int = 32,
    prefer: str = "decord",
    threads: int = 1,
) -> Iterator[FrameBatch]:
    """Every frame of the file, in order, resized to `size` (display w, h), with timestamps.

    decord is tried first (it resizes inside FFmpeg and is fast on sequential reads); if it cannot
    open the file or fails before yielding anything, PyAV takes over. A failure after frames were
    yielded is raised, since restarting would duplicate frames.
    """
    readers = {"opencv": [_iter_opencv, _iter_pyav], "decord": [_iter_decord, _iter_pyav]}.get(prefer, [_iter_pyav])
    if info.rotation:
        # decord applies some display matrices itself and mis-sizes rotated output when asked to
        # resize; PyAV gives the coded picture and we rotate it ourselves (tested both ways).
        readers = [_iter_pyav]
    last_err: Exception | None = None
    for reader in readers:
        yielded = False
        try:
            for fb in reader(path, info, size, batch, threads):
                yielded = True
                yield fb
            if yielded:
                return
            last_err = VideoError("no frames", "decoder returned no frames")
        except VideoError as e:
            if yielded:
                raise
            last_err = e
        except Exception as e:
            if yielded:
                raise VideoError("corrupt", f"decoding stopped part-way: {_short(e)}") from e
            last_err = e
            log.debug("reader %s failed on %s: %s", reader.__name__, path, e)
    if isinstance(last_err, VideoError):
        raise last_err
    raise VideoError("corrupt", f"cannot decode: {_short(last_err) if last_err else 'unknown error'}")


def _iter_opencv(path, info, size, batch, threads) -> Iterator[FrameBatch]:
    """OpenCV's FFmpeg backend: frame-threaded decode at full size, then one linear downscale,
    exactly what PySceneDetect's default backend and SceneManager do; times from the pts
    (CAP_PROP_POS_MSEC), so VFR sources are timed as they are."""
    import cv2

    w, h = size
    max_pixels = max_frame_pixels()
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    if not cap.isOpened():
        raise VideoError("corrupt", "OpenCV cannot open the file")
    try:
        times: list[float] = []
        frames: list[np.ndarray] = []
        last_t = -1.0
        step = 1.0 / info.nominal_fps if info.nominal_fps else 0.04
        while cap.grab():
            ok, img = cap.retrieve()
            if not ok or img is None:
                break
            if img.shape[0] * img.shape[1] > max_pixels:  # a frame larger than its header said
                check_frame_pixels(img.shape[1], img.shape[0], "a decoded frame")
            t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if not (t > last_t) and frames:  # no usable pts: continue the clock
                t = last_t + step
            last_t = t
            if img.shape[1] != w or img.shape[0] != h:
                img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
            frames.append(img)
            times.append(t)
            if len(frames) == batch:
                yield FrameBatch(np.asarray(times), np.stack(frames), "opencv", bgr=True)
                times, frames = [], []
        if frames:
            yield FrameBatch(np.asarray(times), np.stack(frames), "opencv", bgr=True)
    finally:
        cap.release()


def prefetch(batches: Iterator[FrameBatch], depth: int = 4) -> Iterator[FrameBatch]:
    """Run a frame iterator in a background thread (decoding and resizing release the GIL)
    with at most `depth` batches waiting, so detection and stats overlap with decoding."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def run():
        try:
            for b in batches:
                while not stop.is_set():
                    try:
                        q.put(b, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put(e)

    t = threading.Thread(target=run, name="decode", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        t.join(timeout=5)


def _iter_decord(path, info, size, batch, threads) -> Iterator[FrameBatch]:
    import decord

    w, h = size
    vr = decord.VideoReader(path, ctx=decord.cpu(0), width=w, height=h, num_threads=threads)
    n = len(vr)
    if n <= 0:
        raise VideoError("no frames", "decoder found no frames")
    ts = np.asarray(vr.get_frame_timestamp(np.arange(n)), dtype=np.float64)[:, 0]
    for s in range(0, n, batch):
        idx = list(range(s, min(n, s + batch)))
        arr = vr.get_batch(idx).asnumpy()
        yield FrameBatch(ts[s : s + len(idx)], arr, "decord")


def _iter_pyav(path, info, size, batch, threads) -> Iterator[FrameBatch]:
    import av

    w, h = size
    cw, ch = (h, w) if info.rotation in (90, 270) else (w, h)
    with av.open(path, metadata_errors="ignore") as container:
        st = container.streams.video[0]
        st.thread_type = "AUTO"
        times: list[float] = []
        frames: list[np.ndarray] = []
        last_t = -1.0
        max_pixels = max_frame_pixels()
        for frame in container.decode(st):
            if frame.width * frame.height > max_pixels:  # each PNG/MJPEG frame declares its own size
                check_frame_pixels(frame.width, frame.height, "a decoded frame")
            t = frame.time
            if t is None:  # no pts: continue the clock at the nominal rate
                t = last_t + (1.0 / info.nominal_fps if info.nominal_fps else 0.04)
            last_t = t
            times.append(float(t))
            frames.append(frame.to_ndarray(format="rgb24", width=cw, height=ch))
            if len(frames) == batch:
                yield FrameBatch(np.asarray(times), _unrotate(np.stack(frames), info.rotation), "pyav")
                times, frames = [], []
        if frames:
            yield FrameBatch(np.asarray(times), _unrotate(np.stack(frames), info.rotation), "pyav")
