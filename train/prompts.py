"""Training prompts filled per clip from catalog columns, and the validation prompt set."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from catalog.assets import asset
from catalog.templates import (  # noqa: F401 - the template module is shared with `de export`
    KNOWN_FIELDS, MOTION_MAX, MOTION_MIN, TemplateError, class_prompt, compile_template, fill, motion_suffix,
    motion_value)

PromptError = TemplateError  # one error type for templates and prompt files: a one-line message


@dataclass
class ValidationPrompt:
    """One validation prompt; a None setting means the run's (--validation-seed, --width/--height,
    --frames, --cfg)."""

    summary: str
    prompt: str
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    cfg: float | None = None

    def settings(self, run_cfg) -> dict:
        return {"seed": run_cfg.validation_seed if self.seed is None else self.seed,
                "width": self.width or run_cfg.width, "height": self.height or run_cfg.height,
                "frames": self.frames or run_cfg.frames, "cfg": run_cfg.cfg if self.cfg is None else self.cfg}

    def overrides(self) -> str:
        """What this prompt sets itself, for the gallery: 'seed 32420, 288x160'."""
        out = [f"seed {self.seed}"] if self.seed is not None else []
        if self.width:
            out.append(f"{self.width}x{self.height}")
        if self.frames:
            out.append(f"{self.frames} frames")
        if self.cfg is not None:
            out.append(f"cfg {self.cfg:g}")
        return ", ".join(out)


MAX_VALIDATION_PROMPTS = 256
PROMPT_KEYS = ("summary", "prompt", "seed", "size", "frames", "cfg")


def _entry(d, where: str) -> ValidationPrompt:
    """A TOML [[prompt]] table or a JSONL object, checked key by key."""
    if not isinstance(d, dict):
        raise PromptError(f"{where}: expected a table with prompt = \"...\", got {type(d).__name__}")
    unknown = [k for k in d if k not in PROMPT_KEYS]
    if unknown:
        raise PromptError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(PROMPT_KEYS)})")
    prompt = d.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptError(f"{where}: needs prompt = \"...\" (a non-empty string)")
    summary = d.get("summary", prompt[:40])
    if not isinstance(summary, str):
        raise PromptError(f"{where}: summary must be a string")

    def integer(k, ok, what):
        v = d.get(k)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or not ok(v):
            raise PromptError(f"{where}: {k} must be {what}, got {v!r:.80}")
        return v

    from .config import INT_RANGES, MAX_FRAMES, MAX_SIDE
    from .configfile import short_repr

    seed_hi = INT_RANGES["validation_seed"][1]
    seed = integer("seed", lambda v: 0 <= v <= seed_hi, f"an integer in [0, {seed_hi}]")
    frames = integer("frames", lambda v: 1 <= v <= MAX_FRAMES and (v - 1) % 4 == 0,
                     f"1 + 4k (e.g. 81), at most {MAX_FRAMES}")
    width = height = None
    if d.get("size") is not None:
        w, sep, h = str(d["size"])[:40].lower().partition("x")
        if not (sep and w.isdigit() and h.isdigit() and len(w) < 6 and len(h) < 6 and 0 < int(w) <= MAX_SIDE
                and 0 < int(h) <= MAX_SIDE and int(w) % 32 == 0 and int(h) % 32 == 0):
            raise PromptError(f"{where}: size must be WIDTHxHEIGHT in multiples of 32 up to {MAX_SIDE} "
                              f"(e.g. 288x160), got {short_repr(d['size'])}")
        width, height = int(w), int(h)
    cfg = d.get("cfg")
    if cfg is not None and (isinstance(cfg, bool) or not isinstance(cfg, (int, float)) or not 0 <= cfg < 100):
        raise PromptError(f"{where}: cfg must be a number in [0, 100), got {cfg!r:.80}")
    return ValidationPrompt(summary.strip(), " ".join(prompt.split()), seed, width, height, frames,
                            None if cfg is None else float(cfg))


def validation_prompts(path: str | None) -> list[ValidationPrompt]:
    """The validation prompt set, from one of three formats:

    - lines of `summary | prompt` (or just `prompt`); '#' starts a comment line;
    - TOML: `[[prompt]]` tables with prompt, and optionally summary, seed, size (WIDTHxHEIGHT),
      frames and cfg;
    - JSONL: one object per line with the same keys.
    """
    if path and str(path).startswith("asset:"):  # a preset's own file: assets/<rest>, wherever it is installed
        try:
            p = asset(*str(path)[len("asset:"):].split("/"))
        except FileNotFoundError as e:
            raise PromptError(str(e)) from e
    else:
        p = Path(path) if path else asset("prompts", "validation_tomjerry.txt")
    if not p.is_file():
        raise PromptError(f"validation prompt file not found: {p}")
    from .configfile import read_bounded

    text = read_bounded(p, f"validation prompts {p}", error=PromptError)
    out = []
    suffix = p.suffix.lower()
    if suffix == ".toml":
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise PromptError(f"{p}: not valid TOML: {e}") from e
        except RecursionError as e:
            raise PromptError(f"{p}: nested too deeply to be a prompt file") from e
        extra = [k for k in data if k != "prompt"]
        if extra:
            raise PromptError(f"{p}: expected only [[prompt]] tables, found {extra[0]!r}")
        entries = data.get("prompt", [])
        if not isinstance(entries, list):
            raise PromptError(f"{p}: write each prompt as a [[prompt]] table")
        out = [_entry(d, f"{p} prompt {i + 1}") for i, d in enumerate(entries)]
    elif suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise PromptError(f"{p} line {n}: not valid JSON: {e}") from e
            except RecursionError as e:
                raise PromptError(f"{p} line {n}: nested too deeply to be a prompt") from e
            out.append(_entry(d, f"{p} line {n}"))
    else:
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            summary, sep, prompt = line.partition("|")
            out.append(ValidationPrompt(summary.strip(), prompt.strip()) if sep
                       else ValidationPrompt(line[:40], line))
    if not out:
        raise PromptError(f"no prompts in {p}")
    if len(out) > MAX_VALIDATION_PROMPTS:
        raise PromptError(f"{p}: {len(out)} prompts; at most {MAX_VALIDATION_PROMPTS} (each is a video at every "
                          "validation)")
    return out


def template_fields(template: str) -> set[str]:
    return compile_template(template).fields


_SUFFIX_RE = re.compile(r" motion score: \d+\.$")


def run_suffix(cfg, train_windows) -> str:
    """The suffix a run's validation prompts carry: the median training clip's motion score."""
    if not cfg.motion_score:
        return ""
    scores = sorted(w.motion_score for w in train_windows if w.motion_score is not None)
    return motion_suffix(scores[len(scores) // 2] if scores else None, cfg.motion_scale)


def with_suffix(prompt: str, suffix: str) -> str:
    """Every generation from a run builds its prompt as that run's validation did."""
    if not suffix or _SUFFIX_RE.search(prompt):
        return prompt
    return prompt + suffix
