"""`de query --search`: BM25 over captions and tags, in the sandboxed catalog connection."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from helpers import ingest_cli


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A toy world with its truth labelling: every clip has a caption and tags we know."""
    from dataengine.cli import main

    d = tmp_path_factory.mktemp("search")
    r = CliRunner().invoke(main, ["synth", str(d / "v"), "--world", "4", "--scenes", "4", "--seed", "11",
                                  "--scene-seconds", "2"])
    assert r.exit_code == 0, r.output
    cat = d / "c.duckdb"
    assert ingest_cli(CliRunner(), cat, d / "v").exit_code == 0
    assert CliRunner().invoke(main, ["synth", str(d / "v"), "--truth-into", str(cat)]).exit_code == 0
    return cat


def run(cat, *args):
    from dataengine.cli import main

    return CliRunner().invoke(main, ["query", "--catalog", str(cat), "--json", *args])


def test_the_best_match_holds_every_word_and_scores_fall(world):
    from catalog.query import run_query

    clips = run_query("caption IS NOT NULL", world)
    target = next(c for c in clips if "at night" in c["caption"] and "kitchen" not in c["caption"])
    words = target["caption"].split(" in the ")[1].split(";")[0]  # e.g. "bedroom at night"
    r = run(world, "--search", words)
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert got and all(w in got[0]["caption"] for w in words.replace("at ", "").split())
    scores = [g["score"] for g in got]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]


def test_stemming_meets_the_caption_half_way_and_where_narrows(world):
    from catalog.query import run_query

    captions = " ".join(c["caption"] for c in run_query("caption IS NOT NULL", world))
    verb = next(v for v in ("rests", "jumps", "sneaks") if v in captions)
    r = run(world, "--search", verb[:-1] + "ing", "--limit", "50")  # "resting" meets "rests"
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert got and all(verb in g["caption"] for g in got)
    r = run(world, "time_of_day = 'day'", "--search", verb[:-1] + "ing", "--limit", "50")
    assert r.exit_code == 0 and all(g["time_of_day"] == "day" for g in json.loads(r.output))


@pytest.mark.parametrize("hostile", ["'; DROP TABLE clips; --", "\") OR 1=1 --", "x' UNION SELECT * FROM videos --",
                                     "%' OR name LIKE '%"])
def test_search_text_is_words_never_sql(world, hostile):
    r = run(world, "--search", hostile)
    assert r.exit_code == 0, r.output  # searched as words (drop, table, clips, ...), found or not
    assert isinstance(json.loads(r.output), list)
    assert run(world, "1=1", "--limit", "1").exit_code == 0  # the catalog is untouched


def test_nothing_to_search_for_is_a_clear_error(world):
    r = run(world, "--search", "the of and ...")
    assert r.exit_code == 1 and "no word to search for" in r.output
    r = run(world, "nonexistent_column = 1", "--search", "cat")
    assert r.exit_code == 1 and "Traceback" not in r.output
