"""The caption schema, and generation constrained to it.

The schema is the answer format the prompt asks for, made exact: the required keys, `time_of_day`
and `motion` as enums, lists of strings, and a length cap on every string and list. With a closed
vocabulary the tags are an enum of `assets/vocab.json`'s words. Strings are an allow-list of
printable ASCII without quotes or backslashes, so every character is one byte and the whole
answer has a hard upper bound in bytes, hence in tokens: `worst_case_tokens` is that bound, and
a generation given at least that many new tokens always ends with a complete, parseable object.

Constrained decoding runs through xgrammar (chosen by measurement; see benchmarks/README.md):
a transformers `LogitsProcessor` masks, at every step, the tokens the grammar does not allow.
The same schema goes to a serving engine as `response_format`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

TIME_OF_DAY = ("day", "night", "dusk", "dawn", "indoor_unknown")
MOTION = ("static", "slow", "medium", "fast")
# Caption text: letters, digits, space and plain punctuation. An allow-list, so a string is
# never an escape sequence, a control character or a multi-byte character.
TEXT_CHARS = r"[A-Za-z0-9 ,.;:!?'()&%#@*+=/_-]"
TAG_CHARS = r"[a-z0-9_]"


@dataclass(frozen=True)
class Caps:
    caption: int = 400       # characters (1 to 3 sentences)
    text: int = 64           # action, setting, camera, and each character description
    tags: int = 12           # items
    tag: int = 32            # characters per free tag
    characters: int = 6      # items


@dataclass(frozen=True)
class Constraint:
    """How generation is constrained; part of the prompt version."""

    closed_vocab: bool = True
    caps: Caps = Caps()
    engine: str = "xgrammar"

    def describe(self) -> dict:
        return {"kind": "json-schema", "closed_vocab": self.closed_vocab, "caps": self.caps.__dict__,
                "engine": self.engine}


def vocab_tags(vocabulary: dict) -> list[str]:
    """Every tag word of the vocabulary, in file order, once."""
    out: list[str] = []
    for key, words in vocabulary.items():
        if key == "synonyms":
            continue
        for w in words:
            if w not in out:
                out.append(w)
    return out


def _text(n: int) -> dict:
    # xgrammar (0.2.8) cannot compile a repeat above ~128, so a long cap is a chain of <=100s
    parts = [f"{TEXT_CHARS}{{{1 if i == 0 else 0},{min(100, n - i)}}}" for i in range(0, n, 100)]
    return {"type": "string", "pattern": "^" + "".join(parts) + "$"}


def caption_schema(vocabulary: dict, constraint: Constraint) -> dict:
    caps = constraint.caps
    tod = [t for t in vocabulary.get("time_of_day", TIME_OF_DAY)] or list(TIME_OF_DAY)
    motion = [m for m in vocabulary.get("motion", MOTION)] or list(MOTION)
    tag = ({"type": "string", "enum": vocab_tags(vocabulary)} if constraint.closed_vocab
           else {"type": "string", "pattern": f"^{TAG_CHARS}{{1,{caps.tag}}}$"})
    props = {
        "caption": _text(caps.caption),
        "tags": {"type": "array", "items": tag, "minItems": 1, "maxItems": caps.tags},
        "characters": {"type": "array", "items": _text(caps.text), "maxItems": caps.characters},
        "action": _text(caps.text),
        "setting": _text(caps.text),
        "time_of_day": {"type": "string", "enum": tod},
        "camera": _text(caps.text),
        "motion": {"type": "string", "enum": motion},
    }
    return {"title": "clip_caption", "type": "object", "properties": props, "required": list(props),
            "additionalProperties": False}


def worst_case_tokens(schema: dict) -> int:
    """An upper bound on the tokens of any answer the schema allows (every token is at least one
    byte, and every allowed string is ASCII), plus one for the end-of-turn token."""

    def longest(s: dict) -> int:
        if "enum" in s:
            return max(len(json.dumps(v)) for v in s["enum"])
        if s.get("type") == "string":
            return 2 + sum(int(b) for b in re.findall(r"\{\d+,(\d+)\}", s["pattern"]))
        if s.get("type") == "array":
            return 2 + s["maxItems"] * (longest(s["items"]) + 1)
        if s.get("type") == "object":
            return 2 + sum(len(json.dumps(k)) + 2 + longest(v) for k, v in s["properties"].items())
        raise ValueError(f"no bound for {s}")

    return longest(schema) + 1


class ConstraintError(Exception):
    """The constraint cannot be built for this tokenizer or schema."""


class SchemaGrammar:
    """A schema compiled once for one tokenizer; makes a fresh logits processor per generate()."""

    def __init__(self, schema: dict, tokenizer, vocab_size: int):
        try:
            import xgrammar as xgr
        except ImportError as e:  # pragma: no cover - a declared dependency
            raise ConstraintError("constrained decoding needs xgrammar (pip install xgrammar), or pass --free") from e
        self.schema = schema
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        self.compiled = xgr.GrammarCompiler(info).compile_json_schema(
            json.dumps(schema), any_whitespace=False, separators=(",", ":"), strict_mode=True)

    def processor(self) -> "GrammarLogitsProcessor":
        """A new processor for one generate() call (it keeps one matcher per row)."""
        return GrammarLogitsProcessor(self.compiled)


class GrammarLogitsProcessor:
    """Masks each row's logits to the tokens its grammar allows next.

    One `GrammarMatcher` per row, advanced and filled as a batch (`BatchGrammarMatcher` does the
    rows in C++ threads), and one bitmask applied to the whole batch in place. A row whose
    object is complete allows only the end-of-turn token, so generate() stops it; a finished row
    is not advanced again (generate() pads it)."""

    def __init__(self, compiled):
        import xgrammar as xgr

        self._xgr = xgr
        self.compiled = compiled
        self.matchers: list = []
        self.batch = None
        self.bitmask = None
        self.started = False
        self.rejected = 0  # tokens a matcher refused (never expected; counted, not raised)

    def __call__(self, input_ids, scores):
        xgr = self._xgr
        if not self.matchers:
            n = int(input_ids.shape[0])
            self.matchers = [xgr.GrammarMatcher(self.compiled) for _ in range(n)]
            self.batch = xgr.BatchGrammarMatcher(max_threads=1)
            self.bitmask = xgr.allocate_token_bitmask(n, self.compiled.tokenizer_info.vocab_size)
        elif len(self.matchers) != int(input_ids.shape[0]):
            raise RuntimeError("a GrammarLogitsProcessor serves one generate() call; make a new one per call")
        active = [i for i, m in enumerate(self.matchers) if not m.is_terminated()]
        if self.started and active:
            last = input_ids[:, -1].tolist()
            ok = xgr.BatchGrammarMatcher.batch_accept_token([self.matchers[i] for i in active],
                                                            [last[i] for i in active])
            self.rejected += sum(1 for x in ok if not x)
            active = [i for i in active if not self.matchers[i].is_terminated()]
        self.started = True
        if not active:
            return scores
        self.batch.batch_fill_next_token_bitmask([self.matchers[i] for i in active], self.bitmask, indices=active)
        device = scores.device
        host = scores if device.type in ("cpu", "cuda") else scores.to("cpu")
        xgr.apply_token_bitmask_inplace(host, self.bitmask.to(host.device, non_blocking=True), indices=active)
        return host if host is scores else host.to(device)
