"""`train study RUN`: the compression study of the original experiment, as one grid and one report.

Every variant samples the run's evaluation set (`evalset`: held-out windows plus validation
prompts, each with fixed noises, the same set every compression command scores on) and is
measured against the teacher (the run's base model plus its LoRA, with its CFG, at 32 steps)
from the same noise, sample by sample:

- axes: sampling budget (the teacher at fewer steps), distillation (the guidance-distilled and
  step-distilled students under RUN/distill/), depth pruning (the healed models under RUN/prune/),
  and LoRA rank (the truncations under RUN/compress/). A variant whose folder does not exist is
  left out of the grid and named in the report. `--checks` adds three deliberately broken
  variants (the LoRA at scale 0, a step student trained 0 steps, a block dropped and not healed):
  a metric that tells none of them from the teacher is dropped from the report.
- per variant: NFE, wall time per video (one video alone), parameters, peak memory, and per
  sample the latent and pixel distance, brightness and palette gaps, the temporal gap (how
  differently it changes from frame to frame), the held-out eval loss, and with `--captioner`
  the tag agreement, also per tag. Every figure is a mean with a bootstrap interval; each variant
  gets a verdict against the teacher at its own budget (`uncertainty.compare`), and the Pareto
  front uses only the differences the intervals support.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path



REFERENCE_STEPS = 32


@dataclass
class Variant:
    name: str
    kind: str                   # teacher | guidance | steps | pruned | rank
    steps: int
    cfg: float                  # guidance scale at sampling (1: one pass per step)
    adapters: list = field(default_factory=list)  # (adapter name, file) beside the run's "style" LoRA
    euler: bool = False
    model_dir: Path | None = None  # a pruned model folder (with its healing LoRA as the only adapter)
    style: bool = True          # the run's LoRA is on
    drop_block: int | None = None  # a block taken out for this variant, not healed (a --checks variant)
    broken: bool = False        # a deliberately broken variant (--checks): a metric must tell it apart

    @property
    def nfe(self) -> int:
        return self.steps * (2 if self.cfg > 1 else 1)


def variants(run_dir: Path, cfg, budgets=(16, 8, 4)) -> tuple[list[Variant], list[str]]:
    """The grid for this run, from what exists under it; and what is missing."""
    from ..lora import WEIGHTS_NAME
    from ..runfolder import ExperimentError, check_lora

    out = [Variant(f"teacher@{REFERENCE_STEPS}", "teacher", REFERENCE_STEPS, cfg.cfg)]
    out += [Variant(f"teacher@{s}", "teacher", s, cfg.cfg) for s in budgets]
    missing = []
    g = run_dir / "distill" / "guidance" / WEIGHTS_NAME
    if g.exists():
        out += [Variant(f"guidance-distilled@{s}", "guidance", s, 1.0, [("student", g)]) for s in (REFERENCE_STEPS,
                                                                                                *budgets)]
    else:
        missing.append("guidance-distilled (run `train distill-guidance RUN`)")
    steps_dirs = sorted((run_dir / "distill").glob("steps*/" + WEIGHTS_NAME)) if (run_dir / "distill").is_dir() else []
    for p in steps_dirs:
        n = int(p.parent.name.removeprefix("steps"))
        out.append(Variant(f"step-distilled@{n}", "steps", n, 1.0, [("student", p)], euler=True))
    if not steps_dirs:
        missing.append("step-distilled (run `train distill-steps RUN --steps 4`)")
    prunes = sorted((run_dir / "prune").glob("drop*/model/model_index.json")) if (run_dir / "prune").is_dir() else []
    for p in prunes:
        heal = p.parent.parent / "heal" / WEIGHTS_NAME
        out.append(Variant(f"pruned-{p.parent.parent.name}@{REFERENCE_STEPS}", "pruned", REFERENCE_STEPS, cfg.cfg,
                           [("heal", heal)] if heal.exists() else [], model_dir=p.parent, style=False))
    if not prunes:
        missing.append("pruned (run `train prune RUN --drop K`)")
    ranks = sorted((run_dir / "compress").glob("rank*/" + WEIGHTS_NAME)) if (run_dir / "compress").is_dir() else []
    for p in ranks:
        out.append(Variant(f"{p.parent.name}@{REFERENCE_STEPS}", "rank", REFERENCE_STEPS, cfg.cfg, [("rank", p)],
                           style=False))
    for v in out:  # a damaged variant stops the study before any work, naming the file
        for _, p in v.adapters:
            try:
                check_lora(p)
            except ExperimentError as e:
                raise ExperimentError(f"variant {v.name}: {e}; remove it or rerun the command that wrote it") from e
    if not ranks:
        missing.append("LoRA ranks (run `train compress RUN`)")
    return out, missing


def broken_variants(cfg, blocks: int) -> list[Variant]:
    """Three variants that are wrong on purpose, each measured against the teacher at its budget:
    the run's LoRA at scale 0 (the base model), a step student trained 0 steps (a new LoRA starts
    at zero, so it samples as the run's model at 4 Euler steps without CFG), and the model with its
    middle block dropped and not healed."""
    return [Variant(f"check:lora-scale-0@{REFERENCE_STEPS}", "teacher", REFERENCE_STEPS, cfg.cfg, style=False,
                    broken=True),
            Variant("check:student-0-steps@4", "steps", 4, 1.0, euler=True, broken=True),
            Variant(f"check:block-dropped@{REFERENCE_STEPS}", "pruned", REFERENCE_STEPS, cfg.cfg,
                    drop_block=blocks // 2, broken=True)]


def study(run_dir, *, budgets=(16, 8, 4), windows: int | None = None, noises: int | None = None,
          prompts: int | None = None, device: str | None = None, captioner: str | None = None,
          checks: bool = False, progress: bool = True, echo=print) -> dict:
    from tqdm import tqdm

    from ..distill_run import _null
    from . import evalset
    from .runctx import ExperimentError, open_run
    from .study_measure import Measure, TagAgreement
    from .study_report import summarise, write_all

    from ..runfolder import ensure_writable, folder

    run_dir = folder(run_dir)
    out = run_dir / "study"
    ensure_writable(out)  # before minutes of sampling whose report could not be saved
    ctx = open_run(run_dir, device=device, adapter="style")
    try:
        es = evalset.define(run_dir, windows, noises, prompts)
        wins, pitems = evalset.load_items(ctx, es)
    except evalset.EvalSetError as e:
        raise ExperimentError(str(e)) from e
    echo(es.describe())
    samples = evalset.noises(es, wins + pitems)
    grid, missing = variants(run_dir, ctx.cfg, budgets)
    if checks:
        grid += broken_variants(ctx.cfg, len(ctx.pipe.transformer.transformer_blocks))
    agree = TagAgreement(captioner, ctx.device) if captioner else None
    m = Measure(ctx, samples, wins, _null(ctx), agree, out)
    measured = {}
    try:
        m.warm_up()
        for v in tqdm(grid, desc="study", unit="variant", disable=not progress):
            measured[v.name] = m.variant(v)
    finally:
        m.close()
    res = summarise(grid, measured, es, missing, ctx.is_random, run_dir)
    write_all(res, out, run_dir.name)
    echo(f"study: {len(grid)} variants on {es.samples} paired samples; report {out / 'report.md'} "
         "(and report.html, study.json, quality_vs_latency.png)")
    for line in res["verdict_lines"]:
        echo("  " + line)
    for mm in missing:
        echo(f"  not in the grid: {mm}")
    return res


def dry_run(run_dir, budgets=(16, 8, 4)) -> list[str]:
    """The GPU memory of sampling each kind of variant on the real 2B config. Sampling keeps no
    graph: the peak is the weights, one block's activations for the batch the sampler runs (2 with
    CFG, 1 without), and the reserve; a pruned model holds fewer weights."""
    from ..memory import GIB, REAL_TRANSFORMER, RESERVE_GIB, at_real_shape, count_params, measured, tokens_for

    run_dir = Path(run_dir)
    from ..runfolder import read_config

    cfg, note = at_real_shape(read_config(run_dir), run_dir)
    m, n_params, _ = measured(cfg.rank, cfg.lora_targets)
    per = m.saved(tokens_for(cfg.frames, cfg.height, cfg.width))
    lines = [note] if note else []

    def gib(params: int, batch: int) -> float:
        return (params * 2 + batch * per) / GIB + RESERVE_GIB

    lines.append(f"teacher with CFG (batch 2 per step), any budget {sorted(budgets, reverse=True)}: "
                 f"{gib(n_params, 2):.1f} GiB")
    lines.append(f"distilled students (guidance 1, batch 1): {gib(n_params, 1):.1f} GiB")
    blocks = REAL_TRANSFORMER.get("num_layers", 20)
    for p in sorted((run_dir / "prune").glob("drop*/model")) if (run_dir / "prune").is_dir() else []:
        k = int(p.parent.name.removeprefix("drop"))
        if 1 <= k < blocks:
            lines.append(f"{p.parent.name} ({blocks - k} of {blocks} blocks) with CFG: "
                         f"{gib(count_params(blocks - k), 2):.1f} GiB")
    lines.append("(the study itself samples one video at a time; `--prompts` and `--seeds` change the time, not "
                 "the peak)")
    return lines
