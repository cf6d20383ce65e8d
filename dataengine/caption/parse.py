"""Robust parsing of VLM answers into (caption, tags, fields).

Models wrap JSON in code fences, add prose before and after, use single quotes, forget or add
fields, give tags as one string. We accept all of that; what we cannot read is reported as a
parse error with the raw text kept. What we accept is still checked: the caption and the tags
must be text, the answer is bounded in size and nesting, and the scan is linear in its length
(an endpoint may send anything). When the labelling has a schema (`--closed-vocab` and other
constrained runs), the object must follow it, whichever backend produced it.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field

from catalog.tags import TagError, normalize_tag, normalize_tags  # noqa: F401 - re-exported

FIELDS = ("characters", "action", "setting", "time_of_day", "camera", "motion")
MOTION_LEVELS = ("static", "slow", "medium", "fast")
MAX_ANSWER_CHARS = 64 * 1024  # a caption answer is a few hundred bytes; 256 new tokens at most ~2 KB
MAX_CAPTION_CHARS = 2000      # free answers (the schema caps constrained ones at 400)
MAX_DEPTH = 32                # our schema nests 2 deep


@dataclass
class Parsed:
    caption: str | None = None
    tags: list[str] = field(default_factory=list)
    fields: dict = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


class _TooDeep(Exception):
    pass


def _balanced_object(text: str) -> str | None:
    """The first {...} with balanced braces, skipping braces inside strings, in one pass. If the
    first `{` never closes, the earliest object that did close inside it is returned."""
    start = text.find("{")
    if start == -1:
        return None
    stack: list[int] = []
    best: tuple[int, int] | None = None
    quote, esc = None, False
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
            stack.append(i)
            if len(stack) > MAX_DEPTH:
                raise _TooDeep
        elif ch == "}" and stack:
            s = stack.pop()
            if not stack:
                return text[s : i + 1]
            if best is None or s < best[0]:
                best = (s, i + 1)
    return text[best[0] : best[1]] if best else None


def _depth_ok(blob: str) -> bool:
    """Brackets of both kinds nest at most MAX_DEPTH deep (json and ast recurse per level)."""
    depth = 0
    for ch in blob:
        if ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def _load_object(blob: str) -> dict | None:
    for attempt in (blob, re.sub(r",\s*([}\]])", r"\1", blob)):
        try:
            obj = json.loads(attempt)
            if isinstance(obj, dict):
                return obj
        except (json.JSONDecodeError, RecursionError):
            pass
        try:  # single quotes, True/None: a Python literal
            obj = ast.literal_eval(re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False",
                                   re.sub(r"\bnull\b", "None", attempt))))
            if isinstance(obj, dict):
                return obj
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            pass
    return None


def _text(v, what: str) -> str | None:
    """Text, or a list of texts joined; anything else (an object, a number) is not a caption."""
    if v is None:
        return None
    if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
        return ", ".join(x.strip() for x in v if x.strip()) or None
    if not isinstance(v, str):
        raise TagError(f"{what} must be text, got {type(v).__name__}")
    return v.strip() or None


def schema_error(obj: dict, schema: dict) -> str | None:
    """The first way `obj` breaks the caption schema, in one line, or None."""
    import jsonschema

    err = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(obj))
    if err is None:
        return None
    where = "/".join(str(p) for p in err.absolute_path) or "the answer"
    return f"{where}: {err.message[:200]}"


def parse_output(raw: str, synonyms: dict[str, str] | None = None, schema: dict | None = None) -> Parsed:
    if raw is None or not str(raw).strip():
        return Parsed(error="empty output")
    text = str(raw)
    if len(text) > MAX_ANSWER_CHARS:
        return Parsed(error=f"the answer is {len(text):,} characters; a caption answer is at most "
                            f"{MAX_ANSWER_CHARS:,}")
    fence = re.search(r"```(?:json|JSON)?\s*(.*?)```", text, re.DOTALL)
    candidates = [fence.group(1)] if fence else []
    candidates.append(text)
    obj = None
    try:
        for c in candidates:
            blob = _balanced_object(c)
            if blob and not _depth_ok(blob):
                raise _TooDeep
            if blob and (obj := _load_object(blob)) is not None:
                break
    except _TooDeep:
        return Parsed(error=f"the JSON nests deeper than {MAX_DEPTH} levels")
    if obj is None:
        return Parsed(error="no JSON object found in the output")
    if schema is not None and (bad := schema_error(obj, schema)):
        return Parsed(error=f"the answer does not follow the schema: {bad}")
    try:
        return _fields(obj, synonyms)
    except TagError as e:
        return Parsed(error=str(e))


def _fields(obj: dict, synonyms) -> Parsed:
    obj = {str(k).strip().lower().replace(" ", "_"): v for k, v in obj.items()}
    caption = _text(obj.get("caption") or obj.get("description"), "the caption")
    if not caption:
        return Parsed(error="the JSON has no 'caption'")
    if len(caption) > MAX_CAPTION_CHARS:
        return Parsed(error=f"the caption is {len(caption):,} characters (at most {MAX_CAPTION_CHARS:,})")
    tags = normalize_tags(obj.get("tags") or obj.get("tag") or [], synonyms)
    fields: dict = {}
    chars = obj.get("characters")
    if isinstance(chars, str):
        chars = [c.strip() for c in re.split(r"[,;]| and ", chars) if c.strip()]
    fields["characters"] = [_text(c, "a character") or "" for c in chars] if isinstance(chars, (list, tuple)) else []
    for k in ("action", "setting", "camera"):
        fields[k] = _text(obj.get(k), k)
    tod = _text(obj.get("time_of_day"), "time_of_day")
    fields["time_of_day"] = normalize_tag(tod, synonyms) if tod else None
    motion = _text(obj.get("motion"), "motion")
    m = normalize_tag(motion) if motion else ""
    fields["motion"] = next((lvl for lvl in MOTION_LEVELS if lvl in m), None) if m else None
    extra = {k: v for k, v in obj.items() if k not in (*FIELDS, "caption", "description", "tags", "tag")}
    if extra:
        fields["extra"] = extra
    return Parsed(caption=caption, tags=tags, fields=fields)
