"""`de export` and `de synth`: the commands that write video files (registered on the `de` group,
dataengine.cli_base)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from catalog.db import CatalogError

from .cli_base import catalog_option, main, query_timeout_option
from .options import SEED, SIZE, Float, Int


def _label_kinds(catalog_path, rows) -> dict:
    """{(captioner, prompt_version): model kind} of the labellings the rows show."""
    from catalog import db, labels

    con = db.connect(catalog_path, read_only=True)
    try:
        return labels.labelling_kinds(con, ((r.get("captioner"), r.get("prompt_version")) for r in rows))
    finally:
        con.close()


@main.command()
@click.argument("out_dir", type=click.Path(file_okay=False))
@catalog_option
@click.option("--query", default=None, help="WHERE clause over the clips view (default: all clips).")
@click.option("--fps", type=Float(0, 1000, min_open=True), default=None, help="Resample by time to this rate (default: the source rate).")
@click.option("--max-side", type=Int(16, 16384), default=None, help="Resize so the long side is at most this (px).")
@click.option("--overwrite", is_flag=True, help="Rewrite clips already exported.")
@click.option("--no-progress", is_flag=True)
@query_timeout_option
@click.option("--format", "fmt", type=click.Choice(["clips", "kohya", "musubi", "webdataset", "parquet"]),
              default="clips", show_default=True, help="Layout to write (see above).")
@click.option("--template", default=None,
              help="Caption text from a run folder's prompt template, a template name, or a format string.")
@click.option("--shard-size", type=Int(1, 10**7), default=1000, show_default=True,
              help="--format webdataset: clips per tar shard.")
@click.option("--allow-toy-labels", is_flag=True,
              help="Export clips whose captions come from a toy or random model too (refused by default: such "
                   "labels describe the toy world or nothing); their kind is written with them.")
def export(out_dir, catalog_path, query, fps, max_side, overwrite, no_progress, query_timeout, fmt, template,
           shard_size, allow_toy_labels):
    """Write selected clips for sharing or for other trainers.

    Clips are virtual everywhere else; this is the one explicit step that re-encodes.

    \b
    --format clips       OUT/<clip_id>.mp4 + index.jsonl of the catalog rows (default)
    --format kohya       OUT/<clip_id>.mp4 + OUT/<clip_id>.txt (kohya, ai-toolkit, SimpleTuner)
    --format musubi      OUT/videos/*.mp4 + metadata.jsonl (video_path, caption) + dataset.toml
    --format webdataset  OUT/00000.tar ... with KEY.mp4, KEY.txt, KEY.json (video2dataset's layout)
    --format parquet     OUT/clips.parquet: the rows (virtual clips: video_path + times), no video

    The caption text is the clip's caption, or with --template what a run would train on: a run
    folder (its prompt template, class prompt and motion score), a template name, or a format string.

    \b
    Examples:
      de export chase_clips/ --query "tags LIKE '%chase%'"
      de export dataset_16fps/ --fps 16 --max-side 480
      de export kohya_set/ --format kohya --query "NOT rejected" --template runs/chase-r16
      de export shards/ --format webdataset --shard-size 500
    """
    from catalog.query import run_query

    from .export import ExportError, check_target, export_as

    try:
        rows = run_query(query, catalog_path, timeout=query_timeout)
    except CatalogError as e:
        raise click.ClickException(str(e)) from e
    try:
        check_target(out_dir)
    except ExportError as e:
        raise click.ClickException(str(e)) from e
    if not rows:
        raise click.ClickException("no clips matched" + (f" --query {query!r}" if query else ""))
    kinds = _label_kinds(catalog_path, rows)
    odd = {p: k for p, k in kinds.items() if k in ("toy", "random")}
    if odd and not allow_toy_labels:
        from collections import Counter

        n = Counter((r.get("captioner"), r.get("prompt_version")) for r in rows)
        what = "; ".join(f"{n[p]} clip(s) labelled by {p[0]}@{p[1]} ({k} model)" for p, k in sorted(odd.items()))
        raise click.ClickException(f"{what}: toy and random models know only the toy world or nothing, so their "
                                   "labels are no dataset. Caption these clips with a real model (de caption "
                                   "--model qwen2-vl), select others with --query, or pass --allow-toy-labels")
    for r in rows:  # every format that writes rows carries what made the label
        r["label_model_kind"] = kinds.get((r.get("captioner"), r.get("prompt_version")))
    try:
        s = export_as(fmt, rows, out_dir, template=template, fps=fps, max_side=max_side, overwrite=overwrite,
                      progress=not no_progress, shard_size=shard_size)
    except ExportError as e:
        raise click.ClickException(str(e)) from e
    for cid, err in s.failed:
        click.echo(f"failed: {cid}: {err}", err=True)
    click.echo(f"exported {s.written} clips to {out_dir} as {fmt}; {s.skipped_existing} already there; "
               f"failed {len(s.failed)}")
    if s.failed:
        sys.exit(1)


@main.command()
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--seconds", type=Float(0, 3600, min_open=True), default=12.0, show_default=True, help="Length of the first cartoon.")
@click.option("--fps", type=Float(1, 240), default=24.0, show_default=True)
@click.option("--size", type=SIZE, default="320x240", show_default=True,
              help="WIDTHxHEIGHT: even numbers from 16 to 4096 (H.264 needs even sides).")
@click.option("--world", "world", type=click.IntRange(1, 10_000), default=None, metavar="N",
              help="Write N videos of the labelled toy world instead (settings, day/night, actions, who, camera), "
                   "with truth.jsonl; 128x96 unless --size is given.")
@click.option("--scenes", type=click.IntRange(1, 100), default=4, show_default=True,
              help="With --world: scenes per video (hard cuts between them).")
@click.option("--scene-seconds", type=Float(0.5, 600), default=3.0, show_default=True,
              help="With --world: mean scene length (each scene varies by -20%..+25%).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="With --world: which world.")
@click.option("--truth-into", "truth_into", type=click.Path(dir_okay=False), default=None, metavar="CATALOG",
              help="Load OUT_DIR/truth.jsonl into CATALOG as the `synth-truth` labelling (after `de ingest`).")
def synth(out_dir, seconds, fps, size, world, scenes, scene_seconds, seed, truth_into):
    """Write sample synthetic cartoons (flat colours, bold outlines, a cat chasing a mouse, hard
    cuts at known times) to try the pipeline without real data; or, with --world, the labelled
    toy world the toy models learn from, with its truth.

    \b
    Examples:
      de synth raw_videos/ && de ingest raw_videos/
      de synth world/ --world 12 && de ingest world/ && de synth world/ --truth-into catalog.duckdb
      de captions diff toy-qwen2-vl synth-truth@world-v1     # score a captioner against the truth
    """
    if truth_into:
        from .world import import_truth

        p = Path(out_dir) / "truth.jsonl"
        if not p.is_file():
            raise click.ClickException(f"no {p}: write the world first (de synth {out_dir} --world N)")
        try:
            n, left = import_truth(truth_into, p)
        except (CatalogError, OSError, ValueError, KeyError) as e:
            raise click.ClickException(f"cannot load {p}: {e}") from e
        click.echo(f"synth-truth: labelled {n} clips from {p}" + (f"; {left} clip(s) span a cut, left out" if left
                                                                      else ""))
        if n == 0:
            sys.exit(1)
        return
    w, h = size
    if not world and seconds * fps < 2:
        raise click.BadParameter(f"{seconds:g} s at {fps:g} fps is under two frames", param_hint="--seconds")
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise click.ClickException(f"cannot create {out_dir}: {e.strerror or e}") from e
    if world:
        from .world import make_world

        wh = (w, h) if size != (320, 240) else (128, 96)
        try:
            truth = make_world(out_dir, world, scenes, seconds=scene_seconds, fps=fps, size=wh, seed=seed)
        except OSError as e:
            raise click.ClickException(f"cannot write the world to {out_dir}: {e.strerror or e}") from e
        from collections import Counter

        c = Counter(t for r in truth for t in (r["action"], r["time_of_day"], r["setting"]))
        click.echo(f"wrote {world} videos, {len(truth)} scenes to {out_dir} (truth: {Path(out_dir) / 'truth.jsonl'})")
        click.echo("scenes per tag: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
        return
    from .synth import make_sample_set

    try:
        made = make_sample_set(out_dir, seconds=seconds, fps=fps, size=(w, h))
    except OSError as e:
        raise click.ClickException(f"cannot write the cartoons to {out_dir}: {e.strerror or e}") from e
    for r in made:
        cuts = ", ".join(f"{t:.2f}s (frame {f})" for t, f in zip(r.cut_times, r.cut_frames))
        click.echo(f"wrote {r.path}: {r.num_frames} frames, {r.width}x{r.height}, cuts at {cuts}")
