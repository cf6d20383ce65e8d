"""Distillation of a finished run (the teacher: its base model plus its style LoRA).

Both write a normal diffusers LoRA that applies on top of the teacher's own LoRA:
`pipe.load_lora_weights(style, adapter_name="style")`, `pipe.load_lora_weights(student,
adapter_name="student")`, `pipe.set_adapters(["style", "student"])`. During training the style
LoRA is fused into the base weights (the same function, as plain weights), so the teacher is the
model with the new adapter switched off, and the student the same model with it on.

**Guidance distillation** (`train distill-guidance RUN`): the student learns, in one conditional
pass, the teacher's classifier-free-guided velocity `v_u + s (v_c - v_u)` at the run's CFG scale,
on the run's own clips noised at the loop's sigmas. Sampling then needs one forward pass per step
instead of two (Meng et al., "On distillation of guided diffusion models", 2023, first stage).

**Step distillation** (`train distill-steps RUN --steps 4`) by rectified-flow *reflow* (Liu et
al., "Flow straight and fast", 2023; the recipe InstaFlow used for text-to-image): the teacher
samples each training prompt from fixed noises with CFG at `--teacher-steps` (32), and the
student learns the straight path from each noise to the teacher's sample, `x_t = (1 - s) x_T +
s z` with velocity `z - x_T`. Straight paths are what few Euler steps integrate exactly, so the
student samples in `--steps` Euler steps without CFG. Why reflow: SANA-Video is itself a
rectified-flow model, so reflow is the same loss the loop already trains (only the pairs change),
it needs no extra network (sCM/SANA-Sprint and rCM need a discriminator or JVPs through the
transformer, which peft LoRA layers and gradient checkpointing do not give cheaply), no
step-size input (shortcut models change the architecture) and no chain of rounds (progressive
distillation). Its cost is generating the pairs: `--pairs` per training window, at `--teacher-steps`
x 2 forward passes each.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from . import flow
from .objectives import Objective, predict


def fuse_lora_file(comps, lora_file: Path) -> None:
    """Merge a diffusers LoRA into comps.transformer's weights (the teacher, as plain weights)."""
    from .models import ModelLoadError
    from .runfolder import ExperimentError, load_lora

    pipe = comps.pipeline()
    try:
        load_lora(pipe, lora_file, "teacher", "the run's base model")
    except ExperimentError as e:  # the loop turns a model that cannot load into the run's one-line failure
        raise ModelLoadError(str(e)) from e
    pipe.fuse_lora(adapter_names=["teacher"], lora_scale=1.0)
    pipe.unload_lora_weights()


class _Teacher:
    """The fused base with the student's adapter off, without gradients."""

    def __init__(self, transformer):
        self.t = transformer

    def __enter__(self):
        import torch

        self._grad = torch.no_grad()
        self._grad.__enter__()
        self.t.disable_adapters()
        return self.t

    def __exit__(self, *exc):
        self.t.enable_adapters()
        self._grad.__exit__(*exc)
        return False


class GuidanceDistillation(Objective):
    name = "guidance_distillation"
    caption_dropout = 0.0  # the student is always conditional

    def __init__(self, teacher_lora: Path, scale: float):
        self.teacher_lora, self.scale = Path(teacher_lora), float(scale)

    def prepare_base(self, comps) -> None:
        fuse_lora_file(comps, self.teacher_lora)

    def bind(self, run) -> None:
        self.teacher, self.null = run.unwrapped, run.null

    def per_sample(self, model, batch, x0, noise, sigmas, weight_dtype, device):
        xt = flow.noisy(x0, noise, sigmas)
        n = x0.shape[0]
        ne, nm = self.null["embeds"][None].expand(n, *self.null["embeds"].shape), \
            self.null["mask"][None].expand(n, *self.null["mask"].shape)
        with _Teacher(self.teacher) as t:
            vc = predict(t, xt, batch["embeds"], batch["mask"], sigmas, weight_dtype, device).float()
            vu = predict(t, xt, ne, nm, sigmas, weight_dtype, device).float()
            target = vu + self.scale * (vc - vu)
        pred = predict(model, xt, batch["embeds"], batch["mask"], sigmas, weight_dtype, device)
        return flow.per_sample_loss(pred, target)

    def metadata(self) -> dict:
        return {"objective": self.name, "distilled_cfg": self.scale, "teacher_lora": str(self.teacher_lora)}


