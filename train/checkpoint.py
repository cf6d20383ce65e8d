"""Checkpoints: LoRA + optimizer + LR scheduler + RNG states + step + data position.

Written to `checkpoints/step_NNNNNN.tmp` and renamed, so a kill mid-write never leaves a
half checkpoint that `--resume latest` would pick. The last K are kept.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np

PREFIX = "step_"


def rng_state(generator) -> dict:
    import torch

    s = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
         "generator": generator.get_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s: dict, generator) -> None:
    import torch

    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    generator.set_state(s["generator"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def _torch_save(obj, path: Path) -> None:
    """torch.save through memory, then a plain write: a full disk is then an OSError (ENOSPC)
    rather than torch's opaque 'iostream error'."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    with open(path, "wb") as f:
        f.write(buf.getbuffer())


def save(ckpt_root: Path, step: int, *, lora: dict, optimizer, scheduler, generator, state: dict, keep: int) -> Path:
    import torch
    from safetensors.torch import save as save_bytes

    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"{PREFIX}{step:06d}"
    tmp = ckpt_root / f"{PREFIX}{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        (tmp / "lora.safetensors").write_bytes(save_bytes({k: v.contiguous() for k, v in lora.items()}))
        _torch_save(optimizer.state_dict(), tmp / "optimizer.pt")
        _torch_save(scheduler.state_dict(), tmp / "scheduler.pt")
        _torch_save(rng_state(generator), tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=2))  # written last: the marker
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk leaves no half checkpoint behind
        raise
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in list_checkpoints(ckpt_root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


FILES = ("lora.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt", "state.json")


def is_complete(p: Path) -> bool:
    return all((p / f).is_file() and (p / f).stat().st_size > 0 for f in FILES)


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a folder missing any file is not one)."""
    if not ckpt_root.exists():
        return []
    return sorted(p for p in ckpt_root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)
                  and not p.name.endswith(".tmp") and is_complete(p))


def clean_partial(ckpt_root: Path) -> list[str]:
    """Remove `.tmp` folders a killed or full-disk save left behind; returns their names."""
    if not ckpt_root.exists():
        return []
    gone = [p.name for p in ckpt_root.iterdir() if p.is_dir() and p.name.endswith(".tmp")]
    for name in gone:
        shutil.rmtree(ckpt_root / name, ignore_errors=True)
    return gone


def find(spec: str, ckpt_root: Path) -> Path:
    if spec == "latest":
        cks = list_checkpoints(ckpt_root)
        if not cks:
            raise FileNotFoundError(f"no checkpoint in {ckpt_root} to resume from")
        return cks[-1]
    p = Path(spec)
    if not is_complete(p):
        raise FileNotFoundError(f"{p} is not a complete checkpoint folder (needs {', '.join(FILES)})")
    return p


def load_latest(spec: str, ckpt_root: Path) -> tuple[Path | None, dict | None, list[str]]:
    """(checkpoint, its state, notes): `latest` falls back to the newest checkpoint that loads;
    None when there is none (the run then restarts from step 0 with its frozen manifest)."""
    notes = [f"removed partial checkpoint {n}" for n in clean_partial(ckpt_root)]
    if ckpt_root.exists():
        notes += [f"skipped incomplete checkpoint {p.name} (missing {', '.join(f for f in FILES if not (p / f).is_file())})"
                  for p in sorted(ckpt_root.iterdir()) if p.is_dir() and p.name.startswith(PREFIX) and not is_complete(p)]
    if spec != "latest":
        p = find(spec, ckpt_root)
        return p, load(p), notes
    for p in reversed(list_checkpoints(ckpt_root)):
        try:
            return p, load(p), notes
        except Exception as e:  # noqa: BLE001 - a damaged checkpoint: try the one before
            notes.append(f"skipped damaged checkpoint {p.name}: {type(e).__name__}: {str(e)[:120]}")
    skipped = [p.name for p in ckpt_root.iterdir()] if ckpt_root.exists() else []
    if skipped:
        notes.append(f"no complete checkpoint among {', '.join(sorted(skipped))}")
    return None, None, notes


def load(path: Path) -> dict:
    import torch
    from safetensors.torch import load_file

    return {
        "lora": load_file(str(path / "lora.safetensors")),
        "optimizer": torch.load(path / "optimizer.pt", weights_only=False),
        "scheduler": torch.load(path / "scheduler.pt", weights_only=False),
        "rng": torch.load(path / "rng.pt", weights_only=False),
        "state": json.loads((path / "state.json").read_text()),
    }
