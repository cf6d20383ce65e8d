"""Metrics computed by our code from frames on disk. Each is a small pure function; the README
documents the formulas.

Frames are uint8 (T, H, W, 3) RGB unless said otherwise.
"""

from __future__ import annotations

import numpy as np

# --- tags -------------------------------------------------------------------------------------


from dataengine.caption.compare import jaccard  # noqa: E402,F401  (|A n B| / |A u B|; empty vs empty = 1)


def tag_recall(source, generated) -> dict[str, bool]:
    """For each source tag: was it found again in the generated video's tags?"""
    g = set(generated or [])
    return {t: t in g for t in (source or [])}


def control_adherence(requested, found) -> float | None:
    """Share of requested control tags present in the re-caption; None if nothing was requested."""
    req = set(requested or [])
    if not req:
        return None
    return len(req & set(found or [])) / len(req)


# --- style ------------------------------------------------------------------------------------


def palette_histogram(frames: np.ndarray, bins: int = 8) -> np.ndarray:
    """Normalised joint RGB histogram with `bins` levels per channel (bins^3 cells)."""
    q = (frames.reshape(-1, 3).astype(np.int32) * bins) // 256
    idx = (q[:, 0] * bins + q[:, 1]) * bins + q[:, 2]
    h = np.bincount(idx, minlength=bins ** 3).astype(np.float64)
    return h / max(h.sum(), 1.0)


def palette_distance(a: np.ndarray, b: np.ndarray, bins: int = 8) -> float:
    """Total-variation distance between quantised colour histograms: 0 same palette, 1 disjoint."""
    return float(0.5 * np.abs(palette_histogram(a, bins) - palette_histogram(b, bins)).sum())


def saturation(frames: np.ndarray) -> float:
    """Mean HSV saturation in [0, 1]."""
    f = frames.astype(np.float32) / 255.0
    mx, mn = f.max(axis=-1), f.min(axis=-1)
    s = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0)
    return float(s.mean())


def edge_density(frames: np.ndarray) -> float:
    """Share of pixels on a Canny edge (100/200 on luma): bold outlines raise it."""
    import cv2

    vals = [(cv2.Canny(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), 100, 200) > 0).mean() for f in frames]
    return float(np.mean(vals))


# --- temporal ---------------------------------------------------------------------------------


def flicker(frames: np.ndarray) -> float:
    """Mean absolute difference of consecutive frames, in [0, 1] (luma)."""
    if len(frames) < 2:
        return 0.0
    g = frames.astype(np.float32).mean(axis=-1) / 255.0
    return float(np.abs(np.diff(g, axis=0)).mean())


def motion_score(frames: np.ndarray, fps: float) -> float:
    """The ingest motion score (dataengine.stats) of a frame sequence sampled at `fps`."""
    from dataengine.stats import FrameStats

    st = FrameStats()
    st.update(frames, np.arange(len(frames)) / fps)
    m = st.arrays()["motion"]
    m = m[np.isfinite(m)]
    return float(m.mean()) if len(m) else 0.0


def style_stats(frames: np.ndarray, fps: float) -> dict[str, float]:
    return {"saturation": saturation(frames), "edge_density": edge_density(frames), "flicker": flicker(frames),
            "motion_score": motion_score(frames, fps)}


# --- fidelity to a reference video ---------------------------------------------------------------


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB over uint8 frames (inf when identical)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004) on luma, 7x7 Gaussian window (sigma 1.5), per frame then averaged."""
    import cv2

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for fa, fb in zip(a, b):
        x = cv2.cvtColor(fa, cv2.COLOR_RGB2GRAY).astype(np.float64)
        y = cv2.cvtColor(fb, cv2.COLOR_RGB2GRAY).astype(np.float64)
        blur = lambda z: cv2.GaussianBlur(z, (7, 7), 1.5)  # noqa: E731
        mx, my = blur(x), blur(y)
        sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
        vals.append(m.mean())
    return float(np.mean(vals))


def per_frame(fn, a: np.ndarray, b: np.ndarray) -> list[float]:
    return [fn(x[None], y[None]) for x, y in zip(a, b)]


# --- curves -----------------------------------------------------------------------------------


def ema(values: list[float], alpha: float = 0.1) -> list[float]:
    out, m = [], None
    for v in values:
        m = v if m is None else alpha * v + (1 - alpha) * m
        out.append(m)
    return out


def explosions(steps: list[int], values: list[float], k: float = 3.0, window: int = 20, warm: int = 5) -> list[int]:
    """Steps whose value exceeds k x the running median of the previous `window` values."""
    out = []
    for i in range(warm, len(values)):
        med = float(np.median(values[max(0, i - window):i]))
        if med > 0 and values[i] > k * med:
            out.append(steps[i])
    return out


def first_spike(steps: list[int], values: list[float], k: float = 3.0, window: int = 20, warm: int = 5) -> int | None:
    """The first step of the first run of spiking values (grad-norm spikes)."""
    ex = explosions(steps, values, k, window, warm)
    return ex[0] if ex else None


def temporal_gap(a: np.ndarray, b: np.ndarray) -> float:
    """How differently two videos of the same noise change from frame to frame: the mean squared
    difference of their consecutive-frame differences (frames in [0, 1], (T, H, W, C)). A variant
    that flickers, or moves where the teacher holds still, scores above 0; a constant shift of
    every frame (a brightness change) does not count here."""
    if len(a) < 2 or len(b) < 2:
        return 0.0
    da = np.diff(np.asarray(a, dtype=np.float32), axis=0)
    db = np.diff(np.asarray(b, dtype=np.float32), axis=0)
    return float(((da - db) ** 2).mean())
