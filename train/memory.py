"""Project a training run's GPU memory from the real SANA-Video block, measured, not guessed.

A tiny model cannot show memory bugs, so this builds the real 2B transformer's block config
(20 heads x 112 = 2240 wide, mlp ratio 3, caption dim 2304, patch (1,2,2)) with the LoRA attached,
runs one forward pass under bf16 autocast on the CPU, and counts the bytes autograd saves for the
backward pass, as `torch.autograd.graph.saved_tensors_hooks` sees them (unique storages, the
frozen weights left out since they are counted once as weights).

Activations grow linearly in the number of tokens (SANA-Video's self-attention is linear, and the
cross-attention scores are tokens x 300): two small token counts fit `bytes = a * tokens + b`,
which then projects to the run's real token count. The trainer cuts prompt padding no row of a
batch uses (`objectives.predict`), so planning for all 300 text tokens is the worst case: a batch
whose longest prompt fills `max_sequence_length`. `benchmarks/memory.py --full` checks the fit
against a direct measurement at 4,116 tokens.

Projected peak = bf16 weights + LoRA (fp32 weights, grads and two Adam moments) + activations:
  without checkpointing: blocks x batch x saved-per-block
  with checkpointing:    blocks x batch x block-input + batch x saved-per-block (one block recomputed)
plus a fixed reserve for the CUDA context, cuBLAS workspaces and allocator slack.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

GIB = 2**30
GPU_SIZES_GB = (24, 40, 80, 141)
RESERVE_GIB = 1.5  # CUDA context + workspaces + fragmentation; stated, not measured here

# SanaVideoTransformer3DModel config of Efficient-Large-Model/SANA-Video_2B_480p_diffusers
REAL_TRANSFORMER = dict(in_channels=16, out_channels=16, num_attention_heads=20, attention_head_dim=112,
                        num_layers=20, num_cross_attention_heads=20, cross_attention_head_dim=112,
                        cross_attention_dim=2240, caption_channels=2304, mlp_ratio=3.0, dropout=0.0,
                        attention_bias=False, sample_size=30, patch_size=(1, 2, 2), norm_elementwise_affine=False,
                        norm_eps=1e-6, qk_norm="rms_norm_across_heads", rope_max_seq_len=1024)
TEXT_TOKENS = 300
VAE_T, VAE_S = 4, 8  # Wan VAE: 4x in time, 8x in space


def latent_shape(frames: int, height: int, width: int) -> tuple[int, int, int]:
    return (frames - 1) // VAE_T + 1, height // VAE_S, width // VAE_S


def tokens_for(frames: int, height: int, width: int, patch=(1, 2, 2)) -> int:
    t, h, w = latent_shape(frames, height, width)
    return (t // patch[0]) * (h // patch[1]) * (w // patch[2])


@dataclass
class BlockMeasure:
    """Bytes per block per sample: a * tokens + b, fitted from two measured token counts."""
    saved_a: float
    saved_b: float
    input_a: float  # what checkpointing keeps per block: the block's hidden-states input
    input_b: float
    points: list  # [(tokens, saved_bytes, input_bytes), ...] as measured
    dtype: str
    rank: int

    def saved(self, tokens: int) -> float:
        return self.saved_a * tokens + self.saved_b

    def kept(self, tokens: int) -> float:
        return self.input_a * tokens + self.input_b


def _real_block_model(num_layers: int, dtype):
    import torch
    from diffusers import SanaVideoTransformer3DModel

    cfg = dict(REAL_TRANSFORMER, num_layers=num_layers)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = SanaVideoTransformer3DModel(**cfg)
    return model.to(dtype)


def count_params(num_layers: int = 20) -> int:
    """Parameter count of the real transformer, built on the meta device (no memory, no weights)."""
    import torch
    from diffusers import SanaVideoTransformer3DModel

    with torch.device("meta"):
        m = SanaVideoTransformer3DModel(**dict(REAL_TRANSFORMER, num_layers=num_layers))
    return sum(p.numel() for p in m.parameters())


def lora_params(rank: int, targets: str = "linear", num_layers: int = 20) -> int:
    import torch
    from diffusers import SanaVideoTransformer3DModel

    from .lora import target_modules

    with torch.device("meta"):
        m = SanaVideoTransformer3DModel(**dict(REAL_TRANSFORMER, num_layers=num_layers))
    mods = dict(m.named_modules())
    n = 0
    for name in target_modules(m, targets):
        mod = mods[name]
        if isinstance(mod, torch.nn.Linear):
            n += rank * (mod.in_features + mod.out_features)
        else:  # conv: A is (r, in, k...), B is (out, r, 1...)
            k = mod.weight[0, 0].numel()
            n += rank * (mod.in_channels * k + mod.out_channels)
    return n


def measure_block(tokens_list=(196, 392), *, rank: int = 16, targets: str = "linear", dropout: float = 0.1,
                  checkpointing: bool = False) -> list[tuple[int, int, int]]:
    """(tokens, saved bytes per block per sample, block-input bytes) at each token count.

    One real-width block with the LoRA attached, bf16 weights and autocast, batch 1. Saved
    tensors are collected while each block runs (forward hooks bracket it), deduplicated by
    storage, and the model's own parameters are left out.
    """
    import torch

    from .lora import add_lora

    model = _real_block_model(2, torch.bfloat16)
    add_lora(model, rank=rank, alpha=2 * rank, dropout=dropout, targets=targets)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    if checkpointing:
        model.enable_gradient_checkpointing()
    model.train()
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    state = {"block": None}
    per_block: dict[int, dict[int, int]] = {}
    inputs: dict[int, int] = {}

    def pack(t):
        b = state["block"]
        if b is not None:
            st = t.untyped_storage()
            ptr = st.data_ptr()
            if ptr not in param_ptrs:
                per_block.setdefault(b, {})[ptr] = st.nbytes()
        return t

    def pre(i):
        def hook(mod, args):
            state["block"] = i
            inputs[i] = args[0].untyped_storage().nbytes()  # hidden_states: what a checkpoint keeps
        return hook

    def post(mod, args, out):
        state["block"] = None

    hs = []
    for i, blk in enumerate(model.transformer_blocks):
        hs.append(blk.register_forward_pre_hook(pre(i)))
        hs.append(blk.register_forward_hook(post))
    out = []
    try:
        for tokens in tokens_list:
            t_lat = max(1, tokens // (14 * 14))
            side = int(round((tokens / t_lat) ** 0.5)) * 2
            x = torch.randn(1, 16, t_lat, side, side, dtype=torch.bfloat16)
            real_tokens = t_lat * (side // 2) ** 2
            emb = torch.randn(1, TEXT_TOKENS, REAL_TRANSFORMER["caption_channels"], dtype=torch.bfloat16)
            mask = torch.ones(1, TEXT_TOKENS, dtype=torch.long)
            per_block.clear()
            inputs.clear()
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                    torch.autocast("cpu", dtype=torch.bfloat16):
                pred = model(x, encoder_hidden_states=emb, encoder_attention_mask=mask,
                             timestep=torch.tensor([500.0]), return_dict=False)[0]
            # block 1 is a middle block (block 0's input is the patch embedding's output)
            saved = sum(per_block.get(1, {}).values())
            out.append((real_tokens, saved, inputs.get(1, 0)))
            del pred
    finally:
        for h in hs:
            h.remove()
    return out


def fit(points, *, rank: int) -> BlockMeasure:
    (t0, s0, i0), (t1, s1, i1) = points[0], points[-1]
    sa = (s1 - s0) / (t1 - t0)
    ia = (i1 - i0) / (t1 - t0)
    return BlockMeasure(sa, s0 - sa * t0, ia, i0 - ia * t0, [list(p) for p in points], "bf16", rank)


@dataclass
class Projection:
    tokens: int
    batch: int
    blocks: int
    rank: int
    checkpointing: bool
    optimizer: str
    weights_gib: float
    lora_gib: float
    activations_gib: float
    reserve_gib: float
    per_block_sample_gib: float
    kept_block_sample_gib: float

    @property
    def total_gib(self) -> float:
        return self.weights_gib + self.lora_gib + self.activations_gib + self.reserve_gib

    def fits(self, gb: float) -> bool:
        return self.total_gib * GIB <= gb * 1e9

    def to_dict(self) -> dict:
        return dict(asdict(self), total_gib=self.total_gib)


def project(m: BlockMeasure, *, frames: int, height: int, width: int, batch: int, rank: int,
            checkpointing: bool, optimizer: str = "adamw", targets: str = "linear", blocks: int = 20,
            n_params: int | None = None, n_lora: int | None = None) -> Projection:
    tokens = tokens_for(frames, height, width)
    n_params = n_params if n_params is not None else count_params(blocks)
    n_lora = n_lora if n_lora is not None else lora_params(rank, targets, blocks)
    weights = n_params * 2  # bf16
    state_bytes = 2 if optimizer == "adamw8bit" else 8  # two moments, 8-bit or fp32
    lora = n_lora * (4 + 4 + state_bytes)  # fp32 weights + grads + moments
    per = m.saved(tokens)
    kept = m.kept(tokens)
    if checkpointing:
        act = blocks * batch * kept + batch * per
    else:
        act = blocks * batch * per
    return Projection(tokens, batch, blocks, rank, checkpointing, optimizer, weights / GIB, lora / GIB, act / GIB,
                      RESERVE_GIB, per / GIB, kept / GIB)


_CACHE: dict = {}


def _disk_cache() -> "Path":
    from pathlib import Path

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cartoon-dataengine" / "block_memory.json"


def _key(rank: int, targets: str) -> str:
    from importlib.metadata import version

    return f"torch={version('torch')};diffusers={version('diffusers')};peft={version('peft')};r={rank};t={targets}"


def measured(rank: int = 16, targets: str = "linear") -> tuple[BlockMeasure, int, int]:
    """(fitted per-block measure, transformer params, LoRA params). A measurement, not a guess:
    about 8 s on 2 CPU cores the first time, then kept on disk per (torch, diffusers, peft,
    rank, targets), since the same library versions give the same bytes."""
    import json

    key = _key(rank, targets)
    if key in _CACHE:
        return _CACHE[key]
    path = _disk_cache()
    saved = {}
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    if key in saved:
        d = saved[key]
        _CACHE[key] = (BlockMeasure(**d["fit"]), int(d["n_params"]), int(d["n_lora"]))
        return _CACHE[key]
    m = fit(measure_block(rank=rank, targets=targets), rank=rank)
    res = (m, count_params(), lora_params(rank, targets))
    _CACHE[key] = res
    saved[key] = {"fit": asdict(m), "n_params": res[1], "n_lora": res[2]}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        from dataengine.atomic import atomic_text

        atomic_text(path, json.dumps(saved, indent=1))
    except OSError:
        pass  # a read-only home only means measuring again next time
    return res


def project_config(cfg, *, checkpointing: bool | None = None) -> Projection:
    m, n_params, n_lora = measured(cfg.rank, cfg.lora_targets)
    return project(m, frames=cfg.frames, height=cfg.height, width=cfg.width, batch=cfg.batch_size, rank=cfg.rank,
                   checkpointing=cfg.gradient_checkpointing if checkpointing is None else checkpointing,
                   optimizer=cfg.optimizer, targets=cfg.lora_targets, n_params=n_params, n_lora=n_lora)


def at_real_shape(cfg, run_dir) -> tuple:
    """(cfg, note): a toy or tiny run's config moved to the real model's default training shape,
    so an experiment's dry run projects the real 2B config; a real run's config as it is."""
    import dataclasses

    from .config import TrainConfig

    if cfg.model_spec.real_scale:
        return cfg, None
    real = TrainConfig()
    moved = dataclasses.replace(cfg, base_model=real.base_model, height=real.height, width=real.width,
                                frames=real.frames, batch_size=real.batch_size, buckets="square",
                                gradient_checkpointing=real.gradient_checkpointing, optimizer=real.optimizer)
    return moved, (f"{run_dir} trains the {cfg.base_model} model: projected for the real 2B at "
                   f"{moved.width}x{moved.height}x{moved.frames}, batch {moved.batch_size}")


def describe(p: Projection) -> str:
    fits = ", ".join(f"{g} GB {'fits' if p.fits(g) else 'OOM'}" for g in GPU_SIZES_GB)
    return (f"projected GPU peak for the real 2B transformer: {p.total_gib:.1f} GiB "
            f"(weights {p.weights_gib:.1f} + LoRA/optimizer {p.lora_gib:.2f} + activations {p.activations_gib:.1f} "
            f"+ reserve {p.reserve_gib:.1f}); {p.tokens} tokens/sample x batch {p.batch}, "
            f"gradient checkpointing {'on' if p.checkpointing else 'off'}; {fits}")
