"""README, docs/ and the commands stay in step (the sqlite-utils habit)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = {p.name: p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))}
ALL = README + "\n".join(DOCS.values())


def _walk(group, prefix):
    import click

    for name, cmd in group.commands.items():
        yield f"{prefix} {name}", cmd
        if isinstance(cmd, click.Group):
            yield from _walk(cmd, f"{prefix} {name}")


def _commands():
    from dataengine.cli import main as de
    from train.cli import main as train

    yield "de", de
    yield from _walk(de, "de")
    yield "train", train
    yield from _walk(train, "train")


def _options(cmd) -> set[str]:
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")}


def test_the_readme_is_short_and_links_every_docs_page():
    assert len(README.splitlines()) <= 250
    for name in DOCS:
        assert f"(docs/{name})" in README, f"README does not link docs/{name}"


def test_every_command_has_a_section_in_docs():
    for full, _ in _commands():
        if full in ("de", "train"):
            continue
        assert f"`{full}" in "\n".join(DOCS.values()), f"docs/ lack a section for `{full}`"
    assert "`train --query" in DOCS["train.md"]


def test_every_option_in_help_is_documented_somewhere():
    missing = []
    for full, cmd in _commands():
        for opt in sorted(_options(cmd) - {"--help"}):
            if not re.search(re.escape(opt) + r"(?![\w-])", ALL):
                missing.append(f"{full} {opt}")
    assert not missing, "options no page documents: " + ", ".join(missing)


def test_every_option_the_docs_name_exists():
    known = set()
    for _, cmd in _commands():
        known |= _options(cmd)
    # options of other tools the pages quote (accelerate, torchrun, pytest, make, pip, ray, scenedetect, ...)
    foreign = {"--num_processes", "--num_machines", "--machine_rank", "--main_process_ip", "--main_process_port",
               "--config_file", "--nproc_per_node", "--nnodes", "--node_rank", "--rdzv_backend", "--rdzv_endpoint",
               "--master_addr", "--master_port", "--multi_gpu", "--mixed_precision", "--head", "--address",
               "--port", "--block", "--num-cpus", "--num-gpus", "--with-deps", "--index-url", "--extra-index-url",
               "--help", "--tp", "--dtype", "--max-model-len", "--limit-mm-per-prompt", "--served-model-name",
               "--trust-remote-code", "--model-path", "--mem-fraction-static", "--runxfail", "--tensor-parallel-size",
               "--gpu-memory-utilization", "--allowed-local-media-path", "--chat-template", "--enable-prefix-caching"}
    unknown = set()
    for name, text in DOCS.items():
        for code in re.findall(r"`([^`]+)`", text) + re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
            for opt in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-_]*)", code):
                if opt not in known and opt not in foreign:
                    unknown.add(f"{name}: {opt}")
    assert not unknown, "docs name options no command has: " + ", ".join(sorted(unknown))


def test_readme_opens_with_the_two_setup_commands():
    first_block = README.split("```bash", 1)[1].split("```", 1)[0]
    assert "make demo" in first_block and "make test" in first_block


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "make test" in README


def test_every_test_the_guarantees_name_exists():
    """docs/guarantees.md cites tests; each must exist (a promise without a test is a wish)."""
    section = DOCS["guarantees.md"].split("## Guarantees", 1)[1]
    cited = 0
    for row in section.splitlines():
        files = re.findall(r"`(tests/[\w/]+\.py)", row)
        current = None
        for m in re.finditer(r"`(tests/[\w/]+\.py)?(?:::([\w*]+))?`", row):
            f, name = m.group(1), m.group(2)
            current = f or current or (files[0] if files else None)
            assert current and (ROOT / current).exists(), f"docs cite a missing file: {current}"
            if name:
                text = (ROOT / current).read_text()
                pat = "def " + name.replace("*", r"\w*") + r"\("
                assert re.search(pat, text), f"docs cite {current}::{name}, which does not exist"
                cited += 1
    assert cited >= 15


# --- claims that were once untrue (issue 35): each test fails if the claim goes stale again -------

def test_the_catalog_option_claim_matches_the_commands():
    import click

    claim = ("Every `de` command takes `--catalog PATH` (`de synth` names it with `--truth-into`), and so do "
             "`train` and `train eval`")
    assert claim in README
    have = {name for name, cmd in _commands() if "--catalog" in _options(cmd)}
    for name, cmd in _commands():
        if name.startswith("de") and name not in ("de synth",) and not isinstance(cmd, click.Group):
            assert name in have, f"{name} has no --catalog, but the README says every de command does"
    assert {n for n in have if n.startswith("train")} == {"train", "train eval"}
    assert "--truth-into" in _options(dict(_commands())["de synth"])


def test_make_bench_runs_what_the_readme_says():
    make = (ROOT / "Makefile").read_text()
    recipe = make.split("\nbench:")[1].split("\n\n")[0]
    run = re.findall(r"benchmarks/\w+\.py", recipe)
    assert run == ["benchmarks/ingest.py"], run
    assert "`make bench` runs the ingest benchmark (`benchmarks/ingest.py`)" in README


def test_every_preset_and_model_name_is_in_the_help_and_the_docs():
    from dataengine.caption.models import ALIASES
    from train.presets import preset_names

    cmds = dict(_commands())
    preset_help = next(p.help for p in cmds["train"].params if p.name == "preset")
    for name in preset_names():
        assert f"{name} =" in preset_help, f"--preset {name} is not explained in train --help"
        assert f"--preset {name}" in ALL, f"--preset {name} is in no doc"
    model_help = next(p.help for p in cmds["de caption"].params if p.name == "model")
    for name in [*ALIASES, "toy", "tiny"]:
        assert name in model_help, f"--model {name} is not in de caption --help"
        assert f"`{name}`" in DOCS["caption.md"] or f"--model {name}" in DOCS["caption.md"], name


def test_a_query_error_lists_the_columns_it_names():
    from catalog.query import unknown_column_message

    msg = unknown_column_message("duration", {"duration_s", "caption", "tags"})
    assert "did you mean duration_s" in msg and "caption, duration_s, tags" in msg
