"""The study's figures with their intervals, verdicts and Pareto front; its JSON, plot and report."""

from __future__ import annotations

import json
from pathlib import Path

from . import uncertainty as U
from .report import table, write

REFERENCE = "teacher@32"
# (key, label, lower is better)
METRICS = [("latent_distance", "latent dist.", True), ("pixel_distance", "pixel dist.", True),
           ("brightness_gap", "brightness gap", True), ("palette_distance", "palette dist.", True),
           ("temporal_gap", "temporal gap", True), ("eval_loss", "eval loss", True),
           ("tag_agreement", "tag agreement", False)]
PRIMARY = "latent_distance"


def baseline_of(v, names: set[str]) -> str:
    """Whom a variant is judged against: the teacher at its own budget, or the reference teacher
    (for the teacher at a lower budget, and for budgets the teacher was not sampled at)."""
    same = f"teacher@{v.steps}"
    return same if same in names and same != v.name else REFERENCE


def summarise(grid, measured: dict, es, missing: list[str], random_base: bool, run_dir: Path) -> dict:
    names = {v.name for v in grid}
    rows = []
    for v in grid:
        m = measured[v.name]
        base = baseline_of(v, names)
        row = {"variant": v.name, "kind": v.kind, "steps": v.steps, "nfe": v.nfe, "check": v.broken,
               "seconds_per_video": m["seconds_per_video"], "params": m["params"], "peak_mem_mb": m["peak_mem_mb"],
               "against": None if v.name == REFERENCE else base, "metrics": {}, "vs": {}, "tags": m["tags"]}
        for key, _, lower in METRICS:
            xs = m["samples"].get(key)
            if xs is None:
                row[key] = None
                continue
            mean, lo, hi = U.interval(xs)
            row[key] = mean
            row["metrics"][key] = {"mean": mean, "low": lo, "high": hi, "n": len(xs)}
            other = measured[base]["samples"].get(key)
            if v.name != REFERENCE and other is not None and len(other) == len(xs):
                row["vs"][key] = U.compare(xs, other, lower_is_better=lower)
        primary = row["vs"].get(PRIMARY)
        row["verdict"] = "reference" if v.name == REFERENCE else primary["verdict"]
        row["samples_needed"] = primary["samples_needed"] if primary else None
        rows.append(row)
    checks, dropped = _checks(rows)
    real = [r for r in rows if not r["check"]]
    front = U.supported_front([r["seconds_per_video"] for r in real],
                              [measured[r["variant"]]["samples"][PRIMARY] for r in real])
    for r in rows:
        r["pareto"] = False
    for r, f in zip(real, front):
        r["pareto"] = f
    return {"run": str(run_dir), "reference": REFERENCE, "evaluation_set": es.as_json(), "samples": es.samples,
            "level": U.LEVEL, "bootstrap": U.BOOTSTRAP, "variants": rows, "checks": checks,
            "dropped_metrics": dropped, "missing": missing, "random_base": random_base,
            "verdict_lines": _verdict_lines(rows)}


def _checks(rows: list[dict]) -> tuple[dict, list[str]]:
    """For each metric, which broken variants it tells from the teacher (interval clear of it);
    with checks run, the metrics that tell none apart."""
    broken = [r for r in rows if r["check"]]
    if not broken:
        return {}, []
    checks = {}
    for key, _, _ in METRICS:
        seen = {r["variant"]: r["vs"][key]["verdict"] for r in broken if key in r["vs"]}
        if seen:
            checks[key] = {"separates": sorted(k for k, v in seen.items() if v == "worse"), "verdicts": seen}
    dropped = [k for k, c in checks.items() if not c["separates"]]
    return checks, dropped


