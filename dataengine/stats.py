"""Per-frame statistics computed during the single decode pass, and their per-clip aggregates.

All are computed on the low-resolution analysis frames (long side = `analysis_side`, 320 by
default), which is what makes them cheap; sharpness is therefore relative, comparable between
clips ingested at the same analysis size.

- brightness: mean luma (BT.601) in [0, 1], every frame.
- colorfulness: Hasler & Suesstrunk (2003) M3 on RGB, 0 (grey) to ~150 (very colourful).
- sharpness: variance of the Laplacian of luma.
  These two are sampled about 8 times a second (every `stride`-th frame): they change slowly
  within a shot and are the most expensive per frame.
- motion: mean absolute luma difference between consecutive frames on a 64-px-wide copy, scaled
  by 100/255 and by the time step relative to 1/24 s, so it reads per 24-fps frame whatever the
  source rate. Clip `motion_score` is its mean over the clip (0 static, ~2-10 typical cartoon
  motion, >20 whip pans).
"""

from __future__ import annotations

import numpy as np

MOTION_WIDTH = 64


def luma(frames: np.ndarray, bgr: bool = False) -> np.ndarray:
    """uint8 BT.601 luma, (N, H, W)."""
    import cv2

    code = cv2.COLOR_BGR2GRAY if bgr else cv2.COLOR_RGB2GRAY
    return np.stack([cv2.cvtColor(f, code) for f in frames])


def colorfulness(frames: np.ndarray, bgr: bool = False) -> np.ndarray:
    """Per frame: sqrt(std(rg)^2 + std(yb)^2) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2), rg = R - G,
    yb = (R + G) / 2 - B; computed with OpenCV's single-pass mean/std (numpy's float copies of
    every frame were most of the stats' time)."""
    import cv2

    out = np.empty(len(frames), np.float32)
    for i, f in enumerate(frames):
        r, g, b = cv2.split(f)[::-1] if bgr else cv2.split(f)
        rg = cv2.subtract(r, g, dtype=cv2.CV_32F)
        yb = cv2.subtract(cv2.addWeighted(r, 0.5, g, 0.5, 0.0, dtype=cv2.CV_32F), b, dtype=cv2.CV_32F)
        m1, s1 = cv2.meanStdDev(rg)
        m2, s2 = cv2.meanStdDev(yb)
        out[i] = np.sqrt(s1[0, 0] ** 2 + s2[0, 0] ** 2) + 0.3 * np.sqrt(m1[0, 0] ** 2 + m2[0, 0] ** 2)
    return out


def sharpness(gray: np.ndarray) -> np.ndarray:
    import cv2

    return np.array([cv2.meanStdDev(cv2.Laplacian(g, cv2.CV_32F))[1][0, 0] ** 2 for g in gray], dtype=np.float32)


def small_gray(gray: np.ndarray) -> np.ndarray:
    import cv2

    n, h, w = gray.shape
    sw = min(MOTION_WIDTH, w)
    sh = max(2, int(round(h * sw / w)))
    return np.stack([cv2.resize(g, (sw, sh), interpolation=cv2.INTER_AREA) for g in gray]).astype(np.float32)


class FrameStats:
    """Accumulates per-frame stats batch by batch (so memory is O(frames), not O(pixels))."""

    def __init__(self, stride: int = 1) -> None:
        self.stride = max(1, int(stride))
        self._n = 0
        self.brightness: list[np.ndarray] = []
        self.colorfulness: list[np.ndarray] = []
        self.sharpness: list[np.ndarray] = []
        self.motion: list[np.ndarray] = []
        self._prev_small: np.ndarray | None = None
        self._prev_t: float | None = None

    def update(self, frames: np.ndarray, times: np.ndarray, bgr: bool = False, gray: np.ndarray | None = None) -> None:
        gray = luma(frames, bgr) if gray is None else gray  # the caller's luma of these frames, when it has it
        self.brightness.append(gray.mean(axis=(1, 2)) / 255.0)
        idx = np.arange(self._n, self._n + len(frames))
        pick = np.nonzero(idx % self.stride == 0)[0]
        col = np.full(len(frames), np.nan, np.float32)
        sharp = np.full(len(frames), np.nan, np.float32)
        if len(pick):
            col[pick] = colorfulness(frames[pick], bgr)
            sharp[pick] = sharpness(gray[pick])
        self.colorfulness.append(col)
        self.sharpness.append(sharp)
        self._n += len(frames)
        small = small_gray(gray)
        if self._prev_small is not None:
            seq = np.concatenate([self._prev_small[None], small])
            ts = np.concatenate([[self._prev_t], times])
        else:
            seq, ts = small, times
        diff = np.abs(np.diff(seq, axis=0)).mean(axis=(1, 2)) * (100.0 / 255.0)
        dt = np.maximum(np.diff(ts), 1e-3)
        diff = diff * (1.0 / 24.0) / dt
        if self._prev_small is None:  # the first frame has no predecessor
            diff = np.concatenate([[np.nan], diff])
        self.motion.append(diff.astype(np.float32))
        self._prev_small = small[-1]
        self._prev_t = float(times[-1])

    def arrays(self) -> dict[str, np.ndarray]:
        cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.float32)  # noqa: E731
        return {
            "brightness": cat(self.brightness),
            "colorfulness": cat(self.colorfulness),
            "sharpness": cat(self.sharpness),
            "motion": cat(self.motion),
        }


def clip_stats(per_frame: dict[str, np.ndarray], start: int, end: int) -> dict[str, float]:
    """Means over frames [start, end). Motion skips the clip's first frame (its diff crosses
    into the previous range, e.g. a trimmed transition)."""
    out = {}
    for key in ("brightness", "colorfulness", "sharpness"):
        v = per_frame[key][start:end]
        v = v[np.isfinite(v)]
        if not len(v):  # a clip shorter than the sampling stride: use the nearest sample
            allv = per_frame[key]
            ok = np.nonzero(np.isfinite(allv))[0]
            v = allv[ok[np.argmin(np.abs(ok - (start + end) // 2))]:][:1] if len(ok) else np.zeros(1)
        out[key] = float(np.mean(v))
    m = per_frame["motion"][start + 1 : end]
    m = m[np.isfinite(m)]
    out["motion_score"] = float(m.mean()) if len(m) else 0.0
    return out
