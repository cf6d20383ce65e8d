"""Near-duplicates from synthetic cartoons: re-encodes pair up, a shared intro makes one group of
three, same-palette scenes with other action do not pair. Precision and recall are printed."""

from __future__ import annotations

import json
from itertools import combinations

import numpy as np
import pytest

from dataengine.cli import main
from helpers import ingest_cli, rows

FPS = 24
W, H = 320, 240


def frames(scenes, size=(W, H)):
    """scenes: [(palette scene index, seconds, time phase)] -> uint8 (N,H,W,3)."""
    from dataengine.synth import draw_frame

    out = []
    for scene, secs, phase in scenes:
        n = int(round(secs * FPS))
        out += [draw_frame(phase + k / FPS, scene, size[0], size[1], scene_start=0.0) for k in range(n)]
    return np.stack(out)


def encode(arr, path, crf=18, size=None):
    import av
    import cv2

    with av.open(str(path), "w") as f:
        st = f.add_stream("libx264", rate=FPS, options={"crf": str(crf), "preset": "veryfast"})
        h, w = (arr.shape[1], arr.shape[2]) if size is None else (size[1], size[0])
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        for x in arr:
            if size is not None:
                x = cv2.resize(x, size, interpolation=cv2.INTER_AREA)
            for p in st.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(x), format="rgb24")):
                f.mux(p)
        for p in st.encode():
            f.mux(p)


@pytest.fixture(scope="module")
def dup_catalog(tmp_path_factory):
    from click.testing import CliRunner

    d = tmp_path_factory.mktemp("dups")
    vids = d / "v"
    vids.mkdir()
    ep1 = frames([(0, 2.0, 0.0), (1, 2.0, 0.0), (2, 2.0, 0.0)])
    encode(ep1, vids / "ep1.mp4")
    encode(ep1, vids / "ep1_small_lowrate.mp4", crf=34, size=(240, 180))  # same episode, other encode
    encode(ep1[:, :, ::-1], vids / "ep1_flipped.mp4")  # a horizontally flipped copy
    intro = (3, 2.5, 0.0)
    encode(frames([intro, (4, 2.0, 0.0)]), vids / "epA.mp4")
    encode(frames([intro, (5, 3.0, 0.0)]), vids / "epB.mp4")
    # same palettes as ep1's scenes 1 and 2, other action (the cat elsewhere at every moment)
    encode(frames([intro, (1, 2.0, 1.4), (2, 2.5, 2.2)]), vids / "epC.mp4")
    cat = d / "cat.duckdb"
    r = ingest_cli(CliRunner(), cat, vids)
    assert r.exit_code == 0, r.output
    return cat


def clips_by_video(cat):
    out = {}
    for cid, path, start in rows(cat, "SELECT clip_id, video_path, start_s FROM clips ORDER BY video_path, start_s"):
        out.setdefault(path.rsplit("/", 1)[-1], []).append(cid)
    return out


def test_reencodes_and_shared_intros_group_and_same_palette_scenes_do_not(runner, dup_catalog):
    cat = dup_catalog
    r = runner.invoke(main, ["dedup", "--catalog", str(cat)])
    assert r.exit_code == 0, r.output
    by = clips_by_video(cat)
    assert [len(by[v]) for v in ("ep1.mp4", "ep1_small_lowrate.mp4", "epA.mp4", "epB.mp4", "epC.mp4")] == \
        [3, 3, 2, 2, 3], by
    truth = {tuple(sorted(p)) for p in zip(by["ep1.mp4"], by["ep1_small_lowrate.mp4"])}
    truth |= {tuple(sorted(p)) for p in combinations([by["epA.mp4"][0], by["epB.mp4"][0], by["epC.mp4"][0]], 2)}
    groups = {}
    for cid, g in rows(cat, "SELECT clip_id, dup_group FROM clips WHERE dup_group IS NOT NULL"):
        groups.setdefault(g, []).append(cid)
    found = {tuple(sorted(p)) for members in groups.values() for p in combinations(members, 2)}
    flipped = set(by["ep1_flipped.mp4"])
    scored = {p for p in found if not (set(p) & flipped)}  # the flipped copy is reported separately
    tp = len(scored & truth)
    precision = tp / len(scored) if scored else 1.0
    recall = tp / len(truth)
    # distances, for the record
    from dataengine.dedup import distance

    sig = {c: np.array(s, np.int64) for c, *s in rows(cat, "SELECT clip_id, sig0, sig1, sig2 FROM clip_segments")}
    d = lambda a, b: int(distance(sig[a][None], sig[b][None])[0])  # noqa: E731
    print(json.dumps({
        "precision": precision, "recall": recall, "true_pairs": len(truth), "found_pairs": len(scored),
        "reencode_distances": [d(a, b) for a, b in zip(by["ep1.mp4"], by["ep1_small_lowrate.mp4"])],
        "intro_distances": [d(a, b) for a, b in combinations([by[v][0] for v in ("epA.mp4", "epB.mp4", "epC.mp4")], 2)],
        "same_palette_other_action": [d(by["ep1.mp4"][1], by["epC.mp4"][1]), d(by["ep1.mp4"][2], by["epC.mp4"][2])],
        "flipped_distances": [d(a, b) for a, b in zip(by["ep1.mp4"], by["ep1_flipped.mp4"])],
        "flipped_paired": sorted(p for p in found if set(p) & flipped) != [],
    }, indent=1))
    assert precision == 1.0 and recall == 1.0
    # the shared intro is one group of three
    intro_group = {g for g, m in groups.items() if by["epA.mp4"][0] in m}
    assert len(intro_group) == 1 and len(groups[intro_group.pop()]) == 3
    # a flipped copy is a different image to a DCT hash: documented as not a near-duplicate
    assert not any(set(p) & flipped for p in found)
    # representatives: the longest, then the sharpest; one per group has dup_rank 1
    for g, members in groups.items():
        ranks = rows(cat, f"SELECT dup_rank FROM clips WHERE dup_group = {g} ORDER BY dup_rank")
        assert [r[0] for r in ranks] == list(range(1, len(members) + 1))
    assert "group(s)" in r.output and "keeps" in r.output


