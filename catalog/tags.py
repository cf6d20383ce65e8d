"""Tag normalisation: one spelling per tag, used by captioning (parsing a model's answer) and by
curation (a human's edit). It lives in `catalog` because both `dataengine` and the catalog's own
curation need it, and the catalog imports nothing above it."""

from __future__ import annotations

import re

MAX_TAG_CHARS = 40


class TagError(ValueError):
    """Tags that are not text (a number, an object, null): the message says what was found."""


def normalize_tag(tag: str, synonyms: dict[str, str] | None = None) -> str:
    """`'  Wide Shot '` -> `wide_shot`; `#Chasing!` -> `chasing` (-> `chase` with a synonym table).
    An empty string means the tag had no usable characters or was longer than 40."""
    t = str(tag).strip().lower().lstrip("#").strip("\"'`[]() ")
    t = re.sub(r"[\s\-/]+", "_", t)
    t = re.sub(r"[^a-z0-9_]", "", t)
    t = re.sub(r"_+", "_", t).strip("_")
    if synonyms:
        t = synonyms.get(t, t)
    return t if 0 < len(t) <= MAX_TAG_CHARS else ""


def normalize_tags(tags, synonyms: dict[str, str] | None = None) -> list[str]:
    """A string (split on , ; | or newlines, else on spaces) or a list of strings (lists nest) ->
    unique normalised tags in order. Anything that is not text raises TagError: a model that
    answers `"tags": [{"a": 1}, 42, null]` did not answer with tags, and its Python repr is not one."""
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = re.split(r"[,;\n|]+", tags) if re.search(r"[,;\n|]", tags) else tags.split()
    elif not isinstance(tags, (list, tuple)):
        raise TagError(f"tags must be text or a list of text, got {type(tags).__name__}")
    out: list[str] = []
    for t in tags:
        if isinstance(t, (list, tuple)):
            candidates = normalize_tags(t, synonyms)
        elif isinstance(t, str):
            candidates = [normalize_tag(t, synonyms)]
        else:
            raise TagError(f"a tag must be text, got {type(t).__name__}")
        for c in candidates:
            if c and c not in out:
                out.append(c)
    return out
