"""The toy captioner: a small Qwen2-VL (the real class) trained on the toy world's truth.

Training sees exactly what `de caption --model toy` gives it at inference: frames sampled by time
at the prompt's fps (`SamplingParams`), sized by `prepare_frames`, the same rendered prompt, the
processor with the same frame metadata, and the answer as the constrained decoder writes it
(compact JSON in the schema's key order). The loss is on the answer tokens only.

It trains in three stages (`train_captioner`). Trained end to end from random weights for 600
steps, it read only colour (setting and time of day right on every clip; action, camera and who
is in the scene at chance): the 45 visual tokens sit among 600 prompt tokens, and the gradient
that would teach attention to find them is faint. So the vision tower first learns the truth
directly, then the language model learns to read it under a one-line instruction, where the
visual tokens are most of the context and a step costs a quarter, and last under the real prompt.
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
    from ..clipread import sample_times
    from ..world import draw

    dur = rng.uniform(2.0, 4.0)
    # half start where the scene starts, as a clip `de ingest` cuts at a scene change does (trained
    # only on later starts, the captioner got the action right on 70% of clips that start at 0 and
    # on 98% of the others)
    t0 = 0.0 if rng.random() < 0.5 else rng.uniform(0.0, 1.0)
    times = sample_times(0.0, dur, sampling.fps, sampling.max_frames)
    return np.stack([draw(scene, t0 + float(t), size[0], size[1]) for t in times]), [float(t) for t in times]


FIELDS = ("setting", "time_of_day", "action", "characters", "camera")


def field_classes() -> dict[str, tuple[str, ...]]:
    from ..world import ACTIONS, CAMERAS, CHARACTERS, SETTINGS, TIMES

    return dict(zip(FIELDS, (tuple(SETTINGS), TIMES, ACTIONS, CHARACTERS, CAMERAS)))


def clip_batch(cap, scenes, rng: random.Random, sampling) -> tuple[list, list[dict]]:
    """Prepared videos and their processor metadata, as `de caption` makes them."""
    from .models import video_metadata

    vids, metas = [], []
    for s in scenes:
        frames, times = sample_clip(s, rng, sampling)
        v = cap.prepare(frames, sampling)
        vids.append(v)
        metas.append(video_metadata(times, int(v.shape[0]), sampling.fps))
    return vids, metas


READS = 1  # attention reads per field in stage 1 (4, one per language-model head, did no better: action 85%,
# camera 89%, who 57% against 98%, 100%, 75% with one, on 48 clips; run-to-run spread is of that order)


def pretrain_vision(cap, sampling, rng: random.Random, *, steps: int, batch: int = 16, lr: float = 3e-3,
                    echo=print) -> dict[str, float]:
    """Stage 1: the vision tower and its merger learn to see the world's truth (who, what, where,
    when, camera) without the language model: per field, READS attention reads of the visual tokens
    (learned queries, a softmax over the tokens) and a linear head. What such reads find, the
    language model's attention heads can find too. (With mean + max pooling the heads reached 93%
    on who is in the scene and 99% on the camera, and the language model then read neither; with
    the mean alone the tower learned a third as fast.) The queries and heads are dropped. Returns
    the heads' held-out accuracy per field, a check that the tower sees what stage 2 needs."""
    import torch

    classes = field_classes()
    visual = cap.model.model.visual
    width = cap.model.config.get_text_config().hidden_size
    heads = torch.nn.ModuleDict({f: torch.nn.Linear(READS * width, len(c)) for f, c in classes.items()})
    queries = torch.nn.Parameter(torch.randn(len(FIELDS) * READS, width) * width ** -0.5)
    params = list(visual.parameters()) + list(heads.parameters()) + [queries]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = warmup_cosine(opt, steps)
    vp = cap.processor.video_processor

    def logits(scenes):
        vids, _ = clip_batch(cap, scenes, rng, sampling)
        inp = vp(videos=vids, return_tensors="pt", do_resize=False, do_sample_frames=False)
        tokens = visual(inp["pixel_values_videos"], grid_thw=inp["video_grid_thw"]).pooler_output
        sizes = (inp["video_grid_thw"].prod(-1) // cap.merge_size ** 2).tolist()
        pooled = torch.stack([torch.softmax(queries @ t.T * width ** -0.5, -1) @ t for t in tokens.split(sizes)])
        pooled = pooled.view(len(scenes), len(FIELDS), READS * width)
        return {f: heads[f](pooled[:, i]) for i, f in enumerate(FIELDS)}

    def truth(scenes, f):
        return torch.tensor([classes[f].index(getattr(s, f)) for s in scenes])

    from ..world import random_scene

    visual.train()
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        scenes = [random_scene(rng) for _ in range(batch)]
        out = logits(scenes)
        loss = sum(torch.nn.functional.cross_entropy(out[f], truth(scenes, f)) for f in FIELDS)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps:
            echo(f"captioner vision step {step}/{steps}  loss {loss.item():.4f}  {time.perf_counter() - t0:.0f} s")
    with torch.no_grad():
        held = [random_scene(random.Random(10_000 + i)) for i in range(96)]
        out = logits(held)
        acc = {f: round(float((out[f].argmax(-1) == truth(held, f)).float().mean()), 3) for f in FIELDS}
    echo("captioner vision, held-out accuracy of the probe heads: " + ", ".join(f"{k} {v}" for k, v in acc.items()))
    return acc


def language_stage(cap, text: str, sampling, rng: random.Random, *, steps: int, batch: int, lr: float,
                   name: str, echo=print) -> float:
    """Stage 2: the language model (and the merger that feeds it) learns to write the answer, as
    the constrained decoder writes it, for the frames and the prompt `text`; the vision tower's
    blocks stay as stage 1 left them. Returns the last step's loss."""
    import torch

    from ..world import random_scene

    model, proc = cap.model, cap.processor
    tok = proc.tokenizer
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": text}]}]
    head = proc.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    eos = "<|im_end|>"
    visual = model.model.visual
    frozen = [p for n, p in visual.named_parameters() if not n.startswith("merger.")]
    for p in frozen:
        p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = warmup_cosine(opt, steps)
    model.train()
    t0 = time.perf_counter()
    loss = float("nan")
    for step in range(1, steps + 1):
        scenes = [random_scene(rng) for _ in range(batch)]
        vids, metas = clip_batch(cap, scenes, rng, sampling)
        answers = [json.dumps(s.answer(), separators=(",", ":")) + eos for s in scenes]
        inputs = proc(text=[head + a for a in answers], videos=vids, padding=True, return_tensors="pt",
                      do_resize=False, do_sample_frames=False, video_metadata=metas)
        labels = inputs["input_ids"].clone()
        for i, ans in enumerate(answers):
            n = len(tok(ans, add_special_tokens=False)["input_ids"])
            labels[i, : labels.shape[1] - n] = -100  # left padding: the answer is the last n tokens
        out = model(**inputs, labels=labels)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        loss = out.loss.item()
        if step % 50 == 0 or step == steps:
            echo(f"captioner {name} step {step}/{steps}  loss {loss:.4f}  {time.perf_counter() - t0:.0f} s")
    for p in frozen:
        p.requires_grad_(True)
    model.eval()
    return loss


SHORT_PROMPT = "Label the clip."


def train_captioner(out_dir, *, steps: int = 80, short_steps: int = 400, vision_steps: int = 900, batch: int = 8,
                    lr: float = 2e-3, seed: int = 0, echo=print) -> dict:
    """Three stages from a fixed seed: the vision tower on the truth (`pretrain_vision`), the
    language model reading it under a one-line instruction (cheap steps in which the visual
    tokens are most of the context), then under the real prompt `de caption` renders."""
    import torch

    from .prompts import load_prompt
    from .models import QwenVLCaptioner
    from .schema import Constraint
    from .tiny import build_processor

    prompt = load_prompt("caption_v1", constraint=Constraint(closed_vocab=True))
    text = prompt.render()
    tok = build_tokenizer(text)
    proc = build_processor(tok)
    cap = QwenVLCaptioner(build_model(tok, seed), proc, TOY_NAME)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    t_start = time.perf_counter()
    vision = pretrain_vision(cap, prompt.sampling, rng, steps=vision_steps, echo=echo) if vision_steps else {}
    if short_steps:
        language_stage(cap, SHORT_PROMPT, prompt.sampling, rng, steps=short_steps, batch=batch, lr=lr,
                       name="short-prompt", echo=echo)
    loss = language_stage(cap, text, prompt.sampling, rng, steps=steps, batch=batch, lr=lr, name="full-prompt",
                          echo=echo)
    from ..atomic import atomic_dir

    figures = {"name": TOY_NAME, "vision_steps": vision_steps, "short_prompt_steps": short_steps, "steps": steps,
               "vision_probe": vision, "final_loss": round(loss, 4), "seconds": round(time.perf_counter() - t_start)}
    with atomic_dir(Path(out_dir)) as out:  # built aside and swapped whole: never half new, half old
        cap.model.save_pretrained(out, safe_serialization=True)
        proc.save_pretrained(out)
        (out / "TOY_MODEL").write_text(json.dumps(figures, indent=1) + "\n")
    return figures
