"""`de caption` and `de captions ...`: registered on the `de` group (dataengine.cli_base)."""

from __future__ import annotations

import json
import sys

import click

from .options import Float, Int

from catalog.db import CatalogError

from .cli_base import catalog_option, main, query_timeout_option


@main.command()
@catalog_option
@click.option("--model", "model", default="qwen2-vl", show_default=True,
              help="Alias (qwen2-vl, qwen2-vl-7b, qwen2.5-vl, qwen2.5-vl-7b, qwen3-vl), hub id, local dir, toy (the "
                   "toy captioner that ships inside the package; it knows only the `de synth --world` toy world), "
                   "or tiny (random weights for smoke runs; tiny-qwen2.5-vl, tiny-qwen3-vl: the other families).")
@click.option("--query", default=None, help="Only clips matching this WHERE clause over the clips view.")
@click.option("--limit", type=Int(1, 10**9), default=None, help="At most N clips this run.")
@click.option("--batch-size", type=Int(1, 4096), default=4, show_default=True, help="Clips per generate() call.")
@click.option("--prompt", "prompt_name", default="caption_v1", show_default=True,
              help="Template name in assets/prompts/ or a path to a .md template.")
@click.option("--vocab", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Tag vocabulary JSON (default assets/vocab.json).")
@click.option("--fps", type=Float(0, 240, min_open=True), default=2.0, show_default=True, help="Frames per second sampled from each clip.")
@click.option("--max-frames", type=Int(1, 10_000), default=32, show_default=True, help="At most this many frames per clip.")
@click.option("--max-pixels", type=Int(16 * 16, 10**8), default=360 * 420, show_default=True, help="Pixels per frame after resizing.")
@click.option("--max-new-tokens", type=Int(1, 32768), default=None,
              help="Cap on generated tokens [default: the schema's worst case when constrained (an answer is "
                   "never cut off), 256 with --free].")
@click.option("--temperature", type=Float(0, 100), default=0.0, show_default=True,
              help="0 = greedy (reproducible, batch-size independent); above 0 samples, seeded per batch.")
@click.option("--free", is_flag=True,
              help="Do not constrain generation to the caption schema (parse whatever the model writes).")
@click.option("--closed-vocab/--open-vocab", default=True, show_default=True,
              help="Constrained: tags only from the vocabulary, or any snake_case word.")
@click.option("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available).")
@click.option("--dtype", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default="auto", show_default=True,
              help="auto = bf16 on CUDA, fp32 on CPU.")
@click.option("--name", default=None, help="Name to store as the captioner (default: the hub id).")
@click.option("--overwrite", is_flag=True, help="Redo clips that already have a row for this labelling.")
@click.option("--retry-failed", is_flag=True, help="Redo clips whose parse or decode failed.")
@click.option("--no-overlap", is_flag=True, help="Decode and generate one after the other (for benchmarking).")
@click.option("--no-progress", is_flag=True)
@query_timeout_option
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None,
              help="Run as a Ray Data pipeline: --ray (a local cluster), --ray auto, or --ray ADDRESS.")
@click.option("--workers", type=Int(1, 1024), default=1, show_default=True,
              help="With --ray: captioner actors (one model each).")
@click.option("--gpus-per-worker", type=Float(0, 64), default=None,
              help="With --ray: GPUs per actor [default: 1 when the cluster has GPUs, else 0].")
@click.option("--api", "api_url", default=None, metavar="URL",
              help="An OpenAI-compatible endpoint (vLLM, SGLang, LMDeploy, hosted): http://HOST:PORT/v1. "
                   "--model is then the served model name.")
@click.option("--concurrency", type=Int(1, 4096), default=8, show_default=True,
              help="With --api: requests in flight.")
@click.option("--api-key-env", default=None, metavar="VAR", help="With --api: read the API key from $VAR.")
@click.option("--request-timeout", type=Float(0.1, 86400), default=120.0, show_default=True,
              help="With --api: seconds to wait for one answer before retrying.")
@click.option("--retries", type=Int(0, 100), default=5, show_default=True,
              help="With --api: retries per request on 429/5xx/timeouts/malformed answers (exponential backoff).")
@click.option("--retry-backoff", type=Float(0, 3600), default=1.0, show_default=True,
              help="With --api: first retry delay in seconds, doubled per attempt (with jitter).")
