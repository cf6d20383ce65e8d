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
    summary: str
    prompt: str


def validation_prompts(path: str | None) -> list[ValidationPrompt]:
    """Lines of `summary | prompt` (or just `prompt`); '#' starts a comment line."""
    p = Path(path) if path else asset("prompts", "validation_tomjerry.txt")
    if not p.exists():
        raise PromptError(f"validation prompt file not found: {p}")
    out = []
    for line in p.read_text().splitlines():
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
