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
    captioner, _, version = spec.partition("@")
    if version:
        n = con.execute("SELECT count(*) FROM captions WHERE captioner = ? AND prompt_version = ?",
                        [captioner, version]).fetchone()[0]
        if not n:
            raise LookupError(f"no captions for {captioner}@{version}")
        return captioner, version
    row = con.execute("SELECT prompt_version FROM captions WHERE captioner = ? GROUP BY 1 "
                      "ORDER BY max(created_at) DESC LIMIT 1", [captioner]).fetchone()
    if not row:
        known = [r[0] for r in con.execute("SELECT DISTINCT captioner FROM captions ORDER BY 1").fetchall()]
        raise LookupError(f"no captions by '{captioner}'" + (f"; known: {', '.join(known)}" if known else ""))
    return captioner, row[0]


def diff_labellings(con, a: str, b: str) -> dict:
    (ca, va), (cb, vb) = resolve_labelling(con, a), resolve_labelling(con, b)
    rows = con.execute(
        "SELECT x.clip_id, x.tag_list, y.tag_list FROM captions x JOIN captions y USING (clip_id) "
        "WHERE x.captioner = ? AND x.prompt_version = ? AND y.captioner = ? AND y.prompt_version = ? "
        "AND x.status = 'ok' AND y.status = 'ok' ORDER BY clip_id",
        [ca, va, cb, vb],
    ).fetchall()
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
