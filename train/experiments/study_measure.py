"""The study's measurements: each variant sampled on the evaluation set and compared with the
teacher sample by sample (latents, frames, eval loss, tags), with its latency and peak memory."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

class PeakMemory:
    """The peak memory of what runs inside `with`: CUDA's allocator peak on a GPU; on the CPU, the
    resident set sampled every 5 ms, above what it was on entry (the process's lifetime peak, which
    is all getrusage gives, would not tell variants apart)."""

    def __init__(self, device: str):
        self.device, self.mb = device, 0.0

    @staticmethod
    def _rss_mb() -> float:
        from catalog.isolate import statm_mb

        return statm_mb(1)

    def __enter__(self):
        import threading

        import torch

        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        self._base, self._peak, self._stop = self._rss_mb(), 0.0, threading.Event()

        def watch():
            while not self._stop.wait(0.005):
                self._peak = max(self._peak, self._rss_mb())

        self._t = threading.Thread(target=watch, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.startswith("cuda"):
            self.mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._stop.set()
            self._t.join()
            self.mb = max(0.0, max(self._peak, self._rss_mb()) - self._base)
        return False


class TagAgreement:
    """Video -> text -> video: a captioner re-captions each variant's videos (as `train eval` and
    `de caption` do: constrained, frames sampled by time) and each variant's tags are compared
    with the teacher's own, video by video (Jaccard of the tag sets)."""

    def __init__(self, model: str, device: str):
        from dataengine.caption.models import CaptionModelError, load_captioner
        from dataengine.caption.prompts import SamplingParams, load_prompt
        from dataengine.caption.schema import Constraint

        from .runctx import ExperimentError

        self.prompt = load_prompt("caption_v1", SamplingParams(), constraint=Constraint())
        try:
            self.captioner = load_captioner(model, device=device)
        except CaptionModelError as e:
            raise ExperimentError(str(e)) from e
        self.reference: list[set] | None = None

    def tags(self, frames: np.ndarray, fps: float) -> list[set]:
        from .evaluate import _recaption

        return [set(r["tags"] or []) if r["ok"] else set() for r in _recaption(self.captioner, self.prompt,
                                                                             [_u8(f) for f in frames], fps)]



class Measure:
    """Samples each variant on the evaluation set and measures it, sample by sample, against the
    first variant measured (the teacher at 32 steps). The reference frames wait on disk (a
    memory-mapped array under RUN/study), so a set of real-size videos needs no host memory."""

    TIMED = 3     # samples generated one at a time for the latency (their median) and peak memory
    CHUNK = 8     # the rest are generated in batches of this many

    def __init__(self, ctx, samples, wins, null, agree, out: Path):
        self.ctx, self.samples, self.wins, self.null, self.agree, self.out = ctx, samples, wins, null, agree, out
        self.base_pipe = ctx.pipe
        self.ref_lat = None
        self.ref_px = None
        self.ref_tags: list[set] = []
        out.mkdir(parents=True, exist_ok=True)
        self._ref_path = out / ".reference_frames.npy"

    def close(self) -> None:
        self.ref_px = None
        self._ref_path.unlink(missing_ok=True)

    def warm_up(self) -> None:
        """One untimed step on the first sample: the first call's one-off costs (allocations, lazy
        imports, kernel selection) would otherwise be charged to the first variant's latency."""
        sample_set(self.base_pipe, self.samples[:1], self.null, cfg_scale=self.ctx.cfg.cfg, steps=1, cfg=self.ctx.cfg,
                   device=self.ctx.device, timed=0)

    def variant(self, v) -> dict:
        from ..validate import eval_loss

        pipe = _pipeline_for(v, self.base_pipe, self.ctx)
        with _without_block(pipe.transformer, v.drop_block):
            lat, secs, peak = self._sample(pipe, v)
            per = self._frames(pipe, lat)
            tr = pipe.transformer
            ev = None if v.kind == "steps" else [  # per window: paired with the teacher's, window by window
                eval_loss(tr, [it], self.ctx.device, next(tr.parameters()).dtype,
                          batch=self.ctx.cfg.batch_size)["eval_loss"] for it in self.wins]
            params = sum(p.numel() for n, p in tr.named_parameters() if "lora_" not in n)
        if self.ref_lat is None:
            self.ref_lat = lat
        per["latent_distance"] = ((lat - self.ref_lat) ** 2).flatten(1).mean(1).tolist()
        if ev is not None:
            per["eval_loss"] = ev
        return {"samples": per, "seconds_per_video": float(np.median(secs)), "peak_mem_mb": peak, "params": params,
                "tags": per.pop("_tags", None)}

    def _sample(self, pipe, v):
        return sample_set(pipe, self.samples, self.null, cfg_scale=v.cfg, steps=v.steps, cfg=self.ctx.cfg,
                          device=self.ctx.device, euler=v.euler, timed=self.TIMED, chunk=self.CHUNK)

    def _frames(self, pipe, lat) -> dict:
        """Per-sample pixel metrics against the reference, decoding a chunk at a time."""
        from . import metrics as M

        per = {k: [] for k in ("pixel_distance", "brightness_gap", "palette_distance", "temporal_gap")}
        tags = []
        for k in range(0, len(lat), self.CHUNK):
            px = _decode(pipe, lat[k:k + self.CHUNK])
            u8 = _u8(px)
            if self.ref_lat is None:  # the reference variant: keep its frames on disk
                if self.ref_px is None:
                    self.ref_px = np.lib.format.open_memmap(self._ref_path, mode="w+", dtype=np.uint8,
                                                           shape=(len(lat),) + u8.shape[1:])
                self.ref_px[k:k + len(px)] = u8
            ref_u8 = self.ref_px[k:k + len(px)]
            for ua, ub in zip(u8, ref_u8):  # both sides as 8-bit frames: the reference against itself is 0
                a, b = ua.astype(np.float32) / 255.0, ub.astype(np.float32) / 255.0
                per["pixel_distance"].append(float(np.mean((a - b) ** 2)))
                per["brightness_gap"].append(float(abs(a.mean() - b.mean()) * 255))
                per["palette_distance"].append(M.palette_distance(ua, ub))
                per["temporal_gap"].append(M.temporal_gap(a, b))
            if self.agree is not None:
                tags += self.agree.tags(u8, self.ctx.cfg.fps)
        if self.agree is not None:
            if not self.ref_tags:
                self.ref_tags = tags
            per["tag_agreement"] = [len(a & b) / len(a | b) if (a | b) else 1.0 for a, b in zip(tags, self.ref_tags)]
            per["_tags"] = tag_match(tags, self.ref_tags)
        return per


