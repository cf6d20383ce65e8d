"""Versioned caption prompts.

A template lives in `assets/prompts/<name>.md` and the tag vocabulary in `assets/vocab.json`.
The prompt *version* is a hash of everything that shapes the answer apart from the model: the
template text, the vocabulary, and the sampling parameters (fps, max pixels, max frames, and the
generation settings). Change any of them and you get a new labelling beside the old one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..assets import asset


@dataclass(frozen=True)
class SamplingParams:
    fps: float = 2.0
    max_frames: int = 32
    max_pixels: int = 360 * 420  # per frame; Qwen's recommended video budget
    min_pixels: int = 16 * 28 * 28
    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float = 0.0

    def __post_init__(self) -> None:
        if self.fps <= 0:
            raise ValueError("--fps must be positive")
        if self.max_frames < 2:
            raise ValueError("--max-frames must be at least 2 (Qwen2-VL groups frames in pairs)")
        if self.max_pixels < self.min_pixels:
            raise ValueError(f"--max-pixels must be at least {self.min_pixels}")
        if self.max_new_tokens < 8:
            raise ValueError("--max-new-tokens must be at least 8")


@dataclass(frozen=True)
class Prompt:
    name: str
    text: str
    vocabulary: dict
    sampling: SamplingParams

    @property
    def version(self) -> str:
        blob = json.dumps({"template": self.text, "vocab": self.vocabulary, "sampling": asdict(self.sampling)},
                          sort_keys=True)
        return f"{self.name}-{hashlib.sha1(blob.encode()).hexdigest()[:8]}"

    def render(self) -> str:
        vocab_lines = [f"- {k}: {', '.join(v)}" for k, v in self.vocabulary.items() if k != "synonyms"]
        return self.text.format(vocabulary="\n".join(vocab_lines)).strip()

    @property
    def synonyms(self) -> dict[str, str]:
        return dict(self.vocabulary.get("synonyms", {}))


def load_prompt(name_or_path: str = "caption_v1", sampling: SamplingParams | None = None,
                vocab_path: str | None = None) -> Prompt:
    """A template by name (assets/prompts/<name>.md) or by path to a .md file."""
    p = Path(name_or_path)
    if p.suffix == ".md" and p.exists():
        path, name = p, p.stem
    else:
        path, name = asset("prompts", f"{name_or_path}.md"), name_or_path
    vocab = json.loads(Path(vocab_path).read_text() if vocab_path else asset("vocab.json").read_text())
    text = path.read_text()
    prompt = Prompt(name, text, vocab, sampling or SamplingParams())
    prompt.render()  # fail early on a template with bad braces
    return prompt
