"""Flow-matching maths as tiny pure functions (each has its own tests).

Convention (SANA / rectified flow, as the diffusers DPM-Solver flow scheduler uses it):
    x_t = (1 - sigma) * x0 + sigma * eps,     sigma in (0, 1), sigma = 1 is pure noise
    the model predicts the velocity  v = eps - x0,
    and sees timestep = sigma * 1000.
"""

from __future__ import annotations

import torch

EVAL_SIGMAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SIGMA_BUCKETS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """Resolution/length shift: pushes sigmas toward 1 (more noise) for shift > 1."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def sample_sigmas(n: int, *, mode: str = "logit_normal", mean: float = 0.0, std: float = 1.0,
                  shift: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """n training sigmas in (0, 1): logit-normal (SD3's default) or uniform, then shifted."""
    if mode == "logit_normal":
        u = torch.sigmoid(torch.randn(n, generator=generator) * std + mean)
    elif mode == "uniform":
        u = torch.rand(n, generator=generator)
    else:
        raise ValueError(f"unknown timestep sampling {mode!r}")
    return shift_sigmas(u.clamp(1e-5, 1 - 1e-5), shift)


def _bcast(sigmas: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return sigmas.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


def noisy(x0: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    s = _bcast(sigmas, x0)
    return (1 - s) * x0 + s * noise


def target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - x0


def timesteps(sigmas: torch.Tensor, num_train_timesteps: int = 1000) -> torch.Tensor:
    return sigmas * num_train_timesteps


def per_sample_loss(pred: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """MSE per sample, computed in fp32 whatever the model's dtype."""
    return ((pred.float() - tgt.float()) ** 2).flatten(1).mean(dim=1)


def bucket_of(sigma: float) -> str:
    for lo, hi in zip(SIGMA_BUCKETS[:-1], SIGMA_BUCKETS[1:]):
        if sigma < hi or hi == SIGMA_BUCKETS[-1]:
            return f"{lo:.1f}-{hi:.1f}"
    return "?"


def loss_by_bucket(sigmas: torch.Tensor, losses: torch.Tensor) -> dict[str, float]:
    out: dict[str, list[float]] = {}
    for s, l in zip(sigmas.tolist(), losses.tolist()):
        out.setdefault(bucket_of(s), []).append(l)
    return {k: sum(v) / len(v) for k, v in sorted(out.items())}


def sigma_stats(shift: float, *, mode: str = "logit_normal", mean: float = 0.0, std: float = 1.0,
                n: int = 200_000, seed: int = 0) -> dict:
    """What a training shift does to the noise levels the model learns from (Monte Carlo)."""
    s = sample_sigmas(n, mode=mode, mean=mean, std=std, shift=shift, generator=torch.Generator().manual_seed(seed))
    hist = torch.histc(s, bins=10, min=0.0, max=1.0) / n
    return {"shift": shift, "median": float(s.median()), "p_below_0.5": float((s < 0.5).float().mean()),
            "p_below_0.2": float((s < 0.2).float().mean()), "hist10": [round(float(h), 4) for h in hist]}


def sigma_text(stats: dict, width: int = 40) -> list[str]:
    """A terminal histogram of the training sigmas, one line per tenth."""
    lines = [f"training sigmas (shift {stats['shift']:g}): median {stats['median']:.2f}, "
             f"P(sigma<0.5) = {stats['p_below_0.5']:.1%}, P(sigma<0.2) = {stats['p_below_0.2']:.1%}"]
    top = max(stats["hist10"]) or 1.0
    for i, h in enumerate(stats["hist10"]):
        lines.append(f"  {i / 10:.1f}-{(i + 1) / 10:.1f} {'#' * int(round(width * h / top)):<{width}} {h:6.1%}")
    return lines


def plot_sigmas(path, shifts: dict[str, float], *, mode: str = "logit_normal", mean: float = 0.0,
                std: float = 1.0) -> None:
    """PNG of the training-sigma density under each named shift (the run's, and the alternatives)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, sh in shifts.items():
        s = sample_sigmas(200_000, mode=mode, mean=mean, std=std, shift=sh, generator=torch.Generator().manual_seed(0))
        ax.hist(s.numpy(), bins=50, range=(0, 1), density=True, histtype="step", linewidth=1.5,
                label=f"{label}: shift {sh:g}, median {float(s.median()):.2f}, P(<0.5) {float((s < 0.5).float().mean()):.0%}")
    ax.set_xlabel("sigma (0 = clean, 1 = pure noise)")
    ax.set_ylabel("density")
    ax.set_title(f"training noise levels ({mode}({mean:g}, {std:g}) then shift)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
