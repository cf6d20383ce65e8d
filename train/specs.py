"""The video models `--base-model` names, as specs: the one place that knows a model by its name.

Everything else asks a spec what it needs to know: what kind of weights it has (real, trained on the
toy world, random), and whether the checks that only mean something at the real 2B scale apply
(the GPU memory projection, the too-big-for-this-GPU warning, gradient checkpointing by default).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VideoModelSpec:
    name: str  # what --base-model says
    kind: str  # real | toy | random
    real_scale: bool  # the real SANA-Video 2B (or a folder of it): memory checks and checkpointing apply
    built: bool = False  # built in-process from a config (no files)
    about: str = ""


BUILT_IN = {
    "tiny": VideoModelSpec("tiny", "random", real_scale=False, built=True,
                           about="random weights of the real classes at tiny widths, built from config (tests)"),
    "toy": VideoModelSpec("toy", "toy", real_scale=False,
                          about="the real classes, small, trained on the toy world (assets/toy/sana)"),
}


def video_model(base_model: str) -> VideoModelSpec:
    """The spec of a --base-model: a built-in one, else a hub id or a local folder of the real
    model (a folder of random weights still loads as one; its TINY_RANDOM marker says so)."""
    return BUILT_IN.get(base_model) or VideoModelSpec(base_model, "real", real_scale=True)
