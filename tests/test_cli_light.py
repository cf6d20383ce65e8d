"""The light paths stay light: `de --help` and `de query` never import torch & co."""

import subprocess
import sys

HEAVY = ("torch", "transformers", "diffusers", "decord", "cv2", "scenedetect", "peft", "accelerate")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_de_help_imports_nothing_heavy():
    mods = _modules_after("from click.testing import CliRunner\nfrom dataengine.cli import main\n"
                          "r = CliRunner().invoke(main, ['--help'])\nassert r.exit_code == 0, r.output")
    assert not [m for m in HEAVY if m in mods]


def test_de_query_imports_nothing_heavy(tmp_path):
    from catalog import db

    p = tmp_path / "c.duckdb"
    db.connect(p).close()
    mods = _modules_after(f"from click.testing import CliRunner\nfrom dataengine.cli import main\n"
                          f"r = CliRunner().invoke(main, ['query', '1=1', '--catalog', {str(p)!r}])\n"
                          "assert r.exit_code == 0, r.output")
    assert not [m for m in HEAVY if m in mods]


def test_every_subcommand_has_help_with_example():
    from click.testing import CliRunner

    from dataengine.cli import main

    for name in main.commands:
        r = CliRunner().invoke(main, [name, "--help"])
        assert r.exit_code == 0
        assert "de " in r.output, name


def test_train_without_query_is_one_line():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "train.cli"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stdout == "" and r.stderr.strip() == 'Error: give --query "WHERE-CLAUSE" (see train --help)'


def test_catalog_before_the_command(tmp_path):
    import subprocess
    import sys

    cat = tmp_path / "none.duckdb"
    r = subprocess.run([sys.executable, "-m", "dataengine", "--catalog", str(cat), "stats"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1 and str(cat) in r.stderr and "Traceback" not in r.stderr
