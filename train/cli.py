"""The `train` command: `train --query ...` trains; `train generate|eval|...` are subcommands.

A thin skin: parse, resolve the config (explicit options > --preset > the original experiment's
defaults), freeze the manifest, then call train.loop.train. Heavy imports happen inside.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from dataengine.options import SEED, Float, Int

from catalog.db import CatalogError

from .presets import preset_names

# option name -> TrainConfig field; every one defaults to None so presets can fill the gaps
TRAIN_OPTIONS = [
    ("--catalog", "catalog", click.Path(dir_okay=False), "Catalog file (default: $DE_CATALOG, else ./catalog.duckdb)."),
    ("--query-timeout", "query_timeout", float, "Seconds the --query may run before it is stopped. [default: 30]"),
    ("--captioner", "captioner", str, "Labelling to take captions from: CAPTIONER[@VERSION] (default: what the clips view shows)."),
    ("--base-model", "base_model", str, "Hub id, local diffusers folder, or tiny. [default: Efficient-Large-Model/SANA-Video_2B_480p_diffusers]"),
    ("--prompt-template", "prompt_template", str, "class | caption | class+caption | tags, or a format string with {caption} {tags} {tag_tokens} {action} {setting} {class_prompt}... [default: class]"),
    ("--class-prompt", "class_prompt", str, "Class prompt text or file [default: assets/prompts/class_tomjerry.txt]."),
    ("--motion-scale", "motion_scale", float, "Multiplier from our motion_score to SANA's motion score N. [default: 5]"),
    ("--caption-dropout", "caption_dropout", float, "Probability of training on the empty prompt. [default: 0.1]"),
    ("--holdout", "holdout", int, "Windows (whole clips) held out for the eval loss. [default: 4]"),
    ("--rank", "rank", int, "LoRA rank. [default: 16]"),
    ("--alpha", "alpha", float, "LoRA alpha. [default: 32]"),
    ("--lora-dropout", "lora_dropout", float, "LoRA dropout. [default: 0.1]"),
    ("--lora-targets", "lora_targets", click.Choice(["linear", "linear+conv"]), "linear = every nn.Linear; +conv adds the FFN 1x1/temporal convs. [default: linear]"),
    ("--lr", "lr", float, "Learning rate. [default: 2e-4]"),
    ("--batch-size", "batch_size", int, "Per-device batch. [default: 8]"),
    ("--grad-accum", "grad_accum", int, "Gradient accumulation steps. [default: 1]"),
    ("--max-steps", "max_steps", int, "Optimizer steps. [default: 10000]"),
    ("--height", "height", int, "[default: 224]"),
    ("--width", "width", int, "[default: 224]"),
    ("--frames", "frames", int, "Frames per sample, 1 + 4k. [default: 81]"),
    ("--fps", "fps", float, "Frames are resampled by time to this rate. [default: 16]"),
    ("--optimizer", "optimizer", click.Choice(["adamw", "adamw8bit"]), "[default: adamw]"),
    ("--warmup-steps", "warmup_steps", int, "[default: 0]"),
    ("--lr-schedule", "lr_schedule", click.Choice(["constant", "linear", "cosine"]), "[default: constant]"),
    ("--grad-clip", "grad_clip", float, "Max grad norm, 0 = off. [default: 1.0]"),
    ("--mixed-precision", "mixed_precision", click.Choice(["bf16", "fp16", "no"]), "On CUDA; CPU runs fp32. [default: bf16]"),
    ("--seed", "seed", int, "[default: 42]"),
    ("--timestep-sampling", "timestep_sampling", click.Choice(["logit_normal", "uniform"]), "[default: logit_normal]"),
    ("--flow-shift", "flow_shift", float, "Shift applied to training sigmas (NVIDIA's SANA-Video training value). [default: 3]"),
    ("--sigma-min", "sigma_min", float, "Train only on noise levels from this sigma up (after the shift). [default: 0]"),
    ("--sigma-max", "sigma_max", float, "Train only on noise levels up to this sigma (after the shift). [default: 1]"),
    ("--validation-flow-shift", "validation_flow_shift", float, "Sampler shift for validation and generation. [default: 8]"),
    ("--validation-every", "validation_every", int, "Steps between validations, 0 = off. [default: 500]"),
    ("--validation-prompts", "validation_prompts", str, "File of 'summary | prompt' lines, or TOML [[prompt]] tables / JSONL objects that may set seed, size (WxH), frames and cfg per prompt [default: the original five]."),
    ("--validation-seed", "validation_seed", int, "[default: 69420]"),
    ("--cfg", "cfg", float, "Guidance scale for validation. [default: 4]"),
    ("--validation-steps", "validation_steps", int, "Sampler steps for validation. [default: 50]"),
    ("--validation-batch", "validation_batch", int, "Validation prompts sampled together when they share size, frames and cfg: the same videos in fewer passes, more memory. [default: 1]"),
    ("--checkpoint-every", "checkpoint_every", int, "[default: 500]"),
    ("--keep-checkpoints", "keep_checkpoints", int, "[default: 3]"),
    ("--log-every", "log_every", int, "Without a progress bar (--no-progress, or output not a terminal), print step, loss, lr, steps/s and ETA every N steps; 0 = never. [default: 10]"),
    ("--report-to", "report_to", click.Choice(["none", "tensorboard", "wandb", "all"]), "[default: none]"),
    ("--device", "device", str, "cpu to force the CPU (default: CUDA when available)."),
    ("--name", "name", str, "Run name (default: derived from rank, lr and time)."),
]


def _add_train_options(f):
    for opt, dest, typ, help_ in reversed(TRAIN_OPTIONS):
        f = click.option(opt, dest, type=typ, default=None, help=help_)(f)
    return f


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"],
                                                            "max_content_width": 110})
@click.option("--query", default=None, help="WHERE clause over the clips view selecting the training clips.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="TOML or YAML file of options (keys as below, _ for -), or a run's config.json to repeat it. "
                   "Command-line options override the file; the file overrides its preset.")
@click.option("--preset", type=click.Choice(preset_names()), default=None,
              help="A preset shipped with the tool: seed-tomjerry = the original experiment's table; "
                   "stability-lora64 = LoRA-64 with warmup; toy = the toy models on the `de synth --world` toy world "
                   "(no weights to download); tiny = CPU smoke run with random weights.")
@click.option("--print-config", is_flag=True,
              help="Print the resolved config as TOML (a file --config reads back) and exit; reads no catalog.")
@click.option("--buckets", "buckets", default=None, metavar="auto|square|WxH,...",
              help="Aspect buckets: square = one --width x --height crop; auto = SANA-Video's 480p aspect table "
                   "scaled to --width x --height pixels; or a list. Each clip goes to the nearest. [default: square]")
@click.option("--frame-buckets", "frame_buckets", default=None, metavar="F,F,...",
              help="Frame counts (1 + 4k), e.g. 33,49,81: each clip gets the longest that fits. [default: --frames]")
@click.option("--output-dir", type=click.Path(file_okay=False), default=None, help="Run folder (default: runs/<name>).")
@click.option("--motion-score/--no-motion-score", default=None, help="Append SANA's ' motion score: N.' to prompts.")
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=None,
              help="Recompute each block in backward. [default: on, except for the tiny model]")
@click.option("--resume", default=None, help="latest, or a checkpoint folder: continue exactly where it stopped.")
@click.option("--dry-run", is_flag=True, help="Resolve the query; print the manifest, the sigma distribution and the "
                                             "projected GPU memory; load no model.")
@click.option("--preview", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="With --dry-run: write every selected window as the model will see it (training size, crop, fps, "
                   "frames; exact pixels as animated WebP), windows.jsonl with each prompt, and summary.png.")
@click.option("--no-progress", is_flag=True, help="No progress bars: a log line every --log-every steps instead.")
@click.option("--dedup", is_flag=True, default=None,
              help="Keep one clip per near-duplicate group (the clips view's dup_rank = 1; see `de dedup`).")
@click.option("--cache-all", "cache_all", is_flag=True, default=None,
              help="Encode every window's latents before the first step. [default: a window is encoded the first "
                   "time a batch uses it (held-out windows before step 1), and reused after, across runs]")
@_add_train_options
@click.pass_context
def main(ctx, query, config_file, preset, print_config, buckets, frame_buckets, output_dir, motion_score,
         gradient_checkpointing, resume, dry_run, preview, no_progress, dedup, cache_all, **opts):
    """Train a SANA-Video LoRA on the clips a SQL filter selects.

    \b
    Examples:
      train --query "tags LIKE '%chase%'"
      train --query "duration_s > 5" --preset seed-tomjerry --prompt-template class+caption
      train --query "tags LIKE '%chase%'" --rank 64 --lr 1e-4 --warmup-steps 500 --max-steps 15000
      train --query "1=1" --preset tiny --output-dir runs/smoke      # CPU smoke run
      train --resume latest --output-dir runs/smoke                  # continue a run
      train --query "tags LIKE '%night%'" --dry-run
      train --query "tags LIKE '%night%'" --dry-run --preview preview/   # see the exact frames that train
      train --query "NOT rejected AND coalesce(train_loss_z, 0) < 2" --dedup   # curated, one per duplicate group
      train --config my_run.toml                                     # options (and the query) from a file
      train --config runs/a/config.json --output-dir runs/b          # repeat a run
      train --preset seed-tomjerry --print-config > my_run.toml      # start a config file from a preset
      train --query "1=1" --buckets auto --frame-buckets 33,49,81    # widescreen and short clips, uncropped
    """
    if ctx.invoked_subcommand is not None:
        return
    from .run import NEEDS_QUERY, RunError, resolve_config, start_training

    if query is None and resume is None and config_file is None and not print_config:
        raise click.ClickException(NEEDS_QUERY)
    if preview and not dry_run:
        raise click.UsageError("--preview goes with --dry-run (it shows what a run would train on, and trains nothing)")
    overrides = {k: v for k, v in opts.items() if v is not None}
    if buckets is not None:
        overrides["buckets"] = buckets
    if frame_buckets is not None:
        overrides["frame_buckets"] = frame_buckets
    if output_dir is not None:
        overrides["output_dir"] = output_dir
    if motion_score is not None:
        overrides["motion_score"] = motion_score
    if gradient_checkpointing is not None:
        overrides["gradient_checkpointing"] = gradient_checkpointing
    if dedup:
        overrides["dedup"] = True
    if cache_all:
        overrides["cache_all"] = True
    if print_config:
        from .configfile import to_toml

        try:
            cfg = resolve_config(query, preset, overrides, config_file, need_query=False)
        except RunError as e:
            raise click.ClickException(str(e)) from e
        click.echo(to_toml({k: v for k, v in cfg.to_dict().items() if k != "config_file"}), nl=False)
        return
    try:
        code = start_training(query=query, preset=preset, overrides=overrides, output_dir=output_dir,
                              resume=resume, dry_run=dry_run, progress=not no_progress, echo=click.echo,
                              config_file=config_file, preview=preview)
    except (RunError, CatalogError) as e:
        raise click.ClickException(str(e)) from e
    sys.exit(code)


@main.command()
@click.option("--lora", "lora", required=False, help="Run folder or .safetensors file (omit for the base model).")
@click.option("--prompt", required=True, help="Text prompt.")
@click.option("--base-model", default=None, help="Default: the base model the LoRA was trained on.")
@click.option("--seed", type=SEED, default=69420, show_default=True)
@click.option("--cfg", type=Float(0, 100), default=4.0, show_default=True)
@click.option("--steps", type=Int(1, 1000), default=50, show_default=True)
@click.option("--frames", type=Int(1, 1 + 4 * 256), default=None, help="Default: the LoRA's training frames (81).")
@click.option("--size", default=None, help="WIDTHxHEIGHT, as in `de synth` (default: the LoRA's training size).")
@click.option("--lora-scale", type=Float(-100, 100), default=1.0, show_default=True)
@click.option("--negative-prompt", default="", show_default=True)
@click.option("--output", "output", type=click.Path(dir_okay=False), default=None,
              help="Output .mp4 (a .gif is written beside it). Default: <run>/generated/<time>.mp4, where <run> "
                   "is the --lora folder or the folder holding the --lora file (./generated without --lora).")
@click.option("--device", default=None)
@click.option("--motion-suffix/--no-motion-suffix", default=True, show_default=True,
              help="Append the ' motion score: N.' the run's validation prompts carried (when it trained with one).")
def generate(lora, prompt, base_model, seed, cfg, steps, frames, size, lora_scale, negative_prompt, output, device,
             motion_suffix):
    """Generate a video with the base model plus a LoRA.

    \b
    Examples:
      train generate --lora runs/chase-r16 --prompt "A grey cat sneaks up on a mouse at night"
      train generate --lora runs/chase-r16/pytorch_lora_weights.safetensors --prompt "..." --steps 20 --lora-scale 0.8
      train generate --base-model tiny --prompt "a cat" --steps 2 --frames 9 --size 64x64 --output /tmp/x.mp4
    """
    from .generate import GenerateError, generate_video

    try:
        paths = generate_video(lora=lora, prompt=prompt, base_model=base_model, seed=seed, cfg=cfg, steps=steps,
                               frames=frames, size=size, lora_scale=lora_scale, negative_prompt=negative_prompt,
                               output=output, device=device, motion_suffix=motion_suffix)
    except GenerateError as e:
        raise click.ClickException(str(e)) from e
    for p in paths:
        click.echo(f"wrote {p}")


@main.command("build-toy")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for toy/sana and toy/qwen2-vl [default: the project's assets/toy, what `toy` loads].")
@click.option("--part", "parts", type=click.Choice(["sana", "captioner"]), multiple=True,
              help="Build only this part (repeatable) [default: both].")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--quick", is_flag=True, help="A tenth of the steps: checks the build runs, not that it learns.")
@click.option("--vae-from", type=click.Path(file_okay=False), default=None,
              help="Reuse the VAE of this toy SANA folder (e.g. assets/toy/sana) and train only the transformer.")
@click.option("--one-process", is_flag=True,
              help="Build the parts one after the other in this process [default: the captioner builds in a "
                   "side process on one core while the toy SANA-Video trains on the other].")
@click.option("--threads", type=click.IntRange(1, 256), default=None, hidden=True)
def build_toy(out_dir, parts, seed, quick, vae_from, one_process, threads):
    """Train the toy models on the toy world (dataengine.world), from a fixed seed, on the CPU.

    The real classes, small: an AutoencoderKLWan, a SanaVideoTransformer3DModel (flow matching on
    the VAE's latents of mostly-day scenes) with a random frozen Gemma-2, and a Qwen2-VL captioner
    trained on the world's truth. `--base-model toy`, `--preset toy` and `de caption --model toy`
    load what this writes. On 2 cores the captioner builds in a side process on one core while the
    toy SANA-Video trains on the other (how long it takes: benchmarks/README.md). The outcomes it
    reaches are reproducible, the bits are not.

    \b
    Examples:
      train build-toy                       # rebuild assets/toy (what the tests and the demo use)
      train build-toy --out /tmp/toy --part sana --quick
      train build-toy --out /tmp/toy --part sana --vae-from assets/toy/sana   # transformer only
    """
    from dataengine.assets import assets_dir

    if quick and not out_dir:  # a quick build learns nothing: it must never replace the shipped models
        raise click.UsageError("--quick builds models that learn nothing; give --out DIR (it never replaces the "
                               "shipped assets/toy)")
    out = Path(out_dir) if out_dir else assets_dir() / "toy"
    parts = parts or ("sana", "captioner")
    if vae_from and "sana" not in parts:
        raise click.ClickException("--vae-from reuses a VAE for the toy SANA-Video: add --part sana")
    if vae_from and not (Path(vae_from) / "vae" / "config.json").is_file():
        raise click.ClickException(f"--vae-from {vae_from}: no vae/config.json there (give a toy SANA folder)")
    from .runfolder import ExperimentError, ensure_writable

    try:  # minutes of training must not end in a folder that cannot be written
        ensure_writable(out)
    except ExperimentError as e:
        raise click.ClickException(str(e)) from e
    if threads:
        import torch

        torch.set_num_threads(threads)
    from .toy import ToyBuildError, build_toy as build

    try:
        build(out, tuple(parts), seed, quick, vae_from, one_process, echo=click.echo)
    except ToyBuildError as e:
        raise click.ClickException(str(e)) from e


from .cli_experiments import register as _register_experiments  # noqa: E402

_register_experiments(main)  # eval, sweep-steps, compress, compare, prune, distill-*
from .cli_study import register as _register_study  # noqa: E402

_register_study(main)  # evalset, study

if __name__ == "__main__":
    main()
