"""The training loop. Reads top to bottom: setup, build_cache (train.batches), adapt, resume_from,
validate, loop (step, checkpoint), finish. What the phases share is a Run (train.runstate). What a step minimises is the objective's (train.objectives).

accelerate owns device placement, mixed precision and DDP; the same code runs as `train ...`,
under `accelerate launch` on several GPUs, or under `torchrun` on CPU (gloo).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import resource
import signal
import time
from pathlib import Path

from dataengine import faults

from . import checkpoint as ckpt
from . import flow
from .batches import _load_batch, build_cache, cached_windows, record_encode_rate, write_cache_stats  # noqa: F401
from .config import TrainConfig
from .data import Manifest
from .lora import add_lora, load_lora_into, lora_state_dict, save_lora, trainable_parameters
from .objectives import FlowMatching, Objective, predict  # noqa: F401 - predict: for callers
from .order import BucketOrder, DataOrder, make_order  # noqa: F401 - re-exported
from .runstate import Diverged, Run, TrainError, TrainResult  # noqa: F401 - TrainError: for callers
from .steplog import StepLog, _is_tty

log = logging.getLogger(__name__)



def weights_finite(params) -> bool:
    """One device sync: are all trainable weights finite?"""
    import torch

    if not params:
        return True
    norms = torch._foreach_norm([p.detach() for p in params])
    return bool(torch.isfinite(torch.stack([n.float() for n in norms])).all())


def last_good_checkpoint(ckpt_root: Path) -> Path | None:
    cks = ckpt.list_checkpoints(ckpt_root)
    return cks[-1] if cks else None


def peak_memory_mb(device) -> float:
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _lr_scheduler(cfg: TrainConfig, optimizer):
    from diffusers.optimization import get_scheduler

    name = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[cfg.lr_schedule]
    return get_scheduler(name, optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.max_steps)


def _optimizer(cfg: TrainConfig, params, device):
    import torch

    if cfg.optimizer == "adamw8bit":
        if not str(device).startswith("cuda"):
            raise TrainError("--optimizer adamw8bit needs a CUDA GPU (bitsandbytes); use --optimizer adamw on CPU")
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def train(cfg: TrainConfig, manifest: Manifest, out_dir: Path, *, cache_root: Path, resume: str | None = None,
          progress: bool = True, clip_loss_sink=None, objective: Objective | None = None,
          lora_extra: dict | None = None) -> TrainResult:
    """Train a LoRA on `manifest`'s windows with `objective` (flow matching unless given).
    `clip_loss_sink(rows)` receives (clip_id, samples, mean loss, mean z) per clip on rank 0 at
    each checkpoint and at the end (train.clip_losses); its failures are logged, never raised."""
    objective = objective or FlowMatching()
    run = setup(cfg, out_dir)
    build_cache(run, manifest, cache_root, progress)
    objective.prepare_base(run.comps)
    adapt(run)
    resume_from(run, resume)
    objective.bind(run)
    run.losses_by_clip, run.trackers = _trackers(run, resume)
    if run.step == 0 and cfg.validation_every > 0:
        validate(run, 0)
    run.acc.wait_for_everyone()
    loop(run, objective, progress, clip_loss_sink)
    write_cache_stats(run.out_dir, run.acc.process_index, run.cache_stats)  # with what batches encoded
    if run.acc.is_main_process:
        record_encode_rate(cache_root, cfg, run.cache_stats)
    return finish(run, objective, clip_loss_sink, lora_extra or {})


# ---- setup: accelerator, precision, output folder -----------------------------------------------
def setup(cfg: TrainConfig, out_dir: Path) -> Run:
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    want_cuda = torch.cuda.is_available() and cfg.device != "cpu"
    mp = cfg.mixed_precision if want_cuda else "no"  # CPU runs fp32
    acc = Accelerator(mixed_precision=mp, cpu=not want_cuda,
                      log_with=None if cfg.report_to == "none" else
                      (["tensorboard", "wandb"] if cfg.report_to == "all" else [cfg.report_to]),
                      project_dir=str(out_dir))
    set_seed(cfg.seed)
    weight_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mp, torch.float32)
    return Run(cfg=cfg, out_dir=out_dir, acc=acc, device=acc.device, weight_dtype=weight_dtype, want_cuda=want_cuda)


# ---- adapt: LoRA on the transformer only; trainable params in fp32 -------------------------------
def adapt(run: Run) -> None:
    import torch

    cfg, acc = run.cfg, run.acc
    tr = run.comps.transformer
    tr.to(run.device)
    if run.weight_dtype != torch.float32:
        from .models import cast

        cast(tr, run.weight_dtype)
    add_lora(tr, rank=cfg.rank, alpha=cfg.alpha, dropout=cfg.lora_dropout, targets=cfg.lora_targets, seed=cfg.seed)
    for p in trainable_parameters(tr):
        p.data = p.data.float()
    if cfg.gradient_checkpointing:
        tr.enable_gradient_checkpointing()
    run.params = trainable_parameters(tr)
    run.optimizer = _optimizer(cfg, run.params, run.device)
    run.scheduler = _lr_scheduler(cfg, run.optimizer)
    run.model, run.optimizer = acc.prepare(tr, run.optimizer)
    run.unwrapped = acc.unwrap_model(run.model)
    # One stream on every rank: each step draws the *global* batch's dropout choices, noise and sigmas
    # and each rank takes its slice, so a run is the same run on 1 GPU or 8 (same global batch).
    run.gen = torch.Generator().manual_seed(cfg.seed * 7919)
    run.order = make_order(run.train_w, cfg.batch_size * acc.num_processes, cfg.seed)


# ---- resume: the newest complete checkpoint, or a fresh start with a warning -----------------------
def resume_from(run: Run, resume: str | None) -> None:
    if not resume:
        return
    acc = run.acc
    try:
        path, st, notes = ckpt.load_latest(resume, run.ckpt_root)
    except FileNotFoundError as e:
        raise TrainError(str(e)) from e
    if acc.is_main_process:
        for n in notes:
            log.warning("%s", n)
        if st is None:
            log.warning("no complete checkpoint to resume from: restarting %s from step 0 with its frozen "
                        "manifest and config", run.out_dir)
    if st is None:
        return
    load_lora_into(run.unwrapped, {k: v.to(run.device) for k, v in st["lora"].items()})
    run.optimizer.load_state_dict(st["optimizer"])
    run.scheduler.load_state_dict(st["scheduler"])
    ckpt.set_rng_state(st["rng"], run.gen)
    run.step = st["state"]["step"]
    run.skipped = st["state"].get("skipped_nonfinite", 0)
    run.order = make_order(run.train_w, run.cfg.batch_size * acc.num_processes, run.cfg.seed, st["state"]["epoch"],
                           st["state"]["pos"])
    if acc.is_main_process:
        log.warning("resumed from step %d (checkpoint %s)", run.step, path)


def _trackers(run: Run, resume: str | None):
    from .clip_losses import ClipLossTracker
    from .tracking import make_trackers

    resumed = run.step if resume else None
    losses = ClipLossTracker(run.out_dir / "logs" / "sample_losses.jsonl", main_process=run.acc.is_main_process,
                             resume_step=resumed)
    return losses, make_trackers(run.acc, run.out_dir, run.cfg.report_to, run.cfg.to_dict(), truncate_after=resumed)


# ---- validate: videos for the gallery, and the held-out eval loss (rank 0) ------------------------
def validate(run: Run, at: int) -> None:
    import torch

    from .validate import eval_loss, run_validation, write_gallery

    if not run.acc.is_main_process:
        return
    cfg, comps, unwrapped = run.cfg, run.comps, run.unwrapped
    with torch.random.fork_rng(devices=[]):
        comps.vae.to(run.device)
        pipe = comps.pipeline()
        pipe.set_progress_bar_config(disable=True)
        run.model.eval()
        run_validation(pipe, run.vps, run.val_embeds, run.null_pair, step=at, out_dir=run.out_dir, cfg=cfg,
                       device=run.device, adapter=at > 0)
        if at == 0:
            unwrapped.disable_adapters()
        ev = eval_loss(unwrapped, run.holdout_items, run.device, run.weight_dtype, batch=cfg.batch_size)
        if at == 0:
            unwrapped.enable_adapters()
        run.model.train()
        comps.vae.to("cpu")
        if run.want_cuda:
            torch.cuda.empty_cache()
    if ev:
        run.trackers.log(ev, at)
    note = ("Random tiny model: the videos are noise; this gallery shows the mechanics only."
            if comps.is_random else f"Base model {comps.name}.")
    write_gallery(run.out_dir, run.vps, f"{run.out_dir.name}: validation (seed {cfg.validation_seed}, cfg {cfg.cfg}, "
                                        f"{cfg.validation_steps} steps)", note)


# ---- the loop ------------------------------------------------------------------------------------
def loop(run: Run, objective: Objective, progress: bool, clip_loss_sink) -> None:
    from tqdm import tqdm

    cfg, acc = run.cfg, run.acc
    run.model.train()
    # A bar on a terminal; otherwise (--no-progress, a log file, a cluster's stdout) a line every
    # --log-every steps that grep and tail -f can follow.
    use_bar = progress and _is_tty()
    bar = tqdm(total=cfg.max_steps, initial=run.step, desc="train", unit="step",
               disable=not (use_bar and acc.is_main_process), dynamic_ncols=True)
    lines = StepLog(cfg.max_steps, cfg.log_every if acc.is_main_process and not use_bar else 0)
    t_last = time.perf_counter()
    try:
        while run.step < cfg.max_steps:
            step(run, objective, t_last)
            bar.update(1)
            bar.set_postfix(loss=f"{run.last_loss:.4f}" if run.last_loss is not None else "nan", skipped=run.skipped)
            # this step's training time (t_last is reset only below, after validation and checkpoints)
            lines.step(run.step, time.perf_counter() - t_last, run.last_loss, run.scheduler.get_last_lr()[0],
                       run.skipped)
            if cfg.validation_every and run.step % cfg.validation_every == 0:
                validate(run, run.step)
            if cfg.checkpoint_every and run.step % cfg.checkpoint_every == 0 and run.step < cfg.max_steps:
                checkpoint(run, clip_loss_sink)
            t_last = time.perf_counter()  # steps/s measures training, not validation or checkpoints
            if (k := faults.step_hook(faults.KILL_AT_STEP)) and run.step == k and acc.is_main_process:  # test hook
                os.kill(os.getpid(), signal.SIGKILL)  # fault injection for the resume test: a real kill -9
        if run.step >= cfg.max_steps and not weights_finite(run.params):  # never save a NaN LoRA
            raise Diverged(run.step, last_good_checkpoint(run.ckpt_root))
        # The last step's validation, when --max-steps is not a multiple of --validation-every. It logs
        # its eval loss, so it runs before the trackers close (it used to run after, and crashed).
        if run.step >= cfg.max_steps and cfg.validation_every and run.step % cfg.validation_every != 0:
            validate(run, run.step)
    finally:
        bar.close()
        run.trackers.close()


# ---- step: one optimizer step over grad_accum micro-batches, with the non-finite guard ------------
def step(run: Run, objective: Objective, t_last: float) -> None:
    import torch

    cfg, acc, device = run.cfg, run.acc, run.device
    world, rank, per_rank = acc.num_processes, acc.process_index, cfg.batch_size
    dropout = cfg.caption_dropout if objective.caption_dropout is None else objective.caption_dropout
    losses, sig_all, loss_all = [], [], []
    run.optimizer.zero_grad(set_to_none=True)
    finite_all = True
    for micro in range(cfg.grad_accum):
        gidx = run.order.take(per_rank * world)
        mine = slice(rank * per_rank, (rank + 1) * per_rank)
        drops = (torch.rand(len(gidx), generator=run.gen) < dropout).tolist()
        windows = cached_windows(run, [run.train_w[i] for i in gidx[mine]])
        batch = _load_batch(windows, run.cache, run.null, drops[mine])
        x0 = batch["latents"].to(device)
        noise = torch.randn((len(gidx), *x0.shape[1:]), generator=run.gen)[mine].to(device)
        sig = flow.sample_sigmas(len(gidx), mode=cfg.timestep_sampling, mean=cfg.logit_mean, std=cfg.logit_std,
                                 shift=cfg.flow_shift, generator=run.gen, lo=cfg.sigma_min,
                                 hi=cfg.sigma_max)[mine].to(device)
        ctx = acc.no_sync(run.model) if micro < cfg.grad_accum - 1 else contextlib.nullcontext()
        with ctx, acc.autocast():
            per = objective.per_sample(run.model, batch, x0, noise, sig, run.weight_dtype, device)
            loss = per.mean()
            # every rank must agree to skip, or DDP's all-reduce would hang
            ok = acc.reduce(torch.tensor(float(torch.isfinite(loss)), device=device), "min").item() > 0
            if ok:
                acc.backward(loss / cfg.grad_accum)
        finite_all &= ok
        if ok:
            # the logged loss is the global batch's (every rank's mean), not rank 0's share
            losses.append((acc.reduce(loss.detach(), "mean") if world > 1 else loss).item())
            sig_all += sig.tolist()
            loss_all += per.detach().tolist()
            run.losses_by_clip.add(run.step + 1, [w.clip_id for w in windows], sig.tolist(),
                                   per.detach().float().tolist())
    run.step += 1
    _apply(run, finite_all, losses, sig_all, loss_all, t_last)


def _apply(run: Run, finite_all: bool, losses: list, sig_all: list, loss_all: list, t_last: float) -> None:
    """The optimizer update, or a skipped step. A non-finite loss, or a finite loss with an inf/NaN
    gradient, skips the step before the optimizer touches the weights (the norm is of the
    all-reduced grads: every rank agrees)."""
    import torch

    cfg, acc = run.cfg, run.acc
    gnorm = None
    if finite_all:
        gnorm = acc.clip_grad_norm_(run.params, cfg.grad_clip) if cfg.grad_clip > 0 else _grad_norm(run.params)
    if not finite_all or not math.isfinite(float(gnorm)):
        run.skipped += 1
        run.nonfinite_run += 1
        run.optimizer.zero_grad(set_to_none=True)
        run.trackers.log({"nonfinite": 1, "nonfinite_grad": int(finite_all), "skipped_nonfinite": run.skipped},
                         run.step)
        if run.nonfinite_run >= cfg.max_nonfinite:
            raise TrainError(f"{run.nonfinite_run} non-finite {'gradients' if finite_all else 'losses'} in a row "
                             f"at step {run.step}: training diverged. Lower --lr or add --warmup-steps.")
        return
    run.nonfinite_run = 0
    run.optimizer.step()
    run.scheduler.step()
    if (k := faults.step_hook(faults.NAN_AT_STEP)) and run.step == k:  # test hook (dataengine.faults)
        with torch.no_grad():
            run.params[0].view(-1)[0] = float("nan")
    if not weights_finite(run.params):
        run.trackers.log({"diverged": 1, "nonfinite": 1}, run.step)
        raise Diverged(run.step, last_good_checkpoint(run.ckpt_root))
    now = time.perf_counter()
    run.last_loss = sum(losses) / len(losses)
    run.trackers.log({"loss": run.last_loss, "grad_norm": float(gnorm), "lr": run.scheduler.get_last_lr()[0],
                      "loss_by_sigma": flow.loss_by_bucket(torch.tensor(sig_all), torch.tensor(loss_all)),
                      "steps_per_s": 1.0 / max(now - t_last, 1e-9),
                      "peak_mem_mb": peak_memory_mb(run.device), "epoch": run.order.epoch}, run.step)


# ---- checkpoint: LoRA, optimizer, scheduler, RNG and data position (atomic; rank 0 writes) ---------
def _flush_clip_losses(run: Run, sink) -> None:
    run.losses_by_clip.gather(run.acc)  # collective: every rank calls it at the same step
    if run.acc.is_main_process and sink is not None:
        try:
            sink(run.losses_by_clip.per_clip())
        except Exception as e:  # noqa: BLE001 - a busy or read-only catalog must not stop training
            log.warning("could not write per-clip losses to the catalog: %s", e)


def checkpoint(run: Run, clip_loss_sink) -> None:
    _flush_clip_losses(run, clip_loss_sink)
    if run.acc.is_main_process:
        ckpt.save(run.ckpt_root, run.step, lora=lora_state_dict(run.unwrapped), optimizer=run.optimizer,
                  scheduler=run.scheduler, generator=run.gen, keep=run.cfg.keep_checkpoints,
                  state={"epoch": run.order.epoch, "pos": run.order.pos, "skipped_nonfinite": run.skipped})
    run.acc.wait_for_everyone()


# ---- finish: the LoRA, in diffusers format -------------------------------------------------------
def finish(run: Run, objective: Objective, clip_loss_sink, lora_extra: dict) -> TrainResult:
    cfg, acc = run.cfg, run.acc
    lora_path = None
    _flush_clip_losses(run, clip_loss_sink)
    acc.wait_for_everyone()
    if acc.is_main_process and run.step >= cfg.max_steps:
        lora_path = save_lora(run.out_dir, run.unwrapped, {
            "base_model": cfg.base_model, "base_model_name": run.comps.name, "is_random_base": run.comps.is_random,
            "rank": cfg.rank, "alpha": cfg.alpha, "targets": cfg.lora_targets, "steps": run.step,
            "height": cfg.height, "width": cfg.width, "frames": cfg.frames, "fps": cfg.fps,
            "prompt_suffix": run.suffix, "validation_flow_shift": cfg.validation_flow_shift,
            **objective.metadata(), **lora_extra})
    acc.wait_for_everyone()
    acc.end_training()
    return TrainResult(run.out_dir, run.step, lora_path, run.skipped, run.last_loss)


def _grad_norm(params) -> float:
    sq = sum(float(p.grad.detach().float().pow(2).sum()) for p in params if p.grad is not None)
    return math.sqrt(sq)
