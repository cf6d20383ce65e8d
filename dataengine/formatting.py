"""Plain-text rendering for the CLI (tables, histograms). No heavy imports."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path
from typing import Any

import click


def _cell(v: Any, col: str) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.2f}"
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    s = str(v)
    if col.endswith("_path"):
        s = os.path.basename(s)
    return s if len(s) <= 60 else s[:57] + "..."


def print_table(rows: list[dict], cols: list[str]) -> None:
    cells = [[_cell(r.get(c), c) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    click.echo("  ".join("-" * w for w in widths))
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def print_csv(rows: list[dict]) -> None:
    if not rows:
        return
    w = csv.writer(sys.stdout)
    w.writerow(list(rows[0]))
    for r in rows:
        w.writerow([",".join(v) if isinstance(v, list) else v for v in r.values()])


def bar(n: int, top: int, width: int = 30) -> str:
    return "#" * (int(round(width * n / top)) if top else 0)


def format_stats(s: dict) -> str:
    out = [
        f"videos: {s['videos_ok']} ok, {s['videos_failed']} failed"
        + (" (" + ", ".join(f"{k or 'failed'}: {n}" for k, n in s["failed_by_reason"]) + ")" if s["failed_by_reason"] else ""),
        f"source files: {s['videos_replaced']} replaced by other bytes at the same path (their clips are "
        f"hidden), {s['videos_missing']} missing from disk",
        f"clips: {s['clips']} ({s['clip_hours']:.3f} h of clips from {s['source_hours']:.3f} h of video)",
        "runs: " + (", ".join(f"{n} {k}" for k, n in sorted(s["runs"].items())) or "none"),
        f"captioned: {s['captioned_clips']} of {s['clips']}",
        "",
        "clip durations:",
    ]
    if s.get("excluded_by_reason"):
        at = out.index("clip durations:") - 1
        out[at:at] = ["", "kept out of clips by the purity stage, and the cuts it dropped or added "
                          "(`de ingest --no-purity` skips it):"] + [
            f"  {r}: {n}" + (f" ({f} frames)" if f else "") for r, n, f in s["excluded_by_reason"]]
        if s.get("excluded_by_video"):
            at = out.index("clip durations:") - 1
            out[at:at] = ["  the videos it kept the most out of:"] + [
                f"    {Path(p).name}: {f} of {nf} frames ({f / max(1, nf):.0%}): {why}"
                for p, nf, f, why in s["excluded_by_video"]]
    top = max([n for _, n in s["duration_histogram"]] or [0])
    out += [f"  {label:>9}  {n:6d}  {bar(n, top)}" for label, n in s["duration_histogram"]]
    m = s["means"]
    if s["clips"]:
        out += ["", "means: " + ", ".join(f"{k} {v:.2f}" for k, v in m.items() if v is not None)]
    if s.get("camera_measured"):
        out += ["camera (measured in the decode pass): "
                + ", ".join(f"{k} {n}" for k, n in s["camera_measured"])]
    if s["labellings"]:
        out += ["", "labellings (captioner @ prompt version: ok / parse errors / decode errors):"]
        for cap, ver, ok, pe, de_, rnd in s["labellings"]:
            out.append(f"  {cap} @ {ver}: {ok} / {pe} / {de_}" + ("  [random tiny model: output is noise]" if rnd else ""))
    if s["labellings"] and not s["tag_histogram"]:
        out += ["", "tags: none parsed yet" + (" (a random tiny model's output is noise: expect parse errors)"
                                              if any(r[5] for r in s["labellings"]) else "")]
    if s["tag_histogram"]:
        out += ["", "tags (shown labelling):"]
        top = max(n for _, n in s["tag_histogram"])
        out += [f"  {t:>18}  {n:6d}  {bar(n, top)}" for t, n in s["tag_histogram"]]
    return "\n".join(out)
