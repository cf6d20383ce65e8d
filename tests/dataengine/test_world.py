"""The labelled toy world (issue 21): truth spelled the vocabulary's way, cuts where the truth says,
and the truth in the catalog as a labelling of its own."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dataengine.cli import main
from helpers import ingest_cli, rows


def test_every_scene_is_described_in_the_vocabularys_words():
    from catalog.assets import asset
    from dataengine.caption.parse import parse_output
    from dataengine.caption.schema import Constraint, caption_schema, vocab_tags
    from dataengine.world import ACTIONS, CHARACTERS, SETTINGS, all_scenes

    vocab = json.loads(asset("vocab.json").read_text())
    words = set(vocab_tags(vocab))
    schema = caption_schema(vocab, Constraint(closed_vocab=True))
    scenes = all_scenes()
    assert len(scenes) == len(SETTINGS) * 2 * len(ACTIONS) * len(CHARACTERS) * 2 >= 200
    for s in scenes:
        assert set(s.tags()) <= words, s
        answer = json.dumps(s.answer(), separators=(",", ":"))
        p = parse_output(answer, vocab.get("synonyms"), schema)  # the truth is a valid constrained answer
        assert p.ok, (s, p.error)
        assert p.tags == s.tags() and p.fields["time_of_day"] == s.time_of_day and p.fields["motion"] == s.motion
    assert len({s.caption() for s in scenes}) == len({(s.setting, s.time_of_day, s.action, s.characters, s.camera)
                                                       for s in scenes})  # the caption says it all


def test_the_world_looks_like_its_truth():
    from dataengine.world import Scene, render

    day = render(Scene("kitchen", "day", "chase", "both", "static", 5), 1.0, 8, 64, 64)
    night = render(Scene("kitchen", "night", "chase", "both", "static", 5), 1.0, 8, 64, 64)
    assert night.mean() < 0.6 * day.mean()  # night is dark
    moving = {a: float(np.abs(np.diff(render(Scene("garden", "day", a, "cat", "static", 9), 1.0, 8, 64, 64)
                                       .astype(float), axis=0)).mean()) for a in ("chase", "sneak", "rest")}
    assert moving["rest"] == 0 < moving["sneak"] < moving["chase"]
    pan = render(Scene("garden", "day", "rest", "cat", "pan", 9), 1.0, 8, 64, 64)
    assert np.abs(np.diff(pan.astype(float), axis=0)).mean() > 0  # the set moves under a pan


def test_synth_world_ingest_and_the_truth_labelling(runner, tmp_path):
    out = tmp_path / "world"
    r = runner.invoke(main, ["synth", str(out), "--world", "3", "--scenes", "3", "--seed", "4"])
    assert r.exit_code == 0, r.output
    truth = [json.loads(l) for l in (out / "truth.jsonl").read_text().splitlines()]
    assert len(truth) == 9 and "scenes per tag" in r.output
    cat = tmp_path / "c.duckdb"
    r = ingest_cli(runner, cat, out)
    assert r.exit_code == 0, r.output
    # every cut of the truth is found within a frame or two
    found = rows(cat, "SELECT regexp_extract(video_path, '[^/]+$'), start_s FROM clips WHERE start_s > 0")
    for t in truth:
        if t["start_s"] > 0:
            near = [s for f, s in found if f == t["file"] and abs(s - t["start_s"]) <= 2 / 24 + 1e-6]
            assert near, (t["file"], t["start_s"])
    r = runner.invoke(main, ["synth", str(out), "--truth-into", str(cat)])
    assert r.exit_code == 0, r.output
    n = rows(cat, "SELECT count(*) FROM clips")[0][0]
    got = rows(cat, "SELECT count(*) FROM captions WHERE captioner = 'synth-truth' AND status = 'ok'")[0][0]
    assert got == n and f"labelled {n} clips" in r.output
    # the truth labelling is what the clips view shows, and queries read it
    night = rows(cat, "SELECT count(*) FROM clips WHERE time_of_day = 'night'")[0][0] if \
        "time_of_day" in {c[0] for c in rows(cat, "DESCRIBE clips")} else None
    tagged = rows(cat, "SELECT count(*) FROM clips WHERE tags LIKE '%night%'")[0][0]
    want = sum(1 for t in truth if t["time_of_day"] == "night")
    assert tagged >= want > 0 or tagged == want == 0
    if night is not None:
        assert night == tagged
    # de captions diff scores a labelling against the truth with the existing machinery
    r = runner.invoke(main, ["captions", "diff", "synth-truth@world-v1", "synth-truth@world-v1", "--catalog",
                             str(cat)])
    assert r.exit_code == 0 and "mean tag Jaccard: 1.000" in r.output, r.output


def test_truth_into_needs_the_world_first(runner, tmp_path):
    r = runner.invoke(main, ["synth", str(tmp_path / "none"), "--truth-into", str(tmp_path / "c.duckdb")])
    assert r.exit_code == 1 and "write the world first" in r.output


@pytest.mark.parametrize("clip,inside", [((0.0, 2.9), True), ((2.5, 3.5), False), ((3.0, 5.0), True)])
def test_a_clip_gets_a_truth_only_inside_one_scene(clip, inside):
    from dataengine.world import truth_rows

    truth = [{"file": "a.mp4", "start_s": 0.0, "end_s": 3.0, "setting": "kitchen", "time_of_day": "day",
              "action": "rest", "characters": "cat", "camera": "static"},
             {"file": "a.mp4", "start_s": 3.0, "end_s": 6.0, "setting": "garden", "time_of_day": "night",
              "action": "chase", "characters": "both", "camera": "pan"}]
    got = truth_rows(truth, [{"video_path": "/x/a.mp4", "start_s": clip[0], "end_s": clip[1]}])
    assert bool(got) is inside