def test_threshold_change_recomputes_and_train_dedup_keeps_one_per_group(runner, dup_catalog, tiny_sana_dir):
    from helpers import run_train

    cat = dup_catalog
    r = runner.invoke(main, ["dedup", "--catalog", str(cat), "--dup-threshold", "0"])
    strict = rows(cat, "SELECT count(*) FROM clips WHERE dup_group IS NOT NULL")[0][0]
    r = runner.invoke(main, ["dedup", "--catalog", str(cat), "--dup-threshold", "12"])
    loose = rows(cat, "SELECT count(*) FROM clips WHERE dup_group IS NOT NULL")[0][0]
    assert strict < loose and "at 12/192 bits" in r.output
    r = runner.invoke(main, ["dedup", "--catalog", str(cat), "--dup-threshold", "40"])
    assert r.exit_code == 2
    n_all = rows(cat, "SELECT count(*) FROM clips")[0][0]
    n_keep = rows(cat, "SELECT count(*) FROM clips WHERE dup_rank = 1")[0][0]
    assert n_keep < n_all
    args = ("--query", "1=1", "--preset", "tiny", "--dry-run", "--base-model", tiny_sana_dir, "--catalog", str(cat))
    assert run_train(*args).stdout.startswith(f"{n_all} clips")
    assert run_train(*args, "--dedup").stdout.startswith(f"{n_keep} clips")


def test_near_pairs_matches_a_pairwise_scan_on_random_signatures():
    """Multi-index hashing groups exactly as a full pairwise scan does (planted near pairs and
    exact copies included), and every pair it returns is within the threshold."""
    from dataengine.dedup import components, distance, near_pairs

    rng = np.random.default_rng(0)
    base = rng.integers(-(2 ** 63), 2 ** 63 - 1, size=(400, 3), dtype=np.int64)
    near = base[:60].copy()
    for row in near:  # flip up to 10 random bits
        for b in rng.choice(192, size=rng.integers(0, 11), replace=False):
            row[b // 64] ^= np.int64(1) << np.int64(b % 64) if b % 64 < 63 else np.int64(-(2 ** 63))
    crowd = rng.integers(-(2 ** 63), 2 ** 63 - 1, size=(150, 3), dtype=np.int64)
    crowd[:, 0] = crowd[0, 0]  # 150 rows sharing 64 bits: buckets larger than the vectorised offsets
    crowd[100:, 1:] = crowd[0, 1:] ^ np.int64(0b101)  # 50 of them within 2 bits of the first
    sigs = np.concatenate([base, near, base[:5], crowd])  # and some exact copies
    for t in (0, 6, 12):
        got = near_pairs(sigs, t)
        assert (distance(sigs[got[:, 0]], sigs[got[:, 1]]) <= t).all()
        i, j = np.triu_indices(len(sigs), 1)
        ok = distance(sigs[i], sigs[j]) <= t
        want = np.stack([i[ok], j[ok]], axis=1)
        assert len(want) > 0 or t == 0

        def partition(pairs):
            lab = components(len(sigs), pairs)
            groups = {}
            for k, g in enumerate(lab.tolist()):
                if g >= 0:
                    groups.setdefault(g, set()).add(k)
            return sorted(map(sorted, groups.values()))

        assert partition(got) == partition(want), t


def test_clips_from_before_signatures_get_them_with_resplit(runner, dup_catalog, tmp_path):
    import shutil

    import duckdb

    cat = tmp_path / "old.duckdb"
    shutil.copy(dup_catalog, cat)
    con = duckdb.connect(str(cat))
    con.execute("UPDATE clip_segments SET sig0 = NULL, sig1 = NULL, sig2 = NULL")  # as an older catalog
    con.close()
    r = runner.invoke(main, ["dedup", "--catalog", str(cat)])
    assert "have no signature" in r.output and "--resplit" in r.output
    folder = rows(cat, "SELECT path FROM videos LIMIT 1")[0][0].rsplit("/", 1)[0]
    r = ingest_cli(runner, cat, folder)
    assert "skipped" in r.output  # without --resplit nothing is redone
    r = ingest_cli(runner, cat, folder, extra=["--resplit"])
    assert r.exit_code == 0, r.output
    assert rows(cat, "SELECT count(*) FROM clip_segments WHERE sig0 IS NULL")[0][0] == 0
    assert rows(cat, "SELECT count(*) FROM clips WHERE dup_group IS NOT NULL")[0][0] == 9  # 3 re-encode pairs + the intro trio
