"""Training prompts filled per clip from catalog columns, and the validation prompt set."""

from __future__ import annotations

import json
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


def motion_suffix(score: float | None, scale: float) -> str:
    """SANA-Video was trained with ' motion score: N.' appended; N from our ingest stat."""
    if score is None:
        return ""
    return f" motion score: {int(round(score * scale))}."
