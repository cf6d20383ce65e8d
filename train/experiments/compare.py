"""`train compare RUN1 RUN2 ...`: the stability study from the runs' metrics.jsonl.

Overlays loss (raw and EMA-smoothed), eval loss, grad norm, lr and loss by sigma bucket in one PNG,
and writes a table of final and best values. Early loss explosions are marked: steps whose loss
exceeds k x the running median of the previous window, and the first step of a grad-norm spike.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import metrics as M
from .report import table, write


def read_metrics(run: Path) -> dict:
    p = Path(run) / "metrics.jsonl"
    if not p.exists():
        raise FileNotFoundError(f"{run} has no metrics.jsonl")
    rows = [json.loads(l) for l in p.read_text().splitlines() if l.strip()]
    train = [r for r in rows if "loss" in r]
    ev = [r for r in rows if "eval_loss" in r]
    return {"steps": [r["step"] for r in train], "loss": [r["loss"] for r in train],
            "grad_norm": [r.get("grad_norm") for r in train], "lr": [r.get("lr") for r in train],
            "by_sigma": [r.get("loss_by_sigma", {}) for r in train],
            "eval_steps": [r["step"] for r in ev], "eval_loss": [r["eval_loss"] for r in ev],
            "nonfinite": sum(1 for r in rows if r.get("nonfinite")),
            "diverged_at": next((r["step"] for r in rows if r.get("diverged")), None)}


def compare(runs: list[str | Path], out_dir: str | Path, *, k: float = 3.0, window: int = 20, smooth: float = 0.1) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data, rows, res = {}, [], {"runs": []}
    for r in runs:
        name = Path(r).name
        m = read_metrics(Path(r))
        data[name] = m
        expl = M.explosions(m["steps"], m["loss"], k=k, window=window)
        if m["diverged_at"] is not None:  # weights went non-finite: the worst explosion there is
            expl = sorted(set(expl) | {m["diverged_at"]})
        gn = [g for g in m["grad_norm"] if g is not None]
        spike = M.first_spike(m["steps"][: len(gn)], gn, k=k, window=window) if gn else None
        cfg_p = Path(r) / "config.json"
        cfg = json.loads(cfg_p.read_text()) if cfg_p.exists() else {}
        info = {"run": name, "rank": cfg.get("rank"), "lr": cfg.get("lr"), "warmup_steps": cfg.get("warmup_steps"),
                "steps": m["steps"][-1] if m["steps"] else 0,
                "final_loss": m["loss"][-1] if m["loss"] else None, "best_loss": min(m["loss"]) if m["loss"] else None,
                "final_smoothed_loss": M.ema(m["loss"], smooth)[-1] if m["loss"] else None,
                "final_eval_loss": m["eval_loss"][-1] if m["eval_loss"] else None,
                "best_eval_loss": min(m["eval_loss"]) if m["eval_loss"] else None,
                "max_grad_norm": max(gn) if gn else None, "loss_explosions": expl,
                "first_grad_norm_spike": spike, "nonfinite_steps": m["nonfinite"], "diverged_at": m["diverged_at"]}
        res["runs"].append(info)
        rows.append([name, info["rank"], info["lr"], info["warmup_steps"], info["steps"], info["final_loss"],
                     info["best_loss"], info["final_smoothed_loss"], info["final_eval_loss"], info["best_eval_loss"],
                     info["max_grad_norm"], len(expl), expl[0] if expl else None, spike, info["nonfinite_steps"],
                     info["diverged_at"]])
    _plot(data, res, out / "compare.png", smooth)
    (out / "compare.json").write_text(json.dumps(res, indent=1))
    md = ["# Training stability comparison", "",
          f"Loss explosion: a step whose loss exceeds {k:g}x the running median of the previous {window} steps. "
          f"Grad-norm spike: the same test on the grad norm; its first step is shown.", ""]
    md += table(["run", "rank", "lr", "warmup", "steps", "final loss", "best loss", f"final EMA({smooth:g}) loss",
                 "final eval loss", "best eval loss", "max grad norm", "explosions", "first explosion",
                 "first grad spike", "non-finite", "diverged at"], rows)
    md += ["", "![curves](compare.png)"]
    write(out / "report.md", md, "train compare")
    return res


def _plot(data: dict, res: dict, path: Path, smooth: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 3, figsize=(16, 8))
    ax = ax.ravel()
    info = {r["run"]: r for r in res["runs"]}
    for name, m in data.items():
        line, = ax[0].plot(m["steps"], m["loss"], alpha=0.3)
        c = line.get_color()
        ax[0].plot(m["steps"], M.ema(m["loss"], smooth), color=c, label=name)
        ex = [s for s in info[name]["loss_explosions"] if s in m["steps"]]
        if ex:
            ys = [m["loss"][m["steps"].index(s)] for s in ex]
            ax[0].scatter(ex, ys, marker="x", color=c, s=60, zorder=5)
        if info[name].get("diverged_at") is not None:  # no loss was logged there: mark the step itself
            ax[0].axvline(info[name]["diverged_at"], color=c, linestyle=":", label=f"{name} diverged")
        ax[1].plot(m["eval_steps"], m["eval_loss"], "o-", color=c, label=name)
        gs = [(s, g) for s, g in zip(m["steps"], m["grad_norm"]) if g is not None]
        if gs:
            ax[2].plot([s for s, _ in gs], [g for _, g in gs], color=c, label=name)
        sp = info[name]["first_grad_norm_spike"]
        if sp is not None:
            ax[2].axvline(sp, color=c, ls="--", alpha=0.7)
        ax[3].plot(m["steps"], m["lr"], color=c, label=name)
        buckets = sorted({b for d in m["by_sigma"] for b in d})
        for b, style in zip(buckets, ["-", "--", ":", "-.", (0, (1, 5))]):
            pts = [(s, d[b]) for s, d in zip(m["steps"], m["by_sigma"]) if b in d]
            if pts:
                ax[4].plot([p[0] for p in pts], M.ema([p[1] for p in pts], smooth), color=c, ls=style,
                           label=f"{name} sigma {b}")
    titles = ["loss (raw faint, EMA bold; x = explosion)", "eval loss (fixed sigma, held out)",
              "grad norm (dashed = first spike)", "learning rate", "loss by sigma bucket (EMA)"]
    for a, t in zip(ax, titles):
        a.set_title(t)
        a.set_xlabel("step")
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    ax[0].set_yscale("log")
    ax[2].set_yscale("log")
    from .plotstyle import tidy

    for a in ax[:5]:
        tidy(a, integer_x=True)
    ax[5].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
