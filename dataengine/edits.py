"""Edited videos with exact ground truth, and how to score clips against it (issue 22).

A video of the set is a run of *segments*, each taken from inside one shot (a real-camera file,
or a toy-world scene), joined by transitions of known type and length:

- cut: the next segment starts on the next frame;
- dissolve: a cross-fade over 8-20 frames;
- fade: the outgoing segment fades to black, the incoming fades up from it;
- wipe: a vertical edge sweeps across, left to right;
- iris: a circle closes on the outgoing shot and opens on the incoming one.

Inside some segments sit *traps*, which are not transitions: a 2-frame white flash and a fast pan
(the window slides across the shot at about a screen width per second). The truth lists every
transition as a frame span [start, end) (a cut is the empty span at its first new frame) and every
trap as a span. `score` compares a detector's clips (start, end frame pairs per video) with it.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

TRANSITIONS = ("cut", "dissolve", "fade", "wipe", "iris")
TOLERANCE = 2  # frames


@dataclass
class Span:
    kind: str
    start: int  # first frame of the span
    end: int  # one past the last; a cut has start == end (its first new frame)


@dataclass
class EditTruth:
    video: str
    frames: int
    fps: float
    transitions: list[Span] = field(default_factory=list)
    traps: list[Span] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"video": self.video, "frames": self.frames, "fps": self.fps,
                "transitions": [asdict(s) for s in self.transitions], "traps": [asdict(s) for s in self.traps]}

    @classmethod
    def from_json(cls, d: dict) -> "EditTruth":
        return cls(d["video"], d["frames"], d["fps"], [Span(**s) for s in d["transitions"]],
                   [Span(**s) for s in d["traps"]])


# --- sources: shots to cut segments from ---------------------------------------------------------

class Shot:
    """Frames of one continuous shot, cropped and resized to the set's size, read lazily."""

    def __init__(self, name: str, frames: np.ndarray):
        self.name, self.frames = name, frames

    def segment(self, rng: random.Random, n: int, size: tuple[int, int], pan: tuple[int, int] | None = None):
        """n frames from a random start inside the shot, resized to size (W, H); `pan` = (first,
        last) frame of a fast pan across the frame within the segment."""
        import cv2

        w, h = size
        start = rng.randrange(0, max(1, len(self.frames) - n))
        src = self.frames[start:start + n]
        if len(src) < n:  # a short shot loops back and forth (still one shot)
            src = np.concatenate([src, src[::-1]] * (n // max(1, len(src)) + 1))[:n]
        sh, sw = src.shape[1:3]
        cw = int(min(sw, sh * w / h) * 0.7)  # a window, so a pan has room to slide
        ch = int(cw * h / w)
        x0, y0 = (sw - cw) // 2, (sh - ch) // 2
        out = []
        for i, f in enumerate(src):
            x = x0
            if pan and pan[0] <= i < pan[1]:
                x = int((sw - cw) * (i - pan[0]) / max(1, pan[1] - pan[0] - 1))
            elif pan and i >= pan[1]:
                x = sw - cw
            out.append(cv2.resize(f[y0:y0 + ch, x:x + cw], (w, h), interpolation=cv2.INTER_AREA))
        return np.stack(out)


def real_shots(media_dir: str | Path, max_frames: int = 400) -> list[Shot]:
    """The real-camera files of a folder, each one shot, decoded once (the first max_frames)."""
    import av

    shots = []
    for p in sorted(Path(media_dir).glob("*.mp4")):
        with av.open(str(p)) as c:
            fr = []
            for f in c.decode(video=0):
                fr.append(f.to_ndarray(format="rgb24"))
                if len(fr) >= max_frames:
                    break
        shots.append(Shot(p.stem, np.stack(fr)))
    return shots


def world_shots(n: int, seed: int, fps: float, seconds: float = 6.0) -> list[Shot]:
    """Toy-world scenes (flat colours, bold outlines), one shot each."""
    from .world import random_scene, render

    rng = random.Random(seed)
    return [Shot(f"world{i}", render(random_scene(rng), seconds, fps, 320, 240)) for i in range(n)]


# --- joining -------------------------------------------------------------------------------------

def _blend(a: np.ndarray, b: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return (a.astype(np.float32) * (1 - alpha) + b.astype(np.float32) * alpha).round().astype(np.uint8)


def transition_frames(kind: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The frames of a gradual transition from segment tail `a` to segment head `b` (same length)."""
    n, h, w = a.shape[:3]
    t = (np.arange(n) + 1) / (n + 1)
    if kind == "dissolve":
        return np.stack([_blend(a[i], b[i], t[i]) for i in range(n)])
    if kind == "fade":
        half = n // 2
        out = [(a[i].astype(np.float32) * (1 - (i + 1) / (half + 1))).astype(np.uint8) for i in range(half)]
        m = n - half
        out += [(b[half + i].astype(np.float32) * ((i + 1) / (m + 1))).astype(np.uint8) for i in range(m)]
        return np.stack(out)
    if kind == "wipe":
        cols = np.arange(w)[None, :, None]
        return np.stack([np.where(cols < int(t[i] * w), b[i], a[i]) for i in range(n)])
    if kind == "iris":  # closes on a to black, opens on b
        yy, xx = np.mgrid[:h, :w]
        r = np.hypot(yy - h / 2, xx - w / 2)[..., None]
        rmax = np.hypot(h / 2, w / 2)
        half = n // 2
        out = []
        for i in range(n):
            if i < half:
                out.append(np.where(r < rmax * (1 - (i + 1) / (half + 1)), a[i], 0).astype(np.uint8))
            else:
                out.append(np.where(r < rmax * ((i - half + 1) / (n - half + 1)), b[i], 0).astype(np.uint8))
        return np.stack(out)
    raise ValueError(f"unknown transition {kind!r}")


def edit_video(rng: random.Random, shots: list[Shot], n_segments: int, fps: float, size=(192, 108),
               kinds=TRANSITIONS, trap_share: float = 0.4) -> tuple[np.ndarray, list[Span], list[Span]]:
    """Frames of one edited video and its truth (transitions, traps)."""
    frames, transitions, traps = [], [], []
    prev = None
    order = rng.sample(range(len(shots)), min(n_segments, len(shots)))
    while len(order) < n_segments:  # more segments than shots: never the same shot twice in a row
        order.append(rng.choice([i for i in range(len(shots)) if i != order[-1]]))
    for k, si in enumerate(order):
        n = int(rng.uniform(1.6, 3.0) * fps)
        pan = None
        trap = rng.random() < trap_share and k > 0
        kind_trap = rng.choice(("flash", "pan")) if trap else None
        if kind_trap == "pan":
            p0 = rng.randrange(n // 4, n // 2)
            pan = (p0, p0 + int(0.5 * fps))
        seg = shots[si].segment(rng, n, size, pan)
        if kind_trap == "flash":
            f0 = rng.randrange(n // 3, 2 * n // 3)
            seg[f0:f0 + 2] = 255
        at = len(frames)
        if prev is not None:
            kind = rng.choice(kinds)
            if kind == "cut":
                transitions.append(Span("cut", at, at))
            else:
                m = rng.randint(8, 20)
                m = min(m, len(frames) // 3, n // 3)
                tail = np.stack(frames[-m:])
                gradual = transition_frames(kind, tail, seg[:m])
                frames[-m:] = list(gradual)
                seg = seg[m:]
                at -= m
                transitions.append(Span(kind, at, at + m))
                at += m
        if kind_trap == "flash":
            traps.append(Span("flash", at + f0 - (n - len(seg)), at + f0 - (n - len(seg)) + 2))
        elif kind_trap == "pan":
            traps.append(Span("pan", at + pan[0] - (n - len(seg)), at + pan[1] - (n - len(seg))))
        frames.extend(seg)
        prev = si
    traps = [t for t in traps if 0 <= t.start < len(frames) and t.end > t.start]
    return np.stack(frames), transitions, traps


def build_set(out_dir: str | Path, *, media_dir: str | Path | None, videos: int = 6, segments: int = 14,
              seed: int = 0, fps: float = 24.0, size=(192, 108)) -> list[EditTruth]:
    """Write the edited set (MP4, H.264) and truth.json into out_dir; returns the truth."""
    from .media import save_mp4

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shots = world_shots(8, seed, fps)
    if media_dir and Path(media_dir).is_dir():
        shots = real_shots(media_dir) + shots
    rng = random.Random(seed)
    truth = []
    for v in range(videos):
        frames, tr, traps = edit_video(rng, shots, segments, fps, size)
        name = f"edit_{seed}_{v:02d}.mp4"
        save_mp4(frames, out / name, fps)
        truth.append(EditTruth(name, len(frames), fps, tr, traps))
    (out / "truth.json").write_text(json.dumps([t.to_json() for t in truth], indent=1) + "\n")
    return truth


def load_truth(out_dir: str | Path) -> list[EditTruth]:
    return [EditTruth.from_json(d) for d in json.loads((Path(out_dir) / "truth.json").read_text())]


# --- scoring -------------------------------------------------------------------------------------

def score(truth: list[EditTruth], clips: dict[str, list[tuple[int, int]]], tol: int = TOLERANCE) -> dict:
    """Boundary precision/recall/F1, per-type recall, false boundaries at traps, clip purity and
    coverage of a detector's clips ({video: [(start, end), ...]}, end exclusive).

    A reported boundary is each clip start after the video's first frame, each clip end before its
    last, and each excluded span between clips (a gap counts once). A transition is found when a
    boundary lies within `tol` frames of it (a cut) or inside/within `tol` of its span (gradual),
    or when a gap overlaps its span. A pure clip holds no transition frame and crosses no cut.
    """
    found = {k: [0, 0] for k in TRANSITIONS}
    tp_b = fp_b = 0
    at_traps = 0
    pure = clips_n = 0
    cover = clean_total = 0
    for t in truth:
        cs = sorted(clips.get(t.video, []))
        bounds: list[tuple[int, int]] = []  # (lo, hi) of each reported boundary
        prev_end = 0
        for s, e in cs:
            if s > prev_end + 1:
                bounds.append((prev_end, s))  # an excluded span
            elif s > 0:
                bounds.append((s, s))
            prev_end = e
        if prev_end < t.frames - 1 and cs:
            bounds.append((prev_end, t.frames))

        def near(b, sp):
            return b[0] <= sp.end + tol and b[1] >= sp.start - tol

        for sp in t.transitions:
            found[sp.kind][1] += 1
            if any(near(b, sp) for b in bounds):
                found[sp.kind][0] += 1
        for b in bounds:
            if any(near(b, sp) for sp in t.transitions):
                tp_b += 1
            else:
                fp_b += 1
                if any(near(b, sp) for sp in t.traps):
                    at_traps += 1
        in_transition = np.zeros(t.frames, bool)
        for sp in t.transitions:
            in_transition[sp.start:sp.end] = True
        cuts = [sp.start for sp in t.transitions if sp.kind == "cut"]
        clean_total += int((~in_transition).sum())
        for s, e in cs:
            clips_n += 1
            if not in_transition[s:e].any() and not any(s < c < e for c in cuts):
                pure += 1
                cover += int((~in_transition[s:e]).sum())
    n_tr = sum(v[1] for v in found.values())
    rec = sum(v[0] for v in found.values()) / max(1, n_tr)
    prec = tp_b / max(1, tp_b + fp_b)
    return {"boundary_precision": prec, "boundary_recall": rec,
            "boundary_f1": 2 * prec * rec / max(1e-9, prec + rec), "found": {k: tuple(v) for k, v in found.items()},
            "false_boundaries": fp_b, "false_at_traps": at_traps, "clips": clips_n, "pure_clips": pure,
            "purity": pure / max(1, clips_n), "coverage": cover / max(1, clean_total)}


def coverage_ceiling(truth: list[EditTruth], min_duration: float = 1.0, trim: int = 2, span_trim: int = 1) -> float:
    """The coverage a perfect detector would reach under the clip policy (`de ingest`'s defaults):
    every stretch between transitions becomes one clip, `trim` frames shorter at a cut and
    `span_trim` at a gradual transition (kept out as a span), and is dropped when shorter than
    min_duration. Short segments cap what any detector can do."""
    covered = clean = 0
    for t in truth:
        trs = sorted(t.transitions, key=lambda sp: sp.start)
        bounds = [(0, 0, "")] + [(sp.start, sp.end, sp.kind) for sp in trs] + [(t.frames, t.frames, "")]
        for (_, a, k0), (b, _, k1) in zip(bounds[:-1], bounds[1:]):
            clean += b - a
            cut = {"": 0, "cut": trim}
            n = (b - a) - cut.get(k0, span_trim) - cut.get(k1, span_trim)
            if n >= round(min_duration * t.fps):
                covered += n
    return covered / max(1, clean)
