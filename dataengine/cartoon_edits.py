"""Edited cartoons with exact truth: what hand-drawn animation does that the camera sets lack (issue 34).

`dataengine.edits` joins shots by cuts, dissolves, fades, wipes and irises, with a flash and a pan
planted inside some shots. Real animation adds its own traps, none of which is a transition:

- **twos**: drawings held for two (or three) frames, then a jump (limited animation); a whole
  segment is drawn this way;
- **sweep**: a limb or a wing (a dark, outlined shape) sweeps through a third of the picture in a
  few frames, and is gone (a smear);
- **flap**: a wing close to the camera beats two to four times, covering and uncovering half the
  picture;
- **occluder**: a large dark shape passes across the camera, fills the picture for a few frames,
  and leaves the same shot behind;
- **wingbeats**: the occluder again and again, a few frames apart (a giant bird's wing);
- **shake**: the screen shakes (an impact), with a squash-and-stretch zoom pulse;
- **flashes**: lightning or an explosion: several bright frames, some of them alternating.

Cuts come in two extra kinds: between two *alike* shots (the same set, the characters moved: two
moments of one scene), and right next to fast action (a sweep just before or after the cut).
Every trap is a span in the truth; the scoring is `edits.score`'s.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from .edits import EditTruth, Shot, Span, transition_frames

class FramedShot(Shot):
    """A shot as a cartoon's layout artist frames it: its own window on the set (a wide shot, a
    medium or a close-up, anywhere on the set) and, for a reverse angle, mirrored. Two shots of
    one set then differ in layout as real shots do; the same shot later (an alike cut) keeps its
    framing and only its characters move."""

    def __init__(self, name: str, frames: np.ndarray, rng: random.Random):
        super().__init__(name, frames)
        self.zoom = rng.choice([1.0, rng.uniform(0.7, 0.9), rng.uniform(0.45, 0.65)])
        self.cx, self.cy = rng.uniform(0, 1), rng.uniform(0, 1)
        self.mirror = rng.random() < 0.3

    def segment(self, rng: random.Random, n: int, size: tuple[int, int], pan=None) -> np.ndarray:
        import cv2

        w, h = size
        start = rng.randrange(0, max(1, len(self.frames) - n))
        src = self.frames[start:start + n]
        if len(src) < n:
            src = np.concatenate([src, src[::-1]] * (n // max(1, len(src)) + 1))[:n]
        sh, sw = src.shape[1:3]
        cw = int(min(sw, sh * w / h) * self.zoom)
        ch = int(cw * h / w)
        x0, y0 = int((sw - cw) * self.cx), int((sh - ch) * self.cy)
        out = np.stack([cv2.resize(f[y0:y0 + ch, x0:x0 + cw], (w, h), interpolation=cv2.INTER_AREA) for f in src])
        return out[:, :, ::-1].copy() if self.mirror else out


def cartoon_shots(seed: int, fps: float, seconds: float = 8.0) -> list[FramedShot]:
    """One toy-world shot per set and time of day (ten), each framed its own way (FramedShot): a
    cut to another shot changes the set, as a cut in a cartoon changes its painted background."""
    from .world import ACTIONS, CAMERAS, CHARACTERS, SETTINGS, TIMES, Scene, render

    rng = random.Random(seed)
    looks = [(s, t) for s in SETTINGS for t in TIMES]
    rng.shuffle(looks)
    shots = []
    for i, (setting, time) in enumerate(looks):
        scene = Scene(setting, time, rng.choice(ACTIONS), rng.choice(CHARACTERS), rng.choice(CAMERAS),
                      rng.randrange(1 << 30))
        shots.append(FramedShot(f"cartoon{i}", render(scene, seconds, fps, 320, 240), rng))
    return shots


CARTOON_TRAPS = ("twos", "sweep", "flap", "occluder", "wingbeats", "shake", "flashes")
KINDS = ("cut", "cut", "cut", "alike-cut", "dissolve", "iris", "wipe", "fade")


def on_twos(seg: np.ndarray, hold: int) -> np.ndarray:
    """Each drawing held for `hold` frames (the motion keeps its pace; it only steps)."""
    out = seg.copy()
    for i in range(len(seg)):
        out[i] = seg[i - i % hold]
    return out


def _shape(frame: np.ndarray, center, axes, angle: float, colour) -> None:
    import cv2

    c = (int(center[0]), int(center[1]))
    ax = (max(1, int(axes[0])), max(1, int(axes[1])))
    cv2.ellipse(frame, c, ax, angle, 0, 360, colour, -1, cv2.LINE_AA)
    cv2.ellipse(frame, c, ax, angle, 0, 360, (10, 10, 10), max(1, frame.shape[0] // 60), cv2.LINE_AA)


def sweep(seg: np.ndarray, rng: random.Random, at: int) -> int:
    """A wing or limb sweeps through a third of the picture over 3-6 frames; returns its length."""
    n = rng.randint(3, 6)
    h, w = seg.shape[1:3]
    colour = rng.choice([(60, 40, 30), (30, 30, 40), (200, 120, 40), (90, 90, 100)])
    x0, y0 = rng.uniform(0.1, 0.6) * w, rng.uniform(0.1, 0.4) * h
    dx, dy = rng.choice([-1, 1]) * w / 3, rng.uniform(0.2, 0.5) * h
    for i in range(n):
        f = at + i
        if f >= len(seg):
            break
        k = i / max(1, n - 1)
        _shape(seg[f], (x0 + dx * k, y0 + dy * k), (w * rng.uniform(0.15, 0.25), h * 0.12),
               rng.uniform(0, 180), colour)
    return n


def flap(seg: np.ndarray, rng: random.Random, at: int) -> int:
    """A bird beats its wings close to the camera: a large wing (half the picture) swings up and
    down two to four times, a few frames a beat, covering and uncovering the set."""
    import math

    h, w = seg.shape[1:3]
    beats, per = rng.randint(2, 4), rng.randint(4, 8)
    colour = rng.choice([(70, 50, 40), (40, 40, 55), (150, 60, 40)])
    root = (rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h)
    n = beats * per
    for i in range(n):
        f = at + i
        if f >= len(seg):
            break
        ang = 70 * math.sin(2 * math.pi * i / per)
        r = w * rng.uniform(0.45, 0.6)
        cx = root[0] + 0.5 * r * math.cos(math.radians(ang))
        cy = root[1] - 0.5 * r * math.sin(math.radians(ang))
        _shape(seg[f], (cx, cy), (r * 0.55, h * 0.2), -ang, colour)
    return n


def occluder(seg: np.ndarray, rng: random.Random, at: int) -> int:
    """A large dark shape crosses the camera, fills it for 2-4 frames, and leaves the same shot."""
    h, w = seg.shape[1:3]
    enter, full, leave = rng.randint(2, 4), rng.randint(2, 4), rng.randint(2, 4)
    colour = rng.choice([(25, 20, 20), (35, 30, 45), (20, 20, 20)])
    direction = rng.choice([-1, 1])
    total = enter + full + leave
    for i in range(total):
        f = at + i
        if f >= len(seg):
            break
        if i < enter:
            cover = (i + 1) / (enter + 1)
        elif i < enter + full:
            cover = 1.0
        else:
            cover = 1 - (i - enter - full + 1) / (leave + 1)
        if cover >= 1.0:
            seg[f] = np.array(colour, np.uint8)
            continue
        # a wing: a huge ellipse whose edge has crossed `cover` of the picture, from one side
        cx = -0.9 * w + cover * 1.8 * w if direction > 0 else 1.9 * w - cover * 1.8 * w
        _shape(seg[f], (cx, h / 2), (w * 0.95, h * 1.1), rng.uniform(-15, 15), colour)
    return total


def shake(seg: np.ndarray, rng: random.Random, at: int) -> int:
    """A screen shake with a squash-and-stretch zoom pulse: 6-12 frames."""
    import cv2

    n = rng.randint(6, 12)
    h, w = seg.shape[1:3]
    amp = rng.uniform(0.03, 0.07) * w
    for i in range(n):
        f = at + i
        if f >= len(seg):
            break
        decay = 1 - i / n
        dx = amp * decay * (1 if i % 2 else -1)
        dy = amp * 0.5 * decay * rng.uniform(-1, 1)
        zoom = 1 + 0.12 * decay * (i < 3)
        m = cv2.getRotationMatrix2D((w / 2, h / 2), 0, zoom)
        m[:, 2] += (dx, dy)
        seg[f] = cv2.warpAffine(seg[f], m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    return n


def flashes(seg: np.ndarray, rng: random.Random, at: int) -> int:
    """Lightning or an explosion: 3-6 bright frames, some alternating with the picture."""
    n = rng.randint(3, 6)
    colour = np.array(rng.choice([(255, 255, 255), (255, 240, 150), (255, 200, 80)]), np.float32)
    for i in range(n):
        f = at + i
        if f >= len(seg) or (i % 2 and rng.random() < 0.5):
            continue
        a = rng.uniform(0.6, 1.0)
        seg[f] = (seg[f].astype(np.float32) * (1 - a) + colour * a).round().astype(np.uint8)
    return n


def wingbeats(seg: np.ndarray, rng: random.Random, at: int) -> int:
    """A giant wing sweeps across the camera again and again (two to four passes, a few frames
    apart), each time filling most of the picture with a dark shape, and leaves the same shot."""
    total = 0
    for _ in range(rng.randint(2, 4)):
        total += occluder(seg, rng, at + total) + rng.randint(2, 6)
    return total


TRAPS = {"sweep": sweep, "flap": flap, "occluder": occluder, "wingbeats": wingbeats, "shake": shake, "flashes": flashes}


def toy_shot(seed: int, n: int, size=(192, 144)) -> np.ndarray:
    """n frames (24 fps) of a random toy-world scene."""
    from .world import random_scene, render

    return render(random_scene(random.Random(seed)), n / 24, 24, *size)


def cut_then_trap(trap: str, seed: int, size=(192, 144)) -> tuple[np.ndarray, int]:
    """Shot A (36 frames), a hard cut, then shot B (48 frames) opening on the trap; returns the
    frames and the cut (the first frame of B)."""
    a, b = toy_shot(seed, 36, size), toy_shot(seed + 100, 48, size)
    TRAPS[trap](b, random.Random(seed), 1)
    return np.concatenate([a, b]), 36


def trap_in_shot(trap: str, seed: int, size=(192, 144)) -> np.ndarray:
    """One shot (80 frames) with the trap from frame 30: nothing in it is a transition."""
    a = toy_shot(seed, 80, size)
    TRAPS[trap](a, random.Random(seed), 30)
    return a


def cartoon_video(rng: random.Random, shots: list[Shot], n_segments: int, fps: float, size=(192, 144),
                  trap_share: float = 0.7, kinds=KINDS) -> tuple[np.ndarray, list[Span], list[Span]]:
    """Frames of one edited cartoon and its truth (transitions, traps)."""
    frames: list[np.ndarray] = []
    transitions: list[Span] = []
    traps: list[Span] = []
    si = rng.randrange(len(shots))
    for k in range(n_segments):
        kind = rng.choice(kinds) if k else None
        alike = kind == "alike-cut"
        if alike:  # the same set a few seconds later: the characters have moved
            kind = "cut"
        elif k:
            si = rng.choice([i for i in range(len(shots)) if i != si])
        n = int(rng.uniform(2.0, 3.5) * fps)
        seg = shots[si].segment(rng, n, size)
        hold = rng.choice([1, 2, 2, 3])
        if hold > 1:
            seg = on_twos(seg, hold)
        placed: list[Span] = []
        if hold > 1:
            placed.append(Span("twos", 0, n))
        if rng.random() < trap_share:
            trap = rng.choice(list(TRAPS))
            # next to the cut that opens the segment, or inside it
            at = rng.choice([1, 2, rng.randrange(n // 4, n // 2)]) if k else rng.randrange(n // 4, n // 2)
            m = TRAPS[trap](seg, rng, at)
            placed.append(Span(trap, at, min(n, at + m)))
        if rng.random() < 0.25:  # fast action right before the next cut
            at = max(0, n - rng.randint(3, 6))
            m = sweep(seg, rng, at)
            placed.append(Span("sweep", at, min(n, at + m)))
        at0 = len(frames)
        shift = 0
        if kind == "cut":
            transitions.append(Span("cut", at0, at0))
            if alike:  # marked among the traps, so a benchmark can count these cuts apart
                traps.append(Span("alike-cut", at0, at0))
        elif kind:
            m = min(rng.randint(8, 16), len(frames) // 3, n // 3)
            gradual = transition_frames(kind, np.stack(frames[-m:]), seg[:m])
            frames[-m:] = list(gradual)
            seg = seg[m:]
            shift = m
            transitions.append(Span(kind, at0 - m, at0))
        for p in placed:  # segment frame i lands at at0 - shift + i (the first `shift` are in the blend)
            traps.append(Span(p.kind, at0 - shift + p.start, at0 - shift + p.end))
        frames.extend(seg)
    return np.stack(frames), transitions, traps


def film(frames: np.ndarray, rng: random.Random) -> np.ndarray:
    """An old print's look: grain, a density flicker of a few percent, and a pixel of gate weave."""
    g = np.random.default_rng(rng.randrange(1 << 30))
    out = frames.astype(np.float32)
    out *= (1 + g.normal(0, 0.025, (len(frames), 1, 1, 1))).astype(np.float32)
    out += g.normal(0, 5.0, out.shape).astype(np.float32)
    for i in range(len(out)):
        dx, dy = int(g.integers(-1, 2)), int(g.integers(-1, 2))
        out[i] = np.roll(out[i], (dy, dx), axis=(0, 1))
    return np.clip(out, 0, 255).round().astype(np.uint8)


CUTS_ONLY = ("cut",) * 5 + ("alike-cut",)  # one cut in six between two moments of one shot


def build_cartoon_set(out_dir: str | Path, *, videos: int = 4, segments: int = 12, seed: int = 0,
                      fps: float = 24.0, size=(192, 144), kinds=KINDS) -> list[EditTruth]:
    """Write the cartoon set (MP4, H.264) and truth.json into out_dir; returns the truth.
    `kinds=CUTS_ONLY`: hard cuts only, as in most hand-drawn shorts (the traps stay)."""
    from .media import save_mp4

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shots = cartoon_shots(1000 + seed, fps, seconds=8.0)
    rng = random.Random(seed)
    truth = []
    for v in range(videos):
        frames, tr, traps = cartoon_video(rng, shots, segments, fps, size, kinds=kinds)
        frames = film(frames, rng)
        name = f"cartoon{'' if kinds == KINDS else '_cuts'}_{seed}_{v:02d}.mp4"
        save_mp4(frames, out / name, fps)
        truth.append(EditTruth(name, len(frames), fps, tr, traps))
    (out / "truth.json").write_text(json.dumps([t.to_json() for t in truth], indent=1) + "\n")
    return truth
