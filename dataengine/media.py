"""Writing generated videos: GIF (for galleries) and MP4 (h264 via PyAV)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """float [0,1] or uint8 (T,H,W,3) -> uint8."""
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames, 0, 1) * 255 + 0.5).astype(np.uint8)


def save_gif(frames: np.ndarray, path: str | Path, fps: float) -> Path:
    from PIL import Image

    f = to_uint8(frames)
    imgs = [Image.fromarray(x) for x in f]
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=int(round(1000 / fps)), loop=0)
    return Path(path)


def save_mp4(frames: np.ndarray, path, fps: float):
    """H.264 MP4 to a path, or to an open binary file (what atomic_write gives)."""
    import av

    f = to_uint8(frames)
    h, w = f.shape[1:3]
    # h264 with yuv420p needs even sizes
    f = f[:, : h - h % 2, : w - w % 2]
    target = path if hasattr(path, "write") else str(path)
    with av.open(target, "w", format="mp4") as out:
        st = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001),
                            options={"crf": "18", "preset": "veryfast"})
        st.width, st.height, st.pix_fmt = f.shape[2], f.shape[1], "yuv420p"
        for x in f:
            for pkt in st.encode(av.VideoFrame.from_ndarray(x, format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    return path if hasattr(path, "write") else Path(path)


def read_video(path: str | Path) -> np.ndarray:
    """All frames of a (short, generated) video as uint8 (T,H,W,3)."""
    import av

    with av.open(str(path)) as c:
        return np.stack([fr.to_ndarray(format="rgb24") for fr in c.decode(video=0)])