def _verdict_lines(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        if r["verdict"] == "reference":
            continue
        c = r["vs"][PRIMARY]
        rel = "from" if r["verdict"] == "not distinguishable" else "than"
        s = (f"{r['variant']}: {r['verdict']} {rel} {r['against']} (latent distance {c['difference']:+.4g}, "
             f"95% interval {c['low']:+.4g} to {c['high']:+.4g}, {c['samples']} samples)")
        if r["verdict"] == "not distinguishable" and c["samples_needed"]:
            s += f"; a difference this size needs ~{c['samples_needed']} samples"
        out.append(s)
    return out


def _ci(row: dict, key: str) -> str:
    m = row["metrics"].get(key)
    if m is None:
        return ""
    return f"{m['mean']:.4g} [{m['low']:.4g}, {m['high']:.4g}]"


def write_all(res: dict, out: Path, name: str) -> None:
    from dataengine.atomic import atomic_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_text(out / "study.json", json.dumps(res, indent=1, default=float) + "\n")
    _plot(res["variants"], out / "quality_vs_latency.png")
    _report(res, out, name)


def _report(res: dict, out: Path, name: str) -> None:
    es = res["evaluation_set"]
    shown = [(k, label) for k, label, _ in METRICS if k not in res["dropped_metrics"]
             and any(r["metrics"].get(k) for r in res["variants"])]
    md = [f"# Compression study: {name}", "",
          f"Every variant against {res['reference']} (the run's base model plus its LoRA, its CFG, 32 steps) on "
          f"the run's evaluation set: {len(es['windows'])} held-out windows and {len(es['prompts'])} validation "
          f"prompts x {es['noises']} noises = **{res['samples']} paired samples** (RUN/evalset.json; the same "
          "noises for every variant). Each figure is a mean with its 95% bootstrap interval. **Verdict**: the "
          "latent distance of the variant against the teacher at its own budget, paired sample by sample: better, "
          "worse, or not distinguishable at this sample size (then the samples a difference of the measured "
          "size would need). **Pareto**: no other variant is at least as fast and shown to be closer. Distances "
          "are mean squared (latents; frames in [0, 1]); brightness gap in 8-bit levels; temporal gap: how "
          "differently the video changes from frame to frame; tag agreement: Jaccard of the re-captioned tags "
          "against the teacher's video from the same noise.", ""]
    if res["random_base"]:
        md += ["**Random tiny base model: the numbers exercise the pipeline only.**", ""]
    rows = [r for r in res["variants"] if not r["check"]]
    md += table(["variant", "NFE", "s / video", "params", "peak MB"] + [label for _, label in shown]
                + ["verdict", "against", "samples needed", "Pareto"],
                [[r["variant"], r["nfe"], r["seconds_per_video"], r["params"], r["peak_mem_mb"]]
                 + [_ci(r, k) for k, _ in shown]
                 + [r["verdict"], r["against"] or "", r["samples_needed"] or "", "yes" if r["pareto"] else ""]
                 for r in rows])
    md += _tag_lines(res["variants"]) + _check_lines(res)
    if res["missing"]:
        md += ["", "Not in the grid (no such variant under the run yet):", ""] + [f"- {m}" for m in res["missing"]]
    md += ["", "![quality vs latency](quality_vs_latency.png)"]
    write(out / "report.md", md, f"study {name}")


def _tag_lines(rows: list[dict]) -> list[str]:
    lines = []
    for r in rows:
        wrong = sorted((v, t) for t, v in (r.get("tags") or {}).items() if v < 1.0)
        if wrong:
            lines.append(f"- {r['variant']}: " + ", ".join(f"{t} {v:.0%}" for v, t in wrong[:5]))
    if not lines:
        return []
    return ["", "Per-tag agreement with the teacher (the tags a variant does not always agree on, worst first):",
            ""] + lines


def _check_lines(res: dict) -> list[str]:
    if not res["checks"]:
        return ["", "Broken-variant checks were not run (`train study --checks`): every metric is shown."]
    broken = [r for r in res["variants"] if r["check"]]
    md = ["", "## Checks: does each metric tell a broken variant from the teacher?", ""]
    md += table(["variant", "against"] + [k for k in res["checks"]],
                [[r["variant"], r["against"]] + [_check_cell(r, k) for k in res["checks"]] for r in broken])
    if res["dropped_metrics"]:
        md += ["", "Dropped from the table above (they told no broken variant apart): "
               + ", ".join(res["dropped_metrics"]) + "."]
    return md


def _check_cell(r: dict, key: str) -> str:
    c = r["vs"].get(key)
    if c is None:
        return ""
    return f"{c['verdict']} ({c['difference']:+.3g} [{c['low']:+.3g}, {c['high']:+.3g}])"


def _plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        if r["check"] or r["metrics"].get("latent_distance") is None:
            continue
        m = r["metrics"]["latent_distance"]
        ax.errorbar(r["seconds_per_video"], m["mean"], yerr=[[m["mean"] - m["low"]], [m["high"] - m["mean"]]],
                    fmt="o", c="#d33" if r["pareto"] else "#888", capsize=3, zorder=3)
        ax.annotate(r["variant"], (r["seconds_per_video"], m["mean"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    front = sorted((r["seconds_per_video"], r["latent_distance"]) for r in rows if r["pareto"])
    if len(front) > 1:
        ax.plot(*zip(*front), "-", c="#d33", lw=1, label="Pareto front (differences the intervals support)")
        ax.legend(fontsize=7)
    ax.set(xlabel="seconds per video (measured)", ylabel=f"latent distance to {REFERENCE} (95% interval)",
           title="quality vs latency")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
