"""Candidate spans for the clip-purity stage (dataengine.purity): stretches of frames that may be a
gradual transition, found on the stage's thumbnails.

- a **gradual** transition (a dissolve or a wipe) is a run of frames that change steadily from one
  picture to another: each frame changes more than the shot's own motion, and the pixels move on a
  straight path, so the distance from the frame before the run to the frame after it is most of
  the distance travelled (motion inside a shot goes back and forth);
- a **wipe** between two alike, moving shots is found by its edge travelling across the picture;
- a **fade** (or an iris) passes through black: dark frames, and the ramps down to and up from them.

These are candidates only: purity.purify asks of each whether the picture after it is another shot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Span:
    start: int  # first excluded frame
    end: int  # one past the last
    reason: str  # gradual | fade

    def to_json(self) -> dict:
        return {"start": self.start, "end": self.end, "reason": self.reason}


def frame_changes(th: np.ndarray) -> np.ndarray:
    """d[t] = mean absolute change from frame t-1 to t (d[0] = 0), 0-255 scale."""
    d = np.zeros(len(th), np.float32)
    if len(th) > 1:
        d[1:] = np.abs(np.diff(th, axis=0)).mean(axis=(1, 2, 3))
    return d


def _dist(th, a: int, b: int) -> float:
    return float(np.abs(th[a] - th[b]).mean())


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
