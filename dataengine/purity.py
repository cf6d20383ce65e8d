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
- a **gradual** transition is a run of frames that change steadily from one picture to another: each
  frame changes more than the shot's own motion, and the pixels move on a straight path, so the
  distance from the frame before the run to the frame after it is most of the distance travelled
  (a dissolve or a wipe: ~1; motion inside a shot goes back and forth: well below);
- a **fade** (or an iris) passes through black: dark frames, and the ramps down to and up from them.

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

THUMB = (24, 16)  # (W, H) of the thumbnails the stage keeps per frame


@dataclass(frozen=True)
class Span:
    start: int  # first excluded frame
    end: int  # one past the last
    reason: str  # gradual | fade

    def to_json(self) -> dict:
        return {"start": self.start, "end": self.end, "reason": self.reason}


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


def frame_changes(th: np.ndarray) -> np.ndarray:
    """d[t] = mean absolute change from frame t-1 to t (d[0] = 0), 0-255 scale."""
    d = np.zeros(len(th), np.float32)
    if len(th) > 1:
        d[1:] = np.abs(np.diff(th, axis=0)).mean(axis=(1, 2, 3))
    return d


def _dist(th, a: int, b: int) -> float:
    return float(np.abs(th[a] - th[b]).mean())


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


def _window_percentile(x: np.ndarray, half: int, q: float) -> np.ndarray:
    """p[i] = the q-th percentile of x[i - half : i + half + 1] (the ends reuse the first and last
    full window; a short x gets its own percentile throughout)."""
    n = len(x)
    if n <= 2 * half + 1:
        return np.full(n, np.percentile(x, q) if n else 0.0, np.float32)
    mid = np.percentile(np.lib.stride_tricks.sliding_window_view(x, 2 * half + 1), q, axis=1).astype(np.float32)
    return np.concatenate([np.full(half, mid[0]), mid, np.full(half, mid[-1])]).astype(np.float32)


