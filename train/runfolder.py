"""The one door to a finished (or unfinished) run folder, for every command that reads one.

`train eval|sweep-steps|compress|prune|study|distill-*` and `train generate --lora` open a run
folder another process wrote, that a disk may have cut short, or that a user copied from
elsewhere. Everything that can be wrong with it becomes one `ExperimentError` line naming the file
and what to do, never a traceback: a missing or non-directory folder, a missing or damaged
`config.json` or `manifest.jsonl`, a missing, truncated or non-finite LoRA, a LoRA that does not
fit the base model the config names, and a folder that cannot be written."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


class ExperimentError(Exception):
    """A one-line, user-facing reason an experiment command cannot go on."""


def folder(run_dir) -> Path:
    p = Path(run_dir)
    if not p.exists():
        raise ExperimentError(f"{p} does not exist")
    if not p.is_dir():
        raise ExperimentError(f"{p} is not a run folder (it is a file)")
    return p


def _read_file(run_dir, name: str, reader, errors: tuple):
    """reader(RUN/name), with a missing file or one `reader` cannot parse as one line."""
    p = folder(run_dir) / name
    if not p.is_file():
        raise ExperimentError(f"{run_dir} is not a run folder (no {name})")
    try:
        return reader(p)
    except (*errors, OSError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        why = str(e).splitlines()[0][:200] if str(e) else ""
        raise ExperimentError(f"{p} is damaged ({type(e).__name__}: {why}); restore it from a copy or retrain") from e


def read_config(run_dir):
    """The run's TrainConfig, or a one-line reason it cannot be had."""
    from .config import ConfigError, TrainConfig

    return _read_file(run_dir, "config.json", TrainConfig.load, (ValueError, TypeError, ConfigError))


def read_manifest(run_dir):
    from .data import Manifest

    return _read_file(run_dir, "manifest.jsonl", Manifest.read, (ValueError, TypeError, KeyError))


def read_metadata(run_dir) -> dict:
    p = Path(run_dir) / "lora_metadata.json"
    if not p.exists():
        return {}
    try:
        meta = json.loads(p.read_text())
    except (ValueError, OSError, UnicodeDecodeError) as e:
        raise ExperimentError(f"{p} is damaged ({type(e).__name__}); restore it from a copy or retrain") from e
    if not isinstance(meta, dict):
        raise ExperimentError(f"{p} is damaged (not a JSON object)")
    return meta


def lora_state(path) -> dict:
    """The LoRA's tensors, read whole and checked finite: a truncated or foreign file, or a diverged
    run's NaN weights, is a one-line error."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ExperimentError(f"no LoRA at {path}: the run has not finished (resume it with the command that "
                              "started it; its run.json names it)")
    try:
        sd = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ExperimentError(f"{path} is damaged or not a safetensors file ({str(e).splitlines()[0][:160]}); "
                              "restore it, or use a checkpoint's lora.safetensors") from e
    if not sd:
        raise ExperimentError(f"{path} holds no tensors")
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ExperimentError(f"{path} holds non-finite weights in {len(bad)} of {len(sd)} tensors (e.g. {bad[0]}): "
                              "it comes from a diverged run; use an earlier checkpoint or retrain with a lower --lr")
    return sd


def check_lora(path) -> Path:
    lora_state(path)
    return Path(path)


def load_lora(pipe, path, adapter: str, base: str) -> None:
    """`pipe.load_lora_weights`, with a LoRA made for another base model (other widths or blocks)
    turned into one line instead of torch's size-mismatch traceback."""
    import warnings

    path = Path(path)
    try:
        with warnings.catch_warnings():
            # a second adapter on purpose (a student on top of the style LoRA, a compressed rank
            # beside the full one): peft warns that the model gets "multiple adapters", which is the point
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=adapter)
    except (RuntimeError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()
        why = next((ln.strip() for ln in first if "size mismatch" in ln), first[0] if first else type(e).__name__)
        raise ExperimentError(f"the LoRA {path} does not fit the base model {base} ({why[:200]}); give the base "
                              "model it was trained on (its config.json's base_model, or --base-model)") from e


def ensure_writable(path) -> Path:
    """Prove that files can be written in the folder `path` (made if need be), before work that
    would be lost when its results cannot be saved. The folders it had to make are removed again:
    a check leaves nothing behind, and a command that then refuses its input leaves no folder."""
    from .run import _os_error

    p = Path(path)
    made = []
    q = p
    while not q.exists() and q != q.parent:
        made.append(q)
        q = q.parent
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=p, prefix=".write-probe-")
        try:
            os.write(fd, b"x" * 4096)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise ExperimentError(str(_os_error(e, p))) from e
    finally:
        for d in made:  # deepest first
            try:
                d.rmdir()
            except OSError:
                break
    return p


def write_error(e: OSError, where) -> ExperimentError:
    """An OSError from saving results as the one message every command gives (disk full, read-only)."""
    from .run import _os_error

    return ExperimentError(str(_os_error(e, Path(where))))
