"""`train study RUN`: the compression study of the original experiment, as one grid and one report.

Every variant generates the same held-out prompts from the same noises as the teacher (the run's
base model plus its LoRA, with its CFG, at 32 steps), and is measured against that output:

- axes: sampling budget (the teacher at fewer steps), distillation (the guidance-distilled and
  step-distilled students under RUN/distill/), depth pruning (the healed models under RUN/prune/),
  and LoRA rank (the truncations under RUN/compress/). A variant whose folder does not exist is
  left out of the grid and named in the report.
- per variant: NFE (transformer forward passes per video), wall time per video (measured), the
  transformer's parameters, the peak memory of its sampling (CUDA's allocator peak on a GPU, the
  process's resident peak on the CPU), the latent and pixel distance to the teacher's output, the
  brightness and palette distance of its frames to the teacher's, and the held-out eval loss (the
  flow loss of its one conditional pass; for a step-distilled student, which learnt other paths,
  it is not comparable and is left blank).

The quality-versus-latency plot marks the Pareto front (no other variant is both faster and closer).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .report import table, write

REFERENCE_STEPS = 32


@dataclass
class Variant:
    name: str
    kind: str                   # teacher | guidance | steps | pruned | rank
    steps: int
    cfg: float                  # guidance scale at sampling (1: one pass per step)
    adapters: list = field(default_factory=list)  # (adapter name, file) beside the run's "style" LoRA
    euler: bool = False
    model_dir: Path | None = None  # a pruned model folder (with its healing LoRA as the only adapter)
    style: bool = True          # the run's LoRA is on

    @property
    def nfe(self) -> int:
        return self.steps * (2 if self.cfg > 1 else 1)


def variants(run_dir: Path, cfg, budgets=(16, 8, 4)) -> tuple[list[Variant], list[str]]:
    """The grid for this run, from what exists under it; and what is missing."""
    from ..lora import WEIGHTS_NAME
    from ..runfolder import ExperimentError, check_lora

    out = [Variant(f"teacher@{REFERENCE_STEPS}", "teacher", REFERENCE_STEPS, cfg.cfg)]
    out += [Variant(f"teacher@{s}", "teacher", s, cfg.cfg) for s in budgets]
    missing = []
    g = run_dir / "distill" / "guidance" / WEIGHTS_NAME
    if g.exists():
        out += [Variant(f"guidance-distilled@{s}", "guidance", s, 1.0, [("student", g)]) for s in (REFERENCE_STEPS,
                                                                                                *budgets)]
    else:
        missing.append("guidance-distilled (run `train distill-guidance RUN`)")
    steps_dirs = sorted((run_dir / "distill").glob("steps*/" + WEIGHTS_NAME)) if (run_dir / "distill").is_dir() else []
    for p in steps_dirs:
        n = int(p.parent.name.removeprefix("steps"))
        out.append(Variant(f"step-distilled@{n}", "steps", n, 1.0, [("student", p)], euler=True))
    if not steps_dirs:
        missing.append("step-distilled (run `train distill-steps RUN --steps 4`)")
    prunes = sorted((run_dir / "prune").glob("drop*/model/model_index.json")) if (run_dir / "prune").is_dir() else []
    for p in prunes:
        heal = p.parent.parent / "heal" / WEIGHTS_NAME
        out.append(Variant(f"pruned-{p.parent.parent.name}@{REFERENCE_STEPS}", "pruned", REFERENCE_STEPS, cfg.cfg,
                           [("heal", heal)] if heal.exists() else [], model_dir=p.parent, style=False))
    if not prunes:
        missing.append("pruned (run `train prune RUN --drop K`)")
    ranks = sorted((run_dir / "compress").glob("rank*/" + WEIGHTS_NAME)) if (run_dir / "compress").is_dir() else []
    for p in ranks:
        out.append(Variant(f"{p.parent.name}@{REFERENCE_STEPS}", "rank", REFERENCE_STEPS, cfg.cfg, [("rank", p)],
                           style=False))
    for v in out:  # a damaged variant stops the study before any work, naming the file
        for _, p in v.adapters:
            try:
                check_lora(p)
            except ExperimentError as e:
                raise ExperimentError(f"variant {v.name}: {e}; remove it or rerun the command that wrote it") from e
    if not ranks:
        missing.append("LoRA ranks (run `train compress RUN`)")
    return out, missing


def pareto(points: list[tuple[float, float]]) -> list[bool]:
    """For (latency, distance) points, lower both: is each on the front (no other point at most
    as slow and as far, and better in one)?"""
    front = []
    for i, (t, d) in enumerate(points):
        dominated = any((t2 <= t and d2 <= d) and (t2 < t or d2 < d) for j, (t2, d2) in enumerate(points) if j != i)
        front.append(not dominated)
    return front


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

    def agreement(self, frames: np.ndarray, fps: float) -> float:
        got = self.tags(frames, fps)
        if self.reference is None:
            self.reference = got
        js = [len(a & b) / len(a | b) if (a | b) else 1.0 for a, b in zip(got, self.reference)]
        return float(np.mean(js))


def study(run_dir, *, budgets=(16, 8, 4), prompts: int = 4, seeds=(0, 1), device: str | None = None,
          captioner: str | None = None, progress: bool = True, echo=print) -> dict:
    import torch
    from tqdm import tqdm

    from ..distill import sample_latents
    from ..distill_run import _heldout, _null
    from ..validate import eval_loss
    from . import metrics as M
    from .runctx import open_run

    from ..runfolder import ensure_writable, folder

    run_dir = folder(run_dir)
    ensure_writable(run_dir / "study")  # before minutes of sampling whose report could not be saved
    ctx = open_run(run_dir, device=device, adapter="style")
    cfg, pipe, dev = ctx.cfg, ctx.pipe, ctx.device
    grid, missing = variants(run_dir, cfg, budgets)
    items = _heldout(ctx, n=prompts)
    null = _null(ctx)
    zs = [(it, torch.randn(tuple(it["latents"].shape), generator=torch.Generator().manual_seed(20_000 + s)))
          for it in items for s in seeds]
    rows, ref_lat, ref_px = [], None, None
    base_pipe = pipe
    agree = TagAgreement(captioner, dev) if captioner else None
    for v in tqdm(grid, desc="study", unit="variant", disable=not progress):
        pipe = _pipeline_for(v, base_pipe, ctx)
        lat, secs, peak = [], [], 0.0
        for it, z in zs:
            with PeakMemory(dev) as mem:
                t0 = time.perf_counter()
                x = sample_latents(pipe, (it["embeds"], it["mask"]), null, z[None], cfg_scale=v.cfg, steps=v.steps,
                                   cfg=cfg, device=dev, euler=v.euler)
                secs.append(time.perf_counter() - t0)
            peak = max(peak, mem.mb)
            lat.append(x.float().cpu())
        lat = torch.cat(lat)
        px = _decode(pipe, lat)
        if ref_lat is None:
            ref_lat, ref_px = lat, px
        tr = pipe.transformer
        ev = None if v.kind == "steps" else eval_loss(tr, items, dev, next(tr.parameters()).dtype,
                                                         batch=cfg.batch_size).get("eval_loss")
        rows.append({"variant": v.name, "kind": v.kind, "steps": v.steps, "nfe": v.nfe,
                     "seconds_per_video": float(np.median(secs)),
                     "params": sum(p.numel() for n, p in tr.named_parameters() if "lora_" not in n),
                     "peak_mem_mb": peak,
                     "latent_distance": float(((lat - ref_lat) ** 2).mean()),
                     "pixel_distance": float(np.mean((px - ref_px) ** 2)),
                     "brightness_gap": float(abs(px.mean() - ref_px.mean()) * 255),
                     "palette_distance": float(np.mean([M.palette_distance(_u8(a), _u8(b)) for a, b in zip(px, ref_px)])),
                     "eval_loss": ev,
                     "tag_agreement": agree.agreement(px, cfg.fps) if agree else None})
    front = pareto([(r["seconds_per_video"], r["latent_distance"]) for r in rows])
    for r, f in zip(rows, front):
        r["pareto"] = f
    res = {"run": str(run_dir), "reference": f"teacher@{REFERENCE_STEPS}", "prompts": len(items),
           "seeds": list(seeds), "variants": rows, "missing": missing, "random_base": ctx.is_random}
    out = run_dir / "study"
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(json.dumps(res, indent=1, default=float) + "\n")
    _plot(rows, out / "quality_vs_latency.png")
    _report(res, out, run_dir.name)
    echo(f"study: {len(rows)} variants; report {out / 'report.md'} (and report.html, quality_vs_latency.png)")
    for m in missing:
        echo(f"  not in the grid: {m}")
    return res


def _u8(frames) -> np.ndarray:
    return (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)


def _pipeline_for(v: Variant, base_pipe, ctx):
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
    base_pipe.set_adapters(active, [1.0] * len(active))
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


def _plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        ax.scatter(r["seconds_per_video"], r["latent_distance"], c="#d33" if r["pareto"] else "#888", zorder=3)
        ax.annotate(r["variant"], (r["seconds_per_video"], r["latent_distance"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    front = sorted((r["seconds_per_video"], r["latent_distance"]) for r in rows if r["pareto"])
    if len(front) > 1:
        ax.plot(*zip(*front), "-", c="#d33", lw=1, label="Pareto front")
        ax.legend()
    ax.set(xlabel="seconds per video (measured)", ylabel=f"latent distance to teacher@{REFERENCE_STEPS}",
           title="quality vs latency")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _report(res: dict, out: Path, name: str) -> None:
    rows = res["variants"]
    md = [f"# Compression study: {name}", "",
          f"Every variant against {res['reference']} (the run's base model plus its LoRA, its CFG, "
          f"{REFERENCE_STEPS} steps) on {res['prompts']} held-out prompts x {len(res['seeds'])} noises (the same "
          "noises for every variant). Distances are mean squared (latents; frames in [0, 1]); brightness gap "
          "in 8-bit levels. **Pareto**: no other variant is both faster and closer. Peak memory: CUDA's allocator "
          "peak on a GPU; on the CPU, the resident set above what it was before that variant sampled.", "",
          "Reading it: diffusers runs CFG as one forward pass of batch 2 per step, so on a CPU a variant "
          "without CFG saves less time than its halved NFE says; the students' adapters are applied unfused "
          "(peft), which costs time that fusing them removes. The eval loss is the conditional flow loss: a "
          "guidance-distilled student predicts the guided velocity instead, so its eval loss is higher by "
          "design; a step-distilled student's is not comparable and is left blank. Tag agreement (with "
          "`--captioner`): the mean Jaccard between the tags the captioner gives a variant's video and the teacher's "
          "video from the same noise (video -> text -> video); blank without a captioner.", ""]
    if res["random_base"]:
        md += ["**Random tiny base model: the numbers exercise the pipeline only.**", ""]
    md += table(["variant", "NFE", "s / video", "params", "peak MB", "latent dist.", "pixel dist.", "brightness gap",
                 "palette dist.", "tag agreement", "eval loss", "Pareto"],
                [[r["variant"], r["nfe"], r["seconds_per_video"], r["params"], r["peak_mem_mb"], r["latent_distance"],
                  r["pixel_distance"], r["brightness_gap"], r["palette_distance"],
                  "" if r.get("tag_agreement") is None else r["tag_agreement"],
                  "" if r["eval_loss"] is None else r["eval_loss"], "yes" if r["pareto"] else ""] for r in rows])
    if res["missing"]:
        md += ["", "Not in the grid (no such variant under the run yet):", ""] + [f"- {m}" for m in res["missing"]]
    md += ["", "![quality vs latency](quality_vs_latency.png)"]
    write(out / "report.md", md, f"study {name}")


def dry_run(run_dir, budgets=(16, 8, 4)) -> list[str]:
    """The GPU memory of sampling each kind of variant on the real 2B config. Sampling keeps no
    graph: the peak is the weights, one block's activations for the batch the sampler runs (2 with
    CFG, 1 without), and the reserve; a pruned model holds fewer weights."""
    from ..config import TrainConfig
    from ..memory import GIB, REAL_TRANSFORMER, RESERVE_GIB, at_real_shape, count_params, measured, tokens_for

    run_dir = Path(run_dir)
    from ..runfolder import read_config

    cfg, note = at_real_shape(read_config(run_dir), run_dir)
    m, n_params, _ = measured(cfg.rank, cfg.lora_targets)
    per = m.saved(tokens_for(cfg.frames, cfg.height, cfg.width))
    lines = [note] if note else []

    def gib(params: int, batch: int) -> float:
        return (params * 2 + batch * per) / GIB + RESERVE_GIB

    lines.append(f"teacher with CFG (batch 2 per step), any budget {sorted(budgets, reverse=True)}: "
                 f"{gib(n_params, 2):.1f} GiB")
    lines.append(f"distilled students (guidance 1, batch 1): {gib(n_params, 1):.1f} GiB")
    blocks = REAL_TRANSFORMER.get("num_layers", 20)
    for p in sorted((run_dir / "prune").glob("drop*/model")) if (run_dir / "prune").is_dir() else []:
        k = int(p.parent.name.removeprefix("drop"))
        if 1 <= k < blocks:
            lines.append(f"{p.parent.name} ({blocks - k} of {blocks} blocks) with CFG: "
                         f"{gib(count_params(blocks - k), 2):.1f} GiB")
    lines.append("(the study itself samples one video at a time; `--prompts` and `--seeds` change the time, not "
                 "the peak)")
    return lines
