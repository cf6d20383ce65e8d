"""Near-duplicate clips: a visual signature per clip at ingest, groups across the whole catalog.

Signature: a 64-bit DCT perceptual hash (pHash) of three frames of the clip, at 25%, 50% and 75%
of its length, taken from the keyframe candidates the single decode pass already keeps (a 32x32
luma copy of each; no second decode). 192 bits per clip, stored as three BIGINTs.

Grouping: two clips are near-duplicates when the Hamming distance of their signatures is at most
`threshold` bits (of 192). Candidates come from multi-index hashing: the 192 bits are cut into
threshold+1 chunks, and by the pigeonhole principle two signatures within `threshold` bits agree
exactly on at least one chunk, so exact-match buckets per chunk find every pair (no pairwise
scan), and each candidate is then checked on all 192 bits. Identical signatures are collapsed
first (title cards, black frames). Groups are the connected components; the representative
(`dup_rank` 1) is the longest clip, then the sharpest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

SIG_BITS = 192
DEFAULT_THRESHOLD = 10
MAX_THRESHOLD = 15  # chunks of >= 12 bits keep the exact-match buckets selective
SMALL = 32


def small_luma(img: np.ndarray, bgr: bool = False) -> np.ndarray:
    """32x32 float32 luma of an analysis frame (what the signature is computed from)."""
    import cv2

    g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY if bgr else cv2.COLOR_RGB2GRAY)
    return cv2.resize(g, (SMALL, SMALL), interpolation=cv2.INTER_AREA).astype(np.float32)


def phash(small: np.ndarray) -> int:
    """64-bit DCT hash: the 8x8 lowest frequencies against their median (DC excluded), as int64."""
    import cv2

    low = cv2.dct(small)[:8, :8].reshape(-1)
    bits = low > np.median(low[1:])
    v = 0
    for b in bits:
        v = (v << 1) | int(b)
    return v - (1 << 64) if v >= (1 << 63) else v


def clip_signature(cands: list[tuple[int, np.ndarray]], start: int, end: int) -> tuple[int, int, int] | None:
    """pHashes of the candidates nearest 25%, 50% and 75% of [start, end) (inside it when possible)."""
    if not cands:
        return None
    inside = [c for c in cands if start <= c[0] < end] or cands
    out = []
    for q in (0.25, 0.5, 0.75):
        target = start + q * (end - start)
        out.append(phash(min(inside, key=lambda c: abs(c[0] - target))[1]))
    return tuple(out)


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x.view(np.uint64))
    v = x.view(np.uint64).copy()  # pragma: no cover - numpy < 2
    c = np.zeros(v.shape, np.uint64)
    while v.any():
        c += v & np.uint64(1)
        v >>= np.uint64(1)
    return c


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distance between signature rows (N,3) int64."""
    return _popcount(np.bitwise_xor(a, b)).sum(axis=-1)


def _chunks(sigs: np.ndarray, k: int) -> list[np.ndarray]:
    """The 192 bits of each row cut into k contiguous chunks, each as an integer key."""
    u = sigs.view(np.uint64)
    bits = np.unpackbits(u.byteswap().view(np.uint8).reshape(len(u), -1), axis=1)  # (N, 192), MSB first
    edges = np.linspace(0, SIG_BITS, k + 1).round().astype(int)
    keys = []
    for i in range(k):
        part = bits[:, edges[i]:edges[i + 1]].astype(np.uint64)
        w = np.uint64(1) << np.arange(part.shape[1] - 1, -1, -1, dtype=np.uint64)
        keys.append((part * w).sum(axis=1))
    return keys


