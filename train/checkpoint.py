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


def save(ckpt_root: Path, step: int, *, lora: dict, optimizer, scheduler, generator, state: dict, keep: int) -> Path:
    import torch
    from safetensors.torch import save_file

    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"{PREFIX}{step:06d}"
    tmp = ckpt_root / f"{PREFIX}{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.contiguous() for k, v in lora.items()}, str(tmp / "lora.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(rng_state(generator), tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in list_checkpoints(ckpt_root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    if not ckpt_root.exists():
        return []
    return sorted(p for p in ckpt_root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)
                  and not p.name.endswith(".tmp") and (p / "state.json").exists())


def find(spec: str, ckpt_root: Path) -> Path:
    if spec == "latest":
        cks = list_checkpoints(ckpt_root)
        if not cks:
            raise FileNotFoundError(f"no checkpoint in {ckpt_root} to resume from")
        return cks[-1]
    p = Path(spec)
    if not (p / "state.json").exists():
        raise FileNotFoundError(f"{p} is not a checkpoint folder (no state.json)")
    return p


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
