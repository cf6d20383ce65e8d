"""What a training shift does to the noise levels the model learns from: numbers, a terminal
histogram and a plot. NumPy only (the same maths as `flow.sample_sigmas`), so `train --dry-run`
prints it without importing torch."""

from __future__ import annotations

import numpy as np


def sample(n: int, shift: float, *, mode: str = "logit_normal", mean: float = 0.0, std: float = 1.0,
           seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    u = 1 / (1 + np.exp(-(rng.standard_normal(n) * std + mean))) if mode == "logit_normal" else rng.random(n)
    u = np.clip(u, 1e-5, 1 - 1e-5)
    return shift * u / (1 + (shift - 1) * u)


def stats(shift: float, *, mode: str = "logit_normal", mean: float = 0.0, std: float = 1.0,
          n: int = 200_000) -> dict:
    s = sample(n, shift, mode=mode, mean=mean, std=std)
    hist, _ = np.histogram(s, bins=10, range=(0.0, 1.0))
    return {"shift": shift, "median": float(np.median(s)), "p_below_0.5": float((s < 0.5).mean()),
            "p_below_0.2": float((s < 0.2).mean()), "hist10": [round(float(h) / n, 4) for h in hist]}


def text(st: dict, width: int = 40) -> list[str]:
    """A terminal histogram of the training sigmas, one line per tenth."""
    lines = [f"training sigmas (shift {st['shift']:g}): median {st['median']:.2f}, "
             f"P(sigma<0.5) = {st['p_below_0.5']:.1%}, P(sigma<0.2) = {st['p_below_0.2']:.1%}"]
    top = max(st["hist10"]) or 1.0
    for i, h in enumerate(st["hist10"]):
        lines.append(f"  {i / 10:.1f}-{(i + 1) / 10:.1f} {'#' * int(round(width * h / top)):<{width}} {h:6.1%}")
    return lines


def plot(path, shifts: dict[str, float], *, mode: str = "logit_normal", mean: float = 0.0, std: float = 1.0) -> dict:
    """PNG of the training-sigma density under each named shift (the run's, and the alternatives).
    Returns what each curve shows ({label: shift, median, P(<0.5)}), also stored in the PNG's
    `Description` text chunk, so a reader can check the picture against the run's config."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    shown = {}
    for label, sh in shifts.items():
        s = sample(200_000, sh, mode=mode, mean=mean, std=std)
        shown[label] = {"shift": sh, "median": round(float(np.median(s)), 4),
                        "p_below_0.5": round(float((s < 0.5).mean()), 4)}
        ax.hist(s, bins=50, range=(0, 1), density=True, histtype="step", linewidth=1.5,
                label=f"{label}: shift {sh:g}, median {np.median(s):.2f}, P(<0.5) {(s < 0.5).mean():.0%}")
    ax.set_xlabel("sigma (0 = clean, 1 = pure noise)")
    ax.set_ylabel("density")
    ax.set_title(f"training noise levels ({mode}({mean:g}, {std:g}) then shift)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Description": json.dumps({"mode": mode, "mean": mean, "std": std,
                                                                     "curves": shown})})
    plt.close(fig)
    return shown