PAIR_BATCH = 16  # teacher samples generated together
REFERENCE_STEPS = 32  # the teacher's own output a student is measured against


def _seed(key: str, k: int) -> int:
    return int(hashlib.sha1(f"{key}#{k}".encode()).hexdigest()[:8], 16)


class Reflow(Objective):
    name = "reflow"
    caption_dropout = 0.0

    def __init__(self, teacher_lora: Path, cfg_scale: float, teacher_steps: int, pairs: int, steps: int):
        self.teacher_lora, self.cfg_scale = Path(teacher_lora), float(cfg_scale)
        self.teacher_steps, self.pairs, self.steps = int(teacher_steps), int(pairs), int(steps)
        self.table: dict[str, list] = {}

    def prepare_base(self, comps) -> None:
        fuse_lora_file(comps, self.teacher_lora)

    def bind(self, run) -> None:
        """The (noise, teacher sample) pairs of every training window, made once and kept in the
        run folder (a resumed run reads them back)."""
        import torch

        path = run.out_dir / "reflow_pairs.pt"
        if path.exists():
            self.table = torch.load(path, weights_only=True)
            return
        pipe = run.comps.pipeline()
        pipe.set_progress_bar_config(disable=True)
        jobs = []  # (shape, key, k, text) for every pair, batched by latent shape
        by_key = {w.key: w for w in run.train_w}  # one lookup per window, not a scan
        bad = run.cache.ensure(list(by_key.values()), run.device, run.cache_stats)  # every window's latent
        run.bad_windows |= bad
        for key in sorted(k for k in by_key if k not in run.bad_windows):
            w = by_key[key]
            shape = tuple(_latent(run, w).shape)
            jobs += [(shape, key, k, _text(run, w.prompt)) for k in range(self.pairs)]
        jobs.sort(key=lambda j: (j[0], j[1], j[2]))
        made: dict[str, list] = {}
        with _Teacher(run.unwrapped):
            for part in same_shape_batches(jobs, PAIR_BATCH):
                z = torch.stack([torch.randn(j[0], generator=torch.Generator().manual_seed(_seed(j[1], j[2])))
                                 for j in part])
                text = (torch.stack([j[3][0] for j in part]), torch.stack([j[3][1] for j in part]))
                x = sample_latents(pipe, text, run.null_pair, z, cfg_scale=self.cfg_scale,
                                   steps=self.teacher_steps, cfg=run.cfg, device=run.device)
                for j, zz, xx in zip(part, z, x.float().cpu()):
                    made.setdefault(j[1], []).append((j[2], torch.stack([zz, xx])))
        self.table = {k: torch.stack([p for _, p in sorted(v, key=lambda t: t[0])]) for k, v in made.items()}
        if run.acc.is_main_process:
            from dataengine.atomic import atomic_write

            with atomic_write(path, "wb") as f:
                torch.save(self.table, f)

    def per_sample(self, model, batch, x0, noise, sigmas, weight_dtype, device):
        import torch

        # which of the window's pairs: a function of the loop's own noise draw, so a resumed run
        # makes the same choices
        pick = [int(abs(float(noise[i].flatten()[0])) * 1e6) % self.pairs for i in range(len(batch["keys"]))]
        pairs = torch.stack([self.table[k][j] for k, j in zip(batch["keys"], pick)]).to(device)
        z, xt_end = pairs[:, 0], pairs[:, 1]
        xt = flow.noisy(xt_end, z, sigmas)
        pred = predict(model, xt, batch["embeds"], batch["mask"], sigmas, weight_dtype, device)
        return flow.per_sample_loss(pred, flow.target(xt_end, z))

    def metadata(self) -> dict:
        return {"objective": self.name, "student_steps": self.steps, "teacher_steps": self.teacher_steps,
                "distilled_cfg": self.cfg_scale, "pairs_per_window": self.pairs, "teacher_lora": str(self.teacher_lora)}


