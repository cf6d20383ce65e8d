"""`train sweep-steps RUN`: what fewer sampler steps (and other CFG values) cost.

Every validation prompt is generated with the LoRA at each step count and CFG, same seed. The
reference is the largest step count at the same CFG. For each video: seconds taken, PSNR and
SSIM per frame against the reference, palette distance to it, and the style/temporal stats.
"""

from __future__ import annotations

import math

import json
from pathlib import Path

import numpy as np

from . import metrics as M
from .report import table, write
from .runctx import generate, open_run


def sweep_steps(run_dir, *, steps=(4, 8, 16, 32, 50), cfgs=(4.0,), prompts_file=None, seed=None, device=None,
                limit_prompts=None, progress=True) -> dict:
    from tqdm import tqdm

    from dataengine.media import save_gif
    from ..prompts import validation_prompts

    ctx = open_run(run_dir, device=device)
    cfg = ctx.cfg
    seed = cfg.validation_seed if seed is None else seed
    vps = validation_prompts(prompts_file or cfg.validation_prompts)[: limit_prompts or None]
    steps = sorted(set(int(s) for s in steps))
    ref_steps = steps[-1]
    out = ctx.out_dir / "sweep_steps"
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    jobs = [(c, i, s) for c in cfgs for i in range(len(vps)) for s in reversed(steps)]  # reference first
    refs = {}
    generate(ctx, vps[0].prompt, lora=True, seed=seed, steps=1)  # warm-up, so the first timing is not inflated
    for c, i, s in tqdm(jobs, desc="sweep", unit="video", disable=not progress):
        video, secs = generate(ctx, vps[i].prompt, lora=True, seed=seed, steps=s, cfg_scale=c)
        save_gif(video, out / f"cfg{c:g}_p{i}_s{s}.gif", cfg.fps)
        if s == ref_steps:
            refs[(c, i)] = video
        ref = refs[(c, i)]
        psnr_f = M.per_frame(M.psnr, video, ref)
        ssim_f = M.per_frame(M.ssim, video, ref)
        rows.append({"cfg": c, "prompt": i, "steps": s, "seconds": secs,
                     "psnr": float(np.mean([p for p in psnr_f if np.isfinite(p)])) if any(np.isfinite(psnr_f)) else float("inf"),
                     "psnr_per_frame": psnr_f, "ssim": float(np.mean(ssim_f)), "ssim_per_frame": ssim_f,
                     "palette_distance_to_ref": M.palette_distance(video, ref), **M.style_stats(video, cfg.fps)})
    summary = []
    for c in cfgs:
        for s in steps:
            rs = [r for r in rows if r["cfg"] == c and r["steps"] == s]
            fin = [r["psnr"] for r in rs if np.isfinite(r["psnr"])]
            summary.append({"cfg": c, "steps": s, "seconds_per_video": float(np.mean([r["seconds"] for r in rs])),
                            "psnr": float(np.mean(fin)) if fin else float("inf"),
                            "ssim": float(np.mean([r["ssim"] for r in rs])),
                            "palette_distance_to_ref": float(np.mean([r["palette_distance_to_ref"] for r in rs])),
                            **{k: float(np.mean([r[k] for r in rs])) for k in ("saturation", "edge_density", "flicker", "motion_score")}})
    res = {"run": str(ctx.out_dir), "reference_steps": ref_steps, "seed": seed, "cfgs": list(cfgs), "steps": steps,
           "random_base": ctx.is_random, "prompts": [p.prompt for p in vps], "videos": rows, "summary": summary}
    (out / "metrics.json").write_text(json.dumps(res, indent=1, default=float))
    _plot(summary, cfgs, out / "quality_vs_time.png", ref_steps)
    md = [f"# Sampling-step budget: {ctx.out_dir.name}", "",
          f"{len(vps)} validation prompts, seed {seed}, LoRA on; reference = {ref_steps} steps at the same CFG.", ""]
    if ctx.is_random:
        md += ["**Random tiny base model: timings are real, quality numbers only exercise the pipeline.**", ""]
    md += table(["cfg", "steps", "s/video", "PSNR vs ref (dB)", "SSIM vs ref", "palette dist. to ref",
                 "saturation", "edge density", "flicker", "motion"],
                [[r["cfg"], r["steps"], r["seconds_per_video"], r["psnr"], r["ssim"], r["palette_distance_to_ref"],
                  r["saturation"], r["edge_density"], r["flicker"], r["motion_score"]] for r in summary])
    md += ["", "![quality vs time](quality_vs_time.png)"]
    write(out / "report.md", md, f"sweep-steps {ctx.out_dir.name}")
    return res


def _plot(summary, cfgs, path: Path, ref_steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for c in cfgs:
        # the reference itself (and any budget identical to it) has infinite PSNR: it has no place on the axis
        rs = [r for r in summary if r["cfg"] == c and r["steps"] != ref_steps
              and r["psnr"] is not None and math.isfinite(r["psnr"])]
        if not rs:
            continue
        x = [r["seconds_per_video"] for r in rs]
        axes[0].plot(x, [r["psnr"] for r in rs], "o-", label=f"cfg {c:g}")
        axes[1].plot(x, [r["ssim"] for r in rs], "o-", label=f"cfg {c:g}")
        for r in rs:
            axes[0].annotate(str(r["steps"]), (r["seconds_per_video"], r["psnr"]))
    axes[0].set(xlabel="seconds per video", ylabel=f"PSNR vs {ref_steps}-step (dB)", title="quality vs time")
    axes[1].set(xlabel="seconds per video", ylabel=f"SSIM vs {ref_steps}-step")
    from .plotstyle import tidy

    for a in axes:
        a.grid(alpha=0.3)
        tidy(a)
        if a.get_legend_handles_labels()[0]:
            a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
