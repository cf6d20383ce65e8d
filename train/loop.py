"""The training loop. Reads top to bottom: set up, cache, adapt, (resume), validate, loop.

accelerate owns device placement, mixed precision and DDP; the same code runs as `train ...`,
under `accelerate launch` on several GPUs, or under `torchrun` on CPU (gloo).
"""

from __future__ import annotations

import functools
import gc
import logging
import math
import os
import resource
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from . import checkpoint as ckpt
from . import flow
from .cache import Cache, load
from .config import TrainConfig
from .data import Manifest
from .lora import WEIGHTS_NAME, add_lora, load_lora_into, lora_state_dict, save_lora, trainable_parameters
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


class DataOrder:
    """Epoch permutations from (seed, epoch); the position is part of every checkpoint."""

    def __init__(self, n: int, seed: int, epoch: int = 0, pos: int = 0):
        self.n, self.seed, self.epoch, self.pos = n, seed, epoch, pos
        self._perm = self._make()

    def _make(self):
        import torch

        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch)).tolist()

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.pos >= self.n:
                self.epoch, self.pos = self.epoch + 1, 0
                self._perm = self._make()
            out.append(self._perm[self.pos])
            self.pos += 1
        return out


class BucketOrder:
    """Batches that each hold one bucket. Per epoch (seeded by seed and epoch): every bucket's
    windows are shuffled and cut into batches of `batch` (the last one topped up from the start of
    its own shuffle), then the batches of all buckets are shuffled together. The position is part
    of every checkpoint, as with DataOrder."""

    def __init__(self, buckets: list[str], batch: int, seed: int, epoch: int = 0, pos: int = 0):
        self.groups: dict[str, list[int]] = {}
        for i, b in enumerate(buckets):
            self.groups.setdefault(b, []).append(i)
        self.batch, self.seed, self.epoch, self.pos = batch, seed, epoch, pos
        self._plan = self._make()

    def _make(self) -> list[list[int]]:
        import torch

        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        plan = []
        for name in sorted(self.groups):
            members = self.groups[name]
            perm = [members[i] for i in torch.randperm(len(members), generator=g).tolist()]
            for start in range(0, len(perm), self.batch):
                chunk = perm[start : start + self.batch]
                while len(chunk) < self.batch:  # a small bucket repeats its own windows, never another's
                    chunk.append(perm[(len(chunk) - (len(perm) - start)) % len(perm)])
                plan.append(chunk)
        return [plan[i] for i in torch.randperm(len(plan), generator=g).tolist()]

    def take(self, k: int) -> list[int]:
        if k != self.batch:
            raise ValueError(f"BucketOrder hands out batches of {self.batch}, not {k}")
        if self.pos >= len(self._plan):
            self.epoch, self.pos = self.epoch + 1, 0
            self._plan = self._make()
        self.pos += 1
        return list(self._plan[self.pos - 1])


