"""From CLI options to a run folder: resolve the config, freeze the manifest, record the run in the
catalog, train, and record the outcome. Nothing here loads a model until the manifest is on disk."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .config import ConfigError, TrainConfig
from .data import DataError, Manifest, build_manifest, select_rows
from .presets import PRESETS


class RunError(Exception):
    pass


def _rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))


def resolve_config(query, preset, overrides) -> TrainConfig:
    values = dict(PRESETS[preset]()) if preset else {}
    values.update(overrides)
    values["query"] = query
    values["preset"] = preset
    try:
        return TrainConfig(**values)
    except ConfigError as e:
        raise RunError(str(e)) from e


def default_name(cfg: TrainConfig) -> str:
    return cfg.name or f"r{cfg.rank}-lr{cfg.lr:g}-{time.strftime('%Y%m%d-%H%M%S')}"


def record_start(cfg: TrainConfig, run_id: str, manifest: Manifest) -> None:
    from catalog import db

    con = db.connect(cfg.catalog)
    try:
        with db.transaction(con):
            db.start_run(con, "train", cfg.to_dict(), run_id=run_id)
            rows = {(w.clip_id, w.role): w.prompt for w in manifest.windows}
            con.executemany("INSERT OR IGNORE INTO run_clips (run_id, clip_id, role, prompt) VALUES (?, ?, ?, ?)",
                            [[run_id, c, r, p] for (c, r), p in rows.items()])
    finally:
        con.close()


def record_end(cfg: TrainConfig, run_id: str, counts: dict, ok: bool, echo) -> None:
    from catalog import db

    try:
        con = db.connect(cfg.catalog)
    except Exception as e:  # the run's folder is the source of truth; the catalog record is a convenience
        echo(f"warning: could not record the run's end in the catalog: {e}", err=True)
        return
    try:
        db.finish_run(con, db.RunRecord(run_id, "train"), counts, ok)
    finally:
        con.close()


def dry_run_report(cfg: TrainConfig) -> list[str]:
    """The sigma distribution the run trains on, and its projected GPU memory (train.memory)."""
    from . import flow

    lines = flow.sigma_text(flow.sigma_stats(cfg.flow_shift, mode=cfg.timestep_sampling, mean=cfg.logit_mean,
                                             std=cfg.logit_std))
    lines.append(f"validation samples with flow shift {cfg.validation_flow_shift:g}")
    if cfg.is_tiny:
        lines.append("memory projection: skipped (the tiny model is not the real 2B transformer)")
        return lines
    from .memory import describe, project_config

    lines.append("measuring the real SANA-Video block's activations on the CPU (~10 s)...")
    p = project_config(cfg)
    lines.append(describe(p))
    if not cfg.gradient_checkpointing:
        lines.append(describe(project_config(cfg, checkpointing=True)).replace("projected", "with checkpointing:"))
    try:
        import torch

        if torch.cuda.is_available():
            total = torch.cuda.get_device_properties(0).total_memory
            if p.total_gib * 2**30 > total:
                lines.append(f"warning: projected {p.total_gib:.1f} GiB exceeds this GPU's {total / 2**30:.1f} GiB")
    except Exception:  # noqa: BLE001 - a broken CUDA setup must not break a dry run
        pass
    return lines


def write_sigma_plot(cfg: TrainConfig, out: Path) -> None:
    from . import flow

    shifts = {"this run": cfg.flow_shift}
    for label, sh in (("NVIDIA training", 3.0), ("inference", 8.0), ("no shift", 1.0)):
        if sh not in shifts.values():
            shifts[label] = sh
    flow.plot_sigmas(out / "sigma_distribution.png", shifts, mode=cfg.timestep_sampling, mean=cfg.logit_mean,
                     std=cfg.logit_std)


def start_training(*, query, preset, overrides, output_dir, resume, dry_run, progress, echo) -> int:
    from catalog import db

    if resume:
        if not output_dir:
            raise RunError("--resume needs --output-dir (the run folder to continue)")
        out = Path(output_dir)
        if not (out / "config.json").exists():
            raise RunError(f"{out} is not a run folder (no config.json)")
        cfg = TrainConfig.load(out / "config.json")
        if "max_steps" in overrides:  # extending a run is the one change a resume allows
            cfg.max_steps = overrides["max_steps"]
        manifest = Manifest.read(out / "manifest.jsonl")
        run_id = json.loads((out / "run.json").read_text())["run_id"]
    elif _rank() != 0:
        # Other DDP ranks never touch the catalog (DuckDB's single-writer lock): they wait for rank 0
        # to freeze the run folder and read the same config and manifest from it.
        if not output_dir:
            raise RunError("under torchrun / accelerate launch, pass --output-dir so every rank finds the run")
        out = Path(output_dir)
        for _ in range(3000):
            if (out / "run.json").exists():
                break
            time.sleep(0.1)
        else:
            raise RunError(f"rank {_rank()}: rank 0 never created {out}/run.json")
        cfg = TrainConfig.load(out / "config.json")
        manifest = Manifest.read(out / "manifest.jsonl")
        run_id = json.loads((out / "run.json").read_text())["run_id"]
    else:
        cfg = resolve_config(query, preset, overrides)
        cfg.catalog = str(db.resolve_path(cfg.catalog))
        try:
            manifest = build_manifest(cfg, select_rows(cfg))
        except DataError as e:
            raise RunError(str(e)) from e
        cfg.name = default_name(cfg)
        out = Path(output_dir or Path("runs") / cfg.name)
        cfg.output_dir = str(out)
        echo(manifest.summary())
        ex = [w.prompt for w in manifest.windows[:3]]
        for p in dict.fromkeys(ex):
            echo(f"  prompt: {p}")
        if dry_run:
            for line in dry_run_report(cfg):
                echo(line)
            echo(f"dry run: would write {out}/ (manifest, config, LoRA, gallery); no model loaded")
            return 0
        if out.exists() and any(out.iterdir()):
            raise RunError(f"{out} already holds a run; pass --resume latest to continue it, or choose "
                           "another --output-dir / --name")
        run_id = f"train-{cfg.name}"
        out.mkdir(parents=True, exist_ok=True)
        manifest.write(out / "manifest.jsonl")
        cfg.save(out / "config.json")
        write_sigma_plot(cfg, out)
        record_start(cfg, run_id, manifest)
        (out / "run.json").write_text(json.dumps({"run_id": run_id, "catalog": cfg.catalog}, indent=1))
    from catalog.db import cache_dir

    from .loop import TrainError, train
    from .models import ModelLoadError

    cache_root = cache_dir(cfg.catalog) / "train"
    try:
        res = train(cfg, manifest, out, cache_root=cache_root, resume=resume, progress=progress)
    except (TrainError, ModelLoadError) as e:
        if _rank() == 0:
            record_end(cfg, run_id, {"error": str(e)}, False, echo)
        raise RunError(str(e)) from e
    if _rank() == 0:
        counts = {"steps": res.steps, "skipped_nonfinite": res.skipped_nonfinite, "final_loss": res.final_loss,
                  "windows": len(manifest.windows)}
        record_end(cfg, run_id, counts, res.lora_path is not None, echo)
        echo(f"trained {res.steps} steps; final loss {res.final_loss if res.final_loss is not None else 'n/a'}; "
             f"skipped {res.skipped_nonfinite} non-finite")
        if res.lora_path:
            echo(f"LoRA: {res.lora_path}")
        if (out / "gallery.md").exists():
            echo(f"gallery: {out / 'gallery.md'} (and gallery.html)")
        else:
            echo("no gallery: validation is off (--validation-every 0)")
    return 0
