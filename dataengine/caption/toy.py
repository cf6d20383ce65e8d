"""The toy captioner: a small Qwen2-VL (the real class) trained on the toy world's truth.

Training sees exactly what `de caption --model toy` gives it at inference: frames sampled by time
at the prompt's fps (`SamplingParams`), sized by `prepare_frames`, the same rendered prompt, the
processor with the same frame metadata, and the answer as the constrained decoder writes it
(compact JSON in the schema's key order). The loss is on the answer tokens only.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np

TOY_NAME = "toy-qwen2-vl"


def corpus(prompt_text: str) -> list[str]:
    from ..world import all_scenes
    from .tiny import _corpus

    answers = [json.dumps(s.answer(), separators=(",", ":")) for s in all_scenes()]
    return _corpus() + [prompt_text] * 4 + answers


def build_tokenizer(prompt_text: str):
    from transformers import PreTrainedTokenizerFast

    from ..tiny_tokenizer import train_byte_bpe
    from .tiny import SPECIAL_TOKENS

    tk = train_byte_bpe(corpus(prompt_text), 1024, SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   padding_side="left")


def build_model(tok, seed: int):
    import torch
    import transformers as tf

    from .tiny import SPECIAL_TOKENS

    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    rope = {"rope_type": "default", "mrope_section": [4, 6, 6], "rope_theta": 10000.0}
    cfg = tf.Qwen2VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                         rope_parameters=rope, bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=2, embed_dim=64, hidden_size=128, num_heads=4, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    cfg.name_or_path = TOY_NAME
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = tf.Qwen2VLForConditionalGeneration(cfg)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    return model


def warmup_cosine(opt, steps: int, warmup: float = 0.05):
    """Linear warm-up over the first 5% of the steps, then a cosine down to a tenth (the toy
    builds' schedule; train.toy uses it too)."""
    import math

    import torch

    w = max(1, int(steps * warmup))

    def f(i):
        if i < w:
            return (i + 1) / w
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (i - w) / max(1, steps - w))))

    return torch.optim.lr_scheduler.LambdaLR(opt, f)


def sample_clip(scene, rng: random.Random, sampling, size=(128, 96)) -> tuple[np.ndarray, list[float]]:
    """Frames of a clip of this scene as `de caption` samples them: by time, at sampling.fps, from
    the clip's start, at most max_frames (the world's clips last 2-4 s)."""
    from ..video import sample_times
    from ..world import draw

    dur = rng.uniform(2.0, 4.0)
    t0 = rng.uniform(0.0, 1.0)
    times = sample_times(0.0, dur, sampling.fps, sampling.max_frames)
    return np.stack([draw(scene, t0 + float(t), size[0], size[1]) for t in times]), [float(t) for t in times]


def train_captioner(out_dir, *, steps: int = 700, batch: int = 8, lr: float = 2e-3, seed: int = 0,
                    echo=print) -> dict:
    import torch

    from ..world import random_scene
    from .models import QwenVLCaptioner, video_metadata
    from .prompts import load_prompt
    from .schema import Constraint
    from .tiny import build_processor

    prompt = load_prompt("caption_v1", constraint=Constraint(closed_vocab=True))
    text = prompt.render()
    tok = build_tokenizer(text)
    proc = build_processor(tok)
    model = build_model(tok, seed)
    cap = QwenVLCaptioner(model, proc, TOY_NAME)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": text}]}]
    head = proc.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    eos = "<|im_end|>"
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = warmup_cosine(opt, steps)
    model.train()
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        scenes = [random_scene(rng) for _ in range(batch)]
        vids, metas, texts, answers = [], [], [], []
        for s in scenes:
            frames, times = sample_clip(s, rng, prompt.sampling)
            v = cap.prepare(frames, prompt.sampling)
            vids.append(v)
            metas.append(video_metadata(times, int(v.shape[0]), prompt.sampling.fps))
            ans = json.dumps(s.answer(), separators=(",", ":")) + eos
            texts.append(head + ans)
            answers.append(ans)
        inputs = proc(text=texts, videos=vids, padding=True, return_tensors="pt", do_resize=False,
                      do_sample_frames=False, video_metadata=metas)
        labels = inputs["input_ids"].clone()
        for i, ans in enumerate(answers):
            n = len(tok(ans, add_special_tokens=False)["input_ids"])
            labels[i, : labels.shape[1] - n] = -100  # left padding: the answer is the last n tokens
        out = model(**inputs, labels=labels)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps:
            echo(f"captioner step {step}/{steps}  loss {out.loss.item():.4f}  {time.perf_counter() - t0:.0f} s")
    model.eval()
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    proc.save_pretrained(out_dir)
    figures = {"name": TOY_NAME, "steps": steps, "seconds": round(time.perf_counter() - t0)}
    (out_dir / "TOY_MODEL").write_text(json.dumps(figures, indent=1) + "\n")
    return figures
