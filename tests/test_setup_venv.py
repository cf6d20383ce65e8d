"""scripts/setup_venv.py hands pip's configured sources to uv, so both install the same things."""
import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("setup_venv", ROOT / "scripts" / "setup_venv.py")
setup_venv = importlib.util.module_from_spec(spec)
spec.loader.exec_module(setup_venv)


def test_pip_settings_become_uv_flags(tmp_path, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    cons = tmp_path / "constraints.txt"
    cons.write_text("torch<=2.14.1\n")
    flags, env = setup_venv.uv_flags({
        "index-url": ["https://mirror.example/simple"],
        "extra-index-url": ["file:///srv/a/simple", "file:///srv/b/simple"],
        "find-links": ["/srv/wheels"],
        "constraint": [str(cons), str(tmp_path / "gone.txt")],
        "cert": ["/etc/ssl/corp.pem"],
    })
    pairs = list(zip(flags[::2], flags[1::2]))
    assert ("--index-strategy", "unsafe-best-match") in pairs
    assert ("--default-index", "https://mirror.example/simple") in pairs
    assert [v for k, v in pairs if k == "--extra-index-url"] == ["file:///srv/a/simple", "file:///srv/b/simple"]
    assert ("--find-links", "/srv/wheels") in pairs
    assert [v for k, v in pairs if k == "--constraint"] == [str(cons)]  # a missing file is not passed on
    assert env["SSL_CERT_FILE"] == "/etc/ssl/corp.pem"


def test_pip_config_is_read_from_files_and_environment(tmp_path, monkeypatch):
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nextra-index-url = file:///srv/x/simple file:///srv/y/simple\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    monkeypatch.setenv("PIP_FIND_LINKS", "/srv/envwheels")
    got = setup_venv.pip_config(sys.executable)
    assert got["extra-index-url"] == ["file:///srv/x/simple", "file:///srv/y/simple"]
    assert got["find-links"] == ["/srv/envwheels"]


def test_no_config_gives_only_the_strategy():
    flags, _ = setup_venv.uv_flags({})
    assert flags == ["--index-strategy", "unsafe-best-match"]


def test_the_script_refuses_to_run_half_way(tmp_path):
    """A venv that cannot be created is a clear failure (exit 1), not a traceback."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "setup_venv.py"), str(blocker / "venv")],
                       capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "DE_INSTALLER": "pip"})
    assert r.returncode == 1
    assert "Traceback" not in r.stdout + r.stderr
