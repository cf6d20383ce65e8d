"""The clip-purity stage: after scene detection, before the clip policy (issue 22).

A style LoRA learns whatever its clips hold, so a clip must hold one shot and nothing else. Scene
detectors report cut *points*; a dissolve, a fade, a wipe or an iris spans many frames, and a
detector either misses it or reports one point inside it, leaving the rest in a clip. Flashes and
fast pans make detectors report cuts that are not there.

This stage works on thumbnails (THUMB, a few hundred bytes a frame) of the frames the single
decode pass already has, and returns the cuts to keep plus *excluded spans*, each with a reason:

- a detector cut is dropped as a **flash** when the frames on either side of the spike match
  each other (a flash, an impact frame, a strobe: the shot goes on after it), and as **motion**
  when its change is no spike over its neighbours (a fast pan or a whip of the camera);
- candidate spans of gradual transitions, wipes and fades come from dataengine.spans.

Those are candidates. Hand-drawn animation is full of runs of change that are none of these: a
wing sweeps across the camera, fills it and leaves, a bird flaps close to the lens, lightning
flashes, the screen shakes (issue 34). So (stage v4) a candidate is a transition only if the
picture after it is *another shot* than the picture before it: the shot before never comes back
within a second after it, nor was the shot after there a second before (`one_shot`, on 12x8
means of the thumbnails at the best shift, so the moving characters weigh little against what a
shot keeps: its background layout and palette). A passage through black stays a transition,
and so does a span whose frames stay close to two alike pictures. Detector cuts that pass their
own checks are *trusted*: spans are split at them and never drop them, and a cut the detector
missed next to fast action is added where a spike of change has another shot on each side
(`recover_cuts`).

The clip policy then cuts clips around the spans as around cuts (trimming as usual), so no clip
contains a transition frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .spans import DARK, Span, _dist, _window_percentile, fade_spans, frame_changes, gradual_spans, merge, wipe_spans
from .spans import settle  # noqa: F401  (re-exported: tests and benchmarks reach the finders through the stage)

THUMB = (24, 16)  # (W, H) of the thumbnails the stage keeps per frame


class Thumbs:
    """Collects a small float thumbnail of every frame during the decode pass."""

    def __init__(self):
        self.parts: list[np.ndarray] = []

    def update(self, frames: np.ndarray, bgr: bool = False) -> None:
        import cv2

        t = np.stack([cv2.resize(f, THUMB, interpolation=cv2.INTER_AREA) for f in frames])
        self.parts.append(t[..., ::-1] if bgr else t)

    def array(self) -> np.ndarray:
        if not self.parts:
            return np.zeros((0, THUMB[1], THUMB[0], 3), np.float32)
        return np.concatenate(self.parts).astype(np.float32)


def thumbnails(frames: np.ndarray, bgr: bool = False) -> np.ndarray:
    """The stage's thumbnails of a whole array of frames (ingest collects them batch by batch)."""
    t = Thumbs()
    t.update(frames, bgr=bgr)
    return t.array()


def check_cuts(th: np.ndarray, d: np.ndarray, cuts: list[int], spans: list[Span]) -> tuple[list[int], dict]:
    """Keep the detector cuts that are real: a spike over the neighbourhood, not a flash, and not
    the same picture moved."""
    n = len(th)
    kept, dropped = [], {}
    for c in cuts:
        if any(s.start - 2 <= c <= s.end + 2 for s in spans):
            dropped[c] = "inside a gradual transition"
            continue
        # a flash: some frame just before matches some frame just after (within 4 frames)
        before = range(max(0, c - 3), c)
        after = range(c, min(n, c + 4))
        near = min((_dist(th, a, b) for a in before for b in after if b - a >= 2), default=np.inf)
        if near < 0.3 * max(d[c], 1e-6):
            dropped[c] = "flash"
            continue
        if c >= 1 and moved_picture(th, c - 1, c):
            dropped[c] = "camera move"
            continue
        around = np.concatenate([d[max(1, c - 8):max(1, c - 1)], d[c + 2:c + 9]])
        base = float(np.median(around)) if len(around) else 0.0
        if d[c] < 2.5 * base + 2.0:
            dropped[c] = "motion"
            continue
        kept.append(c)
    return kept, dropped


MOVED = 0.25  # a picture explained by the one before it, moved, to this share of the change left


