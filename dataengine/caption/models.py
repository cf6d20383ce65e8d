"""Captioner registry and the Qwen-VL backend.

`--model` takes a short alias, a hub id, a local directory, or `tiny`. Loading goes through the
standard transformers classes (AutoModelForImageTextToText + AutoProcessor): bf16 on CUDA, fp32 on
CPU, `--device` to override. A model that cannot be found is a CaptionModelError that says which
id was tried and how to download it ahead of time.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..hub import load_errors

log = logging.getLogger(__name__)

ALIASES = {
    "qwen2-vl": "Qwen/Qwen2-VL-2B-Instruct",
    "qwen2-vl-7b": "Qwen/Qwen2-VL-7B-Instruct",
    "qwen2.5-vl": "Qwen/Qwen2.5-VL-3B-Instruct",
    "qwen2.5-vl-7b": "Qwen/Qwen2.5-VL-7B-Instruct",
    "qwen3-vl": "Qwen/Qwen3-VL-2B-Instruct",
}


class CaptionModelError(Exception):
    """The captioner cannot be loaded; the message says why and what to do."""


def resolve_model(name: str) -> str:
    """Alias -> hub id; hub ids, local paths and `tiny` pass through."""
    from .specs import family_of

    if name in ALIASES and family_of(ALIASES[name]) == "qwen3-vl":
        try:
            import transformers

            if not hasattr(transformers, "Qwen3VLForConditionalGeneration"):
                raise CaptionModelError("qwen3-vl needs a transformers release with Qwen3-VL "
                                        f"(installed: {transformers.__version__}); use qwen2.5-vl or qwen2-vl")
        except ImportError as e:  # pragma: no cover
            raise CaptionModelError(str(e)) from e
    return ALIASES.get(name, name)


def hub_mode(repo: str) -> bool:
    """True when `repo` must load from the local cache only (see dataengine.hub)."""
    from ..hub import HubUnavailable, local_files_only

    try:
        return local_files_only(repo, "--model")
    except HubUnavailable as e:
        raise CaptionModelError(str(e)) from e


def offline_help(repo: str) -> str:
    from ..hub import offline_help as _help

    return _help(repo, "--model")


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class Generation:
    text: str
    visual_tokens: int
    num_frames: int


def prepare_frames(frames: np.ndarray, sampling, patch_size: int = 14, merge_size: int = 2) -> np.ndarray:
    """uint8 (N,H,W,3) -> uint8 (N',3,H',W'), N' even (Qwen groups frames in temporal pairs).

    The target size is qwen-vl-utils' `smart_resize` (multiples of patch*merge, within min/max
    pixels), the same rule its `fetch_video` applies; the resize itself is done once with OpenCV
    (single-threaded, releases the GIL) so this can run beside generation, or in a CPU stage of
    its own on another machine, without the model.
    """
    import cv2
    from qwen_vl_utils import smart_resize

    if len(frames) % 2:
        frames = np.concatenate([frames, frames[-1:]])
    h, w = frames.shape[1:3]
    rh, rw = smart_resize(h, w, factor=patch_size * merge_size, min_pixels=sampling.min_pixels,
                          max_pixels=sampling.max_pixels)
    interp = cv2.INTER_AREA if rh * rw < h * w else cv2.INTER_CUBIC
    out = np.stack([cv2.resize(f, (rw, rh), interpolation=interp) for f in frames])
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def processor_geometry(model: str) -> tuple[int, int]:
    """(patch size, merge size) of a captioner's video processor, without loading its weights."""
    from .specs import captioner

    if (spec := captioner(model)) is not None:
        return spec.geometry
    from transformers import AutoProcessor

    repo = resolve_model(model)
    local_only = False if os.path.isdir(repo) else hub_mode(repo)
    try:
        vp = AutoProcessor.from_pretrained(repo, local_files_only=local_only).video_processor
    except load_errors() as e:
        raise CaptionModelError(f"cannot load the processor of '{model}': {str(e).splitlines()[0]}") from e
    return int(getattr(vp, "patch_size", 14) or 14), int(getattr(vp, "merge_size", 2) or 2)


