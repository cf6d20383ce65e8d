"""A deterministic tiny random Qwen2-VL for tests and offline smoke runs.

Built from a config in-process, with a byte-level BPE tokenizer trained in-process on the caption
prompt and vocabulary, so nothing is downloaded. Its output is noise: everything it labels is
marked `is_random_model` in the catalog and "[random tiny model]" in the output.
"""

from __future__ import annotations

import json

from ..assets import asset

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]
TINY_NAME = "tiny-random-qwen2-vl"


def _corpus() -> list[str]:
    vocab = json.loads(asset("vocab.json").read_text())
    words = [w for k, v in vocab.items() if k != "synonyms" for w in v]
    prompt = asset("prompts", "caption_v1.md").read_text()
    example = {"caption": "A grey cat chases a small brown mouse across the kitchen.", "tags": words[:8],
               "characters": ["grey cat", "small brown mouse"], "action": "chase", "setting": "kitchen",
               "time_of_day": "day", "camera": "wide shot, static", "motion": "fast"}
    return [prompt, json.dumps(example), " ".join(words), "user assistant system"] * 4


def build_tokenizer():
    from transformers import PreTrainedTokenizerFast

    from ..tiny_tokenizer import train_byte_bpe

    tk = train_byte_bpe(_corpus(), 512, SPECIAL_TOKENS)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  padding_side="left")
    return tok


FAMILIES = ("qwen2-vl", "qwen2.5-vl", "qwen3-vl")


def build_processor(tokenizer=None, family: str = "qwen2-vl"):
    import transformers as tf

    tok = tokenizer or build_tokenizer()
    template = asset("tiny", "chat_template.jinja").read_text()
    if family == "qwen3-vl":  # 16 px patches, and a video processor that writes frame timestamps
        return tf.Qwen3VLProcessor(image_processor=tf.Qwen2VLImageProcessor(patch_size=16), tokenizer=tok,
                                   video_processor=tf.Qwen3VLVideoProcessor(), chat_template=template)
    cls = tf.Qwen2_5_VLProcessor if family == "qwen2.5-vl" else tf.Qwen2VLProcessor
    return cls(image_processor=tf.Qwen2VLImageProcessor(), tokenizer=tok,
               video_processor=tf.Qwen2VLVideoProcessor(), chat_template=template)


def _config(family: str, tokenizer):
    import transformers as tf

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    tokens = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    rope = {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0}
    if family == "qwen2-vl":
        return tf.Qwen2VLConfig(text_config=dict(text, rope_parameters=rope),
                                vision_config=dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2,
                                                   patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
                                **tokens)
    if family == "qwen2.5-vl":
        return tf.Qwen2_5_VLConfig(text_config=dict(text, rope_parameters=rope),
                                   vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                                                      out_hidden_size=64, patch_size=14, spatial_merge_size=2,
                                                      temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1],
                                                      tokens_per_second=2),
                                   **tokens)
    if family == "qwen3-vl":
        return tf.Qwen3VLConfig(text_config=dict(text, head_dim=16, rope_parameters=dict(
                                    rope, mrope_section=[2, 3, 3], mrope_interleaved=True)),
                                vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                                                   out_hidden_size=64, patch_size=16, spatial_merge_size=2,
                                                   temporal_patch_size=2, num_position_embeddings=64,
                                                   deepstack_visual_indexes=[1]),
                                **tokens)
    raise ValueError(f"unknown tiny family {family!r}; known: {', '.join(FAMILIES)}")


def build_model(tokenizer, seed: int = 0, family: str = "qwen2-vl"):
    import torch
    from transformers import AutoModelForImageTextToText

    cfg = _config(family, tokenizer)
    cfg.name_or_path = TINY_NAME if family == "qwen2-vl" else f"tiny-random-{family}"
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(cfg)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    return model.eval()


def build_tiny(seed: int = 0, family: str = "qwen2-vl"):
    """(model, processor): deterministic for a given seed."""
    tok = build_tokenizer()
    return build_model(tok, seed, family), build_processor(tok, family)


def save_tiny(path, seed: int = 0, family: str = "qwen2-vl") -> str:
    """Write the tiny model and processor as a normal local model directory."""
    model, processor = build_tiny(seed, family)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    # a marker so whatever loads this directory labels its output as a random model's
    (__import__("pathlib").Path(path) / "TINY_RANDOM").write_text("random weights: output is noise\n")
    return str(path)
