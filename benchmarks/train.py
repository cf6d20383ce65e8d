"""Benchmark: the training step on the tiny preset, and what the real configuration costs.

Measures in one process, on synthetic clips:
  - step time with a warm latent/text cache against without a cache (frames decoded, VAE- and
    text-encoded every step), same batch, same model;
  - loop overhead: a bare transformer forward+backward+optimizer step on tensors already in memory,
    over the step time measured by the real training loop (`train.loop.train`, steps_per_s);
  - peak RSS;
and prints the FLOPs of one step at the original experiment's configuration (224x224x81, batch 8)
from the real SANA-Video 2B transformer config (built on the meta device: no weights needed).
Usage: python benchmarks/train.py [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

# this file is named train.py: keep its folder off the path so `import train` finds the package
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def real_config_flops(batch: int = 8, frames: int = 81, height: int = 224, width: int = 224) -> None:
    import torch
    from accelerate import init_empty_weights
    from diffusers import SanaVideoTransformer3DModel

    with init_empty_weights():
        tr = SanaVideoTransformer3DModel()  # the class defaults are the 2B 480p config
    params = sum(p.numel() for p in tr.parameters())
    block_params = sum(p.numel() for p in tr.transformer_blocks.parameters())
    lat_t = (frames - 1) // 4 + 1
    tokens = lat_t * (height // 8 // 2) * (width // 8 // 2)
    n = tokens * batch
    fwd = 2 * block_params * n
    # frozen base: backward computes activation grads (~2x forward FLOPs) but no weight grads
    step = fwd * 2
    print(f"real config: SanaVideoTransformer3DModel defaults = {params / 1e9:.2f} B params "
          f"({block_params / 1e9:.2f} B in blocks); {lat_t} latent frames x {height // 16}x{width // 16} patches "
          f"= {tokens} tokens/sample, {n} tokens/step at batch {batch}")
    print(f"  forward ~= 2*P*N = {fwd / 1e12:.1f} TFLOP; LoRA step (fwd + activation-grad bwd) ~= 4*P*N = "
          f"{step / 1e12:.1f} TFLOP")
    for name, peak in (("A100 bf16 312 TFLOP/s", 312e12), ("H100 bf16 989 TFLOP/s", 989e12)):
        print(f"  at 40% MFU on {name}: {step / (0.4 * peak):.2f} s/step -> 10,000 steps = "
              f"{step / (0.4 * peak) * 10_000 / 3600:.1f} h")
    del tr, torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    import torch

    from dataengine.analyze import IngestOptions
    from dataengine.ingest import ingest_paths
    from dataengine.synth import make_cartoon
    from train import flow
    from train.cache import Cache, encode_text, frames_to_tensor, normalise_latents
    from train.config import TrainConfig
    from train.data import build_manifest, read_window, select_rows
    from train.loop import _load_batch, train
    from train.lora import add_lora, trainable_parameters
    from train.models import load_components
    from train.presets import load_preset

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for i in range(3):
            make_cartoon(tmp / "v" / f"c{i}.mp4", duration_s=8 + i, fps=24, size=(320, 240), cuts=[4.0 + i * 0.3])
        cat = tmp / "c.duckdb"
        ingest_paths(cat, [tmp / "v"], IngestOptions(), progress=False)
        cfg = TrainConfig(**{**load_preset("tiny"), "catalog": str(cat), "query": "1=1", "max_steps": args.steps,
                             "validation_every": 0, "checkpoint_every": 0, "holdout": 0})
        man = build_manifest(cfg, select_rows(cfg))
        win = [w for w in man.windows if w.role == "train"]
        comps = load_components("tiny")
        cache = Cache(tmp / "cache", comps, cfg.height, cfg.width, cfg.max_sequence_length)
        t0 = time.perf_counter()
        cache.precompute(man.windows, [w.prompt for w in man.windows], "cpu", progress=False)
        t_pre = time.perf_counter() - t0
        pipe = comps.pipeline()
        tr = comps.transformer
        add_lora(tr, rank=cfg.rank, alpha=cfg.alpha, dropout=0.0, targets="linear")
        params = trainable_parameters(tr)
        opt = torch.optim.AdamW(params, lr=1e-4)
        from safetensors.torch import load_file

        null = load_file(str(cache.null_path()))
        g = torch.Generator().manual_seed(0)
        B = cfg.batch_size

        def fwd_bwd(x0, emb, mask):
            noise = torch.randn(x0.shape, generator=g)
            sig = flow.sample_sigmas(len(x0), shift=cfg.flow_shift, generator=g)
            pred = tr(flow.noisy(x0, noise, sig), encoder_hidden_states=emb, encoder_attention_mask=mask,
                      timestep=flow.timesteps(sig), return_dict=False)[0]
            loss = flow.per_sample_loss(pred, flow.target(x0, noise)).mean()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        def cached_step(i):
            b = _load_batch([win[(i * B + k) % len(win)] for k in range(B)], cache, null,
                            (torch.rand(B, generator=g) < 0.1).tolist())
            fwd_bwd(b["latents"], b["embeds"], b["mask"])

        readers: dict = {}

        def uncached_step(i):
            ws = [win[(i * B + k) % len(win)] for k in range(B)]
            lats = []
            for w in ws:
                x = frames_to_tensor(read_window(w, cfg.height, cfg.width, readers))
                with torch.no_grad():
                    lats.append(normalise_latents(comps.vae.encode(x).latent_dist.mode(), comps.vae)[0])
            pe, pm, _, _ = encode_text(pipe, [w.prompt for w in ws], cfg.max_sequence_length, "cpu")
            fwd_bwd(torch.stack(lats), pe, pm)

        b0 = _load_batch(win[:B], cache, null, [False] * B)

        def bare_step(i):
            fwd_bwd(b0["latents"], b0["embeds"], b0["mask"])

        def timeit(fn, n):
            fn(0)  # warm-up
            ts = []
            for i in range(1, n + 1):
                t = time.perf_counter()
                fn(i)
                ts.append(time.perf_counter() - t)
            return statistics.median(ts)

        n = max(3, args.steps // 2)
        t_bare = timeit(bare_step, n)
        t_cached = timeit(cached_step, n)
        t_uncached = timeit(uncached_step, max(3, n // 3))
        print(f"tiny preset: batch {B}, {cfg.frames} frames {cfg.height}x{cfg.width}; {len(win)} windows; "
              f"cache precompute {t_pre:.2f} s")
        print(f"  bare fwd+bwd+opt (tensors in memory): {t_bare * 1000:7.1f} ms/step")
        print(f"  warm cache step                     : {t_cached * 1000:7.1f} ms/step")
        print(f"  no cache (decode+VAE+text each step): {t_uncached * 1000:7.1f} ms/step  "
              f"-> cache is {t_uncached / t_cached:.1f}x faster")

        # the real loop, as `train` runs it
        out = tmp / "run"
        out.mkdir()
        train(cfg, man, out, cache_root=tmp / "cache", progress=False)
        m = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if l.strip()]
        sps = [x["steps_per_s"] for x in m if "steps_per_s" in x][2:]  # skip warm-up steps
        t_loop = 1 / statistics.median(sps)
        print(f"  real training loop (median)         : {t_loop * 1000:7.1f} ms/step  "
              f"-> loop overhead ratio bare/loop = {t_bare / t_loop:.2f}")
        print(f"  peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    real_config_flops()


if __name__ == "__main__":
    main()
