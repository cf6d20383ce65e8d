"""The training loop. Reads top to bottom: setup, build_cache, adapt, resume_from, validate, loop
(step, checkpoint), finish. What a step minimises is the objective's (train.objectives).

accelerate owns device placement, mixed precision and DDP; the same code runs as `train ...`,
under `accelerate launch` on several GPUs, or under `torchrun` on CPU (gloo).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import math
import os
import resource
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import checkpoint as ckpt
from . import flow
from .cache import Cache, load
from .config import TrainConfig
from .data import Manifest
from .objectives import FlowMatching, Objective, predict  # noqa: F401 - predict: for callers
from .order import BucketOrder, DataOrder, make_order  # noqa: F401 - re-exported
from .lora import add_lora, load_lora_into, lora_state_dict, save_lora, trainable_parameters
from .prompts import run_suffix, validation_prompts, with_suffix

log = logging.getLogger(__name__)

# Fault hooks for tests: SIGKILL right after that step (no cleanup), or poison one LoRA weight with
# NaN right after that step's optimizer update (what `--lr inf` or a real divergence does).
_FAULT_KILL_AT = int(os.environ.get("DE_FAULT_KILL_AT_STEP", "0") or 0)
_FAULT_NAN_AT = int(os.environ.get("DE_FAULT_NAN_AT_STEP", "0") or 0)


class TrainError(Exception):
    """Training cannot go on; the message is for the user."""


class Diverged(TrainError):
    """The LoRA's weights became non-finite: nothing non-finite is ever saved as the result."""

    def __init__(self, step: int, last_good: Path | None):
        self.step, self.last_good = step, last_good
        keep = (f"the last finite checkpoint, {last_good}, stays in the run folder" if last_good
                else "no checkpoint was written before it")
        super().__init__(f"training diverged at step {step}: the LoRA weights became non-finite after the optimizer "
                         f"update. Lower --lr or add --warmup-steps. No LoRA was saved as the result; {keep}.")


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


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    lora_path: Path | None
    skipped_nonfinite: int
    final_loss: float | None


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


@dataclass
class Run:
    """What the phases of one training run share. Built by `setup`, filled by `build_cache` and
    `adapt`, moved on by `resume` and `step`."""
    cfg: TrainConfig
    out_dir: Path
    acc: object
    device: object
    weight_dtype: object
    want_cuda: bool
    comps: object = None
    cache: Cache | None = None
    cache_stats: dict = field(default_factory=dict)  # this rank's cache counts (logs/cache_rank*.json)
    bad_windows: set = field(default_factory=set)  # training windows found undecodable at first use
    train_w: list = field(default_factory=list)
    hold_w: list = field(default_factory=list)
    vps: list = field(default_factory=list)
    val_embeds: list = field(default_factory=list)
    null: dict | None = None
    holdout_items: list = field(default_factory=list)
    suffix: str = ""
    model: object = None
    unwrapped: object = None
    params: list = field(default_factory=list)
    optimizer: object = None
    scheduler: object = None
    gen: object = None
    order: object = None
    step: int = 0
    skipped: int = 0
    nonfinite_run: int = 0
    last_loss: float | None = None
    trackers: object = None
    losses_by_clip: object = None

    @property
    def ckpt_root(self) -> Path:
        return self.out_dir / "checkpoints"

    @property
    def null_pair(self) -> tuple:
        return self.null["embeds"], self.null["mask"]


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


