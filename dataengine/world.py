"""A labelled toy world: synthetic cartoon scenes whose truth is known exactly.

Each scene has a setting (its palette and prop), a time of day (night darkens and blues the set
and puts a moon in the window), an action (chase: both run; sneak: slow creeping; jump: hops;
rest: nobody moves), who is in it (cat, mouse or both) and a camera (static, or a pan that slides
the set past the characters). Tags, caption and structured fields derive from that truth the way
`assets/vocab.json` spells them, so a captioner can be scored against it and trained on it.

`make_world(out, n_videos, ...)` writes videos with hard cuts between scenes and `truth.jsonl`
(one line per scene: file, start and end times, truth). `truth_rows` matches the scenes to the
clips `de ingest` found, for the `synth-truth` labelling.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

# setting -> (background, floor, window frame, prop colour) in RGB: the palette is what tells them apart
SETTINGS = {
    "kitchen": ((246, 214, 120), (176, 96, 48), (250, 250, 250), (220, 40, 40)),
    "garden": ((120, 190, 240), (70, 160, 60), (110, 80, 50), (250, 220, 40)),
    "living_room": ((236, 150, 170), (120, 70, 130), (250, 240, 220), (60, 120, 200)),
    "bedroom": ((170, 150, 230), (230, 200, 150), (255, 255, 255), (250, 140, 40)),
    "staircase": ((200, 230, 170), (150, 110, 70), (90, 60, 40), (40, 150, 150)),
}
TIMES = ("day", "night")
ACTIONS = ("chase", "sneak", "jump", "rest")
CHARACTERS = ("cat", "mouse", "both")
CAMERAS = ("static", "pan")
MOTION_OF = {"chase": "fast", "sneak": "slow", "jump": "medium", "rest": "static"}
SPEED = {"chase": 0.45, "sneak": 0.12, "jump": 0.05, "rest": 0.0}  # screen widths per second
# a hop lasts 1.5 s: sampled at the captioner's 2 fps it still shows (at 6 rad/s it aliased to a slow drift)
HOP = math.pi / 1.5
NAMES = {"cat": "grey cat", "mouse": "small brown mouse"}
VERBS = {"chase": ("chases", "runs", "run"), "sneak": ("sneaks after", "sneaks", "sneak"),
         "jump": ("jumps after", "jumps", "jump"), "rest": ("rests beside", "rests", "rest")}
TRUTH_LABELLING = ("synth-truth", "world-v1")  # (captioner, prompt version) of the truth labelling


@dataclass(frozen=True)
class Scene:
    setting: str
    time_of_day: str
    action: str
    characters: str
    camera: str
    seed: int = 0

    @property
    def motion(self) -> str:
        return MOTION_OF[self.action]

    def tags(self) -> list[str]:
        out = []
        for t in (self.action, self.setting, self.time_of_day, self.motion, self.camera):
            if t not in out:
                out.append(t)
        return out

    def cast(self) -> list[str]:
        return [NAMES["cat"], NAMES["mouse"]] if self.characters == "both" else [NAMES[self.characters]]

    def caption(self) -> str:
        place = self.setting.replace("_", " ")
        when = "at night" if self.time_of_day == "night" else "during the day"
        if self.characters == "both":
            who = f"A grey cat {VERBS[self.action][0]} a small brown mouse"
        else:
            who = f"A {NAMES[self.characters]} {VERBS[self.action][1]} alone"
        cam = "the camera pans" if self.camera == "pan" else "the camera is still"
        return f"{who} in the {place} {when}; {cam}."

    def fields(self) -> dict:
        return {"characters": self.cast(), "action": self.action, "setting": self.setting.replace("_", " "),
                "time_of_day": self.time_of_day, "camera": self.camera, "motion": self.motion}

    def answer(self) -> dict:
        """The captioner's answer for this scene, in the caption schema's key order."""
        f = self.fields()
        return {"caption": self.caption(), "tags": self.tags(), "characters": f["characters"],
                "action": f["action"], "setting": f["setting"], "time_of_day": f["time_of_day"],
                "camera": f["camera"], "motion": f["motion"]}


def all_scenes() -> list[Scene]:
    return [Scene(s, t, a, c, cam) for s in SETTINGS for t in TIMES for a in ACTIONS for c in CHARACTERS
            for cam in CAMERAS]


def random_scene(rng: random.Random, time_of_day: str | None = None) -> Scene:
    return Scene(rng.choice(list(SETTINGS)), time_of_day or rng.choice(TIMES), rng.choice(ACTIONS),
                 rng.choice(CHARACTERS), rng.choice(CAMERAS), rng.randrange(1 << 30))


# --- drawing -----------------------------------------------------------------------------------

def _night(c) -> tuple[int, int, int]:
    r, g, b = c
    return (int(r * 0.28 + 8), int(g * 0.30 + 12), int(b * 0.42 + 40))


def draw(scene: Scene, t: float, width: int, height: int) -> np.ndarray:
    """One RGB frame of `scene` at `t` seconds after it starts: flat colours, bold outlines."""
    import cv2

    bg, floor, frame_c, prop = SETTINGS[scene.setting]
    night = scene.time_of_day == "night"
    if night:
        bg, floor, frame_c, prop = (_night(c) for c in (bg, floor, frame_c, prop))
    img = np.empty((height, width, 3), np.uint8)
    img[:] = bg
    floor_y = int(height * 0.72)
    img[floor_y:] = floor
    ol = max(1, width // 64)
    cv2.line(img, (0, floor_y), (width, floor_y), (0, 0, 0), ol)
    phase = (scene.seed % 997) / 997.0
    # the set slides under a pan; it wraps so it never runs out
    shift = ((t * 0.30 + phase) * width) if scene.camera == "pan" else phase * width * 0.5
    for k in range(2):
        wx = int((0.15 + 0.55 * k) * width - shift) % int(width * 1.1) - int(width * 0.05)
        wy, ww, wh = int(height * 0.12), int(width * 0.2), int(height * 0.24)
        glass = (20, 30, 70) if night else (170, 220, 250)
        cv2.rectangle(img, (wx, wy), (wx + ww, wy + wh), glass, -1)
        if night:
            cv2.circle(img, (wx + ww // 2, wy + wh // 2), max(2, wh // 4), (245, 235, 150), -1)
        cv2.rectangle(img, (wx, wy), (wx + ww, wy + wh), frame_c, ol + 1)
        px = int((0.42 + 0.5 * k) * width - shift) % int(width * 1.1) - int(width * 0.05)
        cv2.rectangle(img, (px, floor_y - int(height * 0.16)), (px + int(width * 0.1), floor_y), prop, -1)
        cv2.rectangle(img, (px, floor_y - int(height * 0.16)), (px + int(width * 0.1), floor_y), (0, 0, 0), ol)

    speed = SPEED[scene.action] * width
    direction = 1 if (scene.seed >> 3) % 2 == 0 else -1
    span = width * 0.9
    base = (phase * span + t * speed) % (2 * span)
    x = base if base < span else 2 * span - base
    x = width * 0.05 + x
    if direction < 0:
        x = width - x
    hop = abs(math.sin(t * HOP)) * height * 0.22 if scene.action == "jump" else 0.0
    crouch = 0.6 if scene.action == "sneak" else 1.0
    s = height / 64.0
    if scene.characters in ("cat", "both"):
        cat = (int(x), int(floor_y - 10 * s * crouch - hop))
        _cat(img, cat, s, direction, crouch, ol)
    if scene.characters in ("mouse", "both"):
        gap = 0.28 * width if scene.characters == "both" else 0.0
        mouse = (int(x + direction * gap), int(floor_y - 3 * s - hop * 0.8))
        _mouse(img, mouse, s, direction, ol)
    return img


def _cat(img, c, s, direction, crouch, ol):
    import cv2

    grey = (150, 150, 162)
    cv2.ellipse(img, c, (int(11 * s), int(7 * s * crouch)), 0, 0, 360, grey, -1)
    cv2.ellipse(img, c, (int(11 * s), int(7 * s * crouch)), 0, 0, 360, (0, 0, 0), ol)
    head = (c[0] + direction * int(10 * s), c[1] - int(6 * s * crouch))
    cv2.circle(img, head, int(5 * s), grey, -1)
    cv2.circle(img, head, int(5 * s), (0, 0, 0), ol)
    for dx in (-3, 3):
        ear = np.array([[head[0] + int((dx - 2) * s), head[1] - int(3 * s)], [head[0] + int(dx * s), head[1] - int(8 * s)],
                        [head[0] + int((dx + 2) * s), head[1] - int(3 * s)]], np.int32)
        cv2.fillPoly(img, [ear], grey)
    cv2.line(img, (c[0] - direction * int(10 * s), c[1]), (c[0] - direction * int(18 * s), c[1] - int(8 * s)),
             (0, 0, 0), ol + 1)


def _mouse(img, c, s, direction, ol):
    import cv2

    brown = (140, 88, 48)
    cv2.ellipse(img, c, (int(5 * s), int(3 * s)), 0, 0, 360, brown, -1)
    cv2.ellipse(img, c, (int(5 * s), int(3 * s)), 0, 0, 360, (0, 0, 0), max(1, ol - 1))
    head = (c[0] + direction * int(5 * s), c[1] - int(2 * s))
    cv2.circle(img, head, max(1, int(3 * s)), brown, -1)
    cv2.circle(img, (head[0] - direction * int(1 * s), head[1] - int(3 * s)), max(1, int(2 * s)), (230, 160, 160), -1)


def render(scene: Scene, seconds: float, fps: float, width: int, height: int, t0: float = 0.0) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of the scene from t0 for `seconds` at `fps`."""
    n = max(1, int(round(seconds * fps)))
    return np.stack([draw(scene, t0 + i / fps, width, height) for i in range(n)])


