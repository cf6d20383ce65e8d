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


def build_processor(tokenizer=None):
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    tok = tokenizer or build_tokenizer()
    template = asset("tiny", "chat_template.jinja").read_text()
    return Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(), tokenizer=tok,
                            video_processor=Qwen2VLVideoProcessor(), chat_template=template)


def build_model(tokenizer, seed: int = 0):
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    cfg = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
            rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    cfg.name_or_path = TINY_NAME
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(seed)
        model = Qwen2VLForConditionalGeneration(cfg)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    return model.eval()


def build_tiny(seed: int = 0):
    """(model, processor): deterministic for a given seed."""
    tok = build_tokenizer()
    return build_model(tok, seed), build_processor(tok)


def save_tiny(path, seed: int = 0) -> str:
    """Write the tiny model and processor as a normal local model directory."""
    model, processor = build_tiny(seed)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    # a marker so whatever loads this directory labels its output as a random model's
    (__import__("pathlib").Path(path) / "TINY_RANDOM").write_text("random weights: output is noise\n")
    return str(path)
