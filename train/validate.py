"""Validation videos, the step x prompt gallery, and the held-out eval loss."""

from __future__ import annotations

import html
import json
from pathlib import Path

from . import flow
from dataengine.media import save_gif, save_mp4


def generate(pipe, embeds: tuple, null: tuple, *, seed: int, cfg: float, steps: int, height: int, width: int,
             frames: int, device):
    """One video (T,H,W,3 float in [0,1]) from cached prompt embeddings, as the pipeline would."""
    import torch

    pe, pm = embeds
    ne, nm = null
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        out = pipe(prompt=None, negative_prompt=None, prompt_embeds=pe[None].to(device),
                   prompt_attention_mask=pm[None].to(device),
                   negative_prompt_embeds=ne[None].to(device), negative_prompt_attention_mask=nm[None].to(device),
                   guidance_scale=cfg, num_inference_steps=steps, height=height, width=width, frames=frames,
                   generator=gen, use_resolution_binning=False, output_type="np")
    return out.frames[0]


def step_label(step: int) -> str:
    return "base" if step == 0 else f"step_{step:06d}"


def run_validation(pipe, prompts, embeds: list[tuple], null: tuple, *, step: int, out_dir: Path, cfg, device,
                   adapter: bool = True) -> list[Path]:
    """Generate every validation prompt at this step; step 0 runs the base model (adapter off)."""
    tr = pipe.transformer
    if not adapter:
        tr.disable_adapters()
    try:
        d = out_dir / "validation" / step_label(step)
        d.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, (vp, e) in enumerate(zip(prompts, embeds)):
            st = vp.settings(cfg)  # a prompts file may set seed, size, frames and cfg per prompt
            video = generate(pipe, e, null, seed=st["seed"], cfg=st["cfg"], steps=cfg.validation_steps,
                             height=st["height"], width=st["width"], frames=st["frames"], device=device)
            save_gif(video, d / f"p{i}.gif", cfg.fps)
            save_mp4(video, d / f"p{i}.mp4", cfg.fps)
            paths.append(d / f"p{i}.gif")
        (d / "prompts.json").write_text(json.dumps([{"summary": p.summary, "prompt": p.prompt, **p.settings(cfg)}
                                                    for p in prompts], indent=1))
    finally:
        if not adapter:
            tr.enable_adapters()
    return paths


def write_gallery(out_dir: Path, prompts, title: str, note: str = "") -> tuple[Path, Path]:
    """gallery.md and gallery.html: one row per validation step (Base, 100, 1000...), one column per prompt."""
    vdir = out_dir / "validation"
    steps = sorted(p for p in vdir.iterdir() if p.is_dir()) if vdir.exists() else []
    steps.sort(key=lambda p: -1 if p.name == "base" else int(p.name.split("_")[1]))
    head = ["step"] + [p.summary for p in prompts]
    md = [f"# {title}", "", note, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows_html = []
    for s in steps:
        label = "Base" if s.name == "base" else str(int(s.name.split("_")[1]))
        cells = [f"![{label} p{i}](validation/{s.name}/p{i}.gif)" if (s / f"p{i}.gif").exists() else ""
                 for i in range(len(prompts))]
        md.append(f"| {label} | " + " | ".join(cells) + " |")
        tds = "".join(f'<td><img src="validation/{s.name}/p{i}.gif" width="160"></td>' if (s / f"p{i}.gif").exists()
                      else "<td></td>" for i in range(len(prompts)))
        rows_html.append(f"<tr><th>{label}</th>{tds}</tr>")
    md += ["", "Prompts:", ""] + [f"- **{p.summary}**" + (f" ({p.overrides()})" if p.overrides() else "")
                                  + f": {p.prompt}" for p in prompts]
    mdp = out_dir / "gallery.md"
    mdp.write_text("\n".join(md) + "\n")
    ths = "".join(f'<th title="{html.escape(p.prompt)}">{html.escape(p.summary)}</th>' for p in prompts)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif}td,th{padding:4px;text-align:center;vertical-align:top}</style>"
            f"</head><body><h1>{html.escape(title)}</h1><p>{html.escape(note)}</p>"
            f"<table><tr><th>step</th>{ths}</tr>{''.join(rows_html)}</table></body></html>")
    hp = out_dir / "gallery.html"
    hp.write_text(page)
    return mdp, hp


def eval_loss(transformer, items: list[dict], device, dtype, sigmas=flow.EVAL_SIGMAS) -> dict:
    """Mean flow loss on held-out windows at fixed sigma quantiles with fixed noise: deterministic,
    so curves are comparable across runs and across resumes."""
    import hashlib

    import torch

    from .objectives import predict

    if not items:
        return {}
    per_sigma = {s: [] for s in sigmas}
    with torch.no_grad():
        for it in items:
            x0 = it["latents"][None].to(device, torch.float32)
            seed = int(hashlib.sha1(it["key"].encode()).hexdigest()[:8], 16)
            g = torch.Generator().manual_seed(seed)
            noise = torch.randn(x0.shape, generator=g).to(device)
            for s in sigmas:
                sig = torch.full((1,), s, device=device)
                xt = flow.noisy(x0, noise, sig)
                pred = predict(transformer, xt, it["embeds"][None], it["mask"][None], sig, dtype, device)
                per_sigma[s].append(flow.per_sample_loss(pred, flow.target(x0, noise)).item())
    by = {f"{s:.1f}": sum(v) / len(v) for s, v in per_sigma.items()}
    return {"eval_loss": sum(by.values()) / len(by), "eval_loss_by_sigma": by}