def same_shape_batches(jobs: list, size: int) -> list[list]:
    """`jobs` (shape first in each), sorted by shape, cut into batches of at most `size` that each
    hold one shape: a batch is stacked into one tensor. (Cutting every `size` jobs and then
    splitting off "the first shape and the rest" failed when a cut spanned three shapes, as a
    bucketed run with a small middle bucket gives.)"""
    out: list[list] = []
    for j in jobs:
        if out and out[-1][0][0] == j[0] and len(out[-1]) < size:
            out[-1].append(j)
        else:
            out.append([j])
    return out


def _latent(run, w):
    from .cache import load

    return load(run.cache.latent_path(w))["latents"]


def _text(run, prompt: str) -> tuple:
    from .cache import load

    d = load(run.cache.text_path(prompt))
    return d["embeds"], d["mask"]


def sample_latents(pipe, text: tuple, null: tuple, z, *, cfg_scale: float, steps: int, cfg, device, euler=False):
    """The pipeline's latents (before the VAE) from the noise `z`, for cached text embeddings.
    `euler`: plain flow-matching Euler steps (a reflowed student's sampler) instead of the
    pipeline's own scheduler."""
    import torch

    sched = pipe.scheduler
    if euler:
        from diffusers import FlowMatchEulerDiscreteScheduler

        pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=cfg.validation_flow_shift)
    try:
        pe, pm = text
        if pe.ndim == 2:  # one prompt
            pe, pm = pe[None], pm[None]
        ne, nm = null
        ne, nm = ne[None].expand(len(pe), *ne.shape), nm[None].expand(len(pe), *nm.shape)
        with torch.no_grad():
            out = pipe(prompt=None, negative_prompt=None, prompt_embeds=pe.to(device),
                       prompt_attention_mask=pm.to(device), negative_prompt_embeds=ne.to(device),
                       negative_prompt_attention_mask=nm.to(device), guidance_scale=cfg_scale,
                       num_inference_steps=steps, height=cfg.height, width=cfg.width, frames=cfg.frames,
                       latents=z.to(device), use_resolution_binning=False, output_type="latent")
        return out.frames
    finally:
        pipe.scheduler = sched


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
    echo(f"guidance-distilled student: velocity distance to the teacher's CFG velocity {rec['student_to_cfg']:.4f}, "
         f"teacher's conditional pass alone {rec['cond_to_cfg']:.4f} (held-out clips, {len(rec['sigmas'])} sigmas)")
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
    echo(f"{steps}-step student: latent distance to the teacher's {REFERENCE_STEPS}-step output "
         f"{rec['student_to_teacher']:.4f}; the teacher itself at {steps} steps {rec['teacher_short_to_teacher']:.4f}")
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


def _heldout(ctx, n: int = 8) -> list[dict]:
    from .data import Manifest
    from .experiments.runctx import eval_items

    man = Manifest.read(ctx.out_dir / "manifest.jsonl")
    windows = [w for w in man.windows if w.role == "holdout"] or man.windows[:n]
    return eval_items(ctx, windows[:n])


