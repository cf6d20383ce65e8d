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