# --- files ------------------------------------------------------------------------------------

def write_video(path, scenes: list[Scene], seconds: list[float], fps: float = 24.0, size=(128, 96)) -> list[dict]:
    """One h264 MP4 of `scenes` joined by hard cuts; returns its truth rows."""
    import av

    w, h = size
    rows = []
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001),
                            options={"preset": "ultrafast", "crf": "18"})
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.codec_context.time_base = Fraction(1, int(round(fps)))
        i = 0
        for scene, sec in zip(scenes, seconds):
            n = int(round(sec * fps))
            start = i / fps
            for k in range(n):
                fr = av.VideoFrame.from_ndarray(draw(scene, k / fps, w, h), format="rgb24")
                fr.pts, fr.time_base = i, Fraction(1, int(round(fps)))
                for pkt in st.encode(fr):
                    out.mux(pkt)
                i += 1
            rows.append({"file": path.name, "start_s": start, "end_s": i / fps, **asdict(scene)})
        for pkt in st.encode():
            out.mux(pkt)
    return rows


def make_world(out_dir, n_videos: int = 8, scenes_per_video: int = 4, *, seconds: float = 3.0, fps: float = 24.0,
               size=(128, 96), seed: int = 0, night_share: float = 0.5) -> list[dict]:
    """Write the world's videos and truth.jsonl; returns the truth rows."""
    rng = random.Random(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    truth = []
    for v in range(n_videos):
        scenes = [random_scene(rng, "night" if rng.random() < night_share else "day") for _ in range(scenes_per_video)]
        secs = [round(seconds * rng.uniform(0.8, 1.25), 2) for _ in scenes]
        truth += write_video(out / f"world_{v:03d}.mp4", scenes, secs, fps, size)
    with open(out / "truth.jsonl", "w") as f:
        for r in truth:
            f.write(json.dumps(r) + "\n")
    return truth


def outside_world(video_paths) -> int:
    """How many of these videos `de synth --world` did not write: a world video sits beside the
    truth.jsonl that names it. The toy models know only that world; on anything else their labels
    and samples mean nothing (callers warn, once, with the count)."""
    import json as _json

    names: dict = {}
    out = 0
    for vp in video_paths:
        p = Path(vp)
        if p.parent not in names:
            try:
                names[p.parent] = {_json.loads(line).get("file") for line in
                                   (p.parent / "truth.jsonl").read_text().splitlines() if line.strip()}
            except (OSError, ValueError, AttributeError):
                names[p.parent] = set()
        out += p.name not in names[p.parent]
    return out


TOY_WARNING = ("warning: {n} of {total} {what} come from videos that `de synth --world` did not write; the toy "
               "{model} knows only that toy world, so {outcome}")


def read_truth(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def scene_of(row: dict) -> Scene:
    return Scene(row["setting"], row["time_of_day"], row["action"], row["characters"], row["camera"],
                 row.get("seed", 0))


def truth_rows(truth: list[dict], clips: list[dict]) -> list[tuple[dict, Scene]]:
    """(clip, scene) for every clip that lies inside one scene (by file name and time, half a
    frame of slack at the cuts)."""
    by_file: dict[str, list[dict]] = {}
    for r in truth:
        by_file.setdefault(r["file"], []).append(r)
    out = []
    for c in clips:
        name = Path(c["video_path"]).name
        for r in by_file.get(name, []):
            if c["start_s"] >= r["start_s"] - 0.03 and c["end_s"] <= r["end_s"] + 0.03:
                out.append((c, scene_of(r)))
                break
    return out


def import_truth(catalog, truth_path) -> tuple[int, int]:
    """Write the world's truth as the `synth-truth` labelling of every ingested clip that lies
    inside one scene; returns (clips labelled, clips left out). `de captions diff MODEL
    synth-truth` then scores a captioner with the machinery every labelling has."""
    from catalog import db, labels

    from catalog import captions

    truth = read_truth(truth_path)
    con = db.connect(catalog, read_only=True)
    try:
        from catalog.browse import clip_ranges

        clips = clip_ranges(con)
    finally:
        con.close()
    names = {r["file"] for r in truth}
    mine = [c for c in clips if Path(c["video_path"]).name in names]
    matched = truth_rows(truth, mine)
    cap, ver = TRUTH_LABELLING
    rows = [[c["clip_id"], cap, ver, "ok", s.caption(), s.tags(), json.dumps(s.fields()),
             json.dumps(s.answer()), "", None, None, 0.0, False, "truth"] for c, s in matched]
    with db.writing(catalog) as con:
        captions.save(con, rows)
        labels.refresh(con, [r[0] for r in rows])
    return len(rows), len(mine) - len(rows)