# ---- cache: models on the CPU, then the one-pass cache of latents and prompt embeddings ----------
def build_cache(run: Run, manifest: Manifest, cache_root: Path, progress: bool) -> None:
    import torch

    from .models import load_components, with_flow_shift

    cfg, acc = run.cfg, run.acc
    if run.want_cuda and not cfg.is_tiny and acc.is_main_process:
        warn_if_too_big(cfg, run.device)  # before any model loads
    # bf16 weights for a bf16 run (fp32 copies of the 2B transformer and Gemma-2 2B cost ~18 GB of host
    # RAM on every rank); Gemma-2 never runs in fp16 (it overflows); the VAE stays fp32
    load_dtype = torch.bfloat16 if run.weight_dtype != torch.float32 else torch.float32
    comps = run.comps = load_components(cfg.base_model, seed=0, dtype=load_dtype)
    comps.scheduler = with_flow_shift(comps.scheduler, cfg.validation_flow_shift)
    train_w = [w for w in manifest.windows if w.role == "train"]
    run.vps = validation_prompts(cfg.validation_prompts)
    run.suffix = run_suffix(cfg, train_w)
    val_texts = [with_suffix(vp.prompt, run.suffix) for vp in run.vps]
    cache = run.cache = Cache(cache_root, comps, cfg.height, cfg.width, cfg.max_sequence_length)
    # Every rank encodes its own share and the files meet in the shared cache folder: N GPUs cache N x
    # faster, and no rank sits in a collective while another encodes (NCCL's 600 s timeout).
    # Prompts and held-out windows are encoded now; a training window the first time a batch uses it
    # (step), unless --cache-all: a 20-step run on 300 windows encodes the windows 20 steps use.
    upfront = manifest.windows if cfg.cache_all else [w for w in manifest.windows if w.role == "holdout"]
    stats = cache.precompute(upfront, [w.prompt for w in manifest.windows] + val_texts, run.device,
                             progress=progress and acc.is_main_process, shard=(acc.process_index, acc.num_processes))
    stats["lazy"] = not cfg.cache_all
    run.cache_stats = stats
    write_cache_stats(run.out_dir, acc.process_index, stats)
    acc.wait_for_everyone()
    failed = {w.key for w in upfront if not cache.latent_path(w).exists()}
    for k, e in stats["decode_failures"]:
        log.warning("window %s left out: %s", k, e)
    run.train_w = [w for w in train_w if w.key not in failed]
    run.hold_w = [w for w in manifest.windows if w.role == "holdout" and w.key not in failed]
    if not run.train_w:
        raise TrainError("no training window could be decoded; see the warnings above")
    # free the text encoder for good and park the VAE on the CPU until validation needs it
    comps.text_encoder.to("cpu")
    comps.vae.to("cpu")
    comps.text_encoder = None
    gc.collect()
    if run.want_cuda:
        torch.cuda.empty_cache()
    run.null = load(cache.null_path())
    run.val_embeds = [(lambda d: (d["embeds"], d["mask"]))(load(cache.text_path(t))) for t in val_texts]
    run.holdout_items = cache.eval_items(run.hold_w)


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
            if _FAULT_KILL_AT and run.step == _FAULT_KILL_AT and acc.is_main_process:
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
        sig = flow.sample_sigmas(len(gidx), mode=cfg.timestep_sampling, mean=cfg.logit_mean,
                                 std=cfg.logit_std, shift=cfg.flow_shift, generator=run.gen)[mine].to(device)
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
    if _FAULT_NAN_AT and run.step == _FAULT_NAN_AT:
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


def _is_tty() -> bool:
    import sys

    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class StepLog:
    """`step 120/10000  loss 0.4213  lr 2.00e-04  1.84 steps/s  ETA 1h29m`, every `every` steps and at
    the last one. Steps/s is over the steps since the previous line and counts training time only
    (validation and checkpoints are excluded), so the ETA does not jump after each validation."""

    def __init__(self, total: int, every: int):
        self.total, self.every = total, every
        self.secs, self.n = 0.0, 0

    def step(self, step: int, secs: float, loss: float | None, lr: float, skipped: int) -> str | None:
        if not self.every:
            return None
        self.secs += secs
        self.n += 1
        if step % self.every and step != self.total:
            return None
        rate = self.n / self.secs if self.secs > 0 else float("inf")
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        loss_s = "nan" if loss is None else f"{loss:.4f}"
        line = (f"step {step}/{self.total}  loss {loss_s}  lr {lr:.2e}  {rate:.2f} steps/s  ETA {_duration(eta)}"
                + (f"  skipped {skipped}" if skipped else ""))
        print(line, flush=True)
        self.secs, self.n = 0.0, 0
        return line