def make_order(windows, batch: int, seed: int, epoch: int = 0, pos: int = 0):
    """One bucket: the plain epoch permutation (what every run before buckets used, so the seed
    preset's batches are unchanged); several: BucketOrder."""
    names = [w.bucket for w in windows]
    if len(set(names)) <= 1:
        return DataOrder(len(windows), seed, epoch, pos)
    return BucketOrder(names, batch, seed, epoch, pos)


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
          progress: bool = True, clip_loss_sink=None) -> TrainResult:
    """`clip_loss_sink(rows)` receives (clip_id, samples, mean loss, mean z) per clip on rank 0 at
    each checkpoint and at the end (train.clip_losses); its failures are logged, never raised."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm import tqdm

    from .models import load_components, with_flow_shift
    from .validate import eval_loss, run_validation, write_gallery

    # ---- 1. accelerator, precision, output folder ------------------------------------------------
    want_cuda = torch.cuda.is_available() and cfg.device != "cpu"
    mp = cfg.mixed_precision if want_cuda else "no"  # CPU runs fp32
    acc = Accelerator(mixed_precision=mp, cpu=not want_cuda,
                      log_with=None if cfg.report_to == "none" else
                      (["tensorboard", "wandb"] if cfg.report_to == "all" else [cfg.report_to]),
                      project_dir=str(out_dir))
    device = acc.device
    weight_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mp, torch.float32)
    set_seed(cfg.seed)
    ckpt_root = out_dir / "checkpoints"

    # ---- 2. models (CPU), then the one-pass cache --------------------------------------------------
    if want_cuda and not cfg.is_tiny and acc.is_main_process:
        warn_if_too_big(cfg, device)  # before any model loads
    # bf16 weights for a bf16 run (fp32 copies of the 2B transformer and Gemma-2 2B cost ~18 GB of host
    # RAM on every rank); Gemma-2 never runs in fp16 (it overflows); the VAE stays fp32
    load_dtype = torch.bfloat16 if weight_dtype != torch.float32 else torch.float32
    comps = load_components(cfg.base_model, seed=0, dtype=load_dtype)
    comps.scheduler = with_flow_shift(comps.scheduler, cfg.validation_flow_shift)
    train_w = [w for w in manifest.windows if w.role == "train"]
    hold_w = [w for w in manifest.windows if w.role == "holdout"]
    vps = validation_prompts(cfg.validation_prompts)
    suffix = run_suffix(cfg, train_w)
    val_texts = [with_suffix(vp.prompt, suffix) for vp in vps]
    cache = Cache(cache_root, comps, cfg.height, cfg.width, cfg.max_sequence_length)
    # Every rank encodes its own share and the files meet in the shared cache folder: N GPUs cache N x
    # faster, and no rank sits in a collective while another encodes (NCCL's 600 s timeout).
    stats = cache.precompute(manifest.windows, [w.prompt for w in manifest.windows] + val_texts, device,
                             progress=progress and acc.is_main_process, shard=(acc.process_index, acc.num_processes))
    write_cache_stats(out_dir, acc.process_index, stats)
    acc.wait_for_everyone()
    failed = {w.key for w in manifest.windows if not cache.latent_path(w).exists()}
    for k, e in stats["decode_failures"]:
        log.warning("window %s left out: %s", k, e)
    train_w = [w for w in train_w if w.key not in failed]
    hold_w = [w for w in hold_w if w.key not in failed]
    if not train_w:
        raise TrainError("no training window could be decoded; see the warnings above")
    # free the text encoder for good and park the VAE on the CPU until validation needs it
    comps.text_encoder.to("cpu")
    comps.vae.to("cpu")
    comps.text_encoder = None
    gc.collect()
    if want_cuda:
        torch.cuda.empty_cache()
    null = load(cache.null_path())
    null_pair = (null["embeds"], null["mask"])
    val_embeds = [(lambda d: (d["embeds"], d["mask"]))(load(cache.text_path(t))) for t in val_texts]
    holdout_items = cache.eval_items(hold_w)

    # ---- 3. LoRA on the transformer only; trainable params in fp32 ---------------------------------
    tr = comps.transformer
    tr.to(device)
    if weight_dtype != torch.float32:
        tr.to(dtype=weight_dtype)
    add_lora(tr, rank=cfg.rank, alpha=cfg.alpha, dropout=cfg.lora_dropout, targets=cfg.lora_targets, seed=cfg.seed)
    for p in trainable_parameters(tr):
        p.data = p.data.float()
    if cfg.gradient_checkpointing:
        tr.enable_gradient_checkpointing()
    params = trainable_parameters(tr)
    optimizer = _optimizer(cfg, params, device)
    scheduler = _lr_scheduler(cfg, optimizer)
    model, optimizer = acc.prepare(tr, optimizer)
    # One stream on every rank: each step draws the *global* batch's dropout choices, noise and sigmas
    # and each rank takes its slice, so a run is the same run on 1 GPU or 8 (same global batch).
    gen = torch.Generator().manual_seed(cfg.seed * 7919)
    order = make_order(train_w, cfg.batch_size * acc.num_processes, cfg.seed)

    # ---- 4. resume ---------------------------------------------------------------------------------
    step, skipped, nonfinite_run = 0, 0, 0
    st = None
    if resume:
        try:
            path, st, notes = ckpt.load_latest(resume, ckpt_root)
        except FileNotFoundError as e:
            raise TrainError(str(e)) from e
        if acc.is_main_process:
            for n in notes:
                log.warning("%s", n)
            if st is None:
                log.warning("no complete checkpoint to resume from: restarting %s from step 0 with its frozen "
                            "manifest and config", out_dir)
    if st is not None:
        load_lora_into(acc.unwrap_model(model), {k: v.to(device) for k, v in st["lora"].items()})
        optimizer.load_state_dict(st["optimizer"])
        scheduler.load_state_dict(st["scheduler"])
        ckpt.set_rng_state(st["rng"], gen)
        step = st["state"]["step"]
        skipped = st["state"].get("skipped_nonfinite", 0)
        order = make_order(train_w, cfg.batch_size * acc.num_processes, cfg.seed, st["state"]["epoch"],
                           st["state"]["pos"])
        if acc.is_main_process:
            log.warning("resumed from step %d (checkpoint %s)", step, path)

    from .clip_losses import ClipLossTracker

    losses_by_clip = ClipLossTracker(out_dir / "logs" / "sample_losses.jsonl", main_process=acc.is_main_process,
                                     resume_step=step if resume else None)

    def flush_clip_losses() -> None:
        losses_by_clip.gather(acc)  # collective: every rank calls it at the same step
        if acc.is_main_process and clip_loss_sink is not None:
            try:
                clip_loss_sink(losses_by_clip.per_clip())
            except Exception as e:  # noqa: BLE001 - a busy or read-only catalog must not stop training
                log.warning("could not write per-clip losses to the catalog: %s", e)

    from .tracking import make_trackers

    trackers = make_trackers(acc, out_dir, cfg.report_to, cfg.to_dict(), truncate_after=step if resume else None)
    unwrapped = acc.unwrap_model(model)

    def validate(at: int) -> None:
        if not acc.is_main_process:
            return
        with torch.random.fork_rng(devices=[]):
            comps.vae.to(device)
            pipe = comps.pipeline()
            pipe.set_progress_bar_config(disable=True)
            model.eval()
            run_validation(pipe, vps, val_embeds, null_pair, step=at, out_dir=out_dir, cfg=cfg, device=device,
                           adapter=at > 0)
            if at == 0:
                unwrapped.disable_adapters()
            ev = eval_loss(unwrapped, holdout_items, device, weight_dtype)
            if at == 0:
                unwrapped.enable_adapters()
            model.train()
            comps.vae.to("cpu")
            if want_cuda:
                torch.cuda.empty_cache()
        if ev:
            trackers.log(ev, at)
        note = ("Random tiny model: the videos are noise; this gallery shows the mechanics only."
                if comps.is_random else f"Base model {comps.name}.")
        write_gallery(out_dir, vps, f"{out_dir.name}: validation (seed {cfg.validation_seed}, cfg {cfg.cfg}, "
                                    f"{cfg.validation_steps} steps)", note)

    if step == 0 and cfg.validation_every > 0:
        validate(0)
    acc.wait_for_everyone()

    # ---- 5. the loop -------------------------------------------------------------------------------
    world, rank = acc.num_processes, acc.process_index
    per_rank = cfg.batch_size  # per-device batch; global batch = batch_size * world * grad_accum
    model.train()
    # A bar on a terminal; otherwise (--no-progress, a log file, a cluster's stdout) a line every
    # --log-every steps that grep and tail -f can follow.
    use_bar = progress and _is_tty()
    bar = tqdm(total=cfg.max_steps, initial=step, desc="train", unit="step",
               disable=not (use_bar and acc.is_main_process), dynamic_ncols=True)
    lines = StepLog(cfg.max_steps, cfg.log_every if acc.is_main_process and not use_bar else 0)
    t_last, last_loss = time.perf_counter(), None
    try:
        while step < cfg.max_steps:
            losses, sig_all, loss_all = [], [], []
            optimizer.zero_grad(set_to_none=True)
            finite_all = True
            for micro in range(cfg.grad_accum):
                gidx = order.take(per_rank * world)
                mine = slice(rank * per_rank, (rank + 1) * per_rank)
                drops = (torch.rand(len(gidx), generator=gen) < cfg.caption_dropout).tolist()
                idx = gidx[mine]
                batch = _load_batch([train_w[i] for i in idx], cache, null, drops[mine])
                x0 = batch["latents"].to(device)
                noise = torch.randn((len(gidx), *x0.shape[1:]), generator=gen)[mine].to(device)
                sig = flow.sample_sigmas(len(gidx), mode=cfg.timestep_sampling, mean=cfg.logit_mean,
                                         std=cfg.logit_std, shift=cfg.flow_shift, generator=gen)[mine].to(device)
                xt = flow.noisy(x0, noise, sig)
                ctx = acc.no_sync(model) if micro < cfg.grad_accum - 1 else _nullcontext()
                with ctx, acc.autocast():
                    pred = predict(model, xt, batch["embeds"], batch["mask"], sig, weight_dtype, device)
                    per = flow.per_sample_loss(pred, flow.target(x0, noise))
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
                    losses_by_clip.add(step + 1, [train_w[i].clip_id for i in idx], sig.tolist(),
                                       per.detach().float().tolist())
            step += 1
            gnorm = None
            if finite_all:
                gnorm = acc.clip_grad_norm_(params, cfg.grad_clip) if cfg.grad_clip > 0 else _grad_norm(params)
            # A non-finite loss, or a finite loss with an inf/NaN gradient, skips the step before the
            # optimizer touches the weights (the norm is of the all-reduced grads: every rank agrees).
            if not finite_all or not math.isfinite(float(gnorm)):
                skipped += 1
                nonfinite_run += 1
                optimizer.zero_grad(set_to_none=True)
                trackers.log({"nonfinite": 1, "nonfinite_grad": int(finite_all), "skipped_nonfinite": skipped}, step)
                if nonfinite_run >= cfg.max_nonfinite:
                    raise TrainError(f"{nonfinite_run} non-finite {'gradients' if finite_all else 'losses'} in a row "
                                     f"at step {step}: training diverged. Lower --lr or add --warmup-steps.")
            else:
                nonfinite_run = 0
                optimizer.step()
                scheduler.step()
                if _FAULT_NAN_AT and step == _FAULT_NAN_AT:
                    with torch.no_grad():
                        params[0].view(-1)[0] = float("nan")
                if not weights_finite(params):
                    trackers.log({"diverged": 1, "nonfinite": 1}, step)
                    raise Diverged(step, last_good_checkpoint(ckpt_root))
                now = time.perf_counter()
                last_loss = sum(losses) / len(losses)
                trackers.log({"loss": last_loss, "grad_norm": float(gnorm), "lr": scheduler.get_last_lr()[0],
                              "loss_by_sigma": flow.loss_by_bucket(torch.tensor(sig_all), torch.tensor(loss_all)),
                              "steps_per_s": 1.0 / max(now - t_last, 1e-9), "peak_mem_mb": peak_memory_mb(device),
                              "epoch": order.epoch}, step)
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.4f}" if last_loss is not None else "nan", skipped=skipped)
            # this step's training time (t_last is reset only below, after validation and checkpoints)
            lines.step(step, time.perf_counter() - t_last, last_loss, scheduler.get_last_lr()[0], skipped)
            if cfg.validation_every and step % cfg.validation_every == 0:
                validate(step)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.max_steps:
                flush_clip_losses()
                if acc.is_main_process:
                    ckpt.save(ckpt_root, step, lora=lora_state_dict(unwrapped), optimizer=optimizer,
                              scheduler=scheduler, generator=gen, keep=cfg.keep_checkpoints,
                              state={"epoch": order.epoch, "pos": order.pos, "skipped_nonfinite": skipped})
                acc.wait_for_everyone()
            t_last = time.perf_counter()  # steps/s measures training, not validation or checkpoints
            if _FAULT_KILL_AT and step == _FAULT_KILL_AT and acc.is_main_process:
                os.kill(os.getpid(), signal.SIGKILL)  # fault injection for the resume test: a real kill -9
        if step >= cfg.max_steps and not weights_finite(params):  # belt and braces: never save a NaN LoRA
            raise Diverged(step, last_good_checkpoint(ckpt_root))
        # The last step's validation, when --max-steps is not a multiple of --validation-every. It logs
        # its eval loss, so it runs before the trackers close (it used to run after, and crashed).
        if step >= cfg.max_steps and cfg.validation_every and step % cfg.validation_every != 0:
            validate(step)
    finally:
        bar.close()
        trackers.close()

    # ---- 6. the LoRA, in diffusers format --------------------------------------------------------
    lora_path = None
    flush_clip_losses()
    acc.wait_for_everyone()
    if acc.is_main_process and step >= cfg.max_steps:
        lora_path = save_lora(out_dir, unwrapped, {
            "base_model": cfg.base_model, "base_model_name": comps.name, "is_random_base": comps.is_random,
            "rank": cfg.rank, "alpha": cfg.alpha, "targets": cfg.lora_targets, "steps": step,
            "height": cfg.height, "width": cfg.width, "frames": cfg.frames, "fps": cfg.fps,
            "prompt_suffix": suffix, "validation_flow_shift": cfg.validation_flow_shift})
    acc.wait_for_everyone()
    acc.end_training()
    return TrainResult(out_dir, step, lora_path, skipped, last_loss)


def predict(model, xt, embeds, mask, sigmas, weight_dtype, device):
    """The transformer's velocity prediction. Latents and text go in the weight dtype; the timestep
    (sigma * 1000) stays fp32, as the pipeline passes it at inference: in bf16 it would round to
    multiples of 4 above 512 (and of 2 above 256)."""
    return model(xt.to(device, weight_dtype), encoder_hidden_states=embeds.to(device, weight_dtype),
                 encoder_attention_mask=mask.to(device), timestep=flow.timesteps(sigmas).to(device).float(),
                 return_dict=False)[0]


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


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


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


def write_cache_stats(out_dir: Path, rank: int, stats: dict) -> None:
    import json

    d = out_dir / "logs"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"cache_rank{rank}.json").write_text(json.dumps(stats, indent=1, default=str))


@functools.lru_cache(maxsize=512)
def _load_text(path: str) -> dict:
    # prompts repeat across windows (the class template uses one prompt for every clip): read once
    return load(Path(path))


def _load_batch(windows, cache: Cache, null: dict, drops: list[bool]) -> dict:
    """Stack cached latents and text embeddings; caption dropout swaps in the unconditional pair."""
    import torch

    lat, emb, mask = [], [], []
    for w, drop in zip(windows, drops):
        lat.append(load(cache.latent_path(w))["latents"])
        t = null if drop else _load_text(str(cache.text_path(w.prompt)))
        emb.append(t["embeds"])
        mask.append(t["mask"])
    return {"latents": torch.stack(lat), "embeds": torch.stack(emb), "mask": torch.stack(mask)}


def final_lora_path(out_dir: Path) -> Path:
    return Path(out_dir) / WEIGHTS_NAME

