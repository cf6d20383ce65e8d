"""LoRA on the SANA-Video transformer with peft; saved in diffusers format.

`linear` targets every nn.Linear of the transformer (attention q/k/v/out, cross-attention,
timestep/caption projections, the output projection). SANA-Video's feed-forward blocks are
convolutions (GLUMBTempConv: conv_inverted 1x1, conv_depth 3x3 depthwise, conv_point 1x1,
conv_temp temporal): `linear+conv` adds the 1x1 and temporal ones, which hold most weights.
The depthwise conv is never targeted (LoRA on grouped convs is not supported by peft).
"""

from __future__ import annotations

import json
from pathlib import Path

CONV_TARGETS = ("conv_inverted", "conv_point", "conv_temp")
WEIGHTS_NAME = "pytorch_lora_weights.safetensors"


def target_modules(transformer, targets: str = "linear") -> list[str]:
    import torch.nn as nn

    names = []
    for name, mod in transformer.named_modules():
        if isinstance(mod, nn.Linear):
            names.append(name)
        elif targets == "linear+conv" and isinstance(mod, nn.Conv2d) and name.split(".")[-1] in CONV_TARGETS:
            names.append(name)
    if not names:
        raise ValueError("no LoRA target modules found in the transformer")
    return names


def add_lora(transformer, *, rank: int, alpha: float, dropout: float, targets: str, seed: int = 0):
    import torch
    from peft import LoraConfig

    cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, init_lora_weights=True,
                     target_modules=target_modules(transformer, targets))
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # LoRA A init is random: make it a function of the seed
        transformer.add_adapter(cfg)
    return cfg


def trainable_parameters(model):
    return [p for p in model.parameters() if p.requires_grad]


def lora_state_dict(transformer) -> dict:
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().to("cpu").contiguous() for k, v in get_peft_model_state_dict(transformer).items()}


def save_lora(out_dir: str | Path, transformer, metadata: dict) -> Path:
    """pytorch_lora_weights.safetensors (diffusers keys, `transformer.` prefix) + lora_metadata.json."""
    import torch
    from diffusers import SanaVideoPipeline

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sd = {k: v.to(torch.float32) for k, v in lora_state_dict(transformer).items()}
    cfg = transformer.peft_config["default"]
    adapter_meta = {"r": cfg.r, "lora_alpha": cfg.lora_alpha, "target_modules": sorted(cfg.target_modules),
                    "lora_dropout": cfg.lora_dropout}
    SanaVideoPipeline.save_lora_weights(out_dir, transformer_lora_layers=sd, weight_name=WEIGHTS_NAME,
                                        transformer_lora_adapter_metadata=adapter_meta)
    (out_dir / "lora_metadata.json").write_text(json.dumps({**metadata, **adapter_meta}, indent=2, sort_keys=True))
    return out_dir / WEIGHTS_NAME


def load_lora_into(transformer, state: dict) -> None:
    """Load a peft-format (no prefix) LoRA state dict into an adapted transformer (for resume)."""
    from peft.utils import set_peft_model_state_dict

    res = set_peft_model_state_dict(transformer, state)
    unexpected = getattr(res, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"LoRA checkpoint has unexpected keys, e.g. {unexpected[:3]}")


class NonFiniteLoRA(ValueError):
    """A LoRA file holding inf/NaN weights (a diverged run): generating with it gives black video."""


def check_finite(path) -> None:
    """Refuse a LoRA file with any non-finite weight, naming how many tensors are bad."""
    import torch
    from safetensors.torch import load_file

    sd = load_file(str(path))
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise NonFiniteLoRA(f"{path} holds non-finite weights in {len(bad)} of {len(sd)} tensors (e.g. {bad[0]}): "
                            "it comes from a diverged run; use an earlier checkpoint or retrain with a lower --lr")