@click.option("--jpeg-quality", type=click.IntRange(1, 100), default=90, show_default=True,
              help="With --api: quality of the JPEG frames sent.")
def caption(catalog_path, model, query, limit, batch_size, prompt_name, vocab, fps, max_frames, max_pixels,
            max_new_tokens, temperature, free, closed_vocab, device, dtype, name, overwrite, retry_failed, no_overlap, no_progress,
            query_timeout, ray_address, workers, gpus_per_worker, api_url, concurrency, api_key_env,
            request_timeout, retries, retry_backoff, jpeg_quality):
    """Caption and tag clips with a vision-language model (Qwen2-VL family).

    Each clip is read straight from its source video range, sampled by time. Results are stored
    per (clip, captioner, prompt version); reruns only label what is missing.

    Generation is constrained to the caption schema (xgrammar): every answer parses, enums hold,
    and tags come from the vocabulary (--open-vocab: any snake_case tag). --free turns that off;
    constrained and free labellings get different prompt versions and live side by side.

    \b
    Examples:
      de caption --model qwen2-vl
      de caption --model qwen2.5-vl --query "duration_s > 3" --batch-size 8
      de caption --model /models/Qwen2-VL-7B-Instruct --fps 1 --max-frames 16
      de caption --model tiny --limit 4        # offline smoke run: labels are noise
      de caption --model qwen2-vl-7b --ray auto --workers 8 --gpus-per-worker 1   # 8 GPUs on a cluster
      de caption --api http://127.0.0.1:8000/v1 --model Qwen/Qwen2-VL-7B-Instruct --concurrency 16
    """
    if batch_size < 1:
        raise click.BadParameter("--batch-size must be at least 1")
    if api_url and ray_address:
        raise click.UsageError("--api and --ray are two ways to run the model: give one")
    if ray_address:
        _require_ray()
    api = _api_settings(api_url, model, api_key_env, concurrency, request_timeout, retries, retry_backoff,
                        jpeg_quality) if api_url else None
    prompt = _prompt(prompt_name, vocab, fps, max_frames, max_pixels, max_new_tokens, temperature, free, closed_vocab,
                     api)
    label, todo, done = _select(catalog_path, model, name, api, prompt, query, limit, overwrite, retry_failed,
                                query_timeout)
    if not todo:
        return
    from .caption.specs import captioner

    if not api and (spec := captioner(model)) is not None and spec.kind == "toy":
        _warn_outside_the_toy_world(todo)
    common = dict(already_done=done, query=query, limit=limit, overwrite=overwrite, progress=not no_progress)
    if api:
        summary = _on_api(catalog_path, api, prompt, todo, name, common)
    elif ray_address:
        summary = _on_ray(catalog_path, model, label, prompt, todo, ray_address, workers, gpus_per_worker,
                          batch_size, device, dtype, name, common)
    else:
        summary = _in_process(catalog_path, model, prompt, todo, device, dtype, name, batch_size, no_overlap, common)
    _report(summary, query)


# ---- the phases of `de caption` ------------------------------------------------------------------
def _require_ray() -> None:
    from .executors import RayUnavailable, require_ray

    try:
        require_ray()
    except RayUnavailable as e:
        raise click.ClickException(str(e)) from e


def _api_settings(api_url, model, api_key_env, concurrency, request_timeout, retries, retry_backoff, jpeg_quality):
    from .caption.api import ApiError, ApiSettings, api_key_from_env

    try:
        return ApiSettings(api_url, model, api_key=api_key_from_env(api_key_env), concurrency=concurrency,
                           timeout=request_timeout, retries=retries, backoff=retry_backoff, jpeg_quality=jpeg_quality)
    except ApiError as e:
        raise click.UsageError(str(e)) from e


def _prompt(prompt_name, vocab, fps, max_frames, max_pixels, max_new_tokens, temperature, free, closed_vocab, api):
    """The caption prompt and its sampling, checked before anything loads."""
    from .caption.prompts import SamplingParams, cut_off_risk, load_prompt
    from .caption.schema import Constraint

    try:
        sampling = SamplingParams(fps=fps, max_frames=max_frames, max_pixels=max_pixels,
                                  max_new_tokens=max_new_tokens or 256, do_sample=temperature > 0,
                                  temperature=temperature)
        prompt = load_prompt(prompt_name, sampling, vocab, constraint=None if free else Constraint(closed_vocab),
                             endpoint=api.endpoint if api else None, max_new_tokens=max_new_tokens)
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise click.BadParameter(str(e)) from e
    if (risk := cut_off_risk(prompt)):
        click.echo(f"warning: {risk}", err=True)
    return prompt


