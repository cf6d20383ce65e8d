"""Opening a finished run for experiments: its config, its LoRA, and a pipeline with both."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import TrainConfig
from ..lora import WEIGHTS_NAME


from ..runfolder import ExperimentError  # noqa: F401 - the experiments' error type lives with the run-folder door


@dataclass
class RunCtx:
    out_dir: Path
    cfg: TrainConfig
    lora_path: Path
    meta: dict
    comps: object
    pipe: object
    device: str

    @property
    def is_random(self) -> bool:
        return bool(self.comps.is_random)

    @property
    def prompt_suffix(self) -> str:
        """The motion suffix this run's validation prompts carried (see train.prompts.run_suffix)."""
        if "prompt_suffix" in self.meta:
            return self.meta["prompt_suffix"]
        if not self.cfg.motion_score:
            return ""
        from ..data import Manifest
        from ..prompts import run_suffix

        man = Manifest.read(self.out_dir / "manifest.jsonl")
        return run_suffix(self.cfg, [w for w in man.windows if w.role == "train"])


def open_run(run_dir: str | Path, *, device: str | None = None, base_model: str | None = None,
             lora_file: str | Path | None = None, adapter: str = "lora") -> RunCtx:
    import torch

    from ..models import ModelLoadError, load_components, with_flow_shift

    from .. import runfolder

    out = runfolder.folder(run_dir)
    cfg = runfolder.read_config(out)
    lp = Path(lora_file) if lora_file else out / WEIGHTS_NAME
    runfolder.check_lora(lp)
    runfolder.read_manifest(out)
    meta = runfolder.read_metadata(out)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        comps = load_components(base_model or cfg.base_model,
                                dtype=torch.bfloat16 if device.startswith("cuda") else torch.float32)
    except ModelLoadError as e:
        raise ExperimentError(str(e)) from e
    comps.scheduler = with_flow_shift(comps.scheduler, meta.get("validation_flow_shift", cfg.validation_flow_shift))
    pipe = comps.pipeline()
    runfolder.load_lora(pipe, lp, adapter, base_model or cfg.base_model)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return RunCtx(out, cfg, lp, meta, comps, pipe, device)


def eval_items(ctx: RunCtx, windows) -> list[dict]:
    """Latents and text embeddings of `windows` from the shared cache (encoded now if missing)."""
    from catalog.db import cache_dir

    from ..cache import Cache

    cfg = ctx.cfg
    cache = Cache(cache_dir(cfg.catalog) / "train", ctx.comps, cfg.height, cfg.width, cfg.max_sequence_length)
    cache.precompute(windows, [w.prompt for w in windows], ctx.device, progress=False)
    return cache.eval_items(windows)


def generate(ctx: RunCtx, prompt: str, *, lora: bool, seed: int, steps: int, cfg_scale: float | None = None,
             frames: int | None = None) -> tuple[np.ndarray, float]:
    """uint8 (T,H,W,3) and seconds taken; the base model is the same pipeline with the adapter off."""
    import torch

    from dataengine.media import to_uint8

    from ..prompts import with_suffix

    prompt = with_suffix(prompt, ctx.prompt_suffix)  # as the run's validation built it
    tr = ctx.pipe.transformer
    if not lora:
        tr.disable_adapters()
    try:
        g = torch.Generator(device="cpu").manual_seed(seed)
        t0 = time.perf_counter()
        out = ctx.pipe(prompt=prompt, negative_prompt="", guidance_scale=ctx.cfg.cfg if cfg_scale is None else cfg_scale,
                       num_inference_steps=steps, height=ctx.cfg.height, width=ctx.cfg.width,
                       frames=frames or ctx.cfg.frames, generator=g, use_resolution_binning=False, output_type="np")
        dt = time.perf_counter() - t0
    finally:
        if not lora:
            tr.enable_adapters()
    return to_uint8(out.frames[0]), dt