def near_pairs(sigs: np.ndarray, threshold: int) -> np.ndarray:
    """Index pairs (i < j) of rows within `threshold` bits, found by multi-index hashing. Rows with
    identical signatures pair only with one representative, which pairs with the rest: the pairs
    connect exactly the components that all near pairs connect, which is what grouping needs."""
    if not 0 <= threshold <= MAX_THRESHOLD:
        raise ValueError(f"--dup-threshold must be 0..{MAX_THRESHOLD} bits (of {SIG_BITS})")
    n = len(sigs)
    if n < 2:
        return np.zeros((0, 2), np.int64)
    # identical signatures first: one representative each, the rest pair with it directly
    uniq, inverse = np.unique(sigs, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    pairs = []
    order = np.argsort(inverse, kind="stable")
    inv_sorted = inverse[order]
    starts = np.flatnonzero(np.r_[True, inv_sorted[1:] != inv_sorted[:-1]])
    firsts = order[starts][np.cumsum(np.r_[True, inv_sorted[1:] != inv_sorted[:-1]]) - 1]
    copies = firsts != order
    if copies.any():
        pairs.append(np.stack([firsts[copies], order[copies]], axis=1))
    rep = np.empty(len(uniq), np.int64)
    rep[inverse[order[starts]]] = order[starts]
    found = []
    for key in _chunks(uniq, threshold + 1):
        found += _bucket_pairs(key, uniq, threshold)
    if found:
        c = np.concatenate(found)
        c = np.unique(c[:, 0] * len(uniq) + c[:, 1])
        c = np.stack([c // len(uniq), c % len(uniq)], axis=1)
        pairs.append(np.stack([rep[c[:, 0]], rep[c[:, 1]]], axis=1))
    if not pairs:
        return np.zeros((0, 2), np.int64)
    p = np.concatenate(pairs)
    return np.stack([p.min(axis=1), p.max(axis=1)], axis=1)


SMALL_BUCKET = 64


def _bucket_pairs(key: np.ndarray, sigs: np.ndarray, threshold: int) -> list[np.ndarray]:
    """Pairs (i < j) with equal `key` and signatures within `threshold`, vectorised: sorted by
    key, row k is compared with row k+d for d = 1, 2, ... while any equal keys remain, up to
    SMALL_BUCKET; the rare larger buckets are finished one by one."""
    o = np.argsort(key, kind="stable")
    ks = key[o]
    out = []
    d = 1
    while d < min(SMALL_BUCKET, len(ks)):
        same = ks[d:] == ks[:-d]
        if not same.any():
            break
        a, b = o[:-d][same], o[d:][same]
        ok = distance(sigs[a], sigs[b]) <= threshold
        if ok.any():
            out.append(np.stack([np.minimum(a, b)[ok], np.maximum(a, b)[ok]], axis=1))
        d += 1
    if d >= SMALL_BUCKET:  # buckets larger than SMALL_BUCKET: the offsets not yet compared
        starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
        sizes = np.diff(np.r_[starts, len(ks)])
        for st, z in zip(starts[sizes > SMALL_BUCKET], sizes[sizes > SMALL_BUCKET]):
            members = o[st:st + z]
            ii, jj = np.triu_indices(z, SMALL_BUCKET)
            a, b = members[ii], members[jj]
            ok = distance(sigs[a], sigs[b]) <= threshold
            if ok.any():
                out.append(np.stack([np.minimum(a, b)[ok], np.maximum(a, b)[ok]], axis=1))
    return out


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Union-find: a component label per row (-1 for rows in no pair)."""
    parent = np.arange(n)

    def find(x):
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for a, b in pairs.tolist():
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    label = np.array([find(i) for i in range(n)])
    in_pair = np.zeros(n, bool)
    in_pair[pairs.reshape(-1)] = True
    label[~in_pair] = -1
    return label


@dataclass
class DedupSummary:
    threshold: int
    clips: int = 0
    without_signature: int = 0
    groups: int = 0
    grouped_clips: int = 0
    redundant_clips: int = 0
    redundant_hours: float = 0.0
    seconds: float = 0.0
    largest: list = field(default_factory=list)  # (group, size, hours, representative clip_id)

    def line(self) -> str:
        s = (f"near-duplicates at {self.threshold}/{SIG_BITS} bits: {self.groups} group(s) holding "
             f"{self.grouped_clips} of {self.clips} clips; {self.redundant_clips} beyond each group's representative "
             f"({self.redundant_hours:.3f} h); {self.seconds:.2f} s")
        if self.without_signature:
            s += f"; {self.without_signature} clip(s) have no signature (ingested before signatures: --resplit)"
        return s


def regroup(con, threshold: int | None = None) -> DedupSummary:
    """Recompute `clip_dups` for the whole catalog (caller holds the transaction)."""
    from catalog.db import get_setting, set_setting
    from catalog.dups import replace_groups, signatures

    t0 = time.perf_counter()
    if threshold is None:
        threshold = int(get_setting(con, "dup_threshold") or DEFAULT_THRESHOLD)
    rows = signatures(con)
    s = DedupSummary(threshold=threshold, clips=len(rows))
    have = [r for r in rows if r[1] is not None]
    s.without_signature = len(rows) - len(have)
    set_setting(con, "dup_threshold", str(threshold))
    out: list[tuple[str, int, int]] = []
    if len(have) >= 2:
        sigs = np.array([r[1:4] for r in have], np.int64)
        label = components(len(have), near_pairs(sigs, threshold))
        groups: dict[int, list[int]] = {}
        for i, g in enumerate(label.tolist()):
            if g >= 0:
                groups.setdefault(g, []).append(i)
        for gi, (g, members) in enumerate(sorted(groups.items(), key=lambda kv: have[kv[1][0]][0])):
            ranked = sorted(members, key=lambda i: (-(have[i][4] or 0), -(have[i][5] or 0), have[i][0]))
            for rank, i in enumerate(ranked, 1):
                out.append((have[i][0], gi + 1, rank))
            s.redundant_hours += sum(have[i][4] or 0 for i in ranked[1:]) / 3600
            s.largest.append((gi + 1, len(ranked), sum(have[i][4] or 0 for i in ranked) / 3600, have[ranked[0]][0]))
        s.groups = len(groups)
        s.grouped_clips = len(out)
        s.redundant_clips = len(out) - len(groups)
        s.largest.sort(key=lambda x: -x[1])
    replace_groups(con, out)
    s.seconds = time.perf_counter() - t0
    return s
