"""Clips with a known camera, for testing and benchmarking `dataengine.camera`.

A virtual camera moves a crop window over a large picture: a real frame (footage in tests/media)
or a toy-world set drawn large, whose characters keep moving while the camera does. The crop's
path is the truth: pan (the window slides sideways), tilt (up or down), zoom (it shrinks or
grows), shake (it jitters around a still centre) or static (it holds; the characters still run).
"""

from __future__ import annotations

import math
import random

import numpy as np

KINDS = ("static", "pan left", "pan right", "tilt up", "tilt down", "zoom in", "zoom out", "shake")


def camera_path(kind: str, rng: random.Random, n: int, fps: float) -> list[tuple[float, float, float]]:
    """(centre x, centre y, crop scale) per frame, the centre in crop widths/heights from the
    start, the scale relative to the first frame's crop."""
    v = rng.uniform(0.08, 0.30)       # crop widths per second
    z = rng.uniform(0.10, 0.35)       # log-scale per second
    amp = rng.uniform(0.015, 0.04)    # shake: crop widths
    out = []
    for i in range(n):
        t = i / fps
        x = y = 0.0
        s = 1.0
        if kind == "pan right":
            x = v * t
        elif kind == "pan left":
            x = -v * t
        elif kind == "tilt up":
            y = -v * t                # the window moves up: the picture slides down
        elif kind == "tilt down":
            y = v * t
        elif kind == "zoom in":
            s = math.exp(-z * t)      # a smaller window: the picture grows
        elif kind == "zoom out":
            s = math.exp(z * t)
        elif kind == "shake":
            x, y = rng.gauss(0, amp), rng.gauss(0, amp)
        out.append((x, y, s))
    return out


def render(picture, kind: str, rng: random.Random, *, n: int = 48, fps: float = 24.0, size=(256, 192)) -> np.ndarray:
    """uint8 (n, H, W, 3): the camera `kind` over `picture` (an RGB array, or a function of the time
    in seconds returning one, all the same size). The crop starts in the middle at a third of the
    picture's width, so every path stays inside it."""
    import cv2

    first = picture(0.0) if callable(picture) else picture
    ph, pw = first.shape[:2]
    w, h = size
    cw = pw / 3.0
    ch = cw * h / w
    frames = np.empty((n, h, w, 3), np.uint8)
    for i, (x, y, s) in enumerate(camera_path(kind, rng, n, fps)):
        img = picture(i / fps) if callable(picture) else picture
        cx, cy = pw / 2 + x * cw, ph / 2 + y * ch
        sw, sh = cw * s, ch * s
        k = w / sw  # picture pixels -> output pixels
        m = np.float32([[k, 0, w / 2 - k * cx], [0, k, h / 2 - k * cy]])
        frames[i] = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT)
    return frames


def world_picture(rng: random.Random, width: int = 960, height: int = 720):
    """A toy-world set drawn large, its characters moving with time (its own camera still)."""
    from dataclasses import replace

    from .world import draw, random_scene

    scene = replace(random_scene(rng), camera="static")
    return lambda t: draw(scene, t, width, height)


def real_picture(path, rng: random.Random) -> np.ndarray:
    """One full-resolution RGB frame of a real video, at a random time."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or 1
        cap.set(cv2.CAP_PROP_POS_FRAMES, rng.randrange(max(1, n - 1)))
        ok, f = cap.read()
        if not ok:
            raise ValueError(f"cannot read a frame of {path}")
        return cv2.cvtColor(f, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()
