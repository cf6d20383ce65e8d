"""Comparing labellings: tag-set agreement between two captioners or prompt versions."""

from __future__ import annotations

from collections import Counter


def jaccard(a, b) -> float:
    """|A n B| / |A u B|; two empty sets agree perfectly (1.0)."""
    a, b = set(a or []), set(b or [])
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def resolve_labelling(con, spec: str) -> tuple[str, str]:
    """'captioner' or 'captioner@version' -> (captioner, version); bare names take the newest version."""
    from catalog import captions

    captioner, _, version = spec.partition("@")
    if version:
        if not captions.count(con, captioner, version):
            raise LookupError(f"no captions for {captioner}@{version}")
        return captioner, version
    newest = captions.newest_version(con, captioner)
    if newest is None:
        known = captions.captioners(con)
        raise LookupError(f"no captions by '{captioner}'" + (f"; known: {', '.join(known)}" if known else ""))
    return captioner, newest


def diff_labellings(con, a: str, b: str) -> dict:
    from catalog.captions import paired_tags

    (ca, va), (cb, vb) = resolve_labelling(con, a), resolve_labelling(con, b)
    rows = paired_tags(con, (ca, va), (cb, vb))
    in_a, in_b, both = Counter(), Counter(), Counter()
    js = []
    for _, ta, tb in rows:
        sa, sb = set(ta or []), set(tb or [])
        js.append(jaccard(sa, sb))
        in_a.update(sa)
        in_b.update(sb)
        both.update(sa & sb)
    per_tag = []
    for tag in sorted(set(in_a) | set(in_b), key=lambda t: -(in_a[t] + in_b[t])):
        per_tag.append({"tag": tag, "a": in_a[tag], "b": in_b[tag], "both": both[tag],
                        "recall_of_a": both[tag] / in_a[tag] if in_a[tag] else None})
    return {"a": f"{ca}@{va}", "b": f"{cb}@{vb}", "clips_compared": len(rows),
            "mean_jaccard": sum(js) / len(js) if js else None, "per_tag": per_tag}
