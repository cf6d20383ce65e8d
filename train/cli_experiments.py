"""`train eval`, `train sweep-steps`, `train compress`, `train compare`: registered on `train`."""

from __future__ import annotations

from contextlib import contextmanager

import click

from dataengine.options import SEED, Float, Int



@contextmanager
def clean_errors(run):
    """Every experiment command's failures as one line (exit 1): the run folder's door
    (train.runfolder) raises ExperimentError for damaged, missing, foreign or non-finite inputs;
    a full or read-only disk gives the one disk-full message."""
    from .run import RunError
    from .runfolder import ExperimentError, write_error

    try:
        yield
    except (ExperimentError, RunError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    except OSError as e:
        raise click.ClickException(str(write_error(e, run))) from e
    except Exception as e:
        if type(e).__name__ != "SafetensorError":  # safetensors' write errors (disk full) are not OSErrors
            raise
        import errno

        from catalog.errors import is_disk_full

        raise click.ClickException(str(write_error(OSError(errno.ENOSPC if is_disk_full(e) else errno.EIO, str(e)),
                                                   run))) from e


def _floats(s: str) -> list[float]:
    try:
        return [float(x) for x in s.split(",") if x.strip()]
    except ValueError as e:
        raise click.BadParameter(f"expected comma-separated numbers, got {s!r}") from e


@click.command("eval")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--query", required=True, help="WHERE clause selecting held-out clips (captioned ones).")
@click.option("--catalog", type=click.Path(dir_okay=False), default=None,
              help="Catalog file (default: the catalog the run trained from).")
@click.option("--captioner", "captioner", default="qwen2-vl", show_default=True,
              help="VLM that re-captions the generated videos (alias, hub id, local dir, or tiny).")
@click.option("--source", default=None, help="Labelling giving the source captions/tags: CAPTIONER[@VERSION] "
                                             "(default: what the clips view shows).")
@click.option("--prompt", "prompt_name", default="caption_v1", show_default=True, help="Caption prompt template.")
@click.option("--caption-fps", type=Float(0, 240, min_open=True), default=2.0, show_default=True)
@click.option("--caption-max-frames", type=Int(1, 10_000), default=16, show_default=True)
@click.option("--caption-max-pixels", type=Int(16 * 16, 10**8), default=360 * 420, show_default=True)
@click.option("--max-new-tokens", type=Int(1, 32768), default=None,
              help="Re-caption token cap [default: the schema's bound; 256 with --free].")
@click.option("--free", is_flag=True, help="Re-caption without constraining to the caption schema.")
@click.option("--limit", type=Int(1, 10**6), default=8, show_default=True, help="At most N clips.")
@click.option("--seed", type=SEED, default=None, help="Default: the run's validation seed.")
@click.option("--steps", type=Int(1, 1000), default=None, help="Sampler steps (default: the run's validation steps).")
@click.option("--clip-model", type=click.Path(exists=True), default=None,
              help="Local CLIP weights for a text-video CLIP score (none are downloaded).")
@click.option("--device", default=None)
@click.option("--no-progress", is_flag=True)
def eval_cmd(run, query, catalog, captioner, source, prompt_name, caption_fps, caption_max_frames,
             caption_max_pixels, max_new_tokens, free, limit, seed, steps, clip_model, device, no_progress):
    """Video -> text -> video: does the LoRA keep text control?

    For each held-out clip: its catalog caption/tags fill the run's prompt; base and LoRA generate
    with the same seed; the same captioner re-captions both; tags, style and temporal statistics are
    compared with the real clip, plus the eval loss. Writes RUN/eval/metrics.json and report.md/html.

    \b
    Examples:
      train eval runs/chase-r16 --query "tags LIKE '%chase%' AND video_path LIKE '%ep07%'"
      train eval runs/chase-r16 --query "1=1" --captioner qwen2.5-vl --limit 20 --steps 30
      train eval runs/smoke --query "1=1" --captioner tiny --limit 2 --steps 2    # offline smoke run
    """
    from dataengine.caption.prompts import SamplingParams

    from .experiments.evaluate import evaluate

    with clean_errors(run):
        sampling = SamplingParams(fps=caption_fps, max_frames=caption_max_frames, max_pixels=caption_max_pixels,
                                  max_new_tokens=max_new_tokens or 256)
        res = evaluate(run, query=query, catalog=catalog, captioner_model=captioner, source=source,
                       prompt_name=prompt_name, sampling=sampling, seed=seed, steps=steps, limit=limit, device=device,
                       clip_model=clip_model, progress=not no_progress, constrained=not free,
                       max_new_tokens=max_new_tokens)
    s = res["summary"]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    shared = f"shared tags ({', '.join(s['shared_tags'])}) recalled: base {fmt(s['base']['shared_tag_recall'])} vs " \
             f"LoRA {fmt(s['lora']['shared_tag_recall'])}; " if s["shared_tags"] else ""
    click.echo(f"{s['clips']} clips; Jaccard base {fmt(s['base']['jaccard'])} vs LoRA {fmt(s['lora']['jaccard'])}; {shared}"
               f"palette distance base {fmt(s['base']['palette_distance'])} vs LoRA {fmt(s['lora']['palette_distance'])}; "
               f"eval loss base {fmt(res['eval_loss']['base'])} vs LoRA {fmt(res['eval_loss']['lora'])}")
    click.echo(f"report: {run}/eval/report.md (and report.html)")


@click.command("sweep-steps")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--steps-list", "--steps", "steps", default="4,8,16,32,50", show_default=True,
              help="Step counts, comma-separated; the largest is the reference. (--steps is the old name.)")
