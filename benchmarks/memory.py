"""GPU memory of SANA-Video LoRA training, projected from the real block config.

Builds the real 2B transformer's block (20 heads x 112, mlp ratio 3, caption dim 2304, patch
(1,2,2)) with real widths and two blocks, attaches the LoRA, runs one forward pass under bf16
autocast on the CPU and counts what autograd saves for backward per block per sample (as
`torch.autograd.graph.saved_tensors_hooks` sees it), with and without gradient checkpointing.
Then projects the peak for training configurations against 24, 40, 80 and 141 GB GPUs.

    python benchmarks/memory.py            # fit from 196 and 392 tokens, then project
    python benchmarks/memory.py --full     # also measure directly at 4,116 tokens (~1 min) to check the fit
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# benchmarks/train.py would shadow the `train` package when this folder is sys.path[0]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
from train import memory as M  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true", help="measure at 4,116 tokens too (checks the linear fit)")
    ap.add_argument("--rank", type=int, default=16)
    args = ap.parse_args()

    t0 = time.perf_counter()
    pts = M.measure_block(rank=args.rank)
    fit = M.fit(pts, rank=args.rank)
    t_fit = time.perf_counter() - t0
    ck = M.measure_block(rank=args.rank, checkpointing=True)
    print(f"measured in {t_fit:.1f} s (bf16 autocast, LoRA rank {args.rank} on every linear, dropout 0.1)")
    print("| tokens | saved/block/sample, no ckpt | saved inside a checkpointed block (hooks) | block input kept |")
    print("|---|---|---|---|")
    for (t, s, i), (_, sc, _) in zip(pts, ck):
        print(f"| {t} | {s / 2**20:.1f} MiB | {sc / 2**20:.1f} MiB | {i / 2**20:.2f} MiB |")
    print(f"fit: saved = {fit.saved_a / 1024:.1f} KiB x tokens + {fit.saved_b / 2**20:.1f} MiB; "
          f"at 4,116 tokens {fit.saved(4116) / 2**30:.3f} GiB per block per sample")
    if args.full:
        t1 = time.perf_counter()
        (t, s, i), = M.measure_block(tokens_list=(4116,), rank=args.rank)
        print(f"direct at {t} tokens: {s / 2**30:.3f} GiB per block per sample "
              f"(fit error {100 * (fit.saved(t) - s) / s:+.1f}%), {time.perf_counter() - t1:.0f} s")

    n_params = M.count_params()
    rows = []
    for frames, size, batch, rank, opt in [(81, 224, 8, 16, "adamw"), (81, 224, 1, 16, "adamw"),
                                           (81, 224, 8, 64, "adamw"), (81, 224, 8, 16, "adamw8bit"),
                                           (49, 224, 8, 16, "adamw"), (81, 480, 1, 16, "adamw")]:
        m = fit if rank == args.rank else M.fit(M.measure_block(rank=rank), rank=rank)
        for ckpt in (False, True):
            p = M.project(m, frames=frames, height=size, width=size if size == 224 else 832, batch=batch, rank=rank,
                          checkpointing=ckpt, optimizer=opt, n_params=n_params, n_lora=M.lora_params(rank))
            rows.append((f"{size}x{size if size == 224 else 832} x {frames}", opt, p))
    print()
    print(f"real transformer: {n_params / 1e9:.3f} B parameters (bf16 {n_params * 2 / 2**30:.2f} GiB); "
          f"reserve {M.RESERVE_GIB} GiB for CUDA context, workspaces and fragmentation")
    print("| size x frames | optimizer | batch | rank | ckpt | tokens | act/block/sample | weights | LoRA+opt | "
          "activations | total | " + " | ".join(f"{g} GB" for g in M.GPU_SIZES_GB) + " |")
    print("|" + "---|" * (11 + len(M.GPU_SIZES_GB)))
    for label, opt, p in rows:
        fits = " | ".join("fits" if p.fits(g) else "OOM" for g in M.GPU_SIZES_GB)
        print(f"| {label} | {opt} | {p.batch} | {p.rank} | {'on' if p.checkpointing else 'off'} | {p.tokens} | "
              f"{p.per_block_sample_gib:.2f} GiB | {p.weights_gib:.1f} | {p.lora_gib:.2f} | {p.activations_gib:.1f} | "
              f"{p.total_gib:.1f} GiB | {fits} |")


if __name__ == "__main__":
    main()
