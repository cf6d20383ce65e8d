"""`train compress RUN`: truncate a trained LoRA to lower ranks by SVD of each B.A pair.

For every adapted layer, the update is dW = (alpha / r) B A. Its SVD U S V^T truncated to k
singular values gives the best rank-k approximation (Eckart-Young). We store B' = U_k S_k^(1/2),
A' = S_k^(1/2) V_k^T with alpha' = k (scale 1), so B'A' = dW_k exactly, as a normal diffusers LoRA.
Convolution LoRAs are flattened to matrices and reshaped back.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .report import table, write


def _pairs(sd: dict) -> dict[str, tuple[str, str]]:
    out = {}
    for k in sd:
        if ".lora_A." in k:
            b = k.replace(".lora_A.", ".lora_B.")
            if b in sd:
                out[k.split(".lora_A.")[0]] = (k, b)
    return out


def truncate(sd: dict, rank: int, alpha: float, k: int) -> tuple[dict, dict]:
    """(new state dict, stats) with every pair truncated to rank min(k, r)."""
    import torch

    new, energy_kept, energy_all = {}, 0.0, 0.0
    scale = alpha / rank
    for name, (ka, kb) in _pairs(sd).items():
        A, B = sd[ka].float(), sd[kb].float()
        a2 = A.reshape(A.shape[0], -1)  # (r, in*kh*kw)
        b2 = B.reshape(B.shape[0], -1)  # (out, r)
        dw = scale * (b2 @ a2)
        U, S, Vh = torch.linalg.svd(dw, full_matrices=False)
        kk = min(k, S.numel())
        energy_all += float((S ** 2).sum())
        energy_kept += float((S[:kk] ** 2).sum())
        root = S[:kk].sqrt()
        nb = U[:, :kk] * root
        na = root[:, None] * Vh[:kk]
        new[kb] = nb.reshape(B.shape[0], kk, *B.shape[2:]).contiguous()
        new[ka] = na.reshape(kk, *A.shape[1:]).contiguous()
    for key, v in sd.items():  # anything that is not a LoRA pair is kept as is
        if key not in new and ".lora_A." not in key and ".lora_B." not in key:
            new[key] = v
    return new, {"retained_energy": energy_kept / energy_all if energy_all else 1.0}


def delta_weights(sd: dict, rank: int, alpha: float) -> dict:
    """Layer -> dense dW, for checks."""
    out = {}
    for name, (ka, kb) in _pairs(sd).items():
        A, B = sd[ka].float(), sd[kb].float()
        out[name] = (alpha / rank) * (B.reshape(B.shape[0], -1) @ A.reshape(A.shape[0], -1))
    return out


def save_truncated(out_dir: Path, sd: dict, k: int, base_meta: dict) -> Path:
    from diffusers import SanaVideoPipeline

    from ..lora import WEIGHTS_NAME

    out_dir.mkdir(parents=True, exist_ok=True)
    targets = sorted({n.split(".lora_A.")[0].removeprefix("transformer.") for n in sd if ".lora_A." in n})
    meta = {"r": k, "lora_alpha": k, "target_modules": targets, "lora_dropout": 0.0}
    stripped = {n.removeprefix("transformer."): v for n, v in sd.items()}
    SanaVideoPipeline.save_lora_weights(out_dir, transformer_lora_layers=stripped, weight_name=WEIGHTS_NAME,
                                        transformer_lora_adapter_metadata=meta)
    (out_dir / "lora_metadata.json").write_text(json.dumps({**base_meta, "rank": k, "alpha": float(k),
                                                            "compressed_from_rank": base_meta.get("rank")}, indent=2))
    return out_dir / WEIGHTS_NAME


def compress(run_dir, *, ranks=None, device=None, seed=None, steps=None, limit_prompts=None, progress=True) -> dict:
    from tqdm import tqdm

    from ..lora import WEIGHTS_NAME
    from dataengine.media import save_gif
    from ..prompts import validation_prompts
    from ..validate import eval_loss
    from . import evalset, metrics as M
    from .runctx import ExperimentError, generate, open_run

    run_dir = Path(run_dir)
    from .. import runfolder

    runfolder.read_config(run_dir)
    runfolder.ensure_writable(run_dir / "compress")
    meta = runfolder.read_metadata(run_dir)
    full_path = run_dir / WEIGHTS_NAME
    sd = runfolder.lora_state(full_path)  # whole, readable and finite before the SVD
    r, alpha = int(meta.get("rank", 0)), float(meta.get("alpha", 0))
    if not r:
        raise ExperimentError(f"{run_dir}/lora_metadata.json does not give the rank")
    ranks = sorted({int(k) for k in (ranks or [r // 2 ** i for i in range(1, 8) if r // 2 ** i >= 1])}, reverse=True)
    if any(k < 1 or k > r for k in ranks):
        raise ExperimentError(f"ranks must be between 1 and the LoRA's rank {r}")
    out = run_dir / "compress"
    variants = [("full", r, full_path, 1.0)]
    for k in ranks:
        new, st = truncate(sd, r, alpha, k)
        p = save_truncated(out / f"rank{k}", new, k, meta)
        variants.append((f"rank{k}", k, p, st["retained_energy"]))
    # quality of each variant against the full LoRA: videos on the validation prompts + eval loss
    ctx = open_run(run_dir, device=device)
    cfg = ctx.cfg
    seed = cfg.validation_seed if seed is None else seed
    steps = steps or cfg.validation_steps
    vps = validation_prompts(cfg.validation_prompts)[: limit_prompts or None]
    es, items = evalset.window_items(ctx)  # the eval loss on the run's evaluation set
    rows, refs = [], {}
    pipe = ctx.pipe
    for name, k, path, energy in tqdm(variants, desc="compress", unit="rank", disable=not progress):
        if name != "full":
            runfolder.load_lora(pipe, path, name, ctx.cfg.base_model)
        pipe.set_adapters(["lora" if name == "full" else name], [1.0])
        vids = []
        for i, vp in enumerate(vps):
            v, _ = generate(ctx, vp.prompt, lora=True, seed=seed, steps=steps)
            save_gif(v, out / f"{name}_p{i}.gif", cfg.fps)
            vids.append(v)
        if name == "full":
            refs = vids
        tr = pipe.transformer
        ev = eval_loss(tr, items, ctx.device, next(tr.parameters()).dtype, batch=ctx.cfg.batch_size).get("eval_loss")
        psnrs = [M.psnr(v, rf) for v, rf in zip(vids, refs)]
        fin = [p for p in psnrs if np.isfinite(p)]
        rows.append({"variant": name, "rank": k, "file_bytes": path.stat().st_size, "retained_energy": energy,
                     "eval_loss": ev, "psnr_vs_full": float(np.mean(fin)) if fin else float("inf"),
                     "ssim_vs_full": float(np.mean([M.ssim(v, rf) for v, rf in zip(vids, refs)])),
                     "palette_distance_vs_full": float(np.mean([M.palette_distance(v, rf) for v, rf in zip(vids, refs)])),
                     "path": str(path)})
    res = {"run": str(run_dir), "rank": r, "alpha": alpha, "random_base": ctx.is_random, "variants": rows,
           "evaluation_set": es.as_json()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(res, indent=1, default=float))
    _plot(rows, out / "rank_tradeoff.png")
    md = [f"# LoRA rank compression: {run_dir.name}", "",
          f"SVD truncation of each B.A pair of the rank-{r} LoRA; each variant is a diffusers LoRA in "
          f"`compress/rank<k>/`. Metrics against the full LoRA on {len(vps)} validation prompts (seed {seed}, "
          f"{steps} steps) and the eval loss on {len(items)} held-out windows.", ""]
    if ctx.is_random:
        md += ["**Random tiny base model: the numbers exercise the pipeline only.**", ""]
    md += table(["variant", "rank", "file bytes", "retained energy", "eval loss", "PSNR vs full (dB)", "SSIM vs full",
                 "palette dist. vs full"],
                [[x["variant"], x["rank"], x["file_bytes"], x["retained_energy"], x["eval_loss"], x["psnr_vs_full"],
                  x["ssim_vs_full"], x["palette_distance_vs_full"]] for x in rows])
    md += ["", "![rank trade-off](rank_tradeoff.png)"]
    write(out / "report.md", md, f"compress {run_dir.name}")
    return res


def _plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda x: x["rank"])
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ks = [x["rank"] for x in rows]
    ax[0].plot(ks, [x["retained_energy"] for x in rows], "o-")
    ax[0].set(xlabel="rank", ylabel="retained spectral energy", xscale="log", title="energy kept")
    ax[1].plot(ks, [x["eval_loss"] for x in rows], "o-", label="eval loss")
    ax[1].set(xlabel="rank", ylabel="eval loss", xscale="log", title="quality")
    from .plotstyle import tidy

    for a in ax:
        a.grid(alpha=0.3)
        tidy(a, integer_x=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
