"""Presets are TOML files in assets/presets/ (copy one, edit it, pass it to `train --config`).

`--preset NAME` reads assets/presets/NAME.toml; a config file may also say `preset = "NAME"`.
"""

from __future__ import annotations

from dataengine.assets import assets_dir

from .config import ConfigError
from .configfile import read_config_file


def preset_dir():
    return assets_dir() / "presets"


def preset_names() -> list[str]:
    d = preset_dir()
    return sorted(p.stem for p in d.glob("*.toml")) if d.is_dir() else []


def load_preset(name: str) -> dict:
    names = preset_names()
    if name not in names:
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(names) or '(none found in ' + str(preset_dir()) + ')'}")
    values = read_config_file(preset_dir() / f"{name}.toml")
    if values.pop("preset", None):
        raise ConfigError(f"preset {name} names another preset; presets are complete files")
    return values

