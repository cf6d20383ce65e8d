"""Camera motion, measured in the decode pass: pan, tilt, zoom, rotation and shake per clip.

Every `stride`-th analysis frame is compared with the previous sampled one: corners of the older
frame (OpenCV's goodFeaturesToTrack) are tracked into the newer one (pyramidal Lucas-Kanade) and a
similarity transform (shift, scale, rotation) is fitted to them with RANSAC, so moving characters,
which cover less of the picture than the set, fall out as outliers. The transform is taken about
the frame's centre: the centre's shift is the pan and tilt, the scale the zoom. A clip's motion is
the median rate over its pairs (fractions of the frame per second; log-scale per second; degrees
per second), and its shake the spread of the shifts around that median. `label` names the one
that dominates: static, pan left/right, tilt up/down, zoom in/out, rotate, shake (or unknown when
too few pairs could be fitted, e.g. a flat card).

The directions are the camera's: "pan right" is the picture sliding left, "tilt up" the picture
sliding down, "zoom in" the picture growing.
"""

from __future__ import annotations

import math

import numpy as np

# thresholds fitted on the tuning seeds of benchmarks/camera.py (held-out figures: benchmarks/README.md)
MOVE = 0.04       # frame fractions per second: slower is static
ZOOM = 0.04       # log-scale per second
ROTATE = 3.0      # degrees per second
SHAKE = 0.006     # spread of per-pair shifts around the median, frame fractions
MIN_VALID = 0.5   # share of pairs with a fit, below which the clip is "unknown"
LABELS = ("static", "pan left", "pan right", "tilt up", "tilt down", "zoom in", "zoom out", "rotate", "shake",
          "unknown")