@click.option("--cfg-list", "--cfg", "cfgs", default="4", show_default=True,
              help="CFG values, comma-separated. (--cfg is the old name.)")
@click.option("--prompts", "prompts_file", default=None, help="Prompt file (default: the run's validation prompts).")
@click.option("--limit-prompts", type=Int(1, 10**6), default=None)
@click.option("--seed", type=SEED, default=None)
@click.option("--device", default=None)
@click.option("--no-progress", is_flag=True)
def sweep_steps_cmd(run, steps, cfgs, prompts_file, limit_prompts, seed, device, no_progress):
    """Sampling budget: quality (PSNR/SSIM vs the largest step count) against seconds per video.

    \b
    Examples:
      train sweep-steps runs/chase-r16
      train sweep-steps runs/chase-r16 --steps-list 4,8,16,32,50 --cfg-list 3,4,6

    The -list options take several values, where `train eval --steps` and `train generate
    --steps/--cfg` take one.
    """
    from .experiments.sweep import sweep_steps

    st = [int(x) for x in _floats(steps)]
    if not st or min(st) < 1:
        raise click.BadParameter("--steps-list must be positive integers")
    with clean_errors(run):
        res = sweep_steps(run, steps=st, cfgs=_floats(cfgs), prompts_file=prompts_file, seed=seed, device=device,
                          limit_prompts=limit_prompts, progress=not no_progress)
    for r in res["summary"]:
        click.echo(f"cfg {r['cfg']:g} steps {r['steps']:3d}: {r['seconds_per_video']:.2f} s/video, "
                   f"PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.3f}")
    click.echo(f"report: {run}/sweep_steps/report.md")


@click.command("compress")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--ranks", default=None, help="Target ranks, comma-separated (default: r/2, r/4, ... down to 1).")
@click.option("--limit-prompts", type=Int(1, 10**6), default=None)
@click.option("--steps", type=Int(1, 1000), default=None, help="Sampler steps for the comparison videos.")
@click.option("--seed", type=SEED, default=None)
@click.option("--device", default=None)
@click.option("--no-progress", is_flag=True)
def compress_cmd(run, ranks, limit_prompts, steps, seed, device, no_progress):
    """Truncate the run's LoRA to lower ranks by SVD; report size, energy kept and quality.

    \b
    Examples:
      train compress runs/lora64
      train compress runs/lora64 --ranks 32,16,8 --steps 20
    """
    from .experiments.compress import compress

    with clean_errors(run):
        res = compress(run, ranks=[int(x) for x in _floats(ranks)] if ranks else None, device=device, seed=seed,
                       steps=steps, limit_prompts=limit_prompts, progress=not no_progress)
    for v in res["variants"]:
        click.echo(f"{v['variant']:>8}: {v['file_bytes']:>10,} bytes, energy {v['retained_energy']:.4f}, "
                   f"eval loss {v['eval_loss']}, PSNR vs full {v['psnr_vs_full']:.2f}")
    click.echo(f"report: {run}/compress/report.md")


