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