def tag_match(tags: list[set], ref: list[set]) -> dict[str, float]:
    """Per tag, the share of samples on which the variant and the teacher agree about it (both
    give it, or neither does): a single tag that the variant gets wrong shows here."""
    vocab = sorted(set().union(*tags, *ref)) if tags or ref else []
    return {t: float(np.mean([(t in a) == (t in b) for a, b in zip(tags, ref)])) for t in vocab}


class _without_block:
    """Take transformer block `k` out for the duration (None: leave the model whole)."""

    def __init__(self, tr, k: int | None):
        self.tr, self.k = tr, k

    def __enter__(self):
        if self.k is not None:
            import torch

            self.saved = self.tr.transformer_blocks
            self.tr.transformer_blocks = torch.nn.ModuleList([b for i, b in enumerate(self.saved) if i != self.k])
        return self

    def __exit__(self, *exc):
        if self.k is not None:
            self.tr.transformer_blocks = self.saved
        return False


def _u8(frames) -> np.ndarray:
    return (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)


def _pipeline_for(v, base_pipe, ctx):
    """The pipeline of a variant: the run's pipeline with its adapters set, or a pruned model's."""
    from ..runfolder import load_lora

    if v.model_dir is not None:
        from ..generate import load_pipeline

        heal = v.adapters[0][1] if v.adapters else None
        pipe, _ = load_pipeline(str(v.model_dir), heal, 1.0, ctx.device)
        pipe.set_progress_bar_config(disable=True)
        return pipe
    loaded = set(base_pipe.get_list_adapters().get("transformer", []))
    names = []
    for name, path in v.adapters:
        key = f"{name}_{abs(hash(str(path))) % 10**8}"
        if key not in loaded:
            load_lora(base_pipe, path, key, ctx.cfg.base_model)
        names.append(key)
    active = (["style"] if v.style else []) + names
    if active:
        base_pipe.enable_lora()
        base_pipe.set_adapters(active, [1.0] * len(active))
    else:  # the base model alone (the LoRA at scale 0)
        base_pipe.disable_lora()
    return base_pipe


def _decode(pipe, latents):
    """Frames in [0, 1], (N, T, H, W, 3), decoded as the pipeline decodes its own latents."""
    import torch

    vae = pipe.vae
    z_dim = latents.shape[1]
    mean = torch.tensor(vae.config.latents_mean).view(1, z_dim, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, z_dim, 1, 1, 1)
    with torch.no_grad():
        video = vae.decode((latents * std + mean).to(vae.device, vae.dtype), return_dict=False)[0]
    video = ((video.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1)  # N, T, H, W, C
    return video.cpu().numpy()


def sample_set(pipe, samples, null, *, cfg_scale: float, steps: int, cfg, device, euler: bool = False,
               timed: int = 3, chunk: int = 8):
    """Latents for every (item, noise) sample of an evaluation set, in its order: the first
    `timed` one at a time (their seconds and peak memory are the latency figures), the rest in
    batches of `chunk` per latent shape. Every command that scores on the set samples it this way,
    so the same variant gives the same latents in `distill-steps` and in `study`."""
    import torch

    from ..distill import sample_latents

    lat, secs, peak = [None] * len(samples), [], 0.0

    def run(idx):
        text = (torch.stack([samples[i][0]["embeds"] for i in idx]), torch.stack([samples[i][0]["mask"] for i in idx]))
        z = torch.stack([samples[i][1] for i in idx])
        x = sample_latents(pipe, text, null, z, cfg_scale=cfg_scale, steps=steps, cfg=cfg, device=device,
                           euler=euler).float().cpu()
        for i, xi in zip(idx, x):
            lat[i] = xi

    for i in range(min(timed, len(samples))):
        with PeakMemory(device) as mem:
            t0 = time.perf_counter()
            run([i])
            secs.append(time.perf_counter() - t0)
        peak = max(peak, mem.mb)
    rest: dict[tuple, list[int]] = {}
    for i in range(timed, len(samples)):
        rest.setdefault(tuple(samples[i][1].shape), []).append(i)
    for idx in rest.values():
        for k in range(0, len(idx), chunk):
            run(idx[k:k + chunk])
    return torch.stack(lat), secs, peak
