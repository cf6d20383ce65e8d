"""Depth pruning of a finished run (`train prune RUN --drop K`), issue 23.

1. The run's style LoRA is fused into the base transformer (the teacher).
2. Each transformer block's importance is measured on the run's held-out windows as
   1 - cos(block input, block output), averaged over tokens, sigmas and windows: the block-importance
   measure of Minitron and of SANA-1.5's depth pruning. A block that barely turns its input is
   one the model can lose.
3. The K least important blocks are dropped (the config's num_layers follows) and the pruned model
   is saved as a diffusers pipeline folder `from_pretrained` loads, with `pruned.json` recording
   which blocks went and every figure.
4. Healing: a short LoRA run (`--heal-steps`) on the pruned folder, with the run's own query and
   settings, writes the healing LoRA beside it.

The same hooks measure the real 2B transformer on a GPU; `block_importance` needs only a
transformer and held-out items.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import numpy as np


def block_importance(transformer, items: list[dict], device, dtype) -> list[float]:
    """1 - cos(input, output) of every block, mean over tokens, eval sigmas and items."""
    import torch

    from ..validate import eval_loss

    blocks = transformer.transformer_blocks
    sums = [0.0] * len(blocks)
    counts = [0] * len(blocks)
    hooks = []

    def hook(i):
        def f(module, args, output):
            x = args[0]
            y = output[0] if isinstance(output, tuple) else output
            cos = torch.nn.functional.cosine_similarity(x.float().flatten(0, -2), y.float().flatten(0, -2), dim=-1)
            sums[i] += float((1 - cos).mean())
            counts[i] += 1
        return f

    for i, b in enumerate(blocks):
        hooks.append(b.register_forward_hook(hook(i)))
    try:
        eval_loss(transformer, items, device, dtype)
    finally:
        for h in hooks:
            h.remove()
    return [s / max(1, c) for s, c in zip(sums, counts)]


def drop_blocks(transformer, drop: list[int]):
    """A copy of the transformer without the given blocks (num_layers follows in its config)."""
    import torch

    t = copy.deepcopy(transformer)
    keep = [b for i, b in enumerate(t.transformer_blocks) if i not in set(drop)]
    t.transformer_blocks = torch.nn.ModuleList(keep)
    t.register_to_config(num_layers=len(keep))
    return t


def prune_run(run_dir, *, drop: int, heal_steps: int = 100, random_draws: int = 4, device: str | None = None,
              seed: int = 0, progress: bool = True, echo=print, resume: bool = False) -> dict:
    from ..validate import eval_loss
    from .runctx import ExperimentError, open_run

    from ..runfolder import ensure_writable, folder

    run_dir = folder(run_dir)
    ensure_writable(run_dir / "prune" / f"drop{drop}")
    ctx = open_run(run_dir, device=device)
    pipe, cfg = ctx.pipe, ctx.cfg
    n = len(pipe.transformer.transformer_blocks)
    if not 1 <= drop < n:
        raise ExperimentError(f"--drop must be between 1 and {n - 1} (the transformer has {n} blocks)")
    pipe.fuse_lora(adapter_names=["lora"])  # the teacher: base plus the style LoRA, as plain weights
    pipe.unload_lora_weights()
    teacher = pipe.transformer
    dtype = next(teacher.parameters()).dtype
    from . import evalset

    es, items = evalset.window_items(ctx)  # the run's evaluation set: what every compression command scores on
    if not items:
        raise ExperimentError("no held-out windows to measure on")
    echo(es.describe())
    imp = block_importance(teacher, items, ctx.device, dtype)
    order = [int(i) for i in np.argsort(imp)]
    least = sorted(order[:drop])

    def loss_of(t) -> float:
        return float(eval_loss(t, items, ctx.device, dtype, batch=ctx.cfg.batch_size)["eval_loss"])

    full = loss_of(teacher)
    pruned = drop_blocks(teacher, least)
    pruned_loss = loss_of(pruned)
    rng = random.Random(seed)
    rand = []
    for _ in range(random_draws):
        r = sorted(rng.sample(range(n), drop))
        rand.append({"dropped": r, "eval_loss": loss_of(drop_blocks(teacher, r))})
    echo(f"block importance (1 - cos): " + ", ".join(f"{i}: {v:.4f}" for i, v in enumerate(imp)))
    echo(f"eval loss: full {full:.4f}; without the {drop} least important blocks {least}: {pruned_loss:.4f}; "
         f"without {drop} random blocks: " + ", ".join(f"{r['eval_loss']:.4f}" for r in rand))
    out = run_dir / "prune" / f"drop{drop}"
    model_dir = out / "model"
    pipe.transformer = pruned
    pipe.save_pretrained(model_dir, safe_serialization=True)
    record = {"run": str(run_dir), "evaluation_set": es.as_json(), "blocks": n, "dropped": least, "importance": imp,
              "eval_loss_full": full, "eval_loss_pruned": pruned_loss, "random": rand,
              "params_full": sum(p.numel() for p in teacher.parameters()),
              "params_pruned": sum(p.numel() for p in pruned.parameters())}
    maker = {"command": "train prune", "resume": f"train prune {run_dir} --drop {drop} --resume"}
    healed = heal(cfg, model_dir, out / "heal", heal_steps, progress, echo, resume=resume,
                  maker=maker) if heal_steps > 0 else None
    if healed is not None:
        from ..generate import load_pipeline

        hp, _ = load_pipeline(str(model_dir), healed, 1.0, ctx.device)
        record["eval_loss_healed"] = loss_of(hp.transformer)
        record["heal_lora"] = str(healed)
        echo(f"eval loss after {heal_steps} healing steps: {record['eval_loss_healed']:.4f}")
    (out / "pruned.json").write_text(json.dumps(record, indent=1) + "\n")
    importance_plot(imp, least, out / "importance.png")
    (model_dir / "PRUNED").write_text(json.dumps({"dropped": least, "from_blocks": n}) + "\n")
    return record


def heal(cfg, model_dir: Path, out_dir: Path, steps: int, progress: bool, echo, *, resume: bool = False,
         maker: dict | None = None) -> Path | None:
    """A short LoRA run on the pruned model with the run's own query and settings (continued from
    its newest checkpoint with `resume`)."""
    from ..lora import WEIGHTS_NAME
    from ..run import start_training

    quiet = lambda *a, **k: None  # noqa: E731
    if resume and (out_dir / "config.json").exists():
        rc = start_training(query=None, preset=None, overrides={"max_steps": steps}, output_dir=str(out_dir),
                            resume="latest", dry_run=False, progress=progress, echo=quiet, maker=maker)
        p = out_dir / WEIGHTS_NAME
        return p if rc == 0 and p.exists() else None

    keep = {k: v for k, v in cfg.to_dict().items() if k not in ("query", "preset", "config_file", "output_dir",
                                                               "name", "base_model", "max_steps")}
    keep.update(base_model=str(model_dir), max_steps=steps, validation_every=0,
                checkpoint_every=min(cfg.checkpoint_every or steps, steps),
                warmup_steps=min(cfg.warmup_steps, max(1, steps // 10)))
    rc = start_training(query=cfg.query, preset=None, overrides=keep, output_dir=str(out_dir), resume=None,
                        dry_run=False, progress=progress, echo=quiet, maker=maker)
    p = out_dir / WEIGHTS_NAME
    return p if rc == 0 and p.exists() else None


def dry_run(run_dir, drop: int) -> list[str]:
    """The GPU memory of `train prune --drop K` on the real 2B config: the importance pass (the
    fused teacher, no gradients, one held-out window at a time) and the healing LoRA run on the
    pruned model (its blocks, parameters and LoRA counted at 20 - K blocks)."""
    from ..config import TrainConfig
    from ..memory import (GIB, REAL_TRANSFORMER, RESERVE_GIB, at_real_shape, count_params, describe, lora_params,
                          measured, project, tokens_for)
    from .runctx import ExperimentError

    run_dir = Path(run_dir)
    from ..runfolder import read_config

    cfg, note = at_real_shape(read_config(run_dir), run_dir)
    blocks = REAL_TRANSFORMER.get("num_layers", 20)
    if not 1 <= drop < blocks:
        raise ExperimentError(f"--drop must be between 1 and {blocks - 1} (the real transformer has {blocks} blocks)")
    m, n_params, _ = measured(cfg.rank, cfg.lora_targets)
    keep = blocks - drop
    per = m.saved(tokens_for(cfg.frames, cfg.height, cfg.width))
    lines = [note] if note else []
    lines.append(f"importance pass: the fused teacher without gradients, one window at a time: weights "
                 f"{n_params * 2 / GIB:.1f} + one block's activations {per / GIB:.2f} + reserve {RESERVE_GIB:.1f} "
                 f"= {(n_params * 2 + per) / GIB + RESERVE_GIB:.1f} GiB")
    kept = count_params(keep)
    lines.append(f"pruned model: {keep} of {blocks} blocks, {kept:,} of {n_params:,} parameters")
    heal = project(m, frames=cfg.frames, height=cfg.height, width=cfg.width, batch=cfg.batch_size, rank=cfg.rank,
                   checkpointing=bool(cfg.gradient_checkpointing), optimizer=cfg.optimizer, targets=cfg.lora_targets,
                   blocks=keep, n_params=kept, n_lora=lora_params(cfg.rank, cfg.lora_targets, keep))
    lines.append("healing run: " + describe(heal))
    return lines


def importance_plot(importance: list[float], dropped: list[int], path: Path) -> None:
    """A bar per block: 1 - cos(block input, block output); the dropped ones in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(importance) + 2), 3.2))
    ax.bar(range(len(importance)), importance, color=["#d33" if i in dropped else "#2a6fdb"
                                                      for i in range(len(importance))])
    ax.set(xlabel="block", ylabel="1 - cos(input, output)", title=f"block importance (red: dropped {dropped})")
    ax.set_xticks(range(len(importance)))
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
