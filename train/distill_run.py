"""The distillation commands (`train distill-guidance`, `train distill-steps`), the students'
evaluation against the teacher, and their --dry-run projection. The objectives they train are in
train.distill."""

from __future__ import annotations

import json
from pathlib import Path

from . import flow
from .distill import PAIR_BATCH, REFERENCE_STEPS, GuidanceDistillation, Reflow
from .objectives import Objective, predict


# ---- the commands ------------------------------------------------------------------------------
def _distill_run(run_dir: Path, out_dir: Path, objective: Objective, train_steps: int, lr: float | None,
                 progress: bool, echo, *, resume: bool, maker: dict) -> Path:
    """The student's LoRA run in `out_dir`, or its continuation (`resume`): the same objective
    with the settings it was started with (train.run refuses anything else), from its newest
    checkpoint."""
    from .config import TrainConfig
    from .lora import WEIGHTS_NAME
    from .run import RunError, start_training

    cfg = TrainConfig.load(run_dir / "config.json")
    if resume:
        if not (out_dir / "config.json").exists():
            raise RunError(f"nothing to resume in {out_dir}: run `{maker['command']} {run_dir}` without --resume")
        rc = start_training(query=None, preset=None, overrides={"max_steps": train_steps}, output_dir=str(out_dir),
                            resume="latest", dry_run=False, progress=progress, echo=echo, objective=objective,
                            maker=maker)
    else:
        keep = {k: v for k, v in cfg.to_dict().items() if k not in ("query", "preset", "config_file", "output_dir",
                                                                   "name", "max_steps")}
        # checkpoints as often as the teacher's run kept them (a kill -9 loses at most that much)
        keep.update(max_steps=train_steps, validation_every=0,
                    checkpoint_every=min(cfg.checkpoint_every or train_steps, train_steps),
                    warmup_steps=min(cfg.warmup_steps, max(1, train_steps // 10)))
        if lr is not None:
            keep["lr"] = lr
        rc = start_training(query=cfg.query, preset=None, overrides=keep, output_dir=str(out_dir), resume=None,
                            dry_run=False, progress=progress, echo=echo, objective=objective, maker=maker)
    p = out_dir / WEIGHTS_NAME
    if rc != 0 or not p.exists():
        from .experiments.runctx import ExperimentError

        raise ExperimentError(f"the distillation run in {out_dir} did not finish")
    return p


def _teacher_lora(run_dir: Path) -> Path:
    from . import runfolder
    from .lora import WEIGHTS_NAME

    runfolder.read_config(run_dir)
    lora = runfolder.check_lora(Path(run_dir) / WEIGHTS_NAME)
    runfolder.read_manifest(run_dir)
    return lora


def distill_guidance(run_dir, *, scale: float | None = None, train_steps: int = 200, lr: float | None = None,
                     progress: bool = True, echo=print, resume: bool = False) -> dict:
    from .config import TrainConfig

    from . import runfolder

    run_dir = Path(run_dir)
    teacher = _teacher_lora(run_dir)
    cfg = TrainConfig.load(run_dir / "config.json")
    scale = cfg.cfg if scale is None else scale
    out = run_dir / "distill" / "guidance"
    runfolder.ensure_writable(out.parent)  # before the teacher loads, not after the student trained
    maker = {"command": "train distill-guidance",
             "resume": f"train distill-guidance {run_dir} --resume" + (f" --scale {scale:g}" if scale != cfg.cfg else "")}
    lora = _distill_run(run_dir, out, GuidanceDistillation(teacher, scale), train_steps, lr, progress, echo,
                        resume=resume, maker=maker)
    rec = evaluate_guidance(run_dir, lora, scale)
    (out / "distill.json").write_text(json.dumps(rec, indent=1) + "\n")
    lo, hi = rec["student_to_cfg_interval"]
    clo, chi = rec["cond_to_cfg_interval"]
    echo(f"guidance-distilled student: velocity distance to the teacher's CFG velocity {rec['student_to_cfg']:.4f} "
         f"[{lo:.4f}, {hi:.4f}], teacher's conditional pass alone {rec['cond_to_cfg']:.4f} [{clo:.4f}, {chi:.4f}]: "
         f"{rec['student_vs_cond']['verdict']} ({rec['samples']} paired samples of the run's evaluation set, "
         f"{len(rec['sigmas'])} sigmas each)")
    echo(f"LoRA: {lora} (load it on top of {teacher})")
    return rec


def distill_steps(run_dir, *, steps: int = 4, teacher_steps: int = 32, pairs: int = 4, train_steps: int = 300,
                  lr: float | None = None, progress: bool = True, echo=print, resume: bool = False) -> dict:
    from .config import TrainConfig

    from . import runfolder

    run_dir = Path(run_dir)
    teacher = _teacher_lora(run_dir)
    cfg = TrainConfig.load(run_dir / "config.json")
    out = run_dir / "distill" / f"steps{steps}"
    runfolder.ensure_writable(out.parent)  # before the teacher loads, not after the student trained
    obj = Reflow(teacher, cfg.cfg, teacher_steps, pairs, steps)
    maker = {"command": "train distill-steps",
             "resume": f"train distill-steps {run_dir} --steps {steps} --teacher-steps {teacher_steps} --pairs {pairs} "
                       "--resume"}
    lora = _distill_run(run_dir, out, obj, train_steps, lr, progress, echo, resume=resume, maker=maker)
    rec = evaluate_steps(run_dir, lora, steps, REFERENCE_STEPS)
    rec["pair_teacher_steps"] = teacher_steps
    (out / "distill.json").write_text(json.dumps(rec, indent=1) + "\n")
    lo, hi = rec["student_to_teacher_interval"]
    tlo, thi = rec["teacher_short_to_teacher_interval"]
    c = rec["student_vs_teacher_short"]
    echo(f"{steps}-step student: latent distance to the teacher's {REFERENCE_STEPS}-step output "
         f"{rec['student_to_teacher']:.4f} [{lo:.4f}, {hi:.4f}]; the teacher itself at {steps} steps "
         f"{rec['teacher_short_to_teacher']:.4f} [{tlo:.4f}, {thi:.4f}]: the student is {c['verdict']} "
         f"({rec['samples']} paired samples of the run's evaluation set; 95% intervals)")
    echo(f"LoRA: {lora} (load it on top of {teacher}; sample with {steps} Euler steps, guidance 1)")
    return rec


# ---- evaluation against the teacher --------------------------------------------------------------
def student_pipeline(run_dir: Path, student_lora: Path, device: str | None = None):
    """(pipeline with adapters "style" and "student" loaded through diffusers, RunCtx)."""
    from .experiments.runctx import open_run

    ctx = open_run(run_dir, device=device, adapter="style")
    from .runfolder import check_lora, load_lora

    load_lora(ctx.pipe, check_lora(student_lora), "student", ctx.cfg.base_model)
    return ctx


def _evaluation_set(ctx, prompts: bool = True):
    from .experiments import evalset
    from .runfolder import ExperimentError

    try:
        es = evalset.define(ctx.out_dir)
        wins, prompts = evalset.load_items(ctx, es, prompts)
    except evalset.EvalSetError as e:
        raise ExperimentError(str(e)) from e
    return es, wins, prompts


def evaluate_guidance(run_dir: Path, student_lora: Path, scale: float, sigmas=(0.3, 0.6, 0.9)) -> dict:
    """Mean squared distance, on the run's evaluation set (its held-out windows, each with the
    set's noises, at fixed sigmas), of (the student's conditional pass) and (the teacher's
    conditional pass alone) to the teacher's CFG velocity; paired per sample, with intervals."""
    import torch

    from .experiments import evalset
    from .experiments.uncertainty import compare, interval

    ctx = student_pipeline(run_dir, student_lora)
    tr, dev = ctx.pipe.transformer, ctx.device
    dtype = next(tr.parameters()).dtype
    es, wins, _ = _evaluation_set(ctx, prompts=False)
    null = _null(ctx)
    d_student, d_cond = [], []
    with torch.no_grad():
        for it, noise in evalset.noises(es, wins):
            x0 = it["latents"][None].float()
            ds, dc = [], []
            for s in sigmas:
                sig = torch.full((1,), s)
                xt = flow.noisy(x0, noise[None], sig)
                ctx.pipe.set_adapters(["style"], [1.0])
                vc = predict(tr, xt, it["embeds"][None], it["mask"][None], sig, dtype, dev).float()
                vu = predict(tr, xt, null[0][None], null[1][None], sig, dtype, dev).float()
                vcfg = vu + scale * (vc - vu)
                ctx.pipe.set_adapters(["style", "student"], [1.0, 1.0])
                vs = predict(tr, xt, it["embeds"][None], it["mask"][None], sig, dtype, dev).float()
                ds.append(float(((vs - vcfg) ** 2).mean()))
                dc.append(float(((vc - vcfg) ** 2).mean()))
            d_student.append(sum(ds) / len(ds))
            d_cond.append(sum(dc) / len(dc))
    (s_mean, *s_ci), (c_mean, *c_ci) = interval(d_student), interval(d_cond)  # one bootstrap each
    return {"student_to_cfg": s_mean, "cond_to_cfg": c_mean, "student_to_cfg_interval": s_ci,
            "cond_to_cfg_interval": c_ci,
            "student_vs_cond": compare(d_student, d_cond), "scale": scale, "sigmas": list(sigmas),
            "evaluation_set": es.as_json(), "samples": len(d_student), "lora": str(student_lora)}


def _null(ctx) -> tuple:
    """The empty prompt's embeddings from the run's cache (what training and validation used)."""
    from catalog.db import cache_dir

    from .cache import Cache, load

    cfg = ctx.cfg
    cache = Cache(cache_dir(cfg.catalog) / "train", ctx.comps, cfg.height, cfg.width, cfg.max_sequence_length)
    d = load(cache.null_path())
    return d["embeds"], d["mask"]


def evaluate_steps(run_dir: Path, student_lora: Path, steps: int, teacher_steps: int) -> dict:
    """Latent distance to the teacher's own `teacher_steps` output from the same noise, on the
    run's evaluation set (every window and prompt with each of its noises, sampled as `train study`
    samples it): the student at `steps` Euler steps without CFG, and the teacher at `steps` steps
    with its CFG; paired per sample, with intervals and a verdict."""
    from .experiments import evalset
    from .experiments.study_measure import sample_set
    from .experiments.uncertainty import compare, interval

    ctx = student_pipeline(run_dir, student_lora)
    pipe, dev, cfg = ctx.pipe, ctx.device, ctx.cfg
    pipe.set_progress_bar_config(disable=True)
    es, wins, prompts = _evaluation_set(ctx)
    samples = evalset.noises(es, wins + prompts)
    null = _null(ctx)
    pipe.set_adapters(["style"], [1.0])
    ref = sample_set(pipe, samples, null, cfg_scale=cfg.cfg, steps=teacher_steps, cfg=cfg, device=dev)[0]
    short = sample_set(pipe, samples, null, cfg_scale=cfg.cfg, steps=steps, cfg=cfg, device=dev)[0]
    pipe.set_adapters(["style", "student"], [1.0, 1.0])
    stu = sample_set(pipe, samples, null, cfg_scale=1.0, steps=steps, cfg=cfg, device=dev, euler=True)[0]
    d_short = ((short - ref) ** 2).flatten(1).mean(1).tolist()
    d_student = ((stu - ref) ** 2).flatten(1).mean(1).tolist()
    (s_mean, *s_ci), (t_mean, *t_ci) = interval(d_student), interval(d_short)  # one bootstrap each
    return {"student_to_teacher": s_mean, "teacher_short_to_teacher": t_mean, "student_to_teacher_interval": s_ci,
            "teacher_short_to_teacher_interval": t_ci,
            "student_vs_teacher_short": compare(d_student, d_short), "steps": steps, "teacher_steps": teacher_steps,
            "evaluation_set": es.as_json(), "samples": len(d_student), "lora": str(student_lora)}


# ---- --dry-run: memory on the real 2B config -------------------------------------------------------
def dry_run(run_dir, kind: str, *, pairs: int = 4, windows: int | None = None) -> list[str]:
    """What a distillation of RUN needs on the real 2B transformer, teacher and student together.

    The teacher is the student's own base weights with the run's LoRA fused in and the new
    adapter off, so the weights are counted once; its passes run without gradients, so they add
    one block's activations at a time, not a stored graph. A toy or tiny run is projected at the
    real model's default training shape."""
    from .config import TrainConfig
    from .memory import at_real_shape, describe, latent_shape, project_config

    run_dir = Path(run_dir)
    from .runfolder import read_config

    cfg, note = at_real_shape(read_config(run_dir), run_dir)
    lines = [note] if note else []
    p = project_config(cfg)
    passes = 2 if kind == "guidance" else 0
    teacher = passes and cfg.batch_size * p.per_block_sample_gib  # one block's activations at a time, no graph
    lines.append("student (the LoRA run): " + describe(p))
    if kind == "guidance":
        lines.append(f"teacher: the same weights (run LoRA fused); 2 passes per step without gradients add at most "
                     f"{teacher:.2f} GiB (one block's activations) -> peak {p.total_gib + teacher:.1f} GiB")
    else:
        c, t, h, w = (16, *latent_shape(cfg.frames, cfg.height, cfg.width))
        pair_gib = 2 * c * t * h * w * 4 / 2**30
        infer = 2 * PAIR_BATCH * p.per_block_sample_gib
        n = windows if windows is not None else _train_windows(run_dir)
        lines.append(f"teacher pairs: {PAIR_BATCH} prompts at a time with CFG (batch {2 * PAIR_BATCH}), without "
                     f"gradients: {p.weights_gib + infer + p.reserve_gib:.1f} GiB on the GPU before training starts")
        lines.append(f"pairs kept in host memory: {pairs} x {n} windows x {pair_gib * 1024:.1f} MiB = "
                     f"{pairs * n * pair_gib:.1f} GiB")
    return lines


def _train_windows(run_dir: Path) -> int:
    from .data import Manifest

    from .runfolder import read_manifest

    return sum(1 for w in read_manifest(run_dir).windows if w.role == "train")
