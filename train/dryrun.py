"""What `train --dry-run` reports before anything trains: the sigma distribution, the projected GPU
memory on the real 2B config (train.memory), and how many latents the run will encode; and the
sigma plot every run folder gets."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .config import TrainConfig
from .data import Manifest


def dry_run_report(cfg: TrainConfig) -> list[str]:
    """The sigma distribution the run trains on, and its projected GPU memory (train.memory)."""
    from . import sigmas

    lines = sigmas.text(sigmas.stats(cfg.flow_shift, mode=cfg.timestep_sampling, mean=cfg.logit_mean,
                                     std=cfg.logit_std))
    lines.append(f"validation samples with flow shift {cfg.validation_flow_shift:g}")
    if not cfg.model_spec.real_scale:
        lines.append("memory projection: skipped (the tiny model is not the real 2B transformer)")
        return lines
    from .memory import describe, project_config

    lines.append("activation memory: the real SANA-Video block measured on the CPU (first time ~10 s, then cached)")
    sizes = cfg.bucket_sizes()
    if len(sizes) > 1:  # the peak is the bucket with the most tokens
        import dataclasses

        bw, bh = max(sizes, key=lambda wh: wh[0] * wh[1])
        lines.append(f"projected for the largest bucket, {bw}x{bh}x{cfg.frames}")
        cfg = dataclasses.replace(cfg, width=bw, height=bh, buckets="square")
    p = project_config(cfg)
    lines.append(describe(p))
    if not cfg.gradient_checkpointing:
        lines.append(describe(project_config(cfg, checkpointing=True)).replace("projected", "with checkpointing:"))
    try:
        import shutil

        if shutil.which("nvidia-smi") is None:  # no GPU driver here: do not pay torch's import to find out
            return lines
        import torch

        if torch.cuda.is_available():
            total = torch.cuda.get_device_properties(0).total_memory
            if p.total_gib * 2**30 > total:
                lines.append(f"warning: projected {p.total_gib:.1f} GiB exceeds this GPU's {total / 2**30:.1f} GiB")
    except Exception:  # noqa: BLE001 - a broken CUDA setup must not break a dry run
        pass
    return lines


def cache_estimate(cfg: TrainConfig, manifest: Manifest) -> str:
    """How many latents the run will encode at most, and how long at the rate the last run on this
    cache measured (cached windows are reused and cost nothing)."""
    from catalog.db import cache_dir

    train_n = sum(w.role == "train" for w in manifest.windows)
    held = len(manifest.windows) - train_n
    drawn = cfg.max_steps * cfg.batch_size * cfg.grad_accum * max(1, int(os.environ.get("WORLD_SIZE", "1")))
    n = (train_n if cfg.cache_all else min(train_n, drawn)) + held
    line = (f"latent cache: at most {n} windows to encode ({held} held out before step 1, then "
            + (f"all {train_n} training windows up front" if cfg.cache_all else
               f"{min(train_n, drawn)} of {train_n} training windows as the {cfg.max_steps} steps first use them")
            + "; windows already cached are reused)")
    try:
        rate = json.loads((cache_dir(cfg.catalog) / "train" / "encode_rate.json").read_text())
        same = (rate["width"], rate["height"], rate["frames"], rate["base_model"]) == \
            (cfg.width, cfg.height, cfg.frames, cfg.base_model)
        if same:
            line += f"; at the last measured {rate['seconds_per_window']:.2f} s a window: at most {n * rate['seconds_per_window']:.0f} s"
    except (OSError, ValueError, KeyError, TypeError):
        line += "; no encode rate measured on this cache yet"
    return line


def write_sigma_plot(cfg: TrainConfig, out: Path) -> None:
    from . import sigmas

    shifts = {"this run": cfg.flow_shift}
    for label, sh in (("NVIDIA training", 3.0), ("inference", 8.0), ("no shift", 1.0)):
        if sh not in shifts.values():
            shifts[label] = sh
    sigmas.plot(out / "sigma_distribution.png", shifts, mode=cfg.timestep_sampling, mean=cfg.logit_mean,
                     std=cfg.logit_std)
