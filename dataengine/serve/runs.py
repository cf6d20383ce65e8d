"""Run folders in `de serve`: the listing, a run's page, and the files it may serve.

A run file is served only if it is in the listing of that run folder made by this server, and its
real path (symlinks resolved) lies under the real --runs folder. Run files are read while training
may be writing them: a cut last line or a file of the wrong shape marks that run as damaged and
the rest of the page still renders.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from catalog.grid import BadRequest


class RunFolders:
    """The run-folder half of the Browser (dataengine.serve.app), which sets `runs_dir` (real,
    resolved, or None) and `_manifests` (a cache of each run's training clip ids)."""

    runs_dir: Path | None
    _manifests: dict

    def _confined(self, p: Path) -> Path | None:
        """p's real path if it lies under the real --runs folder (symlinks resolved), else None."""
        try:
            real = p.resolve(strict=True)
        except (OSError, RuntimeError, ValueError):  # ValueError: an embedded NUL byte
            return None
        return real if self.runs_dir and real.is_relative_to(self.runs_dir) else None

    def runs(self) -> list[dict]:
        if not self.runs_dir or not self.runs_dir.is_dir():
            return []
        out = []
        for d in sorted(self.runs_dir.iterdir()):
            real = self._confined(d)
            if real is None or not real.is_dir() or real.parent != self.runs_dir:
                continue  # a run folder that is a link to elsewhere is not one of --runs' runs
            if any((real / f).is_file() for f in ("run.json", "config.json", "compare.json")):
                info = _load_json(real / "run.json")
                info = info if isinstance(info, dict) else {}
                step = info.get("steps", info.get("step"))
                out.append({"name": d.name, "status": info.get("state") if isinstance(info.get("state"), str) else None,
                            "step": step if isinstance(step, int) and not isinstance(step, bool) else None,
                            "mtime": time.strftime("%Y-%m-%d %H:%M", time.localtime(real.stat().st_mtime))})
        return out

    def run_dir(self, name: str) -> Path:
        names = {r["name"] for r in self.runs()}
        if name not in names:
            raise BadRequest(f"no run {name!r} under {self.runs_dir}", 404)
        return self.runs_dir / name

    def run_files(self, name: str) -> dict[str, Path]:
        """Every servable file of a run (the listing the run page links to)."""
        import os

        d = self.run_dir(name).resolve()
        files = {}
        for root, dirs, names in os.walk(d):  # os.walk does not descend into linked folders
            for fn in names:
                rel = (Path(root) / fn).relative_to(d).as_posix()
                real = self._servable(d, rel)
                if real is not None:
                    files[rel] = real
        return files

    def run_file(self, name: str, rel: str) -> Path | None:
        """One file of a run, by the same rule as the listing, without walking the folder (a
        gallery page asks for dozens of videos)."""
        parts = rel.split("/")
        if not rel or "\x00" in rel or "\x00" in name or any(x in ("", ".", "..") for x in parts):
            return None  # a NUL byte is no file name (pathlib raises on it)
        return self._servable(self.run_dir(name).resolve(), rel)

    def _servable(self, d: Path, rel: str) -> Path | None:
        """A regular file of a served type, outside checkpoints, caches and logs, whose real path
        (links resolved) stays inside the run's folder."""
        p = d / rel
        if rel.startswith(("checkpoints/", "cache", "logs/")) or p.suffix.lower() not in RUN_FILE_TYPES:
            return None
        real = self._confined(p)
        return real if real is not None and real.is_relative_to(d) and real.is_file() else None

    def run_page(self, name: str) -> dict:
        d = self.run_dir(name).resolve()
        files = self.run_files(name)
        damaged: list[str] = []
        steps = []
        vdir = d / "validation"
        if vdir.is_dir() and self._confined(vdir):
            for sd in sorted(vdir.iterdir(), key=lambda p: (p.name != "base", p.name)):
                if not sd.is_dir() or self._confined(sd) is None:
                    continue
                prompts = _load_json(self._confined(sd / "prompts.json"))
                if prompts is None:
                    prompts = []
                if not isinstance(prompts, list) or not all(isinstance(x, dict) for x in prompts):
                    damaged.append(f"validation/{sd.name}/prompts.json is not a list of prompts")
                    prompts = []
                cells = []
                for k, pr in enumerate(prompts[:256]):
                    vid = f"validation/{sd.name}/p{k}.mp4"
                    gif = f"validation/{sd.name}/p{k}.gif"
                    cells.append({"video": vid if vid in files else None, "gif": gif if gif in files else None,
                                  "summary": str(pr.get("summary", "")), "prompt": str(pr.get("prompt", ""))})
                tail = sd.name.split("_")[-1]
                label = "base" if sd.name == "base" else str(int(tail)) if "_" in sd.name and tail.isdigit() \
                    else sd.name
                steps.append({"step": label, "cells": cells})
        metrics, bad = read_jsonl(self._confined(d / "metrics.jsonl"))
        if bad:
            damaged.append(f"metrics.jsonl: {bad}")
        reports = sorted(f for f in files if f.endswith((".html", ".md")) and f not in ("gallery.html", "gallery.md"))
        images = sorted(f for f in files if f.endswith(".png"))
        run, config = _load_json(d / "run.json"), _load_json(d / "config.json")
        for fname, v in (("run.json", run), ("config.json", config)):
            if (d / fname).exists() and not isinstance(v, dict):
                damaged.append(f"{fname} is not readable JSON (being written, or damaged)")
        return {"name": name, "run": run if isinstance(run, dict) else {},
                "config": config if isinstance(config, dict) else {},
                "steps": steps, "loss_svg": metrics_svg(metrics, "loss"), "lr_svg": metrics_svg(metrics, "lr"),
                "eval_svg": metrics_svg(metrics, "eval_loss"), "sigma_svg": by_sigma_svg(metrics),
                "reports": reports, "images": images,
                "damaged": damaged}

    def runs_using(self, clip_id: str) -> list[str]:
        out = []
        for r in self.runs():
            m = self._confined(self.runs_dir / r["name"] / "manifest.jsonl")
            if m is None:
                continue
            mt = m.stat().st_mtime
            cached = self._manifests.get(str(m))
            if not cached or cached[0] != mt:
                lines, _ = read_jsonl(m)  # a manifest being written: what is whole so far
                ids = {x.get("clip_id") for x in lines if x.get("role") == "train"}
                cached = self._manifests[str(m)] = (mt, ids)
            if clip_id in cached[1]:
                out.append(r["name"])
        return out


RUN_FILE_TYPES = (".mp4", ".gif", ".png", ".jpg", ".html", ".md", ".json", ".jsonl", ".csv", ".svg")
MAX_RUN_JSON_BYTES = 64 * 2**20


def _load_json(p: Path | None):
    """A JSON file's value, or None if it is missing, too big, being written or damaged."""
    try:
        if p is None or p.stat().st_size > MAX_RUN_JSON_BYTES:
            return None
        return json.loads(p.read_text(errors="replace"))
    except (OSError, ValueError, RecursionError):
        return None


def read_jsonl(p: Path | None) -> tuple[list[dict], str | None]:
    """(objects, problem). A last line without its newline is a line still being written and is
    left out quietly; any other line that is not a JSON object is reported (the rest is kept)."""
    if p is None:
        return [], None
    try:
        if p.stat().st_size > MAX_RUN_JSON_BYTES:
            return [], f"larger than {MAX_RUN_JSON_BYTES // 2**20} MB, not read"
        text = p.read_text(errors="replace")
    except OSError as e:
        return [], f"cannot read it ({e.strerror or e})"
    lines = text.split("\n")
    lines.pop()  # "" when the file ends with a newline; else a line still being written
    out, bad = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            x = json.loads(line)
        except (ValueError, RecursionError):
            bad += 1
            continue
        if isinstance(x, dict):
            out.append(x)
        else:
            bad += 1
    return out, (f"{bad} damaged line(s) left out" if bad else None)


def _axes(xs, ys, w: int, h: int, pad: int = 36):
    """(the data's bounds, x -> pixel, y -> pixel, the padding) of a small SVG plot."""
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

    def sx(x):
        return pad + (x - x0) / (x1 - x0) * (w - 2 * pad)

    def sy(y):
        return h - pad + (y0 - y) / (y1 - y0) * (h - 2 * pad)

    return (x0, x1, y0, y1), sx, sy, pad


def metrics_svg(metrics: list[dict], key: str, w: int = 520, h: int = 160) -> str | None:
    """A small line plot of one metric against step, as SVG text (numbers only: nothing to escape)."""
    pts = [(m["step"], float(m[key])) for m in metrics if key in m and "step" in m
           and isinstance(m["step"], (int, float)) and not isinstance(m["step"], bool)
           and isinstance(m[key], (int, float)) and not isinstance(m[key], bool)
           and m[key] == m[key] and abs(m[key]) != float("inf") and abs(m["step"]) != float("inf")]
    if len(pts) < 1:
        return None
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    (x0, x1, y0, y1), sx, sy, pad = _axes(xs, ys, w, h)

    line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
    dots = "".join(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5"/>' for x, y in pts)
    return (f'<svg class="plot" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{key}">'
            f'<polyline fill="none" stroke="#2a6fdb" stroke-width="1.5" points="{line}"/><g fill="#2a6fdb">{dots}</g>'
            f'<text x="{pad}" y="14" font-size="12">{key}</text>'
            f'<text x="4" y="{sy(y1) + 4:.0f}" font-size="10">{y1:.4g}</text>'
            f'<text x="4" y="{sy(y0) + 4:.0f}" font-size="10">{y0:.4g}</text>'
            f'<text x="{sx(x0):.0f}" y="{h - 8}" font-size="10">step {int(x0)}</text>'
            f'<text x="{sx(x1) - 40:.0f}" y="{h - 8}" font-size="10">step {int(x1)}</text></svg>')


def by_sigma_svg(metrics: list[dict], key: str = "eval_loss_by_sigma", w: int = 520, h: int = 180) -> str | None:
    """The held-out loss per noise level, one line per validation (lighter = earlier), as SVG text:
    where a run learns (or forgets) shows as the lines parting at some sigmas and not others."""
    curves = []
    for m in metrics:
        d, step = m.get(key), m.get("step")
        if not isinstance(d, dict) or not isinstance(step, (int, float)) or isinstance(step, bool):
            continue
        pts = []
        for k, v in d.items():
            try:
                x = float(k)
            except ValueError:
                continue
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf"):
                pts.append((x, float(v)))
        if len(pts) > 1:
            curves.append((step, sorted(pts)))
    if not curves:
        return None
    xs = [x for _, c in curves for x, _ in c]
    ys = [y for _, c in curves for _, y in c]
    (x0, x1, y0, y1), sx, sy, pad = _axes(xs, ys, w, h)

    lines = []
    for i, (step, c) in enumerate(curves):
        shade = int(200 - 170 * (i / max(1, len(curves) - 1)))
        pts = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in c)
        lines.append(f'<polyline fill="none" stroke="rgb({shade},{shade},255)" stroke-width="1.5" points="{pts}">'
                     f'<title>step {int(step)}</title></polyline>')
    return (f'<svg class="plot" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{key}">'
            + "".join(lines)
            + f'<text x="{pad}" y="14" font-size="12">held-out loss by noise level, step {int(curves[0][0])} '
              f'(light) to {int(curves[-1][0])} (dark)</text>'
              f'<text x="4" y="{sy(y1) + 4:.0f}" font-size="10">{y1:.4g}</text>'
              f'<text x="4" y="{sy(y0) + 4:.0f}" font-size="10">{y0:.4g}</text>'
              f'<text x="{sx(x0):.0f}" y="{h - 8}" font-size="10">sigma {x0:g}</text>'
              f'<text x="{sx(x1) - 50:.0f}" y="{h - 8}" font-size="10">sigma {x1:g}</text></svg>')
