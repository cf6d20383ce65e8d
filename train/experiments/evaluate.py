"""`train eval RUN --query ...`: the video -> text -> video loop on held-out catalog clips.

For each clip: its catalog caption and tags (the VLM's reading of the real clip) fill the run's
prompt template; the base model and the LoRA generate from that prompt with the same seed (the
run's validation seed plus the clip's index, so clips that share a prompt are distinct samples); the
same captioner (same prompt version) re-captions both videos; we compare tags, style and
temporal statistics against the real clip, and the held-out eval loss of base and LoRA.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import metrics as M
from .report import table, write
from .runctx import ExperimentError, eval_items, generate, open_run

log = logging.getLogger(__name__)

STYLE_KEYS = ("saturation", "edge_density", "flicker", "motion_score")


def _windows(ctx, query: str, catalog: str | None, source: str | None, limit: int | None):
    from ..data import DataError, build_manifest, select_rows

    cfg = replace(ctx.cfg, query=query, catalog=catalog or ctx.cfg.catalog, captioner=source, holdout=0)
    try:
        rows = select_rows(cfg, extra_columns=("tag_list",))
        man = build_manifest(cfg, rows)
    except DataError as e:
        raise ExperimentError(str(e)) from e
    first, seen = [], set()
    for w in man.windows:  # one window per clip: the first
        if w.clip_id not in seen:
            seen.add(w.clip_id)
            first.append(w)
    tags = {r["clip_id"]: list(r.get("tag_list") or []) for r in rows}
    return first[:limit] if limit else first, tags


def _sample_for_captioner(frames: np.ndarray, fps: float, sampling) -> tuple[np.ndarray, np.ndarray]:
    """The frames the captioner sees, sampled by time as `de caption` samples a clip, and their times."""
    from dataengine.clipread import pick_frames, sample_times

    t = np.arange(len(frames)) / fps
    idx = pick_frames(t, sample_times(0.0, len(frames) / fps, sampling.fps, sampling.max_frames))
    return frames[idx], t[idx]


def _recaption(captioner, prompt, frames_list: list[np.ndarray], fps: float) -> list[dict]:
    from dataengine.caption.models import video_metadata
    from dataengine.caption.parse import parse_output

    vids, metas = [], []
    for f in frames_list:
        frames, times = _sample_for_captioner(f, fps, prompt.sampling)
        v = captioner.prepare(frames, prompt.sampling)
        vids.append(v)
        metas.append(video_metadata(times, int(v.shape[0]), prompt.sampling.fps))
    gens = captioner.generate(vids, prompt.render(), prompt.sampling, metas, schema=prompt.schema)
    out = []
    for g in gens:
        p = parse_output(g.text, prompt.synonyms, prompt.schema)
        out.append({"ok": p.ok, "tags": p.tags, "caption": p.caption, "error": p.error, "raw": g.text})
    return out


def _strip(real, base, lora, path: Path, fps: float) -> None:
    from dataengine.media import save_gif

    n = min(len(real), len(base), len(lora))
    sep = np.full((n, real.shape[1], 4, 3), 255, np.uint8)
    save_gif(np.concatenate([real[:n], sep, base[:n], sep, lora[:n]], axis=2), path, fps)


def _clip_scores(clip_model: str, prompt: str, videos: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean cosine similarity between the prompt and each frame, with CLIP weights given by path."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(clip_model).eval()
    proc = CLIPProcessor.from_pretrained(clip_model)

    def emb(x):  # transformers 5 returns an output object whose pooler_output is the projection
        x = x if torch.is_tensor(x) else x.pooler_output
        return x / x.norm(dim=-1, keepdim=True)

    out = {}
    with torch.no_grad():
        t = emb(model.get_text_features(**proc(text=[prompt], return_tensors="pt", padding=True, truncation=True)))
        for k, v in videos.items():
            im = emb(model.get_image_features(**proc(images=list(v), return_tensors="pt")))
            out[k] = float((im @ t.T).mean())
    return out


def evaluate(run_dir: str | Path, *, query: str, catalog: str | None = None, captioner_model: str = "qwen2-vl",
             source: str | None = None, prompt_name: str = "caption_v1", sampling=None, seed: int | None = None,
             steps: int | None = None, limit: int | None = 8, device: str | None = None,
             clip_model: str | None = None, progress: bool = True, constrained: bool = True,
             max_new_tokens: int | None = None) -> dict:
    from tqdm import tqdm

    from dataengine.caption.models import CaptionModelError, load_captioner
    from dataengine.caption.prompts import SamplingParams, load_prompt

    from ..data import read_window
    from ..validate import eval_loss

    ctx = open_run(run_dir, device=device)
    cfg = ctx.cfg
    seed = cfg.validation_seed if seed is None else seed
    steps = steps or cfg.validation_steps
    windows, src_tags = _windows(ctx, query, catalog, source, limit)
    train_clips = {json.loads(l)["clip_id"] for l in (ctx.out_dir / "manifest.jsonl").read_text().splitlines()
                   if l.strip() and json.loads(l)["role"] == "train"}
    leaked = sorted({w.clip_id for w in windows} & train_clips)
    from dataengine.caption.schema import Constraint

    # constrained like `de caption` (every re-caption parses), unless asked otherwise
    prompt = load_prompt(prompt_name, sampling or SamplingParams(), constraint=Constraint() if constrained else None,
                         max_new_tokens=max_new_tokens)
    try:
        captioner = load_captioner(captioner_model, device=ctx.device)
    except CaptionModelError as e:
        raise ExperimentError(str(e)) from e
    uses_tags = "{tag_tokens}" in cfg.template or "{tags}" in cfg.template
    ev_dir = ctx.out_dir / "eval"
    (ev_dir / "strips").mkdir(parents=True, exist_ok=True)
    clips = []
    readers: dict = {}
    for i, w in enumerate(tqdm(windows, desc="eval", unit="clip", disable=not progress)):
        real = read_window(w, cfg.height, cfg.width, readers)
        # base and LoRA share clip i's seed (a paired comparison); clips get different seeds, so
        # clips that share a prompt (a class-prompt run) are different samples, not N copies of one
        base, t_base = generate(ctx, w.prompt, lora=False, seed=seed + i, steps=steps)
        lora, t_lora = generate(ctx, w.prompt, lora=True, seed=seed + i, steps=steps)
        rec = _recaption(captioner, prompt, [base, lora], cfg.fps)
        src = src_tags.get(w.clip_id, [])
        row = {"clip_id": w.clip_id, "prompt": w.prompt, "source_tags": src, "in_training_set": w.clip_id in train_clips,
               "seconds": {"base": t_base, "lora": t_lora}}
        for name, video, rc in (("base", base, rec[0]), ("lora", lora, rec[1])):
            r = {"recaption_ok": rc["ok"], "tags": rc["tags"], "caption": rc["caption"], "parse_error": rc["error"],
                 "palette_distance": M.palette_distance(real, video), **M.style_stats(video, cfg.fps)}
            if rc["ok"]:
                r["jaccard"] = M.jaccard(src, rc["tags"])
                r["tag_recall"] = M.tag_recall(src, rc["tags"])
                r["control_adherence"] = M.control_adherence(src, rc["tags"]) if uses_tags else None
            row[name] = r
        row["real"] = M.style_stats(real, cfg.fps)
        if clip_model:
            row["clip_score"] = _clip_scores(clip_model, w.prompt, {"base": base, "lora": lora})
        _strip(real, base, lora, ev_dir / "strips" / f"{w.clip_id}.gif", cfg.fps)
        clips.append(row)
    # eval loss at fixed sigmas on these clips, base vs LoRA (latents/text from the shared cache)
    items = eval_items(ctx, windows)
    tr = ctx.pipe.transformer
    dtype = next(tr.parameters()).dtype
    tr.disable_adapters()
    loss_base = eval_loss(tr, items, ctx.device, dtype, batch=ctx.cfg.batch_size)
    tr.enable_adapters()
    loss_lora = eval_loss(tr, items, ctx.device, dtype, batch=ctx.cfg.batch_size)
    result = {"run": str(ctx.out_dir), "query": query, "captioner": captioner.name, "prompt_version": prompt.version,
              "random_models": {"base": ctx.is_random, "captioner": captioner.is_random}, "seed": seed, "steps": steps,
              "clips": clips, "leaked_training_clips": leaked,
              "eval_loss": {"base": loss_base.get("eval_loss"), "lora": loss_lora.get("eval_loss"),
                            "base_by_sigma": loss_base.get("eval_loss_by_sigma"),
                            "lora_by_sigma": loss_lora.get("eval_loss_by_sigma")},
              "summary": summarise(clips, uses_tags)}
    (ev_dir / "metrics.json").write_text(json.dumps(result, indent=1, default=float))
    write_report(ev_dir, result, clip_model)
    return result


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def shared_tags(clips: list[dict]) -> list[str]:
    """The tags every source clip carries: what the query selected on (night, chase ...), the style
    a LoRA trained on these clips should reproduce whatever its prompt says."""
    sets = [set(c["source_tags"]) for c in clips]
    return sorted(set.intersection(*sets)) if sets else []


def summarise(clips: list[dict], uses_tags: bool) -> dict:
    shared = shared_tags(clips)
    s: dict = {"clips": len(clips), "shared_tags": shared}
    for name in ("base", "lora"):
        rs = [c[name] for c in clips]
        ok = [r for r in rs if r["recaption_ok"]]
        s[name] = {
            "recaptioned": len(ok),
            "jaccard": _mean([r["jaccard"] for r in ok]),
            # with a class prompt, setting and action are left to chance for both models; the
            # shared tags are where a style LoRA should beat the base
            "shared_tag_recall": _mean([sum(t in r["tags"] for t in shared) / len(shared) for r in ok])
            if shared else None,
            "control_adherence": _mean([r.get("control_adherence") for r in ok]) if uses_tags else None,
            "palette_distance": _mean([r["palette_distance"] for r in rs]),
        }
        for k in STYLE_KEYS:
            s[name][k] = _mean([r[k] for r in rs])
            s[name][f"{k}_abs_diff_vs_real"] = _mean([abs(r[k] - c["real"][k]) for r, c in zip(rs, clips)])
        recall: dict[str, list[bool]] = {}
        for r in ok:
            for t, hit in r["tag_recall"].items():
                recall.setdefault(t, []).append(hit)
        s[name]["tag_recall"] = {t: sum(v) / len(v) for t, v in sorted(recall.items())}
        if clips and "clip_score" in clips[0]:
            s[name]["clip_score"] = _mean([c["clip_score"][name] for c in clips])
    s["real"] = {k: _mean([c["real"][k] for c in clips]) for k in STYLE_KEYS}
    return s


def write_report(ev_dir: Path, res: dict, clip_model: str | None) -> None:
    s = res["summary"]
    b, l = s["base"], s["lora"]
    md = [f"# Video -> text -> video evaluation: {Path(res['run']).name}", "",
          f"Query: `{res['query']}`; {s['clips']} clips; seeds {res['seed']}+clip index; {res['steps']} sampler steps; "
          f"re-captioned by `{res['captioner']}` @ `{res['prompt_version']}`.", ""]
    if res["random_models"]["base"] or res["random_models"]["captioner"]:
        md += ["**Random tiny models were used: the numbers below exercise the pipeline, they say nothing about "
               "quality.**", ""]
    if res["leaked_training_clips"]:
        md += [f"**Warning:** {len(res['leaked_training_clips'])} of these clips were in the run's training set.", ""]
    md += ["## Tag agreement (source clip tags vs the generated video's re-caption tags)", ""]
    md += table(["metric", "base", "LoRA"], [
        ["clips re-captioned (parsed)", b["recaptioned"], l["recaptioned"]],
        ["mean Jaccard", b["jaccard"], l["jaccard"]],
        [f"recall of the tags every clip shares ({', '.join(s['shared_tags']) or 'none'})",
         b["shared_tag_recall"], l["shared_tag_recall"]],
        ["control adherence", b["control_adherence"], l["control_adherence"]],
    ])
    tags = sorted(set(b["tag_recall"]) | set(l["tag_recall"]))
    if tags:
        md += ["", "Per-tag recall:", ""] + table(["tag", "base", "LoRA"],
                                                   [[t, b["tag_recall"].get(t), l["tag_recall"].get(t)] for t in tags])
    md += ["", "## Style against the real clips", ""]
    md += table(["metric", "real", "base", "LoRA", "|base - real|", "|LoRA - real|"], [
        ["palette distance to real (TV of 8^3 RGB histograms)", None, b["palette_distance"], l["palette_distance"], None, None],
        *[[k, s["real"][k], b[k], l[k], b[f"{k}_abs_diff_vs_real"], l[f"{k}_abs_diff_vs_real"]]
          for k in ("saturation", "edge_density")],
    ])
    md += ["", "## Temporal statistics against the real clips", ""]
    md += table(["metric", "real", "base", "LoRA", "|base - real|", "|LoRA - real|"], [
        [k, s["real"][k], b[k], l[k], b[f"{k}_abs_diff_vs_real"], l[f"{k}_abs_diff_vs_real"]]
        for k in ("flicker", "motion_score")])
    md += ["", "## Eval loss at fixed sigma (0.1 ... 0.9) on these clips", ""]
    md += table(["", "base", "LoRA"], [["mean", res["eval_loss"]["base"], res["eval_loss"]["lora"]]] + [
        [f"sigma {k}", res["eval_loss"]["base_by_sigma"].get(k), res["eval_loss"]["lora_by_sigma"].get(k)]
        for k in (res["eval_loss"]["base_by_sigma"] or {})])
    md += ["", "## Model-based metrics", ""]
    if clip_model:
        md += table(["metric", "base", "LoRA"], [["CLIP text-frame similarity", b.get("clip_score"), l.get("clip_score")]])
    else:
        md += ["- CLIP score: not computed (no CLIP weights given; pass `--clip-model PATH`)."]
    md += ["- FVD: not computed. It needs I3D weights, which this tool cannot download; no number is shown "
           "rather than one without meaning."]
    md += ["", "## Clips: real | base | LoRA", ""]
    for c in res["clips"]:
        md += [f"**{c['clip_id']}**: `{c['prompt'][:160]}`", "",
               f"![{c['clip_id']}](strips/{c['clip_id']}.gif)", "",
               f"- source tags: {', '.join(c['source_tags']) or '(none)'}",
               f"- base re-caption tags: {', '.join(c['base']['tags']) or '(' + (c['base']['parse_error'] or 'none') + ')'}",
               f"- LoRA re-caption tags: {', '.join(c['lora']['tags']) or '(' + (c['lora']['parse_error'] or 'none') + ')'}", ""]
    write(ev_dir / "report.md", md, f"eval {Path(res['run']).name}")