def moved_picture(th: np.ndarray, a: int, b: int) -> bool:
    """Picture b is picture a moved (a whip pan's jump, a camera shake): shifted by up to a quarter
    of its width (a fifth of its height), it leaves at most MOVED of the change there is without
    the shift. A cut to another shot leaves most of it, and a cut between two moments of a still
    camera's shot is best explained by no shift at all (benchmarks/README.md, stage v3)."""
    A, B = th[a], th[b]
    h, w = A.shape[:2]
    raw = float(np.abs(B - A).mean())
    best = raw
    for dy in range(-(h // 5), h // 5 + 1):
        for dx in range(-(w // 4), w // 4 + 1):
            if dx or dy:
                part_b = B[max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)]
                part_a = A[max(0, -dy):h + min(0, -dy), max(0, -dx):w + min(0, -dx)]
                best = min(best, float(np.abs(part_b - part_a).mean()))
    return raw > 0 and best <= MOVED * raw


FLAT_STD = 4.0  # a thumbnail this plain (spatial std, 0-255) is a card: black, white, a wing filling the camera
LOOK = 24  # frames searched on each side of a span for the shot's own pictures
LEVEL = 20.0  # a pixel differs between two shots when a channel differs by this much (0-255)
SAME_SHOT = 0.35  # ... and two pictures are one shot when at most this share differs at their best shift
BETWEEN_ENDS = 0.4  # a span between two alike pictures is still a transition when no frame strays farther than this


def is_card(th: np.ndarray, t: int) -> bool:
    return float(th[t].std(axis=(0, 1)).mean()) < FLAT_STD


def _half(x: np.ndarray) -> np.ndarray:
    k, h, w = x.shape[:3]
    return x[:, :h // 2 * 2, :w // 2 * 2].reshape(k, h // 2, 2, w // 2, 2, 3).mean(axis=(2, 4))


def shot_difference(a: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """For each of `frames` (k, H, W, 3): the share of the picture that differs from view `a` (a
    per-pixel median of a few frames of one shot, so fast small parts drop out) at the shift that
    explains the most, up to a quarter of the width and a fifth of the height. Two moments of one
    shot leave the moving characters (a small share); another shot leaves its other background
    (most of the picture)."""
    a, frames = _half(a[None])[0], _half(frames)  # 12x8: 20x cheaper than 24x16, and enough for a layout
    h, w = a.shape[:2]
    best = np.ones(len(frames), np.float32)
    for dy in range(-(h // 5), h // 5 + 1):
        for dx in range(-(w // 4), w // 4 + 1):
            pa = a[max(0, -dy):h + min(0, -dy), max(0, -dx):w + min(0, -dx)]
            pb = frames[:, max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)]
            best = np.minimum(best, (np.abs(pb - pa).max(axis=-1) > LEVEL).mean(axis=(1, 2)))
    return best


def _context(th: np.ndarray, start: int, step: int, lo: int, hi: int, busy: np.ndarray, k: int = 3) -> list[int]:
    """Up to k frames from `start` walking by `step` inside [lo, hi), skipping cards and frames of
    candidate spans, at most LOOK frames away."""
    out, t = [], start
    while lo <= t < hi and abs(t - start) <= LOOK and len(out) < k:
        if not busy[t] and not is_card(th, t):
            out.append(t)
        t += step
    return out


def strays(th: np.ndarray, a: np.ndarray, b: np.ndarray, s: int, e: int) -> float:
    """How far the frames s..e-1 stray from pictures a and b: the largest over the frames of the
    mean per-pixel distance to the nearer of the two, over the distance between them. A dissolve
    or a wipe between two alike pictures stays between them (under ~0.5); a dark wing or a flash
    over one shot goes far from both."""
    ab = max(float(np.abs(a - b).mean()), 2.0)
    f = th[s:e]
    return float(np.minimum(np.abs(f - a), np.abs(f - b)).mean(axis=(1, 2, 3)).max()) / ab if e > s else 0.0


def one_shot(th: np.ndarray, sp: Span, lo: int, hi: int, busy: np.ndarray) -> bool:
    """The span sits inside one shot: the shot's own picture before it comes back after it (or the
    one after it was there before it), within LOOK frames and inside the stretch lo..hi between
    trusted cuts, and its frames stray from both (fast action, an occluder, a flash). A span whose
    frames stay between two alike pictures is still a transition (a dissolve between two moments
    of one set)."""
    before = _context(th, sp.start - 1, -1, lo, hi, busy)
    after = _context(th, sp.end, 1, lo, hi, busy)
    a = np.median(th[before], axis=0) if before else th[sp.start]
    b = np.median(th[after], axis=0) if after else th[sp.end - 1]
    ahead = th[sp.end:min(hi, sp.end + LOOK)]
    behind = th[max(lo, sp.start - LOOK):sp.start]
    dist = [float(shot_difference(a, b[None])[0])]
    if len(ahead):
        dist.append(float(shot_difference(a, ahead).min()))
    if len(behind):
        dist.append(float(shot_difference(b, behind).min()))
    if min(dist) > SAME_SHOT:
        return False
    return strays(th, a, b, sp.start, sp.end) > BETWEEN_ENDS


def _split_at(sp: Span, cuts: list[int]) -> list[Span]:
    """A gradual transition never holds a hard cut: the span's pieces on either side of each."""
    out, start = [], sp.start
    for c in cuts:
        if start < c < sp.end:
            if c > start:
                out.append(Span(start, c, sp.reason))
            start = c
    if sp.end > start:
        out.append(Span(start, sp.end, sp.reason))
    return out


RECOVER_SPIKE = 3.0  # a missed cut: the frame's change is this many times the median around it ...
RECOVER_MIN = 20.0  # ... and at least this (0-255)
RECOVER_SHOT = 0.5  # ... and the pictures on its two sides differ over at least this share, at any shift


def recover_cuts(th: np.ndarray, d: np.ndarray, cuts: list[int]) -> list[int]:
    """Hard cuts the detector missed, where the picture is sure of them: a spike of change, and
    the shot before it never comes back in the LOOK frames after it, nor the shot after it in the
    LOOK frames before it (an occluder, a flash or a wing leaves the same shot behind). A
    detector that compares each frame's change with its neighbours' misses a cut into (or out
    of) fast action; this finds it."""
    n = len(th)
    if n < 8:
        return []
    base = _window_percentile(d, 8, 50)
    out = []
    taken = sorted(cuts)
    for t in np.flatnonzero((d > RECOVER_SPIKE * base) & (d > RECOVER_MIN)):
        t = int(t)
        if not any(abs(t - c) <= 3 for c in taken) and two_shots(th, t, taken):
            out.append(t)
            taken = sorted(taken + [t])
    return out


def two_shots(th: np.ndarray, t: int, cuts: list[int]) -> bool:
    """Frame t starts another shot: the picture before it never comes back in the LOOK frames
    after it, nor the one after it in the LOOK frames before it (both inside the stretch between
    the nearest other cuts). An occluder, a flash or a wing leaves the same shot behind."""
    n = len(th)
    lo = max([0] + [c for c in cuts if c < t])
    hi = min([n] + [c for c in cuts if c > t])
    if t - lo < 2 or hi - t < 2:
        return False
    a = np.median(th[max(lo, t - 3):t], axis=0)
    ahead, behind = th[t:min(hi, t + LOOK)], th[max(lo, t - LOOK):t]
    if shot_difference(a, ahead).min() <= RECOVER_SHOT:
        return False  # the picture before comes back: a flash, an occluder, a wing
    # and none of the first pictures after it was there before it (a flash that ends at t)
    return all(shot_difference(th[j], behind).min() > RECOVER_SHOT for j in range(t, min(hi, t + 3)))


@dataclass
class PurityResult:
    cuts: list[int]  # detector cuts kept
    spans: list[Span]  # excluded spans
    dropped_cuts: dict  # {cut frame: reason} for detector cuts not kept
    inside_shot: list[Span] = field(default_factory=list)  # runs of change found and kept in (one shot)
    found_cuts: list[int] = field(default_factory=list)  # hard cuts the detector missed and the stage found


def purify(th: np.ndarray, cuts: list[int]) -> PurityResult:
    """Cuts to keep and spans to exclude, from the thumbnails of every frame and the detector's cuts.

    1. Detector cuts are checked on their own (a spike, not a flash, not the picture moved); the
       ones kept are trusted, and no span found near them can drop them.
    2. Candidate spans (gradual runs, fades, wipes) are split at trusted cuts, and each piece is a
       transition only if the shot after it is another shot than the one before it, or its frames
       are blends of the two: fast action, occluders, flaps and flashes inside one shot are not.
    3. An untrusted detector cut inside a kept span goes with it ("inside a gradual transition")."""
    n = len(th)
    d = frame_changes(th)
    trusted, dropped = check_cuts(th, d, cuts, [])
    for c, why in list(dropped.items()):  # a cut into (or out of) fast action is no spike over it
        if why == "motion" and two_shots(th, c, cuts):
            del dropped[c]
            trusted.append(c)
    found = recover_cuts(th, d, cuts)
    trusted = sorted(trusted + found)
    candidates = merge(gradual_spans(th, d) + fade_spans(th) + wipe_spans(th))
    busy = np.zeros(n, bool)
    for sp in candidates:
        busy[sp.start:sp.end] = True
    bounds = [0] + sorted(trusted) + [n]
    luma = th.mean(axis=(1, 2, 3))
    spans, inside = [], []
    for sp in candidates:
        for piece in _split_at(sp, trusted):
            k = int(np.searchsorted(bounds, piece.start, side="right"))
            lo, hi = bounds[k - 1], bounds[k]
            blackout = piece.reason == "fade" and bool(luma[piece.start:piece.end].min() < DARK)
            (spans if blackout or not one_shot(th, piece, lo, hi, busy) else inside).append(piece)
    for c in list(dropped):
        if any(s.start - 2 <= c <= s.end + 2 for s in spans):
            dropped[c] = "inside a gradual transition"
    return PurityResult(trusted, spans, dropped, inside, found)