def video_metadata(times, num_frames: int, fps: float) -> dict:
    """transformers' VideoMetadata for frames we sampled ourselves.

    The effective rate comes from the source times the reader returned (so a VFR file or a clip
    shorter than the sampling asks for is described as it is); `fps` is the fallback for a single
    frame. `num_frames` counts the frames handed to the processor, after `prepare` pads an odd
    count to a temporal pair; indices are 0..n-1, so timestamps start at the clip's start.
    """
    eff = float(fps)
    if times is not None and len(times) > 1:
        span = float(times[-1]) - float(times[0])
        if span > 0:
            eff = (len(times) - 1) / span
    return {"total_num_frames": int(num_frames), "fps": eff, "frames_indices": list(range(int(num_frames))),
            "duration": num_frames / eff}


class QwenVLCaptioner:
    """Qwen2-VL / Qwen2.5-VL / Qwen3-VL through transformers; frames prepared with qwen-vl-utils."""

    def __init__(self, model, processor, name: str, *, is_random: bool = False, device: str = "cpu",
                 kind: str | None = None):
        self.model = model
        self.processor = processor
        self.name = name
        self.is_random = is_random
        # what made its labels (catalog: captions.model_kind): real, toy (trained on the toy world) or random
        self.kind = kind or ("random" if is_random else "real")
        self.device = device
        self.processor.tokenizer.padding_side = "left"  # batched generation needs left padding
        vp = getattr(self.processor, "video_processor", None)
        self.patch_size = getattr(vp, "patch_size", 14) or 14
        self.merge_size = getattr(vp, "merge_size", 2) or 2
        if vp is not None and hasattr(vp, "cap_pixels_per_frame"):
            vp.cap_pixels_per_frame = False  # frames are already sized by qwen-vl-utils below
        self._grammars: dict[str, object] = {}

    def grammar(self, schema: dict | None):
        """The schema compiled for this model's tokenizer (once per schema), or None when free."""
        if schema is None:
            return None
        import json

        from .schema import SchemaGrammar

        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            vocab_size = self.model.config.get_text_config().vocab_size  # >= len(tokenizer): padded rows
            self._grammars[key] = SchemaGrammar(schema, self.processor.tokenizer, vocab_size)
        return self._grammars[key]

    # CPU side: runs in the prefetch thread -------------------------------------------------
    def prepare(self, frames: np.ndarray, sampling) -> "object":
        """uint8 (N,H,W,3) frames -> the float (N,3,H',W') tensor the processor expects."""
        import torch

        return torch.from_numpy(prepare_frames(frames, sampling, self.patch_size, self.merge_size)).float()

    # GPU side -------------------------------------------------------------------------------
    def generate(self, videos: list, prompt_text: str, sampling, metadata: list[dict] | None = None,
                 schema: dict | None = None, seed: int = 0) -> list[Generation]:
        """`metadata` (one `video_metadata(...)` per video) tells the processor when each frame
        was taken. Without it, transformers 5.x assumes 24 fps for pre-sampled frames: Qwen2.5-VL
        then gets second_per_grid_ts = 2/24 instead of 2/fps, and Qwen3-VL labels a 5 s clip
        with timestamps 0.0-0.4 s. Qwen2-VL ignores time."""
        import torch

        if metadata is None:
            metadata = [video_metadata(None, int(v.shape[0]), sampling.fps) for v in videos]
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt_text}]}]
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = self.processor(text=[text] * len(videos), videos=videos, padding=True, return_tensors="pt",
                                do_resize=False, do_sample_frames=False, video_metadata=metadata)
        grid = inputs["video_grid_thw"]
        tokens = (grid.prod(dim=-1) // (self.merge_size ** 2)).tolist()
        inputs = inputs.to(self.device)
        if "pixel_values_videos" in inputs:
            inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(self.model.dtype)
        gen_kw = dict(max_new_tokens=sampling.max_new_tokens, do_sample=sampling.do_sample)
        if sampling.do_sample:
            gen_kw["temperature"] = sampling.temperature
            torch.manual_seed(seed)
        grammar = self.grammar(schema)
        if grammar is not None:
            gen_kw["logits_processor"] = [grammar.processor()]
        with torch.inference_mode():
            out = self.model.generate(**inputs, **gen_kw)
        new = out[:, inputs["input_ids"].shape[1]:]
        texts = self.processor.batch_decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return [Generation(t, int(n), int(g[0]) * 2) for t, n, g in zip(texts, tokens, grid.tolist())]


def toy_dir() -> str:
    """The toy captioner shipped in assets/toy/qwen2-vl (built by `train build-toy`)."""
    from ..assets import assets_dir

    d = assets_dir() / "toy" / "qwen2-vl"
    if not (d / "config.json").exists():
        raise CaptionModelError(f"the toy captioner is not in {d}: build it with `train build-toy`")
    return str(d)


def _has_random_marker(repo: str, local: bool) -> bool:
    """A tiny random model carries a TINY_RANDOM file, in a local folder or in the hub cache."""
    if local:
        return os.path.exists(os.path.join(repo, "TINY_RANDOM"))
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo, "TINY_RANDOM"), str)
    except Exception:  # noqa: BLE001 - a marker lookup must never stop a real model from loading
        return False


