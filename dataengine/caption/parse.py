"""Robust parsing of VLM answers into (caption, tags, fields), and tag normalisation.

Models wrap JSON in code fences, add prose before and after, use single quotes, forget or add
fields, give tags as one string. We accept all of that; what we cannot read is reported as a
parse error with the raw text kept.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field

FIELDS = ("characters", "action", "setting", "time_of_day", "camera", "motion")
MOTION_LEVELS = ("static", "slow", "medium", "fast")


@dataclass
class Parsed:
    caption: str | None = None
    tags: list[str] = field(default_factory=list)
    fields: dict = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def normalize_tag(tag: str, synonyms: dict[str, str] | None = None) -> str:
    t = str(tag).strip().lower().lstrip("#").strip("\"'`[]() ")
    t = re.sub(r"[\s\-/]+", "_", t)
    t = re.sub(r"[^a-z0-9_]", "", t)
    t = re.sub(r"_+", "_", t).strip("_")
    if synonyms:
        t = synonyms.get(t, t)
    return t if 0 < len(t) <= 40 else ""


def normalize_tags(tags, synonyms: dict[str, str] | None = None) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = re.split(r"[,;\n|]+", tags) if re.search(r"[,;\n|]", tags) else tags.split()
    elif isinstance(tags, dict):
        tags = list(tags.values())
    out: list[str] = []
    for t in tags:
        if isinstance(t, (list, tuple)):
            candidates = normalize_tags(t, synonyms)
        else:
            candidates = [normalize_tag(t, synonyms)]
        for c in candidates:
            if c and c not in out:
                out.append(c)
    return out


def _balanced_object(text: str) -> str | None:
    """The first {...} with balanced braces, skipping braces inside strings."""
    start = text.find("{")
    while start != -1:
        depth, quote, esc = 0, None, False
        for i in range(start, len(text)):
            ch = text[i]
            if quote:
                if esc:
                    esc = False
                elif ch == "\\":
                    esc = True
                elif ch == quote:
                    quote = None
            elif ch in "\"'":
                quote = ch
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    return text[start : i + 1]
        start = text.find("{", start + 1)
    return None


def _load_object(blob: str) -> dict | None:
    for attempt in (blob, re.sub(r",\s*([}\]])", r"\1", blob)):
        try:
            obj = json.loads(attempt)
            if isinstance(obj, dict):
                return obj
        except json.JSONDecodeError:
            pass
        try:  # single quotes, True/None: a Python literal
            obj = ast.literal_eval(re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False",
                                   re.sub(r"\bnull\b", "None", attempt))))
            if isinstance(obj, dict):
                return obj
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            pass
    return None


def _text(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x).strip() for x in v if str(x).strip()) or None
    s = str(v).strip()
    return s or None


def parse_output(raw: str, synonyms: dict[str, str] | None = None) -> Parsed:
    if raw is None or not str(raw).strip():
        return Parsed(error="empty output")
    text = str(raw)
    fence = re.search(r"```(?:json|JSON)?\s*(.*?)```", text, re.DOTALL)
    candidates = [fence.group(1)] if fence else []
    candidates.append(text)
    obj = None
    for c in candidates:
        blob = _balanced_object(c)
        if blob and (obj := _load_object(blob)) is not None:
            break
    if obj is None:
        return Parsed(error="no JSON object found in the output")
    obj = {str(k).strip().lower().replace(" ", "_"): v for k, v in obj.items()}
    caption = _text(obj.get("caption") or obj.get("description"))
    if not caption:
        return Parsed(error="the JSON has no 'caption'")
    tags = normalize_tags(obj.get("tags") or obj.get("tag") or [], synonyms)
    fields: dict = {}
    chars = obj.get("characters")
    if isinstance(chars, str):
        chars = [c.strip() for c in re.split(r"[,;]| and ", chars) if c.strip()]
    fields["characters"] = [str(c).strip() for c in chars] if isinstance(chars, (list, tuple)) else []
    for k in ("action", "setting", "camera"):
        fields[k] = _text(obj.get(k))
    tod = _text(obj.get("time_of_day"))
    fields["time_of_day"] = normalize_tag(tod, synonyms) if tod else None
    motion = _text(obj.get("motion"))
    m = normalize_tag(motion) if motion else ""
    fields["motion"] = next((lvl for lvl in MOTION_LEVELS if lvl in m), None) if m else None
    extra = {k: v for k, v in obj.items() if k not in (*FIELDS, "caption", "description", "tags", "tag")}
    if extra:
        fields["extra"] = extra
    return Parsed(caption=caption, tags=tags, fields=fields)
