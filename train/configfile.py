"""Config files for `train --config FILE`: TOML, YAML, or a run's own config.json.

A file is a flat table of `train` options, keyed by the option name with `_` for `-` (`max_steps`
or `max-steps`). Unknown keys and values of the wrong type are errors that name the file and the
key, never silently ignored. A file may name a `preset` it starts from.

Precedence, lowest first: TrainConfig's defaults, the preset, the file, the command line.
"""

from __future__ import annotations

import difflib
import json
import reprlib
import types
import typing
from dataclasses import fields
from pathlib import Path

from .config import ConfigError, TrainConfig

# What a run's config.json holds about *that* run, not about what it trains: repeating a run
# with `--config runs/a/config.json --output-dir runs/b` must not reuse them.
RUN_IDENTITY = ("name", "output_dir", "config_file")

# A config file is a flat table of a few dozen options: anything past these bounds is not one.
MAX_FILE_BYTES = 1 << 20
MAX_YAML_ALIASES = 64  # "billion laughs": a 600-byte file whose aliases expand to gigabytes

_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlist, _short.maxdict, _short.maxlevel = 80, 80, 6, 6, 2


def short_repr(value) -> str:
    """A value as an error message shows it: bounded, however big or deep the value is."""
    return _short.repr(value)


def read_bounded(p: Path, what: str, limit: int = MAX_FILE_BYTES, error=ConfigError) -> str:
    """A small text file's contents, or a one-line `error` (too big, unreadable, not UTF-8)."""
    try:
        size = p.stat().st_size
        if size > limit:
            raise error(f"{what}: {size:,} bytes is too big for this kind of file (at most {limit:,})")
        with open(p, "rb") as f:
            data = f.read(limit + 1)  # a file that grows while we read is still bounded
        if len(data) > limit:
            raise error(f"{what}: too big for this kind of file (at most {limit:,} bytes)")
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{what}: cannot read it ({' '.join(str(e).split())})") from e


MAX_YAML_DEPTH = 32


def yaml_safe_load(text: str, what: str):
    """yaml.safe_load with a cap on aliases (each one can double what the file expands to) and on
    nesting, checked on PyYAML's event stream as it comes: its parser takes about a minute to
    reach the end of a line of 50,000 '[', so the depth is refused at the 33rd."""
    import yaml

    aliases = depth = 0
    for ev in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(ev, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise ConfigError(f"{what}: nested too deeply to be a config file (more than {MAX_YAML_DEPTH} levels)")
        elif isinstance(ev, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1
        elif isinstance(ev, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_YAML_ALIASES:
                raise ConfigError(f"{what}: more than {MAX_YAML_ALIASES} YAML aliases (*name); a config file "
                                  "needs none")
    return yaml.safe_load(text)


def _field_types() -> dict[str, type]:
    hints = typing.get_type_hints(TrainConfig)
    out = {}
    for f in fields(TrainConfig):
        t = hints[f.name]
        args = [a for a in typing.get_args(t) if a is not type(None)] if isinstance(t, types.UnionType) or \
            typing.get_origin(t) is typing.Union else [t]
        out[f.name] = args[0] if args else str
    return out


def _check_value(key: str, value, want: type, where: str):
    """The value as TrainConfig wants it, or a ConfigError naming the file and key."""
    if value is None:
        return None
    if want is bool:
        if isinstance(value, bool):
            return value
    elif want is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif want is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `2e-4` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif want is str:
        if isinstance(value, str):
            return value
        if key == "frame_buckets" and isinstance(value, (list, int)) and not isinstance(value, bool):
            items = value if isinstance(value, list) else [value]
            if all(isinstance(v, int) and not isinstance(v, bool) for v in items):
                return ",".join(map(str, items))
        if key == "buckets" and isinstance(value, list) and all(isinstance(v, str) for v in value):
            return ",".join(value)
    kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[want]
    raise ConfigError(f"{where}: {key} must be {kind}, got {short_repr(value)}")


def _one_line(e: Exception) -> str:
    """A parser's error on one line (PyYAML's spans several, with a caret drawing)."""
    mark = getattr(e, "problem_mark", None)
    if mark is not None and getattr(e, "problem", None):
        return f"{e.problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(e).split())


def read_config_file(path: str | Path) -> dict:
    """The file's values, checked, keyed by TrainConfig field."""
    p = Path(path)
    where = str(p)
    if not p.is_file():
        raise ConfigError(f"--config {where}: no such file")
    suffix = p.suffix.lower()
    text = read_bounded(p, f"--config {where}")
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            data = yaml_safe_load(text, f"--config {where}")
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"--config {where}: give a .toml, .yaml/.yml or a run's config.json")
    except ConfigError:
        raise
    except RecursionError as e:  # [[[[...]]]] 100,000 deep: every parser here recurses per level
        raise ConfigError(f"--config {where}: nested too deeply to be a config file") from e
    except Exception as e:  # noqa: BLE001 - every parser's own error class, one message
        raise ConfigError(f"--config {where}: not valid {suffix[1:].upper()}: {_one_line(e)}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {where}: expected a table of options at the top level, got {type(data).__name__}")
    nested = [k for k, v in data.items() if isinstance(v, dict)]
    if nested:
        raise ConfigError(f"--config {where}: options go at the top level, not in sections "
                          f"({', '.join(str(k)[:40] for k in nested[:5])})")
    types_ = _field_types()
    out = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key not in types_:
            near = difflib.get_close_matches(key, list(types_), n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise ConfigError(f"--config {where}: unknown option {short_repr(raw_key)}{hint}")
        out[key] = _check_value(key, value, types_[key], where)
    if suffix == ".json":
        for k in RUN_IDENTITY:
            out.pop(k, None)
    return out


def to_toml(values: dict) -> str:
    """A resolved config as a TOML file `--config` reads back (None values are left out: TOML has
    no null, and a missing key means the default)."""
    import tomli_w

    return tomli_w.dumps({k: v for k, v in values.items() if v is not None})
