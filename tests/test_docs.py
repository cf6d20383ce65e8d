"""README and commands stay in step (the sqlite-utils habit)."""

from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _walk(group, prefix):
    import click

    for name, cmd in group.commands.items():
        yield f"{prefix} {name}", cmd
        if isinstance(cmd, click.Group):
            yield from _walk(cmd, f"{prefix} {name}")


def test_every_de_command_is_documented():
    from dataengine.cli import main

    for full, _ in _walk(main, "de"):
        assert f"`{full}" in README, f"README lacks a section for `{full}`"


def test_readme_opens_with_the_two_setup_commands():
    first_block = README.split("```bash", 1)[1].split("```", 1)[0]
    assert "make demo" in first_block and "make test" in first_block


def test_ci_runs_the_readme_test_command():
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "make test" in ci and "make test" in README


def test_every_train_command_is_documented():
    from train.cli import main

    assert "`train --query" in README
    for full, _ in _walk(main, "train"):
        assert f"`{full}" in README, f"README lacks a section for `{full}`"


def test_every_test_the_guarantees_name_exists():
    """README's Guarantees table cites tests; each must exist (a promise without a test is a wish)."""
    import re

    root = Path(__file__).resolve().parents[1]
    section = README.split("## Guarantees", 1)[1].split("\n## ", 1)[0]
    cited = 0
    for row in section.splitlines():
        files = re.findall(r"`(tests/[\w/]+\.py)", row)
        current = None
        for m in re.finditer(r"`(tests/[\w/]+\.py)?(?:::([\w*]+))?`", row):
            f, name = m.group(1), m.group(2)
            current = f or current or (files[0] if files else None)
            assert current and (root / current).exists(), f"README cites a missing file: {current}"
            if name:
                text = (root / current).read_text()
                pat = "def " + name.replace("*", r"\w*") + r"\("
                assert re.search(pat, text), f"README cites {current}::{name}, which does not exist"
                cited += 1
    assert cited >= 15
