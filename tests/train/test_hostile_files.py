"""Config files, prompt files and templates from someone else (issue 20): each hostile input is
refused with one line naming the file or template, fast, before any model loads."""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

from helpers import run_train

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
rank: [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def one_line_error(r, needle):
    err = r.stderr.strip()
    assert r.returncode in (1, 2), (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and needle in err, err
    assert len(err.splitlines()) <= 2, err  # click's "Error: ..." (a usage line at most)


@pytest.mark.parametrize("name,text,needle", [
    ("bomb.yaml", BILLION_LAUGHS, "more than 64 YAML aliases"),
    ("deep.json", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("deep.toml", "rank = " + "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("deep.yaml", "rank: " + "[" * 50_000 + "]" * 50_000, "nested too deeply"),
    ("big.toml", "# " + "x" * (2 << 20) + "\n", "too big for this kind of file"),
    ("binary.toml", "\udcff", "cannot read it"),
    ("typed.yaml", "rank: {a: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12] }\n", "options go at the top level"),
])
def test_hostile_config_files_are_one_line_errors(tmp_path, name, text, needle):
    p = tmp_path / name
    if text == "\udcff":
        p.write_bytes(b"rank = 4\n\xff\xfe\x00")
    else:
        p.write_text(text)
    t = time.perf_counter()
    r = run_train("--config", str(p), "--preset", "tiny", "--query", "1=1", "--output-dir", str(tmp_path / "o"),
                  "--dry-run", check=False)
    took = time.perf_counter() - t
    one_line_error(r, needle)
    assert str(p) in r.stderr
    # (the alias bomb ran 33 s and then died of MemoryError; PyYAML took 58 s to parse deep.yaml)
    assert took < 60, took


def test_a_bad_value_in_a_config_is_shown_short(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("seed: '" + "9" * 100_000 + "'\n")
    r = run_train("--config", str(p), "--preset", "tiny", "--query", "1=1", "--dry-run", check=False)
    one_line_error(r, "seed must be an integer")
    assert len(r.stderr) < 400


@pytest.mark.parametrize("name,text,needle", [
    ("deep.jsonl", '{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}\n", "nested too deeply"),
    ("deep.toml", "[[prompt]]\nprompt = " + "[" * 100_000 + "]" * 100_000 + "\n", "nested too deeply"),
    ("frames.toml", '[[prompt]]\nprompt = "a cat"\nframes = 100001\n', "frames must be 1 + 4k (e.g. 81), at most 1025"),
    ("size.toml", '[[prompt]]\nprompt = "a cat"\nsize = "100000x100000"\n', "size must be WIDTHxHEIGHT"),
    ("seed.jsonl", '{"prompt": "a cat", "seed": 100000000000000000000}\n', "seed must be an integer in"),
    ("many.txt", "a cat\n" * 300, "at most 256"),
    ("big.txt", "x" * (2 << 20), "too big for this kind of file"),
])
def test_hostile_prompt_files_fail_the_dry_run(tmp_path, train_catalog, name, text, needle):
    p = tmp_path / name
    p.write_text(text)
    r = run_train("--preset", "tiny", "--query", "1=1", "--catalog", str(train_catalog), "--validation-prompts",
                  str(p), "--output-dir", str(tmp_path / "o"), "--dry-run", check=False)
    one_line_error(r, needle)


# --- templates: one hardened module for train and de export ----------------------------------------

BAD_TEMPLATES = [
    ("{}", "names no field"),
    ("{caption", "expected '}'"),
    ("{caption!z}", "only plain {caption}"),
    ("{caption!r}", "only plain {caption}"),
    ("{caption:{caption}}", "only plain {caption}"),
    ("{caption:x>100000000}", "only plain {caption}"),
    ("{caption.__class__}", "unknown template field"),
    ("{caption[0]}", "unknown template field"),
    ("{nope}", "unknown template field"),
]


@pytest.mark.parametrize("template,needle", BAD_TEMPLATES)
def test_bad_templates_are_one_line_errors_in_train(tmp_path, train_catalog, template, needle):
    r = run_train("--preset", "tiny", "--query", "1=1", "--catalog", str(train_catalog), "--prompt-template",
                  template, "--output-dir", str(tmp_path / "o"), "--dry-run", check=False)
    one_line_error(r, needle)


@pytest.mark.parametrize("template,needle", BAD_TEMPLATES)
def test_bad_templates_are_one_line_errors_in_export(tmp_path, train_catalog, template, needle):
    from dataengine.cli import main

    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["export", str(out), "--query", "1=1", "--catalog", str(train_catalog), "--format", "kohya",
                                  "--template", template])
    assert r.exit_code == 1 and r.exception is None or isinstance(r.exception, SystemExit), r.output
    assert needle in r.output and "Traceback" not in r.output
    assert not any(out.glob("*.txt")) if out.exists() else True


def test_a_filled_prompt_is_bounded():
    from catalog.templates import TemplateError, fill

    with pytest.raises(TemplateError, match="characters"):
        fill("{caption}" * 30, {"clip_id": "c", "caption": "x" * 400}, "")
    assert fill("{{literal}} {caption}", {"caption": "a cat"}, "") == "{literal} a cat"


def test_a_runs_class_prompt_naming_a_file_outside_the_run_is_not_read(tmp_path, train_catalog):
    import json

    from dataengine.cli import main

    secret = tmp_path / "secret.txt"
    secret.write_text("the contents of a private file")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"prompt_template": "class", "class_prompt": str(secret)}))
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["export", str(out), "--query", "1=1", "--catalog", str(train_catalog), "--format", "kohya",
                                  "--template", str(run)])
    assert r.exit_code == 1 and "outside the run folder" in r.output, r.output
    assert not out.exists() or not any(out.glob("*.txt"))
    # a link inside the run folder that points outside is outside too
    (run / "cls.txt").symlink_to(secret)
    (run / "config.json").write_text(json.dumps({"prompt_template": "class", "class_prompt": "cls.txt"}))
    r = CliRunner().invoke(main, ["export", str(out), "--query", "1=1", "--catalog", str(train_catalog), "--format", "kohya",
                                  "--template", str(run)])
    assert r.exit_code == 1 and "outside the run folder" in r.output, r.output
    # a file inside the run is read, as the run used it
    (run / "cls.txt").unlink()
    (run / "cls.txt").write_text("a house style prompt")
    from dataengine.export import caption_source

    assert caption_source(str(run)).class_text == "a house style prompt"


def test_dataengine_never_imports_train():
    """The arrows run downwards: catalog <- dataengine <- train. Templates and tag normalisation
    live in catalog, which both use; dataengine names train nowhere."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    offenders = []
    for pkg, banned in (("dataengine", ("train",)), ("catalog", ("train", "dataengine"))):
        for f in (root / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
                offenders += [f"{f.relative_to(root)}: {n}" for n in names if n.split(".")[0] in banned]
    assert offenders == []