def motion_floor(d: np.ndarray, half: int = 15, q: float = 30) -> np.ndarray:
    """The shot's own change per frame: a low percentile of the change over the `half` frames
    before and, separately, the `half` frames after each frame, and the lower of the two. Low, so
    a transition inside the window does not raise it; one-sided, so a still shot next to a moving
    one keeps its own (near zero) floor up to the transition."""
    n = len(d)
    if n < 2:
        return np.zeros(n, np.float32)
    body = d[1:]  # d[0] is no change
    w = _window_percentile(body, half // 2, q)  # centred windows of ~half frames ...
    k = half // 2 + 1
    left = np.concatenate([np.full(k, w[0]), w[:-k]]) if len(w) > k else np.full(len(w), w[0])
    right = np.concatenate([w[k:], np.full(k, w[-1])]) if len(w) > k else np.full(len(w), w[-1])
    out = np.empty(n, np.float32)
    out[1:] = np.minimum(left, right)  # ... ending just before the frame, or starting just after it
    out[0] = out[1]
    return out


BETWEEN = 0.35
MIN_CHORD = 12.0  # mean change (0-255) from the picture before a transition to the one after it
MIN_SHARE = 0.35  # ... over at least this share of the picture: a character moving on a flat set
#                   is a small wipe of its own, but it changes a small part of the frame


def changed_share(th: np.ndarray, a: int, b: int, level: float = 20.0) -> float:
    return float((np.abs(th[a] - th[b]).max(axis=-1) > level).mean())


def betweenness(th: np.ndarray, a: int, b: int) -> float:
    """How far the frames strictly between a and b are from lying between picture a and picture b,
    pixel by pixel (|f - A| + |f - B| - |A - B|, over |A - B|; the median over the frames). A
    dissolve or a wipe of still shots gives 0: every pixel is A, B or a blend of the two. Motion
    inside a shot puts pixels elsewhere."""
    A, B = th[a], th[b]
    ab = float(np.abs(A - B).mean())
    if b - a < 2 or ab <= 0:
        return np.inf
    r = [float((np.abs(th[t] - A) + np.abs(th[t] - B)).mean()) - ab for t in range(a + 1, b)]
    return float(np.median(r)) / ab


def _is_transition(th: np.ndarray, d: np.ndarray, base: np.ndarray, s: int, e: int, strict: bool = False) -> bool:
    """Frames s..e-1 carry picture s-1 to picture e-1 on a (near) straight path: a dissolve or a
    wipe, not motion inside a shot. `strict` (for a stretch picked out of a longer run, where
    many are tried) asks for the pixel-wise test alone."""
    path = float(d[s:e].sum())
    excess = path - float(base[s:e].sum())
    chord = _dist(th, s - 1, e - 1)
    if chord <= MIN_CHORD or changed_share(th, s - 1, e - 1) < MIN_SHARE:
        return False
    straight = not strict and chord >= 0.6 * excess and chord >= 0.25 * path
    between = betweenness(th, s - 1, e - 1)
    if not (straight or between < BETWEEN):
        return False
    # two shots, not one: their colours differ (motion inside a shot keeps its palette), unless the
    # frames lie so plainly between the two pictures that only a blend or a wipe explains them
    return palette_distance(th[s - 1], th[e - 1]) >= MIN_PALETTE or between < SURE_BETWEEN


MIN_PALETTE = 0.2  # colour-histogram distance (0-1) between the pictures before and after a transition
SURE_BETWEEN = 0.12


def palette_distance(a: np.ndarray, b: np.ndarray, bins: int = 4) -> float:
    """Half the L1 distance between the colour histograms (bins^3 RGB cells) of two thumbnails."""
    def hist(x):
        q = np.clip(x.reshape(-1, 3) * (bins / 256.0), 0, bins - 1).astype(np.int64)
        h = np.bincount((q[:, 0] * bins + q[:, 1]) * bins + q[:, 2], minlength=bins ** 3)
        return h / max(1, h.sum())
    return float(0.5 * np.abs(hist(a) - hist(b)).sum())


def _transition_in_run(th, d, base, s: int, e: int, min_len: int, max_len: int) -> tuple[int, int] | None:
    """The longest stretch of the run s..e-1 that is a transition: the whole run, else the longest
    one starting where the run starts (a transition into a moving shot) or ending where it ends
    (out of a moving shot), at most max_len frames."""
    if min_len <= e - s <= max_len and _is_transition(th, d, base, s, e):
        return s, e
    best = None
    for length in range(min(max_len, e - s - 1), min_len - 1, -1):
        if _is_transition(th, d, base, s, s + length, strict=True):
            best = (s, s + length)
        elif _is_transition(th, d, base, e - length, e, strict=True):
            best = (e - length, e)
        if best:
            return best
    return None


TIGHT = 0.92  # share of the way from the picture before a stretch to the one after it


def tighten(th: np.ndarray, s: int, e: int) -> tuple[int, int]:
    """Shrink the stretch s..e-1 to the frames that are on their way from one picture to the other.
    A stretch found as a run of change can hold the still or moving frames of the shots on either
    side; the transition begins after the last frame still (almost) as far from the end picture as
    the farthest, and ends at the first frame (almost) as far from the start picture as the
    farthest. One frame of margin stays on each side."""
    pics = th[s - 1:e]
    to_end = np.abs(pics - pics[-1]).mean(axis=(1, 2, 3))
    from_start = np.abs(pics - pics[0]).mean(axis=(1, 2, 3))
    a = int(np.flatnonzero(to_end >= TIGHT * to_end.max())[-1])  # last picture still "before"
    b = int(np.flatnonzero(from_start >= TIGHT * from_start.max())[0])  # first picture already "after"
    if b <= a:
        return s, e
    return max(s, s + a - 1), min(e, s + b + 1)  # frames (s - 1 + a) + 1 .. (s - 1 + b), with a frame of margin


SETTLE = 0.95  # a picture has arrived when the next ones get no farther than 1/SETTLE of its distance
SETTLE_FRAMES = 8  # frames past a found stretch that may still belong to its transition
SETTLE_LOOK = 3  # ... judged over this many next pictures


def _arrival(dist: np.ndarray, first: int) -> int:
    """The first index from `first` on whose distance the next SETTLE_LOOK do not outgrow."""
    for t in range(first, len(dist) - 1):
        if dist[t] >= SETTLE * dist[t + 1:t + 1 + SETTLE_LOOK].max():
            return t
    return first


def settle(th: np.ndarray, s: int, e: int) -> tuple[int, int]:
    """Grow the stretch s..e-1 to where the transition really ends. The last frames of a dissolve
    into a moving shot change less than that shot's motion, so the run of change that found it
    can stop short; the pictures after it keep moving away from the picture before the transition
    until the blend is done, then stop getting farther. The stretch ends after the first picture
    (from its own end, up to SETTLE_FRAMES and at most its length past it) that the next few do
    not outgrow."""
    n = len(th)
    hi = min(n, e + min(SETTLE_FRAMES, e - s))
    from_start = np.abs(th[s - 1:hi] - th[s - 1]).mean(axis=(1, 2, 3))  # index k: picture s - 1 + k
    return s, max(e, s + _arrival(from_start, e - s))  # picture s - 1 + k has arrived: the span ends after it


def gradual_spans(th: np.ndarray, d: np.ndarray, min_len: int = 4, max_len: int = 40) -> list[Span]:
    """Runs of steady change between two different pictures: each frame changes more than the
    shot's motion, and what the run travelled beyond that motion is mostly the straight distance
    from the picture before it to the picture after it. A run that goes on into a moving shot
    (or comes out of one) is searched for such a stretch at its start (or end)."""
    n = len(th)
    spans: list[Span] = []
    base = motion_floor(d)
    active = d > np.maximum(1.2 * base + 0.5, 1.0)
    t = 1
    while t < n:
        if not active[t]:
            t += 1
            continue
        s = t
        while t < n and active[t]:
            t += 1
        e = t  # frames s..e-1 changed; the run goes from picture s-1 to picture e-1
        run = d[s:e]
        spike = np.flatnonzero(run > np.maximum(3 * np.median(run), 10.0))
        if len(spike):  # a hard cut inside the run: the detector's business; look again after it
            e = s + int(spike[0])
            t = e + 1
        found = _transition_in_run(th, d, base, s, e, min_len, max_len) if e - s >= min_len else None
        if found:
            spans.append(Span(*settle(th, *tighten(th, *found)), "gradual"))
    return spans


WIPE_PEAK = 3.0  # the edge's column (or row) changes this many times the median one
WIPE_SURE_PEAK = 6.0  # ... and over the whole sweep, the median frame's peak stands this far out
WIPE_KEEP = 0.5  # what the edge sweeps stays changed by at least this share of the edge's change
WIPE_KEEP_MAX = 2.5  # ... and at most this many times it
WIPE_SWEEP = 0.7  # the edge crosses most of the picture (a character running across a set may cross half)
WIPE_STEP = 6  # places the peak may move forward in a frame
WIPE_ACROSS = 0.35  # an edge runs across the picture: this share of its line changes (a car: ~0.2)


def _one_way_pieces(peak: np.ndarray, i: int, j: int) -> list[tuple[int, int]]:
    """Split peak[i..j] into maximal pieces that travel one way: each step forward by at most
    WIPE_STEP places, or back by at most one (the peak of a noisy frame sits beside the edge)."""
    pieces = []
    for sign in (1, -1):
        k = i
        while k < j:
            m = k
            while m < j and -1 <= sign * (int(peak[m + 1]) - int(peak[m])) <= WIPE_STEP:
                m += 1
            if m > k:
                pieces.append((k, m))
            k = m + 1 if m == k else m
    return pieces


def _edge_length(diff: np.ndarray, peak: np.ndarray, a: int, b: int, axis: int) -> float:
    """The median share of the peak's column (or row) that changed, over frames a..b: a wipe's
    edge crosses the whole picture; an object entering changes the part of the line it covers."""
    shares = []
    for k in range(a, b + 1):
        line = diff[k][:, peak[k]] if axis == 2 else diff[k][peak[k], :]
        shares.append(float((line > 0.25 * line.max()).mean()))
    return float(np.median(shares))


def wipe_spans(th: np.ndarray, min_len: int = 5, max_len: int = 40) -> list[Span]:
    """Wipes the frame-change level cannot see: two shots alike (two moments of one scene), both
    moving. The change concentrates in the column (or row) the wipe's edge crosses, the edge
    travels one way across most of the picture, and what it swept stays changed (a character
    running across a set also moves a peak of change, but the set behind it comes back)."""
    n = len(th)
    if n < min_len + 2:
        return []
    diff = np.abs(np.diff(th, axis=0)).mean(axis=3)  # (n-1, H, W): diff[i] is the change into frame i+1
    spans = []
    for axis in (2, 1):  # the edge's column (a left-right wipe), then its row (top-bottom)
        prof = diff.mean(axis=1 if axis == 2 else 2)  # (n-1, size)
        size = prof.shape[1]
        peak = prof.argmax(axis=1)
        ratio = prof.max(axis=1) / (np.median(prof, axis=1) + 0.5)
        strong = ratio >= WIPE_PEAK
        i = 0
        while i < n - 1:
            if not strong[i]:
                i += 1
                continue
            j = i
            while j + 1 < n - 1 and strong[j + 1]:
                j += 1
            for a, b in _one_way_pieces(peak, i, j):
                sweep = abs(int(peak[b]) - int(peak[a]))
                if not (min_len <= b - a + 1 <= max_len and sweep >= WIPE_SWEEP * size):
                    continue
                if np.abs(np.diff(peak[a:b + 1].astype(int))).max() > sweep / 3:
                    continue  # an edge travels steadily; a peak that jumps is two things changing
                lo, hi = sorted((int(peak[a]), int(peak[b])))
                # the picture before the piece (frame a) and after it (frame b + 1), over what it swept
                kept = np.abs(th[b + 1] - th[a]).mean(axis=2).mean(axis=0 if axis == 2 else 1)[lo:hi + 1]
                edge = prof[a:b + 1].max(axis=1).mean()
                # the swept part changed by about what the edge carried: far less is a character
                # passing; far more is the whole picture changing (a fade, a move of the camera)
                if (WIPE_KEEP * edge <= kept.mean() <= WIPE_KEEP_MAX * edge
                        and np.median(ratio[a:b + 1]) >= WIPE_SURE_PEAK
                        and _edge_length(diff, peak, a, b, axis) >= WIPE_ACROSS):
                    spans.append(Span(a + 1, b + 2, "gradual"))
            i = j + 1
    return spans


RAMP = 0.04  # a fade's ramp: luma steps of at least this share of its level a frame


DARK = 14.0  # mean level (0-255) of a picture gone to black


def fade_spans(th: np.ndarray, dark: float = DARK) -> list[Span]:
    """Dark runs (a fade or an iris through black) widened to the ramps on either side."""
    luma = th.mean(axis=(1, 2, 3))
    n = len(th)
    spans = []
    t = 0
    while t < n:
        if luma[t] >= dark:
            t += 1
            continue
        s = t
        while t < n and luma[t] < dark:
            t += 1
        e = t
        # the ramps down and up: luma steps of more than RAMP of its level (a fade's are steep; a
        # shot's own drift in brightness, which the walk must not follow, is slow)
        a = s
        while a > 0 and luma[a - 1] > luma[a] + max(0.5, RAMP * luma[a - 1]) and s - a < 30:
            a -= 1
        b = e
        while b < n and luma[b] > luma[b - 1] + max(0.5, RAMP * luma[b]) and b - e < 30:
            b += 1
        if a > 0 or b < n:  # a video that is dark throughout has no fade
            spans.append(Span(a, b, "fade"))
    return spans + dip_spans(luma)


def dip_spans(luma: np.ndarray, min_ramp: int = 3, depth: float = 0.5, flat: int = 3) -> list[Span]:
    """A fast fade that never reaches black: luma falls steadily for at least `min_ramp` frames to
    under half of where it started, may rest at the bottom for up to `flat` frames, then climbs
    steadily again."""
    n = len(luma)
    spans = []
    for t in range(1, n - 1):
        if not (luma[t] < luma[t - 1] - 0.3):  # the last frame of a fall: the bottom starts here
            continue
        lo = t
        while lo + 1 < n and abs(luma[lo + 1] - luma[t]) <= 1.0 and lo - t < flat - 1:
            lo += 1
        a = t
        while a > 0 and luma[a - 1] > luma[a] + max(0.3, RAMP * luma[a - 1]):
            a -= 1
        b = lo
        while b < n - 1 and luma[b + 1] > luma[b] + max(0.3, RAMP * luma[b + 1]):
            b += 1
        if b == lo or luma[t + 1] < luma[t] - 0.3:
            continue  # no climb after the bottom, or the fall goes on
        top = min(luma[a], luma[b])
        if t - a >= min_ramp and b - lo >= min_ramp and max(luma[t:lo + 1]) <= (1 - depth) * top:
            spans.append(Span(a + 1, b, "fade"))
    return spans


def merge(spans: list[Span], gap: int = 4) -> list[Span]:
    """Overlapping spans, and spans fewer than `gap` frames apart (one transition whose change
    dipped for a moment), become one."""
    out: list[Span] = []
    for s in sorted(spans, key=lambda x: x.start):
        if out and s.start <= out[-1].end + gap:
            last = out[-1]
            reason = "fade" if "fade" in (last.reason, s.reason) else last.reason  # a fade's ramps are gradual too
            out[-1] = Span(last.start, max(last.end, s.end), reason)
        else:
            out.append(s)
    return out


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
