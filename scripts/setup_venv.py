#!/usr/bin/env python3
"""Create the project's virtualenv and install the project into it (`make setup`).

uv resolves and installs the same packages pip would, 2.4x faster here (77 s against 186 s for
a fresh venv; benchmarks/README.md). Like pip it compiles the bytecode at install time: where
PYTHONDONTWRITEBYTECODE is set (CI here) nothing would ever write it, and every process would
compile torch again (31 s an import against 12). It does not read pip's configuration, so the indexes,
find-links and constraints pip is configured with (pip.conf, PIP_* variables) are handed to it:
on a machine whose torch wheel lies on a local index, uv takes it from there, as pip would.
When uv cannot be had, or fails, pip installs the project as before.

    python3 scripts/setup_venv.py .venv          # uv, falling back to pip
    python3 scripts/setup_venv.py .venv --runtime  # without the test tools (what `make demo` needs)
    DE_INSTALLER=pip python3 scripts/setup_venv.py .venv
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = "-e", ".[dev,all]"  # the tests cover the optional parts too (Ray, TransNetV2)
RUNTIME_SPEC = "-e", "."  # no pytest, playwright (165 MB with its driver), tensorboard


def run(cmd: list[str], env: dict | None = None) -> bool:
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode == 0


def pip_config(python: str) -> dict[str, list[str]]:
    """pip's effective settings (files and PIP_* variables), as {key: [values]}: later scopes
    override earlier ones, as pip applies them. Keys lose their scope: `global.find-links` and
    `:env:.find-links` both become `find-links`."""
    out = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True)
    got: dict[str, list[str]] = {}
    for line in out.stdout.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        name = key.rsplit(".", 1)[-1].strip()
        value = value.strip().strip("'\"")
        got[name] = value.split()
    return got


def uv_flags(config: dict[str, list[str]]) -> tuple[list[str], dict[str, str]]:
    """The uv options and environment that reproduce pip's configured sources."""
    flags = ["--index-strategy", "unsafe-best-match"]  # pip takes the best version over all indexes
    for key, flag in (("index-url", "--default-index"), ("extra-index-url", "--extra-index-url"),
                      ("find-links", "--find-links"), ("constraint", "--constraint")):
        for value in config.get(key, []):
            if flag == "--constraint" and not Path(value).is_file():
                continue
            flags += [flag, value]
    env = dict(os.environ)
    cert = (config.get("cert") or [None])[0]
    if cert and "SSL_CERT_FILE" not in env:
        env["SSL_CERT_FILE"] = cert
    return flags, env


def find_uv(python: str) -> str | None:
    """uv on PATH, or uv installed into the venv with pip (a single wheel from PyPI)."""
    venv_uv = Path(python).parent / "uv"
    if venv_uv.exists():
        return str(venv_uv)
    on_path = shutil.which("uv")
    if on_path:
        return on_path
    if run([python, "-m", "pip", "install", "--quiet", "uv"]) and venv_uv.exists():
        return str(venv_uv)
    return None


def main(venv: str, runtime: bool = False) -> int:
    t0 = time.monotonic()
    spec = RUNTIME_SPEC if runtime else SPEC
    python = str(Path(venv).absolute() / "bin" / "python")
    if not Path(python).exists() and not run([sys.executable, "-m", "venv", venv]):
        return 1
    done = False
    if os.environ.get("DE_INSTALLER", "uv") != "pip":
        uv = find_uv(python)
        if uv is None:
            print("uv is not available; installing with pip", flush=True)
        else:
            flags, env = uv_flags(pip_config(python))
            done = run([uv, "pip", "install", "--python", python, "--quiet", "--compile-bytecode", *flags, *spec], env)
            if not done:
                print("uv failed (above); installing with pip instead", flush=True)
    if not done:
        done = (run([python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
                and run([python, "-m", "pip", "install", "--quiet", *spec]))
    print(f"{'installed' if done else 'install FAILED'} into {venv} in {time.monotonic() - t0:.0f} s",
          flush=True)
    return 0 if done else 1


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--runtime"]
    sys.exit(main(args[0] if args else ".venv", runtime="--runtime" in sys.argv[1:]))
