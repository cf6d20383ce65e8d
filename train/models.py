"""SANA-Video components behind one loader seam: a hub id, a local directory, `toy` or `tiny`.

`toy` loads the small SANA-Video trained on the toy world (train.toy; shipped in assets/toy/sana)
through the same `from_pretrained` path as a hub model. `tiny` builds a deterministic random SANA-Video in-process (transformer, Wan VAE, Gemma-2 text
encoder, a byte-level BPE tokenizer trained in-process, and the flow DPM-Solver scheduler). It is
for tests and offline smoke runs; everything it produces is labelled as coming from a random model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TINY_NAME = "tiny-random-sana-video"


class ModelLoadError(Exception):
    """The base model cannot be loaded; the message says what was tried and what to do."""


@dataclass
class Components:
    tokenizer: object
    text_encoder: object
    vae: object
    transformer: object
    scheduler: object
    name: str
    is_random: bool = False
    weights_id: str = ""  # what the cache keys on: a hub id, or a fingerprint of local weight files

    def pipeline(self):
        from diffusers import SanaVideoPipeline

        return SanaVideoPipeline(tokenizer=self.tokenizer, text_encoder=self.text_encoder, vae=self.vae,
                                 transformer=self.transformer, scheduler=self.scheduler)


def flow_scheduler(flow_shift: float = 8.0):
    """SANA-Video's inference scheduler: DPM-Solver++ on flow sigmas with shift 8."""
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                       flow_shift=flow_shift, num_train_timesteps=1000)


def _tiny_tokenizer():
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    from dataengine.assets import asset
    from dataengine.tiny_tokenizer import train_byte_bpe

    corpus = [asset("prompts", "validation_tomjerry.txt").read_text(),
              asset("prompts", "class_tomjerry.txt").read_text(),
              "motion score a the of and in with cat mouse chase night day kitchen house"] * 3
    tk = train_byte_bpe(corpus, 384, ["<pad>", "<eos>", "<bos>", "<unk>"])

    tk.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", tk.token_to_id("<bos>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", padding_side="right", model_max_length=4096)


def one_layer_gemma(tok, *, hidden: int, init_range: float, seed: int):
    """A random one-layer Gemma-2 text encoder (two heads of hidden/2) for a trained-in-process tokenizer."""
    import torch
    from transformers import Gemma2Config, Gemma2Model

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return Gemma2Model(Gemma2Config(
            head_dim=hidden // 2, hidden_size=hidden, initializer_range=init_range, intermediate_size=2 * hidden,
            max_position_embeddings=4096, num_attention_heads=2, num_hidden_layers=1, num_key_value_heads=2,
            vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id, attn_implementation="eager"))


