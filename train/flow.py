"""Flow-matching maths as tiny pure functions (each has its own tests).

Convention (SANA / rectified flow, as the diffusers DPM-Solver flow scheduler uses it):
    x_t = (1 - sigma) * x0 + sigma * eps,     sigma in (0, 1), sigma = 1 is pure noise
    the model predicts the velocity  v = eps - x0,
    and sees timestep = sigma * 1000.
"""

from __future__ import annotations

import torch

EVAL_SIGMAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SIGMA_BUCKETS = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)  # the loss is logged per bin


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """Resolution/length shift: pushes sigmas toward 1 (more noise) for shift > 1."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def sample_sigmas(n: int, *, mode: str = "logit_normal", mean: float = 0.0, std: float = 1.0,
                  shift: float = 1.0, generator: torch.Generator | None = None, lo: float = 0.0,
                  hi: float = 1.0) -> torch.Tensor:
    """n training sigmas in (0, 1): logit-normal (SD3's default) or uniform, then shifted, then
    mapped onto [lo, hi] (`--sigma-min/--sigma-max`: train only some noise levels)."""
    if mode == "logit_normal":
        u = torch.sigmoid(torch.randn(n, generator=generator) * std + mean)
    elif mode == "uniform":
        u = torch.rand(n, generator=generator)
    else:
        raise ValueError(f"unknown timestep sampling {mode!r}")
    s = shift_sigmas(u.clamp(1e-5, 1 - 1e-5), shift)
    return s if (lo, hi) == (0.0, 1.0) else lo + (hi - lo) * s


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
            return f"{lo:.3f}-{hi:.3f}"
    return "?"


def loss_by_bucket(sigmas: torch.Tensor, losses: torch.Tensor) -> dict[str, float]:
    out: dict[str, list[float]] = {}
    for s, l in zip(sigmas.tolist(), losses.tolist()):
        out.setdefault(bucket_of(s), []).append(l)
    return {k: sum(v) / len(v) for k, v in sorted(out.items())}