@click.command("compare")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--output-dir", default="runs/compare", show_default=True)
@click.option("--k", type=Float(1, 1e6, min_open=True), default=3.0, show_default=True, help="Explosion: loss > k x running median.")
@click.option("--window", type=Int(1, 10**6), default=20, show_default=True, help="Running-median window (steps).")
@click.option("--smooth", type=Float(0, 1, min_open=True), default=0.1, show_default=True, help="EMA factor for smoothed curves.")
def compare_cmd(runs, output_dir, k, window, smooth):
    """Stability study: overlay the runs' curves, mark early loss explosions and grad-norm spikes.

    \b
    Examples:
      train compare runs/lora16-lr2e-4 runs/lora64-lr1e-4-warmup --output-dir runs/stability
    """
    from .experiments.compare import compare

    try:
        res = compare(list(runs), output_dir, k=k, window=window, smooth=smooth)
    except FileNotFoundError as e:
        raise click.ClickException(str(e)) from e
    for r in res["runs"]:
        ex = r["loss_explosions"]
        r4 = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
        click.echo(f"{r['run']}: final loss {r4(r['final_loss'])}, best eval {r4(r['best_eval_loss'])}, "
                   f"explosions {len(ex)}" + (f" (first at step {ex[0]})" if ex else "")
                   + (f", first grad-norm spike at {r['first_grad_norm_spike']}" if r["first_grad_norm_spike"] else ""))
    click.echo(f"report: {output_dir}/report.md, plot: {output_dir}/compare.png")


@click.command("prune")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--drop", type=Int(1, 10_000), required=True, help="How many transformer blocks to drop.")
@click.option("--heal-steps", type=Int(0, 10**9), default=100, show_default=True,
              help="Steps of the healing LoRA run on the pruned model (0: no healing).")
@click.option("--random-draws", type=Int(0, 1000), default=4, show_default=True,
              help="Random K-block drops measured beside the least important K (the baseline).")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", default=None)
@click.option("--dry-run", is_flag=True, help="Print the projected GPU memory on the real 2B config and stop.")
@click.option("--resume", is_flag=True, help="Continue an interrupted healing run (RUN/prune/dropK/heal) from its "
                                             "newest checkpoint.")
@click.option("--no-progress", is_flag=True)
def prune_cmd(run, drop, heal_steps, random_draws, seed, device, dry_run, resume, no_progress):
    """Depth pruning: drop the K least important transformer blocks of RUN's model, then heal.

    Block importance is 1 - cos(block input, block output) on the run's held-out windows (Minitron,
    SANA-1.5). The run's LoRA is fused first; the pruned model is saved as a pipeline folder
    (RUN/prune/dropK/model, loadable with from_pretrained and `--base-model`), with pruned.json
    (blocks dropped, importance, eval losses against K random blocks, and after healing).

    \b
    Examples:
      train prune runs/chase-r16 --drop 4
      train prune runs/night --drop 1 --heal-steps 30      # the toy model has 4 blocks
    """
    from .experiments.prune import prune_run

    if dry_run:
        from .experiments.prune import dry_run as project

        with clean_errors(run):
            for line in project(run, drop):
                click.echo(line)
        return
    with clean_errors(run):
        r = prune_run(run, drop=drop, heal_steps=heal_steps, random_draws=random_draws, device=device, seed=seed,
                      progress=not no_progress, echo=click.echo, resume=resume)
    click.echo(f"pruned model: {run}/prune/drop{drop}/model ({r['params_pruned']:,} of {r['params_full']:,} "
               f"parameters); report: {run}/prune/drop{drop}/pruned.json")


@click.command("distill-guidance")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--scale", type=Float(1.0, 100), default=None,
              help="The CFG scale to distil [default: the run's --cfg].")
