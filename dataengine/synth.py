"""Synthetic cartoons with known ground truth, for tests, benchmarks and the demo.

A clip is a sequence of scenes separated by hard cuts at given times. Each scene has a flat
background palette, a floor, a window, and a grey "cat" chasing a brown "mouse", all drawn with
bold black outlines. Cut times are exact; the frame index of a cut is the first frame whose
presentation time is at or after it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

# (background, floor, window) palettes: flat, saturated, distinct enough to cut between
PALETTES = [
    ((250, 214, 120), (170, 90, 40), (140, 200, 250)),   # warm kitchen
    ((120, 180, 230), (60, 140, 60), (250, 250, 200)),   # garden day
    ((40, 40, 90), (90, 60, 40), (230, 220, 120)),       # night room
    ((240, 150, 170), (110, 70, 130), (200, 240, 255)),  # pink hall
    ((150, 220, 150), (200, 170, 100), (120, 160, 230)), # green porch
    ((230, 230, 230), (90, 90, 110), (255, 200, 120)),   # white kitchen
]

CODECS = {
    # suffix: (codec, pix_fmt, options)
    ".mp4": ("libx264", "yuv420p", {"preset": "ultrafast", "crf": "23"}),
    ".mkv": ("libx264", "yuv420p", {"preset": "ultrafast", "crf": "23"}),
    ".webm": ("libvpx", "yuv420p", {"deadline": "realtime", "cpu-used": "8", "b": "800k"}),
    ".mov": ("mpeg4", "yuv420p", {"qscale": "4"}),
    ".avi": ("mpeg4", "yuv420p", {"qscale": "4"}),
}


@dataclass
class SynthResult:
    path: str
    frame_times: list[float]
    cut_times: list[float]
    cut_frames: list[int]  # index of the first frame of each new scene
    width: int
    height: int

    @property
    def num_frames(self) -> int:
        return len(self.frame_times)


def frame_times(duration_s: float, fps: float, vfr: bool = False) -> list[float]:
    """Presentation times. VFR alternates runs of frames at fps and at fps/2."""
    if not vfr:
        n = int(round(duration_s * fps))
        return [i / fps for i in range(n)]
    times, t, i = [], 0.0, 0
    while t < duration_s - 1e-9:
        times.append(round(t, 3))
        slow = (int(t) % 2) == 1  # odd seconds run at half rate
        t += (2.0 if slow else 1.0) / fps
        i += 1
    return times


def draw_frame(t: float, scene: int, width: int, height: int, scene_start: float = 0.0) -> np.ndarray:
    """One RGB frame: flat-colour set, bold outlines, cat chasing mouse."""
    import cv2

    bg, floor, window = PALETTES[scene % len(PALETTES)]
    img = np.empty((height, width, 3), np.uint8)
    img[:] = bg
    floor_y = int(height * 0.72)
    img[floor_y:] = floor
    ol = max(2, width // 80)  # bold outline
    cv2.line(img, (0, floor_y), (width, floor_y), (0, 0, 0), ol)
    wx, wy, ww, wh = int(width * 0.62), int(height * 0.12), int(width * 0.22), int(height * 0.25)
    cv2.rectangle(img, (wx, wy), (wx + ww, wy + wh), window, -1)
    cv2.rectangle(img, (wx, wy), (wx + ww, wy + wh), (0, 0, 0), ol)
    cv2.line(img, (wx + ww // 2, wy), (wx + ww // 2, wy + wh), (0, 0, 0), ol)

    # the chase: direction alternates per scene, speed ~0.35 screen widths / s, bouncing
    local = t - scene_start
    direction = 1 if scene % 2 == 0 else -1
    span = width * 1.2
    pos = (local * 0.35 * width + scene * 0.17 * width) % (2 * span)
    x = pos if pos < span else 2 * span - pos
    x = x - 0.1 * width
    if direction < 0:
        x = width - x
    hop = abs(math.sin(local * 7.0)) * height * 0.05
    mouse = (int(x + direction * width * 0.22), int(floor_y - height * 0.05 - hop))
    cat = (int(x), int(floor_y - height * 0.16 - hop * 0.5))
    s = height / 240.0

    # cat: grey body, head, ears, tail
    grey, dark = (150, 150, 160), (0, 0, 0)
    cv2.ellipse(img, cat, (int(40 * s), int(26 * s)), 0, 0, 360, grey, -1)
    cv2.ellipse(img, cat, (int(40 * s), int(26 * s)), 0, 0, 360, dark, ol)
    head = (cat[0] + direction * int(38 * s), cat[1] - int(22 * s))
    cv2.circle(img, head, int(20 * s), grey, -1)
    cv2.circle(img, head, int(20 * s), dark, ol)
    for dx in (-12, 12):
        ear = np.array([[head[0] + int((dx - 8) * s), head[1] - int(12 * s)],
                        [head[0] + int(dx * s), head[1] - int(34 * s)],
                        [head[0] + int((dx + 8) * s), head[1] - int(12 * s)]], np.int32)
        cv2.fillPoly(img, [ear], grey)
        cv2.polylines(img, [ear], True, dark, ol)
    cv2.circle(img, (head[0] + direction * int(8 * s), head[1] - int(4 * s)), max(2, int(4 * s)), (255, 255, 255), -1)
    tail_end = (cat[0] - direction * int(70 * s), cat[1] - int(30 * s + 10 * s * math.sin(local * 9)))
    cv2.line(img, (cat[0] - direction * int(36 * s), cat[1]), tail_end, dark, ol + 2)

    # mouse: small brown body and round ears
    brown = (140, 90, 50)
    cv2.ellipse(img, mouse, (int(16 * s), int(10 * s)), 0, 0, 360, brown, -1)
    cv2.ellipse(img, mouse, (int(16 * s), int(10 * s)), 0, 0, 360, dark, ol)
    mh = (mouse[0] + direction * int(14 * s), mouse[1] - int(8 * s))
    cv2.circle(img, mh, int(8 * s), brown, -1)
    cv2.circle(img, mh, int(8 * s), dark, ol)
    cv2.circle(img, (mh[0] - direction * int(3 * s), mh[1] - int(9 * s)), int(5 * s), (230, 160, 160), -1)
    cv2.circle(img, (mh[0] - direction * int(3 * s), mh[1] - int(9 * s)), int(5 * s), dark, max(1, ol - 1))
    return img


def make_cartoon(
    path: str | os.PathLike,
    *,
    duration_s: float = 6.0,
    fps: float = 24.0,
    size: tuple[int, int] = (320, 240),
    cuts: list[float] | None = None,
    vfr: bool = False,
    rotation: int = 0,
    codec: str | None = None,
    sar: Fraction | None = None,
) -> SynthResult:
    """Write a cartoon with hard cuts at `cuts` (seconds). Codec follows the file suffix.

    `rotation` stores a display rotation (degrees, counter-clockwise) in the stream; the pixels are
    pre-rotated the opposite way so that a player honouring the matrix shows the upright cartoon.
    `sar` stores non-square pixels (anamorphic, as on DVDs): `size` is the stored size, and a
    player shows it (width * sar) x height. The drawing is squeezed to match, so it looks right there.
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    cuts = sorted(cuts if cuts is not None else [duration_s / 2])
    times = frame_times(duration_s, fps, vfr=vfr)
    codec_name, pix_fmt, options = CODECS.get(path.suffix.lower(), CODECS[".mkv"])
    if codec:
        codec_name = codec
    cw, ch = (height, width) if rotation in (90, 270) else (width, height)
    with av.open(str(path), "w") as out:
        st = out.add_stream(codec_name, rate=Fraction(fps).limit_denominator(1001), options=dict(options))
        st.width, st.height, st.pix_fmt = cw, ch, pix_fmt
        tb = Fraction(1, 1000) if vfr else Fraction(1, int(round(fps))) if float(fps).is_integer() else None
        if tb is not None:
            st.codec_context.time_base = tb
        if rotation:
            st.set_display_rotation(rotation)
        if sar:
            st.codec_context.sample_aspect_ratio = Fraction(sar)
        for i, t in enumerate(times):
            scene = sum(1 for c in cuts if t >= c - 1e-9)
            start = cuts[scene - 1] if scene else 0.0
            if sar:  # drawn at the display size, stored squeezed
                import cv2

                img = cv2.resize(draw_frame(t, scene, int(round(width * float(sar))), height, start), (width, height),
                                 interpolation=cv2.INTER_AREA)
            else:
                img = draw_frame(t, scene, width, height, start)
            if rotation:
                img = np.ascontiguousarray(np.rot90(img, k=-{90: 1, 180: 2, 270: 3}[rotation]))
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if tb is not None:
                frame.pts = int(round(t / tb))
                frame.time_base = tb
            else:
                frame.pts = i
            for pkt in st.encode(frame):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    cut_frames = [next((i for i, t in enumerate(times) if t >= c - 1e-9), len(times)) for c in cuts]
    return SynthResult(str(path), times, cuts, cut_frames, width, height)