def build_tiny(seed: int = 0) -> Components:
    import torch
    from diffusers import AutoencoderKLWan, SanaVideoTransformer3DModel

    tok = _tiny_tokenizer()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                               temperal_downsample=[False, True, True])
        te = one_layer_gemma(tok, hidden=32, init_range=0.02, seed=seed)
        torch.manual_seed(seed)
        tr = SanaVideoTransformer3DModel(
            in_channels=16, out_channels=16, num_attention_heads=2, attention_head_dim=12, num_layers=2,
            num_cross_attention_heads=2, cross_attention_head_dim=12, cross_attention_dim=24, caption_channels=32,
            mlp_ratio=2.5, dropout=0.0, attention_bias=False, sample_size=8, patch_size=(1, 2, 2),
            norm_elementwise_affine=False, norm_eps=1e-6, qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
    return Components(tok, te.eval(), vae.eval(), tr, flow_scheduler(), TINY_NAME, is_random=True)


def save_tiny(path: str | os.PathLike, seed: int = 0) -> str:
    """Write the tiny model as a normal diffusers pipeline directory (loadable by path)."""
    c = build_tiny(seed)
    c.pipeline().save_pretrained(path)
    (Path(path) / "TINY_RANDOM").write_text("random weights: output is noise\n")
    return str(path)


def load_components(base_model: str, *, dtype=None, seed: int = 0) -> Components:
    """Load tokenizer, Gemma-2 text encoder, Wan VAE, transformer and scheduler on the CPU.

    `dtype` is the weight dtype of the transformer and the text encoder (bf16 for a bf16 run:
    loading a 2B transformer and Gemma-2 2B in fp32 costs ~18 GB of host RAM per rank). The VAE
    always stays fp32, as diffusers documents for SANA-Video: its decode is sensitive and it only
    runs at cache time and validation. Placement is the caller's (accelerate's) job.
    """
    import torch

    from dataengine.hub import quiet_loading_bars

    quiet_loading_bars()
    from .specs import video_model

    dtype = dtype or torch.float32
    spec = video_model(base_model)
    if spec.built:
        c = build_tiny(seed)
        c.weights_id = f"{TINY_NAME}-seed{seed}"
    elif spec.kind == "toy":
        c = _load_folder(toy_dir(), dtype, name="toy-sana-video")
    else:
        local = os.path.isdir(base_model)
        local_only = False
        if not local:
            from dataengine.hub import HubUnavailable, local_files_only

            try:  # seconds, not huggingface_hub's minutes of retries, when there is no network
                local_only = local_files_only(base_model, "--base-model", marker="model_index.json")
            except HubUnavailable as e:
                raise ModelLoadError(str(e)) from e
        from dataengine.hub import load_errors

        try:
            from diffusers import SanaVideoPipeline

            # per-component dtypes at load time, so no fp32 copy of the big models ever exists
            pipe = SanaVideoPipeline.from_pretrained(base_model, **dtype_kwarg({"default": dtype, "vae": torch.float32}),
                                                     local_files_only=local_only)
        except load_errors() as e:
            if local:
                raise ModelLoadError(f"cannot load SANA-Video from directory {base_model}: "
                                     f"{str(e).splitlines()[0]}") from e
            from dataengine.hub import offline_help

            raise ModelLoadError(
                f"cannot find base model '{base_model}': it is not in the local Hugging Face cache and the hub "
                "is unreachable or the id is wrong. " + offline_help(base_model, "--base-model")) from e
        is_random = local and (Path(base_model) / "TINY_RANDOM").exists()
        name = f"local:{Path(base_model).name}" if local else base_model
        c = Components(pipe.tokenizer, pipe.text_encoder, pipe.vae, pipe.transformer, pipe.scheduler, name, is_random,
                       weights_id=weights_fingerprint(base_model) if local else base_model)
    cast(c.transformer, dtype)
    cast(c.text_encoder, dtype)
    cast(c.vae, torch.float32)
    for m in (c.vae, c.text_encoder, c.transformer):
        m.requires_grad_(False)
    return c


def cast(model, dtype) -> None:
    """model.to(dtype) only when some floating-point weight is in another dtype. A loaded model is
    already in the dtype from_pretrained gave it; diffusers' `to()` warns on every cast that
    modules "should be kept in float32: []" (it tests the list against None, not for emptiness),
    so an unneeded cast only adds a misleading line to every command's output."""
    if any(p.is_floating_point() and p.dtype != dtype for p in model.parameters()):
        model.to(dtype)


def dtype_kwarg(value) -> dict:
    """`from_pretrained`'s dtype argument under the name this diffusers takes: `dtype` where it
    has it (it warns that `torch_dtype` is deprecated), `torch_dtype` on the older releases
    pyproject.toml allows (0.36+), which know no other."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401 - the `dtype` era
    except ImportError:
        return {"torch_dtype": value}
    return {"dtype": value}


def toy_dir() -> str:
    """The toy SANA-Video shipped in assets/toy/sana (built by `train build-toy`)."""
    from dataengine.assets import assets_dir

    d = assets_dir() / "toy" / "sana"
    if not (d / "model_index.json").exists():
        raise ModelLoadError(f"the toy SANA-Video is not in {d}: build it with `train build-toy` (about 15 minutes "
                             "on 2 CPU cores)")
    return str(d)


def _load_folder(folder: str, dtype, name: str) -> Components:
    import torch
    from diffusers import SanaVideoPipeline

    from dataengine.hub import load_errors

    try:
        pipe = SanaVideoPipeline.from_pretrained(folder, **dtype_kwarg({"default": dtype, "vae": torch.float32}),
                                                 local_files_only=True)
    except load_errors() as e:
        raise ModelLoadError(f"cannot load SANA-Video from directory {folder}: {str(e).splitlines()[0]}") from e
    return Components(pipe.tokenizer, pipe.text_encoder, pipe.vae, pipe.transformer, pipe.scheduler, name,
                      is_random=False, weights_id=weights_fingerprint(folder))


def weights_fingerprint(folder: str | os.PathLike) -> str:
    """Identity of a local diffusers folder by the content of its weight files (name, size and
    three sampled MiB each, as video ids are made): two copies of the same weights share a cache,
    and two different folders that happen to share a name do not."""
    import hashlib

    from dataengine.identity import video_id

    h = hashlib.blake2b(digest_size=16)
    for f in sorted(Path(folder).rglob("*")):
        if f.suffix in (".safetensors", ".bin", ".pt", ".pth") and f.is_file():
            h.update(f"{f.relative_to(folder)}:{video_id(f)};".encode())
    return f"local-weights:{h.hexdigest()}"


def with_flow_shift(scheduler, flow_shift: float):
    """The same scheduler with another inference shift (validation may sample at a shift other
    than the one the hub config holds)."""
    return scheduler.__class__.from_config(scheduler.config, flow_shift=flow_shift)