def _select(catalog_path, model, name, api, prompt, query, limit, overwrite, retry_failed, query_timeout):
    """(labelling name, clips to label, clips already labelled): the query runs (sandboxed) before
    any model loads; nothing to do is said here."""
    from catalog import db

    from .caption.models import captioner_label
    from .caption.run import select_clips

    if not db.resolve_path(catalog_path).exists():
        raise click.ClickException(f"no catalog at {db.resolve_path(catalog_path)} (run `de ingest` first, "
                                   "or pass --catalog)")
    label = (name or model) if api else captioner_label(model, name)
    try:
        db.connect(catalog_path).close()  # migrate an older catalog before reading it
        todo, done = select_clips(catalog_path, label, prompt.version, query=query, limit=limit,
                                  overwrite=overwrite, retry_failed=retry_failed, timeout=query_timeout)
    except CatalogError as e:
        raise click.ClickException(str(e)) from e
    if not todo:
        click.echo(("no clips matched" + (f" --query {query!r}" if query else " (ingest some videos first)"))
                   if done == 0 else f"nothing to do: {done} clip(s) already labelled by {label} @ {prompt.version}",
                   err=True)
    return label, todo, done


def _warn_outside_the_toy_world(todo) -> None:
    from .world import TOY_WARNING, outside_world

    n = outside_world(r["video_path"] for r in todo)
    if n:
        click.echo(TOY_WARNING.format(n=n, total=len(todo), what="clips", model="captioner",
                                      outcome="their labels will be wrong (they are marked toy in the catalog, "
                                              "de serve and exports, and exports refuse them)"), err=True)


def _on_api(catalog_path, api, prompt, todo, name, common):
    from .caption.api import ApiError, caption_via_api, check_endpoint

    try:
        check_endpoint(api)
        click.echo(f"captioning {len(todo)} clip(s) through {api.base_url} ({api.model}, "
                   f"{api.concurrency} in flight)", err=True)
        return caption_via_api(catalog_path, api, prompt, todo, name=name, **common)
    except (CatalogError, ApiError) as e:
        raise click.ClickException(str(e)) from e


def _on_ray(catalog_path, model, label, prompt, todo, address, workers, gpus_per_worker, batch_size, device, dtype,
            name, common):
    from .caption.models import CaptionModelError
    from .caption.ray_pipeline import caption_on_ray
    from .executors import RayUnavailable

    try:
        return caption_on_ray(catalog_path, model, label, prompt, todo, address=address, workers=workers,
                              gpus_per_worker=_gpus(gpus_per_worker, address), batch_size=batch_size,
                              device=device, dtype=dtype, name=name, **common)
    except (CatalogError, CaptionModelError, RayUnavailable) as e:
        raise click.ClickException(str(e)) from e


def _in_process(catalog_path, model, prompt, todo, device, dtype, name, batch_size, no_overlap, common):
    from .caption.models import CaptionModelError, load_captioner
    from .caption.run import caption_clips

    try:
        click.echo(f"loading {model} ...", err=True)
        try:
            captioner = load_captioner(model, device=device, dtype=dtype, name=name)
        except CaptionModelError as e:
            raise click.ClickException(str(e)) from e
        if captioner.is_random:
            click.echo("note: this is a random tiny model; its labels are noise (marked in the catalog)", err=True)
        return caption_clips(catalog_path, captioner, prompt, todo, batch_size=batch_size, overlap=not no_overlap,
                             **common)
    except CatalogError as e:
        raise click.ClickException(str(e)) from e


def _gpus(asked: float | None, address: str) -> float:
    if asked is not None:
        return asked
    from .executors import RayUnavailable, ray_init

    try:
        ray_init(address)
    except RayUnavailable as e:
        raise click.ClickException(str(e)) from e
    import ray

    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def _report(summary, query) -> None:
    if summary.selected == 0:
        click.echo("no clips matched" + (f" --query {query!r}" if query else " (ingest some videos first)"), err=True)
    for kind, n in summary.errors.items():
        click.echo(f"request failures: {n}" if kind == "request" else f"decode failures ({kind}): {n}", err=True)
    click.echo(summary.line())
    if not summary.ok:
        sys.exit(1)


