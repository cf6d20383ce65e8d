"""`train evalset` and `train study`: the run's evaluation set, and the compression study on it."""

from __future__ import annotations

import click

from .cli_experiments import clean_errors


@click.command("evalset")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--windows", type=click.IntRange(min=0, max=256), default=None,
              help="Held-out windows in the set [default: 8, or as many as the run held out].")
@click.option("--noises", type=click.IntRange(min=1, max=64), default=None, help="Noises per item [default: 4].")
@click.option("--prompts", type=click.IntRange(min=0, max=64), default=None,
              help="Validation prompts in the set (text only) [default: 4].")
def evalset_cmd(run, windows, noises, prompts):
    """Show RUN's evaluation set, defining it first if no command has yet.

    The set is what distill-steps, distill-guidance, prune, compress (its eval loss) and study
    score on: the run's held-out windows plus its validation prompts, each with a fixed list of
    noises, written to RUN/evalset.json the first time and reused after, so their figures compare.
    Sizes given here apply only while the set is not defined; to redefine it, remove the file.

    \b
    Examples:
      train evalset runs/night                                 # show (or define with the defaults)
      train evalset runs/night --windows 8 --noises 8 --prompts 4
    """
    from .experiments import evalset

    with clean_errors(run):
        try:
            es = evalset.define(run, windows, noises, prompts)
        except evalset.EvalSetError as e:
            raise click.ClickException(str(e)) from e
        click.echo(es.describe())
        for k in es.windows:
            click.echo(f"  window {k}")
        for p in es.prompts:
            click.echo(f"  prompt {p[:100]}")


@click.command("study")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--budgets", default="16,8,4", show_default=True,
              help="Comma-separated sampling steps for the teacher and the guidance-distilled student.")
@click.option("--windows", type=click.IntRange(min=0, max=256), default=None,
              help="Held-out windows in the run's evaluation set, when this command defines it [default: 8, "
                   "or as many as the run held out].")
@click.option("--noises", type=click.IntRange(min=1, max=64), default=None,
              help="Noises per item of the evaluation set, when this command defines it [default: 4].")
@click.option("--prompts", type=click.IntRange(min=0, max=64), default=None,
              help="Validation prompts in the evaluation set, when this command defines it [default: 4].")
@click.option("--checks", is_flag=True,
              help="Add three broken variants (LoRA at scale 0, a step student trained 0 steps, a block dropped "
                   "and not healed); a metric that tells none of them from the teacher leaves the report.")
@click.option("--captioner", default=None, metavar="MODEL",
              help="Re-caption every variant's videos with this captioner (as `de caption --model`) for the "
                   "video -> text -> video tag agreement with the teacher [default: none].")
@click.option("--device", default=None)
@click.option("--dry-run", is_flag=True, help="Print the projected GPU memory of each variant on the real 2B config "
                                              "and stop.")
@click.option("--no-progress", is_flag=True)
def study_cmd(run, budgets, windows, noises, prompts, checks, captioner, device, dry_run, no_progress):
    """The compression study: sampling budgets, distillation, pruning and LoRA ranks in one report.

    Every variant that exists under RUN (the teacher at fewer steps; RUN/distill/guidance and
    RUN/distill/stepsN from `train distill-*`; RUN/prune/dropK from `train prune`; RUN/compress/rankK
    from `train compress`) samples the run's evaluation set (RUN/evalset.json: held-out windows and
    validation prompts with fixed noises, defined by the first command that needs it) and is
    measured against the teacher (the run's base plus LoRA, its CFG, 32 steps) from the same noise:
    NFE, seconds per video, parameters, peak memory, latent and pixel distance, brightness, palette
    and temporal gaps, eval loss, tag agreement. Every figure has a 95% bootstrap interval, and each
    variant a verdict against the teacher at its budget (better, worse, not distinguishable).
    Writes RUN/study/report.md (and .html), study.json and quality_vs_latency.png.

    \b
    Examples:
      train study runs/chase-r16
      train study runs/night --budgets 8,4 --captioner toy --checks
      train study runs/night --windows 4 --noises 8 --prompts 0   # defines the set, if not yet defined
    """
    from .experiments.study import study

    try:
        steps = tuple(sorted({int(x) for x in budgets.split(",") if x.strip()}, reverse=True))
    except ValueError:
        raise click.BadParameter("--budgets is a comma-separated list of step counts, e.g. 16,8,4") from None
    if not steps or min(steps) < 1 or max(steps) > 1000:
        raise click.BadParameter("--budgets: step counts between 1 and 1000")
    if dry_run:
        from .experiments.study import dry_run as project

        with clean_errors(run):
            for line in project(run, steps):
                click.echo(line)
        return
    with clean_errors(run):
        study(run, budgets=steps, windows=windows, noises=noises, prompts=prompts, checks=checks, device=device,
              captioner=captioner, progress=not no_progress, echo=click.echo)


def register(group) -> None:
    for cmd in (evalset_cmd, study_cmd):
        group.add_command(cmd)