def captioner_label(model: str, name: str | None = None) -> str:
    """The name a labelling is stored under, known before any model loads (so a run can tell
    what is already done, and a bad --query fails, without paying for the model)."""
    from .specs import captioner

    if name:
        return name
    if (spec := captioner(model)) is not None:
        return spec.label
    repo = ALIASES.get(model, model)
    if os.path.isdir(repo):
        return f"local:{os.path.basename(os.path.normpath(repo))}"
    return repo


def load_captioner(model: str, *, device: str | None = None, dtype: str | None = None,
                   name: str | None = None, seed: int = 0) -> QwenVLCaptioner:
    import torch

    from ..hub import quiet_loading_bars

    quiet_loading_bars()
    device = device or default_device()
    if dtype is None or dtype == "auto":
        torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    else:
        torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    from .specs import captioner, check_builtin, named_random

    t0 = time.perf_counter()
    try:
        check_builtin(model)
    except ValueError as e:
        raise CaptionModelError(str(e)) from e
    spec = captioner(model)
    if spec is not None and spec.built:  # tiny, tiny-qwen2.5-vl, tiny-qwen3-vl
        from .tiny import build_tiny

        m, proc = build_tiny(seed, spec.family)
        label = captioner_label(model, name)
        return QwenVLCaptioner(m.to(device=device, dtype=torch_dtype), proc, label, is_random=True, device=device)
    repo = toy_dir() if spec is not None and spec.kind == "toy" else resolve_model(model)
    local = os.path.isdir(repo)
    local_only = False if local else hub_mode(repo)
    try:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        proc = AutoProcessor.from_pretrained(repo, local_files_only=local_only)
        m = AutoModelForImageTextToText.from_pretrained(repo, dtype=torch_dtype, local_files_only=local_only)
    except load_errors() as e:
        if local or not isinstance(e, OSError):
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise CaptionModelError(f"cannot load a model from directory {repo}: it is damaged or incomplete "
                                    f"({type(e).__name__}: {first[:200]})") from e
        raise CaptionModelError(
            f"cannot find model '{repo}'"
            + (f" (alias '{model}')" if repo != model else "")
            + ". It is not in the local Hugging Face cache and the hub is unreachable or the id is wrong. "
            + offline_help(repo)
        ) from e
    m = m.to(device).eval()
    is_random = named_random(str(getattr(m.config, "name_or_path", ""))) or _has_random_marker(repo, local)
    label = captioner_label(model, name)
    log.info("loaded %s in %.1f s on %s (%s)", label, time.perf_counter() - t0, device, torch_dtype)
    toy = (spec is not None and spec.kind == "toy") or (local and (Path(repo) / "TOY_MODEL").is_file())
    return QwenVLCaptioner(m, proc, label, is_random=is_random, device=device,
                           kind="random" if is_random else "toy" if toy else "real")