@main.group()
def captions():
    """Inspect, pin and compare labellings.

    \b
    Examples:
      de captions list
      de captions use Qwen/Qwen2-VL-2B-Instruct@caption_v1-1a2b3c4d
      de captions diff Qwen/Qwen2-VL-2B-Instruct Qwen/Qwen2.5-VL-3B-Instruct
    """


@captions.command("list")
@catalog_option
def captions_list(catalog_path):
    """List labellings with counts, and which one the clips view shows.

    \b
    Example:
      de captions list
    """
    from catalog import db

    try:
        con = db.connect(catalog_path, read_only=True)
    except CatalogError as e:
        raise click.ClickException(str(e)) from e
    from catalog.captions import labellings

    try:
        pin = db.get_setting(con, "caption_pin")
        rows = labellings(con)
    finally:
        con.close()
    click.echo(f"clips view shows: {pin or 'the newest parsed caption of any labelling'}")
    marks = {"random": "  [random tiny model: labels are noise]",
             "toy": "  [toy model: it knows only the toy world of de synth --world]", "truth": "  [toy world truth]"}
    for r in rows:
        click.echo(f"{r['captioner']}@{r['prompt_version']}: ok {r['ok']}, parse errors {r['parse_errors']}, "
                   f"decode errors {r['decode_errors']}"
                   + (f", request errors {r['request_errors']}" if r["request_errors"] else "") + f", last {r['last']}"
                   + marks.get("random" if r["random"] else r["kind"], ""))


@captions.command("use")
@click.argument("labelling", required=False)
@catalog_option
@click.option("--clear", is_flag=True, help="Unpin: show the newest caption of any labelling.")
def captions_use(labelling, catalog_path, clear):
    """Pin which labelling (CAPTIONER or CAPTIONER@VERSION) the clips view shows.

    \b
    Examples:
      de captions use Qwen/Qwen2-VL-2B-Instruct
      de captions use tiny-random-qwen2-vl@caption_v1-1a2b3c4d
      de captions use --clear
    """
    from catalog import db, labels

    from .caption.compare import resolve_labelling

    if not clear and not labelling:
        raise click.UsageError("give a LABELLING or --clear")
    try:
        con = db.connect(catalog_path)
    except CatalogError as e:
        raise click.ClickException(str(e)) from e
    try:
        if clear:
            labels.set_pin(con, None)
            click.echo("clips view: newest parsed caption of any labelling")
            return
        try:
            cap, ver = resolve_labelling(con, labelling)
        except LookupError as e:
            raise click.ClickException(str(e)) from e
        value = labelling if "@" in labelling else cap
        labels.set_pin(con, value)
        click.echo(f"clips view now shows {value}" + ("" if "@" in labelling else f" (newest version: {ver})"))
    finally:
        con.close()


@captions.command("diff")
@click.argument("a")
@click.argument("b")
@catalog_option
@click.option("--json", "as_json", is_flag=True)
def captions_diff(a, b, catalog_path, as_json):
    """Tag agreement between two labellings (CAPTIONER[@VERSION] each) on the clips both labelled.

    \b
    Example:
      de captions diff Qwen/Qwen2-VL-2B-Instruct Qwen/Qwen2.5-VL-3B-Instruct
    """
    from catalog import db

    from .caption.compare import diff_labellings

    try:
        con = db.connect(catalog_path, read_only=True)
        try:
            d = diff_labellings(con, a, b)
        finally:
            con.close()
    except (CatalogError, LookupError) as e:
        raise click.ClickException(e.args[0] if e.args else str(e)) from e
    if as_json:
        click.echo(json.dumps(d, indent=1))
        return
    mj = "n/a" if d["mean_jaccard"] is None else f"{d['mean_jaccard']:.3f}"
    click.echo(f"A = {d['a']}\nB = {d['b']}\nclips labelled by both: {d['clips_compared']}, mean tag Jaccard: {mj}")
    if d["per_tag"]:
        click.echo(f"{'tag':>20}  {'A':>5}  {'B':>5}  {'both':>5}  recall of A")
        for t in d["per_tag"][:40]:
            r = "" if t["recall_of_a"] is None else f"{t['recall_of_a']:.2f}"
            click.echo(f"{t['tag']:>20}  {t['a']:>5}  {t['b']:>5}  {t['both']:>5}  {r}")
