"""Versioned caption prompts.

A template lives in `assets/prompts/<name>.md` and the tag vocabulary in `assets/vocab.json`.
The prompt *version* is a hash of everything that shapes the answer apart from the model: the
template text, the vocabulary, the sampling parameters (fps, max pixels, max frames, and the
generation settings), the output constraint (schema-constrained or free, closed vocabulary or
not) and, for a served model, the endpoint kind. Change any of them and you get a new labelling
beside the old one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..assets import asset
from .schema import Constraint, caption_schema, worst_case_tokens

FREE_MAX_NEW_TOKENS = 256


@dataclass(frozen=True)
class SamplingParams:
    fps: float = 2.0
    max_frames: int = 32
    max_pixels: int = 360 * 420  # per frame; Qwen's recommended video budget
    min_pixels: int = 16 * 28 * 28
    max_new_tokens: int = FREE_MAX_NEW_TOKENS
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
    constraint: Constraint | None = None  # None: free generation, parsed leniently
    endpoint: str | None = None  # None: in-process; else the kind of server (e.g. "openai-chat")

    @property
    def version(self) -> str:
        parts = {"template": self.text, "vocab": self.vocabulary, "sampling": asdict(self.sampling)}
        if self.constraint is not None:  # free in-process labellings keep their old versions
            parts["constraint"] = self.constraint.describe()
        if self.endpoint is not None:
            parts["endpoint"] = self.endpoint
        blob = json.dumps(parts, sort_keys=True)
        return f"{self.name}-{hashlib.sha1(blob.encode()).hexdigest()[:8]}"

    @property
    def schema(self) -> dict | None:
        return None if self.constraint is None else caption_schema(self.vocabulary, self.constraint)

    def render(self) -> str:
        vocab_lines = [f"- {k}: {', '.join(v)}" for k, v in self.vocabulary.items() if k != "synonyms"]
        text = self.text.format(vocabulary="\n".join(vocab_lines)).strip()
        if self.constraint is not None and self.constraint.closed_vocab:
            text += "\n\nUse only tags from the vocabulary."
        return text

    @property
    def synonyms(self) -> dict[str, str]:
        return dict(self.vocabulary.get("synonyms", {}))


def load_prompt(name_or_path: str = "caption_v1", sampling: SamplingParams | None = None,
                vocab_path: str | None = None, constraint: Constraint | None = None,
                endpoint: str | None = None, max_new_tokens: int | None = None) -> Prompt:
    """A template by name (assets/prompts/<name>.md) or by path to a .md file.

    `max_new_tokens=None` picks the default: 256 when free, and when constrained the schema's
    worst case, so a constrained answer can never be cut off before its object closes."""
    p = Path(name_or_path)
    if p.suffix == ".md" and p.exists():
        path, name = p, p.stem
    else:
        path, name = asset("prompts", f"{name_or_path}.md"), name_or_path
    vocab = json.loads(Path(vocab_path).read_text() if vocab_path else asset("vocab.json").read_text())
    text = path.read_text()
    sampling = sampling or SamplingParams()
    if constraint is not None and constraint.closed_vocab and not any(
            isinstance(v, list) and v for k, v in vocab.items() if k != "synonyms"):
        raise ValueError("--closed-vocab needs a vocabulary with tag words; pass --open-vocab or --vocab FILE")
    prompt = Prompt(name, text, vocab, sampling, constraint, endpoint)
    if max_new_tokens is None and constraint is not None:
        prompt = replace(prompt, sampling=replace(sampling, max_new_tokens=worst_case_tokens(prompt.schema)))
    elif max_new_tokens is not None:
        prompt = replace(prompt, sampling=replace(sampling, max_new_tokens=max_new_tokens))
    prompt.render()  # fail early on a template with bad braces
    return prompt


def cut_off_risk(prompt: Prompt) -> str | None:
    """A warning when --max-new-tokens is below what a constrained answer may need."""
    if prompt.schema is None:
        return None
    need = worst_case_tokens(prompt.schema)
    if prompt.sampling.max_new_tokens < need:
        return (f"--max-new-tokens {prompt.sampling.max_new_tokens} is below the schema's worst case ({need}): "
                "a long answer can be cut off and stored as a parse error. Leave it unset to use the bound.")
    return None
