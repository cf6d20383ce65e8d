"""Presets are plain functions returning the overrides they stand for."""

from __future__ import annotations

from .config import REAL_BASE_MODEL


def seed_tomjerry() -> dict:
    """The original experiment's table, exactly (../shared/ORIGINAL_EXPERIMENT.md)."""
    return dict(base_model=REAL_BASE_MODEL, height=224, width=224, frames=81, fps=16.0, batch_size=8,
                optimizer="adamw", lr=2e-4, rank=16, alpha=32.0, lora_dropout=0.1, max_steps=10_000,
                lora_targets="linear", prompt_template="class", warmup_steps=0, lr_schedule="constant",
                validation_seed=69420, cfg=4.0,
                # not in the original table, but needed for it to run at all (issue #8): batch 8 x 4,116
                # tokens without checkpointing projects to ~190 GiB of activations
                gradient_checkpointing=True, flow_shift=3.0, validation_flow_shift=8.0)


def stability_lora64() -> dict:
    """The planned stability run: LoRA-64 at lr 1e-4 with warmup, 15k steps."""
    return dict(seed_tomjerry(), rank=64, alpha=128.0, lr=1e-4, warmup_steps=500, lr_schedule="cosine",
                max_steps=15_000)


def tiny() -> dict:
    """Smoke runs and tests on 2 CPU cores: a random tiny SANA-Video, 9 frames at 64x64."""
    return dict(base_model="tiny", height=64, width=64, frames=9, fps=16.0, batch_size=2, max_steps=4,
                rank=4, alpha=4.0, lora_dropout=0.0, mixed_precision="no", validation_every=2,
                gradient_checkpointing=False,
                validation_steps=2, checkpoint_every=2, holdout=1, max_sequence_length=300)


PRESETS = {"seed-tomjerry": seed_tomjerry, "stability-lora64": stability_lora64, "tiny": tiny}
