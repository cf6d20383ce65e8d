"""A GPU check ready for the day there is a GPU (`make gpu-check`): the real shapes, random weights.

On CUDA, with nothing downloaded:

1. **SANA-Video 2B, the seed preset's LoRA step**: SanaVideoTransformer3DModel at the real config
   (train.memory.REAL_TRANSFORMER), bf16, random weights, LoRA rank 16 on every linear layer,
   gradient checkpointing, AdamW on the LoRA, the seed preset's batch (8 x 81 frames at 224x224:
   16 x 21 x 28 x 28 latents, 300 text tokens of Gemma-2's 2304 channels). Peak memory against
   train.memory's projection for the same config, and seconds per step.
2. **Qwen2-VL-2B, constrained captions**: Qwen2VLForConditionalGeneration at Qwen2-VL-2B's shapes
   (a 1536-wide, 28-layer language model over a 151,936-token vocabulary; a 32-block, 1280-wide
   vision tower), bf16, random weights, the tool's in-process tokenizer, the caption_v1 prompt
   constrained to the caption schema, 8 clips of 16 frames: clips per second and peak memory.
   Random weights make the words noise; the shapes, dtypes, processor and memory are real.

Without CUDA it says so in one line and exits 0. `--device cpu --layers 1` runs the same code at
the real widths with one block (what tests/test_gpu_check.py runs), to show the code paths work.

    python benchmarks/gpu.py                 # on a CUDA machine
    python benchmarks/gpu.py --device cpu --layers 1 --batch 1 --frames 9 --size 64 --clips 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QWEN2_VL_2B_TEXT = dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                        num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768,
                        tie_word_embeddings=True)
QWEN2_VL_2B_VISION = dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4, patch_size=14,
                          spatial_merge_size=2, temporal_patch_size=2)
QWEN2_VL_ROPE = {"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1000000.0}


def _peak_gib(device) -> float:
    import torch

    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if str(device).startswith("cuda") else None


def sana_step(device: str, layers: int | None, batch: int, frames: int, size: int, steps: int = 3) -> dict:
    """The seed preset's LoRA step on SANA-Video at its real widths; peak memory and seconds a step."""
    import torch
    from diffusers import SanaVideoTransformer3DModel

    from train.config import TrainConfig
    from train.lora import add_lora, trainable_parameters
    from train.memory import REAL_TRANSFORMER, latent_shape, project_config
    from train.objectives import predict

    cfg = dict(REAL_TRANSFORMER)
    if layers:
        cfg["num_layers"] = layers
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    from train.models import cast

    with torch.device(device):
        tr = SanaVideoTransformer3DModel(**cfg)
    cast(tr, dtype)
    tr.requires_grad_(False)
    tr.enable_gradient_checkpointing()
    add_lora(tr, rank=16, alpha=32.0, dropout=0.1, targets="linear", seed=0)
    params = list(trainable_parameters(tr))
    for p in params:
        p.data = p.data.float()
    opt = torch.optim.AdamW(params, lr=2e-4)
    t, h, w = latent_shape(frames, size, size)
    x = torch.randn(batch, 16, t, h, w, device=device)
    emb = torch.randn(batch, 300, cfg["caption_channels"], device=device)
    mask = torch.ones(batch, 300, device=device, dtype=torch.long)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        sig = torch.rand(batch, device=device)
        noise = torch.randn_like(x)
        xt = (1 - sig.view(-1, 1, 1, 1, 1)) * x + sig.view(-1, 1, 1, 1, 1) * noise
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
            pred = predict(tr, xt, emb, mask, sig, dtype, device)
        loss = torch.nn.functional.mse_loss(pred.float(), noise - x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    out = {"blocks": cfg["num_layers"], "batch": batch, "frames": frames, "size": size,
           "seconds_per_step": round(min(times[1:] or times), 3), "loss": round(float(loss.detach()), 4),
           "peak_gib": _peak_gib(device)}
    if not layers:
        proj = project_config(TrainConfig(batch_size=batch, frames=frames, height=size, width=size))
        out["projected_gib"] = round(proj.total_gib, 2)
    return out


def qwen_captions(device: str, layers: int | None, vision_layers: int | None, clips: int, frames: int = 16) -> dict:
    """Constrained captions of `clips` synthetic clips with Qwen2-VL-2B's shapes; clips/s, memory."""
    import numpy as np
    import torch
    import transformers as tf

    from dataengine.caption.models import QwenVLCaptioner, video_metadata
    from dataengine.caption.parse import parse_output
    from dataengine.caption.prompts import SamplingParams, load_prompt
    from dataengine.caption.schema import Constraint
    from dataengine.caption.tiny import SPECIAL_TOKENS, build_processor, build_tokenizer
    from dataengine.synth import draw_frame

    tok = build_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(QWEN2_VL_2B_TEXT, bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"], rope_parameters=QWEN2_VL_ROPE)
    vision = dict(QWEN2_VL_2B_VISION)
    if layers:
        text["num_hidden_layers"] = layers
    if vision_layers:
        vision["depth"] = vision_layers
    cfg = tf.Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                           video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                           vision_end_token_id=ids["<|vision_end|>"])
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    with torch.device(device):
        model = tf.Qwen2VLForConditionalGeneration(cfg).to(dtype).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    cap = QwenVLCaptioner(model, build_processor(tok), "gpu-check", is_random=True, device=device)
    sampling = SamplingParams(fps=2.0, max_frames=frames, max_new_tokens=256)
    prompt = load_prompt("caption_v1", sampling, constraint=Constraint(True))
    clip = lambda i: np.stack([draw_frame(k / 8, i % 3, 360, 240) for k in range(frames)])  # noqa: E731
    vids = [cap.prepare(clip(i), prompt.sampling) for i in range(clips)]
    meta = [video_metadata(None, int(v.shape[0]), sampling.fps) for v in vids]
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    gens = cap.generate(vids, prompt.render(), prompt.sampling, meta, schema=prompt.schema)
    secs = time.perf_counter() - t0
    parsed = sum(parse_output(g.text, prompt.synonyms, prompt.schema).ok for g in gens)
    return {"clips": clips, "frames": frames, "llm_layers": text["num_hidden_layers"], "vision_blocks": vision["depth"],
            "clips_per_s": round(clips / secs, 3), "parsed": parsed, "visual_tokens": gens[0].visual_tokens,
            "peak_gib": _peak_gib(device), "params": sum(p.numel() for p in model.parameters())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--layers", type=int, default=None, help="blocks of each model (default: the real counts)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--clips", type=int, default=8)
    a = ap.parse_args(argv)
    import torch

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu check: no CUDA device here (torch {torch.__version__}); nothing to check")
        return 0
    res = {"device": torch.cuda.get_device_name(0) if a.device.startswith("cuda") else a.device,
           "sana_lora_step": sana_step(a.device, a.layers, a.batch, a.frames, a.size),
           "qwen2_vl_captions": qwen_captions(a.device, a.layers, a.layers, a.clips)}
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
