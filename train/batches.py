"""The data side of the training loop: the one-pass cache of latents and prompt embeddings
(build_cache), windows encoded the first time a batch uses them (cached_windows), and batches
stacked from the cache (_load_batch)."""

from __future__ import annotations

import functools
import gc
import logging
from pathlib import Path

from .cache import Cache, load
from .config import TrainConfig
from .data import Manifest
from .prompts import run_suffix, validation_prompts, with_suffix
from .runstate import Run, TrainError

log = logging.getLogger("train.loop")


# ---- cache: models on the CPU, then the one-pass cache of latents and prompt embeddings ----------
def build_cache(run: Run, manifest: Manifest, cache_root: Path, progress: bool) -> None:
    import torch

    from .models import load_components, with_flow_shift

    cfg, acc = run.cfg, run.acc
    if run.want_cuda and cfg.model_spec.real_scale and acc.is_main_process:
        warn_if_too_big(cfg, run.device)  # before any model loads
    # bf16 weights for a bf16 run (fp32 copies of the 2B transformer and Gemma-2 2B cost ~18 GB of host
    # RAM on every rank); Gemma-2 never runs in fp16 (it overflows); the VAE stays fp32
    load_dtype = torch.bfloat16 if run.weight_dtype != torch.float32 else torch.float32
    comps = run.comps = load_components(cfg.base_model, seed=0, dtype=load_dtype)
    comps.scheduler = with_flow_shift(comps.scheduler, cfg.validation_flow_shift)
    train_w = [w for w in manifest.windows if w.role == "train"]
    run.vps = validation_prompts(cfg.validation_prompts)
    run.suffix = run_suffix(cfg, train_w)
    val_texts = [with_suffix(vp.prompt, run.suffix) for vp in run.vps]
    cache = run.cache = Cache(cache_root, comps, cfg.height, cfg.width, cfg.max_sequence_length)
    # Every rank encodes its own share and the files meet in the shared cache folder: N GPUs cache N x
    # faster, and no rank sits in a collective while another encodes (NCCL's 600 s timeout).
    # Prompts and held-out windows are encoded now; a training window the first time a batch uses it
    # (step), unless --cache-all: a 20-step run on 300 windows encodes the windows 20 steps use.
    upfront = manifest.windows if cfg.cache_all else [w for w in manifest.windows if w.role == "holdout"]
    stats = cache.precompute(upfront, [w.prompt for w in manifest.windows] + val_texts, run.device,
                             progress=progress and acc.is_main_process, shard=(acc.process_index, acc.num_processes))
    stats["lazy"] = not cfg.cache_all
    run.cache_stats = stats
    write_cache_stats(run.out_dir, acc.process_index, stats)
    acc.wait_for_everyone()
    failed = {w.key for w in upfront if not cache.latent_path(w).exists()}
    for k, e in stats["decode_failures"]:
        log.warning("window %s left out: %s", k, e)
    run.train_w = [w for w in train_w if w.key not in failed]
    run.hold_w = [w for w in manifest.windows if w.role == "holdout" and w.key not in failed]
    if not run.train_w:
        raise TrainError("no training window could be decoded; see the warnings above")
    # free the text encoder for good and park the VAE on the CPU until validation needs it
    comps.text_encoder.to("cpu")
    comps.vae.to("cpu")
    comps.text_encoder = None
    gc.collect()
    if run.want_cuda:
        torch.cuda.empty_cache()
    run.null = load(cache.null_path())
    run.val_embeds = [(lambda d: (d["embeds"], d["mask"]))(load(cache.text_path(t))) for t in val_texts]
    run.holdout_items = cache.eval_items(run.hold_w)


def warn_if_too_big(cfg: TrainConfig, device) -> None:
    """Project the run's GPU peak from the real block (train.memory) and warn if it will not fit."""
    import torch

    from .memory import describe, project_config

    total = torch.cuda.get_device_properties(device).total_memory
    p = project_config(cfg)
    log.info(describe(p))
    if p.total_gib * 2**30 > total:
        log.warning("this config is projected to need %.1f GiB on the GPU but %s has %.1f GiB: expect out-of-memory. "
                    "%s", p.total_gib, torch.cuda.get_device_name(device), total / 2**30,
                    "Lower --batch-size (and raise --grad-accum)." if cfg.gradient_checkpointing else
                    "Drop --no-gradient-checkpointing, or lower --batch-size.")


def record_encode_rate(cache_root: Path, cfg: TrainConfig, stats: dict) -> None:
    """Seconds per latent encoded at first use, kept beside the cache for `train --dry-run`."""
    import json

    n, secs = stats.get("lazy_encoded", 0), stats.get("lazy_seconds", 0.0)
    if not n or not secs:
        return
    try:
        (Path(cache_root) / "encode_rate.json").write_text(json.dumps(
            {"seconds_per_window": secs / n, "windows": n, "width": cfg.width, "height": cfg.height,
             "frames": cfg.frames, "base_model": cfg.base_model}))
    except OSError:
        pass  # a hint for dry runs, never a reason to fail a finished run


def write_cache_stats(out_dir: Path, rank: int, stats: dict) -> None:
    import json

    d = out_dir / "logs"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"cache_rank{rank}.json").write_text(json.dumps(stats, indent=1, default=str))


@functools.lru_cache(maxsize=512)
def _load_text(path: str) -> dict:
    # prompts repeat across windows (the class template uses one prompt for every clip): read once
    return load(Path(path))


def cached_windows(run: Run, windows: list) -> list:
    """`windows` with their latents in the cache, encoded now if this is their first batch. A
    window that cannot be decoded is left out for the rest of the run (a warning says so) and its
    place goes to the next training window of the same bucket that decodes: a batch keeps its
    size and shape, and a run without such windows draws exactly what an up-front cache gives."""
    bad = run.cache.ensure(windows, run.device, run.cache_stats)
    for k in bad:
        log.warning("window %s left out: it could not be decoded", k)
    run.bad_windows |= bad
    if not any(w.key in run.bad_windows for w in windows):
        return windows
    out, n = [], len(run.train_w)
    for w in windows:
        if w.key not in run.bad_windows:
            out.append(w)
            continue
        i = next(j for j, x in enumerate(run.train_w) if x.key == w.key)
        for k in range(1, n):
            c = run.train_w[(i + k) % n]
            if c.key in run.bad_windows or (c.width, c.height, c.frames) != (w.width, w.height, w.frames):
                continue
            more = run.cache.ensure([c], run.device, run.cache_stats)
            run.bad_windows |= more
            if not more:
                out.append(c)
                break
        else:
            raise TrainError("no training window of this bucket could be decoded; see the warnings above")
    return out


def _load_batch(windows, cache: Cache, null: dict, drops: list[bool]) -> dict:
    """Stack cached latents and text embeddings; caption dropout swaps in the unconditional pair."""
    import torch

    lat, emb, mask = [], [], []
    for w, drop in zip(windows, drops):
        lat.append(load(cache.latent_path(w))["latents"])
        t = null if drop else _load_text(str(cache.text_path(w.prompt)))
        emb.append(t["embeds"])
        mask.append(t["mask"])
    return {"latents": torch.stack(lat), "embeds": torch.stack(emb), "mask": torch.stack(mask),
            "keys": [w.key for w in windows]}
