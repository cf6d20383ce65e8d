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
    return generate_many(pipe, [embeds], null, seeds=[seed], cfg=cfg, steps=steps, height=height, width=width,
                         frames=frames, device=device)[0]


def generate_many(pipe, embeds: list[tuple], null: tuple, *, seeds: list[int], cfg: float, steps: int, height: int,
                  width: int, frames: int, device) -> list:
    """Videos for several prompts in one pipeline call, one generator per prompt: each video is the
    one `generate` makes from its seed alone (the pipeline draws each sample's noise from its own
    generator), up to float rounding."""
    import torch

    ne, nm = null
    gens = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
    n = len(embeds)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        out = pipe(prompt=None, negative_prompt=None,
                   prompt_embeds=torch.stack([e for e, _ in embeds]).to(device),
                   prompt_attention_mask=torch.stack([m for _, m in embeds]).to(device),
                   negative_prompt_embeds=ne[None].expand(n, *ne.shape).to(device),
                   negative_prompt_attention_mask=nm[None].expand(n, *nm.shape).to(device),
                   guidance_scale=cfg, num_inference_steps=steps, height=height, width=width, frames=frames,
                   generator=gens, use_resolution_binning=False, output_type="np")
    return list(out.frames)


def step_label(step: int) -> str:
    return "base" if step == 0 else f"step_{step:06d}"


def batches(settings: list[dict], size: int) -> list[list[int]]:
    """Prompt indices in groups of at most `size` that share size, frames and cfg, in prompt order."""
    groups: dict[tuple, list[list[int]]] = {}
    for i, st in enumerate(settings):
        key = (st["height"], st["width"], st["frames"], st["cfg"])
        runs = groups.setdefault(key, [[]])
        if len(runs[-1]) >= size:
            runs.append([])
        runs[-1].append(i)
    return sorted((g for runs in groups.values() for g in runs), key=lambda g: g[0])


def run_validation(pipe, prompts, embeds: list[tuple], null: tuple, *, step: int, out_dir: Path, cfg, device,
                   adapter: bool = True) -> list[Path]:
    """Generate every validation prompt at this step; step 0 runs the base model (adapter off)."""
    tr = pipe.transformer
    if not adapter:
        tr.disable_adapters()
    try:
        d = out_dir / "validation" / step_label(step)
        d.mkdir(parents=True, exist_ok=True)
        settings = [vp.settings(cfg) for vp in prompts]  # a prompts file may set seed, size, frames, cfg
        for group in batches(settings, cfg.validation_batch):
            st = settings[group[0]]
            videos = generate_many(pipe, [embeds[i] for i in group], null, seeds=[settings[i]["seed"] for i in group],
                                   cfg=st["cfg"], steps=cfg.validation_steps, height=st["height"],
                                   width=st["width"], frames=st["frames"], device=device)
            for i, video in zip(group, videos):
                save_gif(video, d / f"p{i}.gif", cfg.fps)
                save_mp4(video, d / f"p{i}.mp4", cfg.fps)
        paths = [d / f"p{i}.gif" for i in range(len(prompts))]
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


def eval_loss(transformer, items: list[dict], device, dtype, sigmas=flow.EVAL_SIGMAS, batch: int = 1) -> dict:
    """Mean flow loss on held-out windows at fixed sigma quantiles with fixed noise: deterministic,
    so curves are comparable across runs and across resumes. `batch` sigmas of a window go through
    the transformer together (the same losses, fewer passes; the run's --batch-size fits)."""
    import hashlib

    import torch

    from .objectives import predict

    if not items:
        return {}
    per_sigma = {s: [] for s in sigmas}
    batch = max(1, int(batch))
    with torch.no_grad():
        for it in items:
            x0 = it["latents"][None].to(device, torch.float32)
            seed = int(hashlib.sha1(it["key"].encode()).hexdigest()[:8], 16)
            g = torch.Generator().manual_seed(seed)
            noise = torch.randn(x0.shape, generator=g).to(device)
            for i in range(0, len(sigmas), batch):
                chunk = sigmas[i : i + batch]
                n = len(chunk)
                sig = torch.tensor(chunk, device=device, dtype=torch.float32)
                xs, ns = x0.expand(n, *x0.shape[1:]), noise.expand(n, *noise.shape[1:])
                xt = flow.noisy(xs, ns, sig)
                pred = predict(transformer, xt, it["embeds"][None].expand(n, *it["embeds"].shape),
                               it["mask"][None].expand(n, *it["mask"].shape), sig, dtype, device)
                for s, loss in zip(chunk, flow.per_sample_loss(pred, flow.target(xs, ns)).tolist()):
                    per_sigma[s].append(loss)
    by = {f"{s:.1f}": sum(v) / len(v) for s, v in per_sigma.items()}
    return {"eval_loss": sum(by.values()) / len(by), "eval_loss_by_sigma": by}
