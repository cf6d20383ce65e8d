"""Training prompts filled per clip from catalog columns, and the validation prompt set."""

from __future__ import annotations

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


def template_fields(template: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f}


def fill(template: str, row: dict, class_text: str, *, motion_score: bool = False, motion_scale: float = 5.0) -> str:
    """One clip's prompt. Unknown fields are an error; a needed field that is NULL raises too."""
    fields = {}
    extra = row.get("caption_fields")
    extra = json.loads(extra) if isinstance(extra, str) and extra else (extra or {})
    tags = list(row.get("tag_list") or [])
    values = {
        "class_prompt": class_text,
        "caption": row.get("caption"),
        "tags": ", ".join(tags) if tags else None,
        "tag_tokens": " ".join(f"[{t}]" for t in tags) if tags else None,
        "motion_score": None if row.get("motion_score") is None else f"{row['motion_score']:.1f}",
    }
    for k in ("action", "setting", "time_of_day", "camera", "motion"):
        values[k] = row.get(k) if row.get(k) is not None else extra.get(k)
    chars = extra.get("characters")
    values["characters"] = ", ".join(chars) if isinstance(chars, list) and chars else row.get("characters")
    for f in template_fields(template):
        if f not in values:
            raise PromptError(f"unknown template field {{{f}}}; known: {', '.join(sorted(values))}")
        if values[f] is None:
            raise PromptError(f"clip {row.get('clip_id')} has no {f} (caption it first, or use --prompt-template class)")
        fields[f] = values[f]
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
