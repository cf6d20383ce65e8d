"""Training prompts filled per clip from catalog columns, and the validation prompt set."""

from __future__ import annotations

import functools
import json
import re
import string
from dataclasses import dataclass
from pathlib import Path

from dataengine.assets import asset


class PromptError(ValueError):
    pass


def class_prompt(text_or_path: str | None) -> str:
    if text_or_path is None:
        return asset("prompts", "class_tomjerry.txt").read_text().strip()
    p = Path(text_or_path)
    return p.read_text().strip() if p.exists() else text_or_path.strip()


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
            raise PromptError(f"{where}: {k} must be {what}, got {v!r}")
        return v

    seed = integer("seed", lambda v: 0 <= v < 2**63, "an integer >= 0")
    frames = integer("frames", lambda v: v >= 1 and (v - 1) % 4 == 0, "1 + 4k (e.g. 81)")
    width = height = None
    if d.get("size") is not None:
        w, sep, h = str(d["size"]).lower().partition("x")
        if not (sep and w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0 and int(w) % 32 == 0
                and int(h) % 32 == 0):
            raise PromptError(f"{where}: size must be WIDTHxHEIGHT in multiples of 32 (e.g. 288x160), "
                              f"got {d['size']!r}")
        width, height = int(w), int(h)
    cfg = d.get("cfg")
    if cfg is not None and (isinstance(cfg, bool) or not isinstance(cfg, (int, float)) or not 0 <= cfg < 100):
        raise PromptError(f"{where}: cfg must be a number in [0, 100), got {cfg!r}")
    return ValidationPrompt(summary.strip(), " ".join(prompt.split()), seed, width, height, frames,
                            None if cfg is None else float(cfg))


def validation_prompts(path: str | None) -> list[ValidationPrompt]:
    """The validation prompt set, from one of three formats:

    - lines of `summary | prompt` (or just `prompt`); '#' starts a comment line;
    - TOML: `[[prompt]]` tables with prompt, and optionally summary, seed, size (WIDTHxHEIGHT),
      frames and cfg;
    - JSONL: one object per line with the same keys.
    """
    p = Path(path) if path else asset("prompts", "validation_tomjerry.txt")
    if not p.is_file():
        raise PromptError(f"validation prompt file not found: {p}")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise PromptError(f"cannot read validation prompts {p}: {e}") from e
    out = []
    suffix = p.suffix.lower()
    if suffix == ".toml":
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise PromptError(f"{p}: not valid TOML: {e}") from e
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
    return out


KNOWN_FIELDS = ("class_prompt", "caption", "tags", "tag_tokens", "motion_score", "action", "setting", "time_of_day",
                "camera", "motion", "characters")


@functools.lru_cache(maxsize=64)
def _template_fields(template: str) -> tuple[str, ...]:
    return tuple(sorted({f for _, f, _, _ in string.Formatter().parse(template) if f}))


def template_fields(template: str) -> set[str]:
    return set(_template_fields(template))


def _value(f: str, row: dict, class_text: str, extra: dict | None):
    """One template field of a clip (computed only when the template uses it)."""
    if f == "class_prompt":
        return class_text
    if f == "caption":
        return row.get("caption")
    if f in ("tags", "tag_tokens"):
        tags = list(row.get("tag_list") or [])
        if not tags:
            return None
        return ", ".join(tags) if f == "tags" else " ".join(f"[{t}]" for t in tags)
    if f == "motion_score":
        return None if row.get("motion_score") is None else f"{row['motion_score']:.1f}"
    if f == "characters":
        chars = (extra or {}).get("characters")
        return ", ".join(chars) if isinstance(chars, list) and chars else row.get("characters")
    return row.get(f) if row.get(f) is not None else (extra or {}).get(f)


def fill(template: str, row: dict, class_text: str, *, motion_score: bool = False, motion_scale: float = 5.0) -> str:
    """One clip's prompt. Unknown fields are an error; a needed field that is NULL raises too."""
    fields = {}
    extra = None
    for f in _template_fields(template):
        if f not in KNOWN_FIELDS:
            raise PromptError(f"unknown template field {{{f}}}; known: {', '.join(sorted(KNOWN_FIELDS))}")
        if extra is None and f in ("action", "setting", "time_of_day", "camera", "motion", "characters"):
            raw = row.get("caption_fields")
            extra = json.loads(raw) if isinstance(raw, str) and raw else (raw or {})
        v = _value(f, row, class_text, extra)
        if v is None:
            raise PromptError(f"clip {row.get('clip_id')} has no {f} (caption it first, or use --prompt-template class)")
        fields[f] = v
    text = " ".join(template.format(**fields).split())
    if motion_score:
        text += motion_suffix(row.get("motion_score"), motion_scale)
    return text


MOTION_MIN, MOTION_MAX = 1, 30  # SANA-Video's training data was filtered to motion scores 1-30


def motion_value(score: float | None, scale: float) -> int | None:
    """SANA's motion score N from our ingest motion_score (mean absolute luma difference between
    frames at 16 fps, on 0-255): N = round(score * scale), clamped to [1, 30], the range SANA-Video
    was trained on. A fast pan never asks for 'motion score: 100.', which the model never saw."""
    if score is None:
        return None
    return int(min(MOTION_MAX, max(MOTION_MIN, round(score * scale))))


def motion_suffix(score: float | None, scale: float) -> str:
    """SANA-Video was trained with ' motion score: N.' appended; N from our ingest stat."""
    n = motion_value(score, scale)
    return "" if n is None else f" motion score: {n}."


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