# --- bad inputs, for tests and the demo -------------------------------------------------------

def make_text_as_video(path: str | os.PathLike) -> str:
    Path(path).write_text("this is not a video, just text with a video suffix\n" * 20)
    return str(path)


def make_empty(path: str | os.PathLike) -> str:
    Path(path).write_bytes(b"")
    return str(path)


def make_truncated(src: str | os.PathLike, dst: str | os.PathLike, keep: float = 0.4) -> str:
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * keep)])
    return str(dst)


def make_audio_only(path: str | os.PathLike, seconds: float = 1.0) -> str:
    """A file with an audio stream and no video stream."""
    import av

    rate = 16000
    with av.open(str(path), "w") as out:
        st = out.add_stream("mp2" if str(path).endswith((".mkv", ".mp3")) else "aac", rate=rate)
        st.layout = "mono"
        n = int(rate * seconds)
        samples = (np.sin(np.arange(n) * 2 * np.pi * 440 / rate) * 0.3).astype(np.float32)
        fmt = st.codec_context.format.name if st.codec_context.format else "fltp"
        chunk = st.codec_context.frame_size or 1024
        for s in range(0, n, chunk):
            buf = samples[s : s + chunk]
            if len(buf) < chunk:
                buf = np.pad(buf, (0, chunk - len(buf)))
            arr = (buf * 32767).astype(np.int16) if fmt.startswith("s16") else buf.astype(np.float32)
            frame = av.AudioFrame.from_ndarray(arr[None, :], format=fmt, layout="mono")
            frame.sample_rate = rate
            frame.pts = s
            for pkt in st.encode(frame):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    return str(path)


def make_sample_set(folder: str | os.PathLike, *, seconds: float = 12.0, fps: float = 24.0,
                    size: tuple[int, int] = (320, 240)) -> list[SynthResult]:
    """The demo's raw_videos/: two cartoons in two containers with known cuts."""
    folder = Path(folder)
    a = make_cartoon(folder / "chase_kitchen.mp4", duration_s=seconds, fps=fps, size=size,
                     cuts=[seconds * 0.25, seconds * 0.55, seconds * 0.8])
    b = make_cartoon(folder / "garden night.mkv", duration_s=seconds * 0.75, fps=fps, size=size,
                     cuts=[seconds * 0.3])
    return [a, b]
