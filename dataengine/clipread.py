"""Reading one clip's frame range from its video, resampled by time (captioning, training, export
and `de serve`'s previews all read clips this way); whole-video decoding is dataengine.video."""

from __future__ import annotations

import logging
import os

import numpy as np

from .video import VideoError, _short, _unrotate, display_size, probe

log = logging.getLogger(__name__)


def sample_times(start_s: float, end_s: float, fps: float, max_frames: int | None = None,
                 exact: int | None = None) -> np.ndarray:
    """Target times in [start, end) at `fps`. `max_frames` spreads that many over the whole range
    instead (a lower effective rate); `exact` asks for exactly that many at `fps` from start."""
    if exact is not None:
        return start_s + np.arange(exact) / fps
    n = max(1, int(np.floor((end_s - start_s) * fps + 1e-6)))
    if max_frames is not None and n > max_frames:
        return start_s + (np.arange(max_frames) + 0.5) * (end_s - start_s) / max_frames
    return start_s + np.arange(n) / fps


def pick_frames(frame_times: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """For each target time, the index of the frame on screen at that time (last pts <= t).
    Resampling 24 fps to 16 fps this way keeps true timing (frames 0,1,3,4,6,...) where an
    integer stride would give 12 fps or 24 fps."""
    idx = np.searchsorted(frame_times, targets + 1e-6, side="right") - 1
    return np.clip(idx, 0, len(frame_times) - 1)


def fit_size(width: int, height: int, max_pixels: int | None = None, max_side: int | None = None) -> tuple[int, int]:
    scale = 1.0
    if max_pixels and width * height > max_pixels:
        scale = min(scale, (max_pixels / (width * height)) ** 0.5)
    if max_side and max(width, height) * scale > max_side:
        scale = max_side / max(width, height)
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


class ClipReader:
    """Reads frame ranges of one video by time; keeps the decoder open between clips."""

    def __init__(self, path: str, size: tuple[int, int] | None = None, max_pixels: int | None = None):
        if not os.path.exists(path):
            raise VideoError("missing", f"video file not found: {path}")
        self.path = path
        self.info = probe(path)
        # square pixels out: an anamorphic source is scaled to its display aspect as it is decoded
        self.size = size or fit_size(*display_size(self.info.width, self.info.height, self.info.sar),
                                     max_pixels=max_pixels)
        self._vr = None
        self._times: np.ndarray | None = None
        if not self.info.rotation:
            try:
                import decord

                w, h = self.size
                self._vr = decord.VideoReader(path, ctx=decord.cpu(0), width=w, height=h, num_threads=1)
                self._times = np.asarray(self._vr.get_frame_timestamp(np.arange(len(self._vr))))[:, 0]
            except Exception as e:  # fall back to PyAV below
                log.debug("decord cannot open %s: %s", path, e)
                self._vr = None

    def read(self, start_s: float, end_s: float, fps: float, max_frames: int | None = None,
             exact: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(frames uint8 (N,H,W,3), the source time of each). Targets past the range end repeat
        nothing: they are dropped."""
        targets = sample_times(start_s, end_s, fps, max_frames, exact)
        if self._vr is not None:
            try:
                idx = pick_frames(self._times, targets)
                frames = self._vr.get_batch(idx.tolist()).asnumpy()
                return frames, self._times[idx]
            except Exception as e:
                log.debug("decord failed reading %s, using PyAV: %s", self.path, e)
                self._vr = None
        return self._read_pyav(start_s, end_s, targets)

    def _read_pyav(self, start_s, end_s, targets) -> tuple[np.ndarray, np.ndarray]:
        import av

        w, h = self.size
        cw, ch = (h, w) if self.info.rotation in (90, 270) else (w, h)
        times, frames = [], []
        try:
            with av.open(self.path, metadata_errors="ignore") as c:
                st = c.streams.video[0]
                if start_s > 1.0 and st.time_base:
                    c.seek(int(max(0.0, start_s - 1.0) / st.time_base), stream=st, backward=True)
                for fr in c.decode(st):
                    t = fr.time if fr.time is not None else (times[-1] + 0.04 if times else 0.0)
                    if t > targets[-1] + 1e-6:
                        break
                    times.append(float(t))
                    frames.append(fr.to_ndarray(format="rgb24", width=cw, height=ch))
        except Exception as e:
            raise VideoError("corrupt", f"cannot decode {self.path} at {start_s:.2f}s: {_short(e)}") from e
        if not frames:
            raise VideoError("no frames", f"no frames in {self.path} between {start_s:.2f}s and {end_s:.2f}s")
        ts = np.asarray(times)
        idx = pick_frames(ts, targets)
        return _unrotate(np.stack([frames[i] for i in idx]), self.info.rotation), ts[idx]
