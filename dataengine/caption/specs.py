"""The captioners `--model` names, as specs: the one place that knows a captioner by its name.

A built-in captioner (the random tiny ones of each Qwen-VL family, the toy one trained on the toy
world) has a spec with its family, the name its labelling is stored under and its video
processor's geometry (patch and merge size), known without loading anything. A hub id, a local
folder or a served model (`--api`) is known by its family, read from its name once, here.
"""

from __future__ import annotations

from dataclasses import dataclass

GEOMETRY = {"qwen2-vl": (14, 2), "qwen2.5-vl": (14, 2), "qwen3-vl": (16, 2)}  # (patch px, merge)


@dataclass(frozen=True)
class CaptionerSpec:
    name: str  # what --model says
    kind: str  # real | toy | random
    family: str  # qwen2-vl | qwen2.5-vl | qwen3-vl
    label: str  # the labelling's captioner name
    built: bool = False  # built in-process from a config (no files)

    @property
    def geometry(self) -> tuple[int, int]:
        return GEOMETRY[self.family]


BUILT_IN = {
    "tiny": CaptionerSpec("tiny", "random", "qwen2-vl", "tiny-random-qwen2-vl", built=True),
    "tiny-qwen2-vl": CaptionerSpec("tiny-qwen2-vl", "random", "qwen2-vl", "tiny-random-qwen2-vl", built=True),
    "tiny-qwen2.5-vl": CaptionerSpec("tiny-qwen2.5-vl", "random", "qwen2.5-vl", "tiny-random-qwen2.5-vl", built=True),
    "tiny-qwen3-vl": CaptionerSpec("tiny-qwen3-vl", "random", "qwen3-vl", "tiny-random-qwen3-vl", built=True),
    "toy": CaptionerSpec("toy", "toy", "qwen2-vl", "toy-qwen2-vl"),
}


def captioner(model: str) -> CaptionerSpec | None:
    """The built-in captioner `model` names, or None for a hub id, an alias or a local folder."""
    return BUILT_IN.get(model)


def family_of(name: str) -> str:
    """The Qwen-VL family of a model known only by its name (a served model, a hub id)."""
    low = name.lower()
    return "qwen3-vl" if "qwen3" in low else "qwen2.5-vl" if "qwen2.5" in low else "qwen2-vl"


def served_geometry(name: str) -> tuple[int, int]:
    """(patch, merge) of a served model's vision tower, from its name: frames are sized to a
    multiple of patch*merge so the server's own resize is the identity."""
    spec = captioner(name)
    return spec.geometry if spec else GEOMETRY[family_of(name)]


def named_random(name: str) -> bool:
    """A model whose name says its weights are random (`tiny-random-...`, as built-in labels and
    the test servers call them)."""
    return "tiny-random" in name


def check_builtin(model: str) -> None:
    """A `tiny-...` name that is no built-in captioner is a typo, not a hub id: say which exist."""
    if model.startswith("tiny-") and model not in BUILT_IN:
        raise ValueError(f"unknown tiny model {model!r}; use " + ", ".join(n for n in BUILT_IN if n != "toy"))
