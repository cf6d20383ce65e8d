"""Schema-constrained captioning: every answer of any model parses, the random tiny one included."""

from __future__ import annotations

import json
import re

from dataengine.caption.schema import MOTION, TIME_OF_DAY, Constraint, caption_schema, vocab_tags, worst_case_tokens
from dataengine.cli import main
from helpers import rows
import pytest

pytestmark = pytest.mark.slow  # captions whole catalogs with tiny models, trains on the labels

# no --max-new-tokens: constrained runs default to the schema's bound, so nothing is cut off
SMALL = ["--fps", "2", "--max-frames", "4", "--max-pixels", "12544", "--no-progress"]



def vocab():
    from dataengine.assets import asset

    return json.loads(asset("vocab.json").read_text())


def caption(runner, cat, model, *extra):
    return runner.invoke(main, ["caption", "--catalog", str(cat), "--model", model, *SMALL, *extra])


def test_every_answer_parses_at_batch_1_and_8_with_identical_rows(runner, cat, tiny_vlm_dir):
    n = rows(cat, "SELECT count(*) FROM clips")[0][0]
    r1 = caption(runner, cat, tiny_vlm_dir, "--batch-size", "1", "--name", "b1")
    r8 = caption(runner, cat, tiny_vlm_dir, "--batch-size", "8", "--name", "b8")
    for r in (r1, r8):
        assert r.exit_code == 0, r.output
        assert f"labelled {n} clips" in r.output and "parse failures 0" in r.output
        assert "random tiny model" in r.output
    got = rows(cat, "SELECT captioner, clip_id, status, caption, tag_list, fields, raw_output, is_random_model "
                    "FROM captions ORDER BY clip_id")
    assert len(got) == 2 * n and all(g[2] == "ok" for g in got)
    assert all(g[7] is True for g in got)  # noise, and marked so
    by = {(g[0], g[1]): g[3:7] for g in got}
    ids = sorted({g[1] for g in got})
    assert all(by[("b1", c)] == by[("b8", c)] for c in ids)  # batch size does not change a label
    allowed = set(vocab_tags(vocab()))
    for _, _, _, cap, tags, fields, raw, _ in got:
        f = json.loads(fields)
        assert f["time_of_day"] in TIME_OF_DAY and f["motion"] in MOTION
        assert 1 <= len(tags) <= 12 and set(tags) <= allowed
        assert 1 <= len(cap) <= 400 and '"' not in cap
        assert json.loads(raw)["caption"] == cap  # the raw answer is itself one JSON object
    vers = rows(cat, "SELECT DISTINCT prompt_version FROM captions")
    assert len(vers) == 1


def test_free_and_constrained_labellings_live_side_by_side(runner, cat, tiny_vlm_dir):
    r = caption(runner, cat, tiny_vlm_dir, "--limit", "3", "--batch-size", "3")
    assert r.exit_code == 0, r.output
    r = caption(runner, cat, tiny_vlm_dir, "--limit", "3", "--batch-size", "3", "--free", "--max-new-tokens", "16")
    assert r.exit_code == 1  # the random model's free text does not parse
    r = caption(runner, cat, tiny_vlm_dir, "--limit", "3", "--batch-size", "3", "--open-vocab")
    assert r.exit_code == 0, r.output
    got = rows(cat, "SELECT prompt_version, count(*) FILTER (WHERE status = 'ok'), count(*) FROM captions "
                    "GROUP BY 1 ORDER BY 1")
    assert len(got) == 3 and all(n == 3 for _, _, n in got)
    assert sorted(ok for _, ok, _ in got) == [0, 3, 3]
    open_tags = rows(cat, "SELECT unnest(tag_list) FROM captions WHERE status = 'ok'")
    assert all(re.fullmatch(r"[a-z0-9_]{1,32}", t) for (t,) in open_tags)
    listed = runner.invoke(main, ["captions", "list", "--catalog", str(cat)]).output
    assert listed.count("tiny-random-qwen2-vl") == 0 and listed.count("@caption_v1-") == 3


def test_a_cap_below_the_schema_bound_warns(runner, cat, tiny_vlm_dir):
    r = caption(runner, cat, tiny_vlm_dir, "--limit", "1", "--max-new-tokens", "20")
    assert "below the schema's worst case" in r.output


def test_schema_bound_covers_the_longest_answer_the_schema_allows():
    from dataengine.caption.schema import TEXT_CHARS  # noqa: F401 - the allow-list the bound relies on

    schema = caption_schema(vocab(), Constraint())
    longest_tag = max(vocab_tags(vocab()), key=len)
    longest = {"caption": "a" * 400, "tags": [longest_tag] * 12, "characters": ["b" * 64] * 6,
               "action": "c" * 64, "setting": "d" * 64, "time_of_day": "indoor_unknown", "camera": "e" * 64,
               "motion": "medium"}
    text = json.dumps(longest, separators=(",", ":"))
    assert len(text.encode()) + 1 <= worst_case_tokens(schema)


def test_sampled_labels_give_a_tag_histogram_and_a_tag_query_trains(runner, cat, tiny_vlm_dir, tiny_sana_dir):
    """The demo's path: labels (noise, but real model output) -> tag histogram -> train on a tag."""
    from helpers import run_train

    r = caption(runner, cat, tiny_vlm_dir, "--temperature", "1.0", "--batch-size", "4")
    assert r.exit_code == 0, r.output
    stats = runner.invoke(main, ["stats", "--catalog", str(cat)]).output
    hist = re.findall(r"^\s+([a-z_]+)\s+(\d+)\s+#", stats.split("tags (shown labelling):")[1], re.M)
    assert hist and sum(int(n) for _, n in hist) > 0
    tag = hist[0][0]
    assert rows(cat, "SELECT count(*) FROM clips WHERE list_contains(tag_list, ?)", [tag])[0][0] >= 1
    n = rows(cat, f"SELECT count(*) FROM clips WHERE tags LIKE '%{tag}%'")[0][0]
    out = run_train("--query", f"tags LIKE '%{tag}%'", "--preset", "tiny", "--dry-run", "--base-model",
                    tiny_sana_dir, "--catalog", str(cat)).stdout
    assert re.search(rf"^{n} clips? \(", out, re.M), out
