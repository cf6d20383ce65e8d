"""`train generate`: base model + LoRA -> a video, through the stock SanaVideoPipeline."""

from __future__ import annotations

import json
import time
from pathlib import Path


class GenerateError(Exception):
    pass


def resolve_lora(lora: str | None) -> tuple[Path | None, dict]:
    if lora is None:
        return None, {}
    p = Path(lora)
    if p.is_dir():
        f = p / "pytorch_lora_weights.safetensors"
        meta = p / "lora_metadata.json"
    else:
        f, meta = p, p.parent / "lora_metadata.json"
    if not f.exists():
        raise GenerateError(f"no LoRA at {f} (a run folder holds pytorch_lora_weights.safetensors once training ends)")
    from . import runfolder

    try:
        runfolder.check_lora(f)
        return f, runfolder.read_metadata(f.parent) if meta.exists() else {}
    except runfolder.ExperimentError as e:
        raise GenerateError(str(e)) from e


def load_pipeline(base_model: str, lora_file: Path | None, lora_scale: float, device: str,
                  flow_shift: float | None = None):
    import torch

    from .models import load_components, with_flow_shift

    comps = load_components(base_model, dtype=torch.bfloat16 if device.startswith("cuda") else torch.float32)
    if flow_shift is not None:
        comps.scheduler = with_flow_shift(comps.scheduler, flow_shift)
    pipe = comps.pipeline()
    if lora_file is not None:
        from .runfolder import ExperimentError, load_lora

        try:
            load_lora(pipe, lora_file, "style", base_model)
        except ExperimentError as e:
            raise GenerateError(str(e)) from e
        pipe.set_adapters(["style"], adapter_weights=[lora_scale])
    pipe.to(device)
    return pipe, comps


def generate_video(*, lora, prompt, base_model, seed, cfg, steps, frames, size, lora_scale, negative_prompt,
                   output, device, motion_suffix: bool = True) -> list[Path]:
    import torch

    from dataengine.media import save_gif, save_mp4
    from .models import ModelLoadError
    from .prompts import with_suffix

    lora_file, meta = resolve_lora(lora)
    base = base_model or meta.get("base_model")
    if not base:
        raise GenerateError("give --base-model (the LoRA has no lora_metadata.json naming one)")
    frames = frames or meta.get("frames", 81)
    if size:
        try:
            w, h = (int(x) for x in size.lower().split("x"))  # WIDTHxHEIGHT, as everywhere else
        except ValueError as e:
            raise GenerateError("--size must look like WIDTHxHEIGHT, e.g. 416x224") from e
    else:
        h, w = meta.get("height", 224), meta.get("width", 224)
    if h <= 0 or w <= 0 or h % 32 or w % 32:
        raise GenerateError(f"--size must be multiples of 32 (SanaVideoPipeline.check_inputs), got {w}x{h}")
    if (frames - 1) % 4:
        raise GenerateError(f"--frames must be 1 + 4k, got {frames}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        pipe, comps = load_pipeline(base, lora_file, lora_scale, device, meta.get("validation_flow_shift"))
    except ModelLoadError as e:
        raise GenerateError(str(e)) from e
    # the prompt is built as the run's validation built it (its motion suffix), unless asked not to
    prompt = with_suffix(prompt, meta.get("prompt_suffix", "") if motion_suffix else "")
    g = torch.Generator(device="cpu").manual_seed(seed)
    video = pipe(prompt=prompt, negative_prompt=negative_prompt, guidance_scale=cfg, num_inference_steps=steps,
                 height=h, width=w, frames=frames, generator=g, use_resolution_binning=False,
                 output_type="np").frames[0]
    if output is None:
        # the run folder: the one given, or the one holding the .safetensors file; ./ without a LoRA
        root = (Path(lora) if Path(lora).is_dir() else Path(lora).parent) if lora else Path(".")
        output = root / "generated" / f"{time.strftime('%Y%m%d-%H%M%S')}.mp4"
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    fps = meta.get("fps", 16.0)
    mp4 = save_mp4(video, out.with_suffix(".mp4"), fps)
    gif = save_gif(video, out.with_suffix(".gif"), fps)
    (out.with_suffix(".json")).write_text(json.dumps({
        "prompt": prompt, "seed": seed, "cfg": cfg, "steps": steps, "frames": frames, "height": h, "width": w,
        "lora": str(lora_file) if lora_file else None, "lora_scale": lora_scale, "base_model": base,
        "random_base_model": comps.is_random}, indent=1))
    return [mp4, gif]