def _duration(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _grad_norm(params) -> float:
    sq = sum(float(p.grad.detach().float().pow(2).sum()) for p in params if p.grad is not None)
    return math.sqrt(sq)


def warn_if_too_big(cfg: TrainConfig, device) -> None:
    """Project the run's GPU peak from the real block (train.memory) and warn if it will not fit."""
    import torch

    from .memory import describe, project_config

    total = torch.cuda.get_device_properties(device).total_memory
    p = project_config(cfg)
    log.info(describe(p))
    if p.total_gib * 2**30 > total:
        log.warning("this config is projected to need %.1f GiB on the GPU but %s has %.1f GiB: expect out-of-memory. "
                    "%s", p.total_gib, torch.cuda.get_device_name(device), total / 2**30,
                    "Lower --batch-size (and raise --grad-accum)." if cfg.gradient_checkpointing else
                    "Drop --no-gradient-checkpointing, or lower --batch-size.")


def record_encode_rate(cache_root: Path, cfg: TrainConfig, stats: dict) -> None:
    """Seconds per latent encoded at first use, kept beside the cache for `train --dry-run`."""
    import json

    n, secs = stats.get("lazy_encoded", 0), stats.get("lazy_seconds", 0.0)
    if not n or not secs:
        return
    try:
        (Path(cache_root) / "encode_rate.json").write_text(json.dumps(
            {"seconds_per_window": secs / n, "windows": n, "width": cfg.width, "height": cfg.height,
             "frames": cfg.frames, "base_model": cfg.base_model}))
    except OSError:
        pass  # a hint for dry runs, never a reason to fail a finished run


def write_cache_stats(out_dir: Path, rank: int, stats: dict) -> None:
    import json

    d = out_dir / "logs"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"cache_rank{rank}.json").write_text(json.dumps(stats, indent=1, default=str))


@functools.lru_cache(maxsize=512)
def _load_text(path: str) -> dict:
    # prompts repeat across windows (the class template uses one prompt for every clip): read once
    return load(Path(path))


def cached_windows(run: Run, windows: list) -> list:
    """`windows` with their latents in the cache, encoded now if this is their first batch. A
    window that cannot be decoded is left out for the rest of the run (a warning says so) and its
    place goes to the next training window of the same bucket that decodes: a batch keeps its
    size and shape, and a run without such windows draws exactly what an up-front cache gives."""
    bad = run.cache.ensure(windows, run.device, run.cache_stats)
    for k in bad:
        log.warning("window %s left out: it could not be decoded", k)
    run.bad_windows |= bad
    if not any(w.key in run.bad_windows for w in windows):
        return windows
    out, n = [], len(run.train_w)
    for w in windows:
        if w.key not in run.bad_windows:
            out.append(w)
            continue
        i = next(j for j, x in enumerate(run.train_w) if x.key == w.key)
        for k in range(1, n):
            c = run.train_w[(i + k) % n]
            if c.key in run.bad_windows or (c.width, c.height, c.frames) != (w.width, w.height, w.frames):
                continue
            more = run.cache.ensure([c], run.device, run.cache_stats)
            run.bad_windows |= more
            if not more:
                out.append(c)
                break
        else:
            raise TrainError("no training window of this bucket could be decoded; see the warnings above")
    return out


def _load_batch(windows, cache: Cache, null: dict, drops: list[bool]) -> dict:
    """Stack cached latents and text embeddings; caption dropout swaps in the unconditional pair."""
    import torch

    lat, emb, mask = [], [], []
    for w, drop in zip(windows, drops):
        lat.append(load(cache.latent_path(w))["latents"])
        t = null if drop else _load_text(str(cache.text_path(w.prompt)))
        emb.append(t["embeds"])
        mask.append(t["mask"])
    return {"latents": torch.stack(lat), "embeds": torch.stack(emb), "mask": torch.stack(mask),
            "keys": [w.key for w in windows]}
