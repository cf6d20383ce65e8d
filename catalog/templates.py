"""Prompt templates: how a clip's catalog row becomes the text a model trains on.

Used by `train --prompt-template` and by `de export --template`, so it sits below both. A
template is literal text with `{field}` placeholders over a fixed list of fields, and nothing
else: no conversions (`{caption!r}`), no format specs (`{caption:x>100000000}` would write a
100 MB caption), no attribute or index access (`{caption.__class__}`). Every template is checked
when it is given, with a one-line error that names it, and every filled prompt is bounded.
"""

from __future__ import annotations

import functools
import json
import string
from dataclasses import dataclass
from pathlib import Path

# built-in template names
TEMPLATES = {
    "class": "{class_prompt}",
    "caption": "{caption}",
    "class+caption": "{class_prompt} {caption}",
    "tags": "{class_prompt} {tag_tokens}",
}
KNOWN_FIELDS = ("class_prompt", "caption", "tags", "tag_tokens", "motion_score", "action", "setting", "time_of_day",
                "camera", "motion", "characters")
STRUCTURED = ("action", "setting", "time_of_day", "camera", "motion", "characters")
MAX_TEMPLATE_CHARS = 2000
MAX_PROMPT_CHARS = 8000  # Gemma-2 reads 300 tokens of it; a kohya caption file is a line
MAX_CLASS_PROMPT_BYTES = 64 * 1024


class TemplateError(ValueError):
    """A template that cannot be used, or a clip it cannot fill; the message names which."""


@dataclass(frozen=True)
class Template:
    text: str
    parts: tuple  # (literal, field or None) pairs

    @property
    def fields(self) -> set[str]:
        return {f for _, f in self.parts if f}

    def render(self, values: dict) -> str:
        out = "".join(lit + (str(values[f]) if f else "") for lit, f in self.parts)
        if len(out) > MAX_PROMPT_CHARS:
            raise TemplateError(f"the filled template is {len(out):,} characters (at most {MAX_PROMPT_CHARS:,})")
        return out


@functools.lru_cache(maxsize=128)
def compile_template(text: str) -> Template:
    """A built-in name or a template string -> Template, or a TemplateError naming the template."""
    if not isinstance(text, str):
        raise TemplateError(f"a template is text, got {type(text).__name__}")
    t = TEMPLATES.get(text, text)
    shown = t if len(t) <= 60 else t[:57] + "..."
    if len(t) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"template {shown!r}: longer than {MAX_TEMPLATE_CHARS} characters")
    try:
        parsed = list(string.Formatter().parse(t))
    except ValueError as e:
        raise TemplateError(f"template {shown!r}: {e} (use {{{{ and }}}} for literal braces)") from e
    parts = []
    for literal, field, spec, conv in parsed:
        if field is None:
            parts.append((literal, None))
            continue
        if field == "":
            raise TemplateError(f"template {shown!r}: '{{}}' names no field; use one of {', '.join(KNOWN_FIELDS)}")
        if field not in KNOWN_FIELDS:
            raise TemplateError(f"template {shown!r}: unknown template field {{{field[:40]}}}; known: "
                                f"{', '.join(KNOWN_FIELDS)}")
        if conv is not None or spec:
            raise TemplateError(f"template {shown!r}: only plain {{{field}}} is allowed (no !conversion or "
                                ":format spec)")
        parts.append((literal, field))
    return Template(t, tuple(parts))


def _value(f: str, row: dict, class_text: str, extra: dict):
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
        chars = extra.get("characters")
        return ", ".join(map(str, chars)) if isinstance(chars, list) and chars else row.get("characters")
    return row.get(f) if row.get(f) is not None else extra.get(f)


def fill(template: str, row: dict, class_text: str, *, motion_score: bool = False, motion_scale: float = 5.0) -> str:
    """One clip's prompt. A needed field that is NULL raises TemplateError (and names the clip)."""
    tpl = compile_template(template)
    values, extra = {}, None
    for f in tpl.fields:
        if extra is None and f in STRUCTURED:
            raw = row.get("caption_fields")
            try:
                extra = json.loads(raw) if isinstance(raw, str) and raw else (raw or {})
            except ValueError:
                extra = {}
            if not isinstance(extra, dict):
                extra = {}
        v = _value(f, row, class_text, extra or {})
        if v is None:
            raise TemplateError(f"clip {row.get('clip_id')} has no {f} (caption it first, or use --prompt-template "
                                "class)")
        values[f] = v
    text = " ".join(tpl.render(values).split())
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


def default_class_prompt() -> str:
    from .assets import asset

    return asset("prompts", "class_tomjerry.txt").read_text().strip()


def class_prompt(text_or_path: str | None, *, inside: str | Path | None = None) -> str:
    """The class prompt: the text itself, or the contents of the file it names. With `inside`
    (a run folder whose config someone else may have written), a file is read only if it lies in
    that folder: a run's config must not make `de export` copy /etc/passwd into caption files."""
    if text_or_path is None:
        return default_class_prompt()
    if not isinstance(text_or_path, str):
        raise TemplateError(f"class_prompt must be text, got {type(text_or_path).__name__}")
    if len(text_or_path) > 4096 or "\n" in text_or_path or "\x00" in text_or_path:
        return text_or_path.strip()  # prose, not a path
    p = Path(text_or_path)
    candidates = [p] if inside is None or p.is_absolute() else [Path(inside) / p, p]
    for c in candidates:
        try:
            if not c.is_file():
                continue
        except (OSError, ValueError):
            continue
        real = c.resolve()
        if inside is not None and not real.is_relative_to(Path(inside).resolve()):
            raise TemplateError(f"the run's class_prompt names a file outside the run folder ({text_or_path}); "
                                "it is not read. Give the class prompt's text, or copy the file into the run")
        if real.stat().st_size > MAX_CLASS_PROMPT_BYTES:
            raise TemplateError(f"class prompt file {c} is larger than {MAX_CLASS_PROMPT_BYTES:,} bytes")
        return real.read_text(errors="replace").strip()
    return text_or_path.strip()
