"""The VLM output parser against a table of messy outputs, and tag normalisation."""

import pytest

from dataengine.caption.parse import normalize_tag, normalize_tags, parse_output

SYN = {"chasing": "chase", "nighttime": "night"}

GOOD = '{"caption": "A cat chases a mouse.", "tags": ["chase", "kitchen"], "characters": ["grey cat"], ' \
       '"action": "cat chases mouse", "setting": "kitchen", "time_of_day": "day", "camera": "wide, static", ' \
       '"motion": "fast"}'

CASES = [
    # (raw, expected caption, expected tags)
    (GOOD, "A cat chases a mouse.", ["chase", "kitchen"]),
    ("```json\n" + GOOD + "\n```", "A cat chases a mouse.", ["chase", "kitchen"]),
    ("Sure! Here is the JSON:\n" + GOOD + "\nHope this helps.", "A cat chases a mouse.", ["chase", "kitchen"]),
    ("{'caption': 'A cat naps.', 'tags': ['Sleep', 'Living Room']}", "A cat naps.", ["sleep", "living_room"]),
    ('{"caption": "x", "tags": "Chasing, NightTime , chase"}', "x", ["chase", "night"]),
    ('{"caption": "x", "tags": "run jump"}', "x", ["run", "jump"]),
    ('{"caption": "x", "tags": ["a", "b",],}', "x", ["a", "b"]),  # trailing commas
    ('{"Caption": "x", "Tags": ["#Chase"], "mood": "funny"}', "x", ["chase"]),  # odd case, extra field
    ('{"description": "y"}', "y", []),  # alternate key, missing tags
    ('{"caption": "a {brace} inside", "tags": ["x"]} trailing', "a {brace} inside", ["x"]),
    ('{"caption": "ok", "tags": ["x"], "done": true, "n": null}', "ok", ["x"]),
]


@pytest.mark.parametrize("raw,caption,tags", CASES)
def test_messy_outputs_parse(raw, caption, tags):
    p = parse_output(raw, SYN)
    assert p.ok, p.error
    assert p.caption == caption
    assert p.tags == tags


@pytest.mark.parametrize("raw,error", [
    ("", "empty output"),
    ("I cannot help with that.", "no JSON"),
    ('{"tags": ["x"]}', "no 'caption'"),
    ('{"caption": "unterminated', "no JSON"),
    ("\x00\x01 garbage {{{", "no JSON"),
])
def test_unparseable_outputs_report_errors(raw, error):
    p = parse_output(raw, SYN)
    assert not p.ok and error in p.error


def test_fields_are_normalised():
    p = parse_output('{"caption": "x", "characters": "grey cat and brown mouse", "motion": "Very FAST!", '
                     '"time_of_day": "Night Time", "extra_key": 1}', {"night_time": "night"})
    assert p.fields["characters"] == ["grey cat", "brown mouse"]
    assert p.fields["motion"] == "fast"
    assert p.fields["time_of_day"] == "night"
    assert p.fields["extra"] == {"extra_key": 1}
    assert p.fields["action"] is None


def test_tag_normalisation():
    assert normalize_tag("  Wide Shot ") == "wide_shot"
    assert normalize_tag("close-up") == "close_up"
    assert normalize_tag("#Chasing!", SYN) == "chase"
    assert normalize_tag("x" * 41) == ""
    assert normalize_tags(["Chase", "chase", " CHASE ", "chasing"], SYN) == ["chase"]
    assert normalize_tags(None) == []
    assert normalize_tags([["a", "b"], "c"]) == ["a", "b", "c"]