@click.option("--train-steps", type=Int(1, 10**9), default=200, show_default=True,
              help="Steps of the student's LoRA run.")
@click.option("--lr", type=Float(0, 1, min_open=True), default=None,
              help="Learning rate [default: the run's].")
@click.option("--dry-run", is_flag=True, help="Print the projected GPU memory on the real 2B config and stop.")
@click.option("--resume", is_flag=True, help="Continue an interrupted student run (RUN/distill/guidance) from its "
                                             "newest checkpoint, with the settings it was started with.")
@click.option("--no-progress", is_flag=True)
def distill_guidance_cmd(run, scale, train_steps, lr, dry_run, resume, no_progress):
    """Guidance distillation: one conditional pass that gives the teacher's CFG output.

    The teacher is RUN's base model plus its LoRA; the student adds a new LoRA on top and learns the
    teacher's classifier-free-guided velocity on the run's clips. Sampling with it needs one forward
    pass per step instead of two (guidance 1). Writes RUN/distill/guidance/ (a run folder: the LoRA,
    and distill.json with the student's and the plain conditional pass's distance to the CFG
    velocity on held-out clips).

    \b
    Examples:
      train distill-guidance runs/chase-r16
      train distill-guidance runs/night --scale 4.5 --train-steps 100
    """
    from .distill_run import distill_guidance

    if dry_run:
        from .distill_run import dry_run as project

        with clean_errors(run):
            for line in project(run, "guidance"):
                click.echo(line)
        return
    with clean_errors(run):
        distill_guidance(run, scale=scale, train_steps=train_steps, lr=lr, progress=not no_progress, echo=click.echo,
                         resume=resume)


@click.command("distill-steps")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--steps", type=click.IntRange(min=1, max=16), default=4, show_default=True,
              help="The student's sampling steps (Euler, no CFG).")
@click.option("--teacher-steps", type=Int(2, 1000), default=32, show_default=True,
              help="The teacher's sampling steps for the pairs it makes.")
@click.option("--pairs", type=click.IntRange(min=1, max=64), default=4, show_default=True,
              help="Teacher samples (noise, output) per training window.")
@click.option("--train-steps", type=Int(1, 10**9), default=300, show_default=True,
              help="Steps of the student's LoRA run.")
@click.option("--lr", type=Float(0, 1, min_open=True), default=None,
              help="Learning rate [default: the run's].")
@click.option("--dry-run", is_flag=True, help="Print the projected GPU and host memory on the real 2B config and stop.")
@click.option("--resume", is_flag=True, help="Continue an interrupted student run (RUN/distill/stepsN) from its "
                                             "newest checkpoint, with the settings it was started with.")
@click.option("--no-progress", is_flag=True)
def distill_steps_cmd(run, steps, teacher_steps, pairs, train_steps, lr, dry_run, resume, no_progress):
    """Step distillation by reflow: a few-step student of RUN's model plus LoRA.

    The teacher samples every training prompt from fixed noises (CFG, --teacher-steps); the student,
    a new LoRA on top of the run's, learns the straight path from each noise to the teacher's
    sample, and then samples in --steps Euler steps without CFG. Writes RUN/distill/stepsN/ (the
    LoRA, and distill.json: the student's and the teacher's own N-step distance to the teacher's
    --teacher-steps output, from the same noise, on held-out prompts).

    \b
    Examples:
      train distill-steps runs/chase-r16 --steps 4
      train distill-steps runs/night --steps 4 --teacher-steps 32 --pairs 8 --train-steps 400
    """
    from .distill_run import distill_steps

    if dry_run:
        from .distill_run import dry_run as project

        with clean_errors(run):
            for line in project(run, "steps", pairs=pairs):
                click.echo(line)
        return
    with clean_errors(run):
        distill_steps(run, steps=steps, teacher_steps=teacher_steps, pairs=pairs, train_steps=train_steps, lr=lr,
                      progress=not no_progress, echo=click.echo, resume=resume)


def register(group) -> None:
    for cmd in (eval_cmd, sweep_steps_cmd, compress_cmd, compare_cmd, prune_cmd, distill_guidance_cmd,
                distill_steps_cmd):
        group.add_command(cmd)