def fit_pair(prev: np.ndarray, cur: np.ndarray) -> tuple[float, float, float, float] | None:
    """(dx, dy, log_scale, degrees) of the centre-anchored similarity from `prev` to `cur` (uint8
    grey frames), shifts as fractions of the width and height; None when it cannot be fitted."""
    import cv2

    h, w = prev.shape
    pts = cv2.goodFeaturesToTrack(prev, maxCorners=200, qualityLevel=0.01, minDistance=max(3, w // 40),
                                  blockSize=5)
    if pts is None or len(pts) < 8:
        return None
    nxt, st, _ = cv2.calcOpticalFlowPyrLK(prev, cur, pts, None, winSize=(21, 21), maxLevel=3)
    ok = st.ravel() == 1
    if ok.sum() < 8:
        return None
    m = _widest_fit(pts[ok].reshape(-1, 2), nxt[ok].reshape(-1, 2), w * h)
    if m is None:
        return None
    scale = math.hypot(m[0, 0], m[1, 0])
    angle = math.degrees(math.atan2(m[1, 0], m[0, 0]))
    cx, cy = w / 2.0, h / 2.0
    tx = m[0, 0] * cx + m[0, 1] * cy + m[0, 2] - cx
    ty = m[1, 0] * cx + m[1, 1] * cy + m[1, 2] - cy
    return tx / w, ty / h, math.log(max(scale, 1e-6)), angle


def _widest_fit(a: np.ndarray, b: np.ndarray, area: float):
    """The similarity that moves the widest spread of points: RANSAC's best fit, and a second fit
    on the points the first left out; a character's outline moves many points over a small area,
    the set fewer points over most of the frame, so the fit whose inliers cover more area wins."""
    import cv2

    best, best_area = None, 0.0
    pts_a, pts_b = a, b
    for _ in range(2):
        if len(pts_a) < 6:
            break
        m, inl = cv2.estimateAffinePartial2D(pts_a, pts_b, method=cv2.RANSAC, ransacReprojThreshold=1.0,
                                             maxIters=500, confidence=0.99)
        if m is None or inl is None or inl.sum() < 6:
            break
        keep = inl.ravel().astype(bool)
        hull = cv2.contourArea(cv2.convexHull(pts_a[keep].astype(np.float32))) / area
        if hull > best_area:
            best, best_area = m, hull
        pts_a, pts_b = pts_a[~keep], pts_b[~keep]
    return best


class CameraTracker:
    """Per-pair camera motion over a video, fed batch by batch from the decode pass."""

    def __init__(self, stride: int = 1):
        self.stride = max(1, int(stride))
        self._n = 0
        self._prev: tuple[int, np.ndarray] | None = None
        self.rows: list[tuple] = []   # (frame index of the newer frame, frames apart, dx, dy, log_s, deg)
        self.failed: list[int] = []   # frame indices whose pair could not be fitted

    def update(self, frames: np.ndarray, bgr: bool = False, gray: np.ndarray | None = None) -> None:
        """`gray`: the frames' luma when the caller already has it (the ingest computes it once)."""
        from .stats import luma

        idx = np.arange(self._n, self._n + len(frames))
        pick = np.nonzero(idx % self.stride == 0)[0]
        if len(pick):
            gray = luma(frames[pick], bgr) if gray is None else gray[pick]
            for k, g in zip(idx[pick], gray):
                if self._prev is not None:
                    r = fit_pair(self._prev[1], g)
                    if r is None:
                        self.failed.append(int(k))
                    else:
                        self.rows.append((int(k), int(k - self._prev[0]), *r))
                self._prev = (int(k), g)
        self._n += len(frames)

    def arrays(self) -> dict[str, np.ndarray]:
        a = np.asarray(self.rows, dtype=np.float64).reshape(-1, 6)
        return {"frame": a[:, 0].astype(np.int64), "gap": a[:, 1], "dx": a[:, 2], "dy": a[:, 3], "ls": a[:, 4],
                "deg": a[:, 5], "failed": np.asarray(self.failed, dtype=np.int64)}


def clip_camera(tr: dict[str, np.ndarray], start: int, end: int, fps: float) -> dict:
    """The clip [start, end)'s camera: rates and a label (pairs wholly inside the clip only, so a
    cut's pair never counts)."""
    inside = (tr["frame"] - tr["gap"] >= start) & (tr["frame"] < end)
    failed = int(((tr["failed"] > start) & (tr["failed"] < end)).sum())
    n = int(inside.sum())
    out = {"cam_pan": None, "cam_tilt": None, "cam_zoom": None, "cam_rotation": None, "cam_shake": None,
           "camera_measured": "unknown"}
    if n == 0 or n < MIN_VALID * (n + failed):
        return out
    per_s = fps / tr["gap"][inside]
    dx, dy = tr["dx"][inside], tr["dy"][inside]
    pan = -float(np.median(dx * per_s))         # the picture slides left when the camera pans right
    tilt = float(np.median(dy * per_s))          # ... slides down when it tilts up
    zoom = float(np.median(tr["ls"][inside] * per_s))
    rot = float(np.median(tr["deg"][inside] * per_s))
    shake = float(np.sqrt(np.median((dx - np.median(dx)) ** 2 + (dy - np.median(dy)) ** 2))) if n >= 3 else 0.0
    out.update(cam_pan=pan, cam_tilt=tilt, cam_zoom=zoom, cam_rotation=rot, cam_shake=shake,
               camera_measured=label(pan, tilt, zoom, rot, shake))
    return out


def label(pan: float, tilt: float, zoom: float, rot: float, shake: float) -> str:
    if shake > SHAKE:
        return "shake"
    scores = {("pan right" if pan > 0 else "pan left"): abs(pan) / MOVE,
              ("tilt up" if tilt > 0 else "tilt down"): abs(tilt) / MOVE,
              ("zoom in" if zoom > 0 else "zoom out"): abs(zoom) / ZOOM,
              "rotate": abs(rot) / ROTATE}
    best = max(scores, key=scores.get)
    return best if scores[best] >= 1.0 else "static"