def evaluate_guidance(run_dir: Path, student_lora: Path, scale: float, sigmas=(0.3, 0.6, 0.9)) -> dict:
    """Mean squared distance, on held-out clips at fixed noise, of (the student's conditional pass)
    and (the teacher's conditional pass alone) to the teacher's CFG velocity."""
    import torch

    ctx = student_pipeline(run_dir, student_lora)
    tr, dev = ctx.pipe.transformer, ctx.device
    dtype = next(tr.parameters()).dtype
    items = _heldout(ctx)
    null = _null(ctx)
    d_student, d_cond = [], []
    with torch.no_grad():
        for it in items:
            x0 = it["latents"][None].float()
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(_seed(it["key"], 0)))
            for s in sigmas:
                sig = torch.full((1,), s)
                xt = flow.noisy(x0, noise, sig)
                ctx.pipe.set_adapters(["style"], [1.0])
                vc = predict(tr, xt, it["embeds"][None], it["mask"][None], sig, dtype, dev).float()
                vu = predict(tr, xt, null[0][None], null[1][None], sig, dtype, dev).float()
                vcfg = vu + scale * (vc - vu)
                ctx.pipe.set_adapters(["style", "student"], [1.0, 1.0])
                vs = predict(tr, xt, it["embeds"][None], it["mask"][None], sig, dtype, dev).float()
                d_student.append(float(((vs - vcfg) ** 2).mean()))
                d_cond.append(float(((vc - vcfg) ** 2).mean()))
    return {"student_to_cfg": sum(d_student) / len(d_student), "cond_to_cfg": sum(d_cond) / len(d_cond),
            "scale": scale, "sigmas": list(sigmas), "clips": len(items), "lora": str(student_lora)}


def _null(ctx) -> tuple:
    """The empty prompt's embeddings from the run's cache (what training and validation used)."""
    from catalog.db import cache_dir

    from .cache import Cache, load

    cfg = ctx.cfg
    cache = Cache(cache_dir(cfg.catalog) / "train", ctx.comps, cfg.height, cfg.width, cfg.max_sequence_length)
    d = load(cache.null_path())
    return d["embeds"], d["mask"]


def evaluate_steps(run_dir: Path, student_lora: Path, steps: int, teacher_steps: int, seeds=(0, 1)) -> dict:
    """Latent distance to the teacher's own `teacher_steps` output from the same noise: the
    student at `steps` Euler steps without CFG, and the teacher at `steps` steps with its CFG."""
    import torch

    ctx = student_pipeline(run_dir, student_lora)
    pipe, dev, cfg = ctx.pipe, ctx.device, ctx.cfg
    pipe.set_progress_bar_config(disable=True)
    items = _heldout(ctx, n=4)
    null = _null(ctx)
    # every (held-out prompt, seed) in one batch per sampler, grouped by latent shape
    groups: dict[tuple, list] = {}
    for it in items:
        for seed in seeds:
            z = torch.randn(tuple(it["latents"].shape), generator=torch.Generator().manual_seed(10_000 + seed))
            groups.setdefault(tuple(it["latents"].shape), []).append((z, it["embeds"], it["mask"]))
    d_student, d_short = [], []
    for rows in groups.values():
        z = torch.stack([r[0] for r in rows])
        text = (torch.stack([r[1] for r in rows]), torch.stack([r[2] for r in rows]))
        pipe.set_adapters(["style"], [1.0])
        ref = sample_latents(pipe, text, null, z, cfg_scale=cfg.cfg, steps=teacher_steps, cfg=cfg, device=dev).float()
        short = sample_latents(pipe, text, null, z, cfg_scale=cfg.cfg, steps=steps, cfg=cfg, device=dev).float()
        pipe.set_adapters(["style", "student"], [1.0, 1.0])
        stu = sample_latents(pipe, text, null, z, cfg_scale=1.0, steps=steps, cfg=cfg, device=dev, euler=True).float()
        d_short += ((short - ref) ** 2).flatten(1).mean(1).tolist()
        d_student += ((stu - ref) ** 2).flatten(1).mean(1).tolist()
    return {"student_to_teacher": sum(d_student) / len(d_student),
            "teacher_short_to_teacher": sum(d_short) / len(d_short), "steps": steps, "teacher_steps": teacher_steps,
            "samples": len(d_student), "lora": str(student_lora)}


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
