"""From CLI options to a run folder: resolve the config, freeze the manifest, record the run in the
catalog, train, and record the outcome. Nothing here loads a model until the manifest is on disk."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .config import ConfigError, TrainConfig
from .data import DataError, Manifest, build_manifest, resolve_video_paths, select_rows
from .dryrun import cache_estimate, dry_run_report, write_sigma_plot
from .configfile import read_config_file
from .presets import load_preset


class RunError(Exception):
    pass


def _rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))


NEEDS_QUERY = 'give --query "WHERE-CLAUSE" (see train --help)'


def resolve_config(query, preset, overrides, config_file=None, *, need_query: bool = True) -> TrainConfig:
    """TrainConfig's defaults < the preset < the --config file < the command line. The preset is
    the command line's --preset, else the file's `preset`; the query likewise."""
    try:
        from_file = read_config_file(config_file) if config_file else {}
        preset = preset or from_file.pop("preset", None)
        from_file.pop("preset", None)
        values = load_preset(preset) if preset else {}
        values.update(from_file)
        values.update(overrides)
        values["query"] = query if query is not None else values.get("query")
        values["preset"] = preset
        values["config_file"] = str(Path(config_file).absolute()) if config_file else None
        if need_query and not values["query"]:
            raise RunError(NEEDS_QUERY)
        return TrainConfig(**values)
    except ConfigError as e:
        raise RunError(str(e)) from e


def default_name(cfg: TrainConfig) -> str:
    return cfg.name or f"r{cfg.rank}-lr{cfg.lr:g}-{time.strftime('%Y%m%d-%H%M%S')}"


def record_start(cfg: TrainConfig, run_id: str, manifest: Manifest) -> None:
    from catalog import db

    con = db.connect(cfg.catalog)
    try:
        with db.transaction(con):
            db.start_run(con, "train", cfg.to_dict(), run_id=run_id)
            rows = {(w.clip_id, w.role): w.prompt for w in manifest.windows}
            db.add_run_clips(con, run_id, [(c, r, p) for (c, r), p in rows.items()])
    finally:
        con.close()


def record_end(cfg: TrainConfig, run_id: str, counts: dict, ok: bool, echo) -> None:
    from catalog import db

    try:
        con = db.connect(cfg.catalog)
    except Exception as e:  # the run's folder is the source of truth; the catalog record is a convenience
        echo(f"warning: could not record the run's end in the catalog: {e}", err=True)
        return
    try:
        db.finish_run(con, db.RunRecord(run_id, "train"), counts, ok)
    finally:
        con.close()


def write_json_atomic(path: Path, obj: dict) -> None:
    from dataengine.atomic import atomic_text

    atomic_text(path, json.dumps(obj, indent=1, default=str))


def check_trackers(report_to: str) -> None:
    """--report-to names a package that must be importable now, not after hours of training."""
    from .tracking import missing_trackers

    if missing := missing_trackers(report_to):
        raise RunError(f"--report-to {report_to} needs {' and '.join(missing)}, which is not installed "
                       f"(pip install {' '.join(missing)}), or use --report-to none")


def plain_maker(out: Path) -> dict:
    """Who wrote a run folder, and the command that continues it: a plain `train` run."""
    return {"command": "train", "resume": f"train --resume latest --output-dir {out}"}


def _os_error(e: OSError, where: Path, maker: dict | None = None) -> RunError:
    from catalog.errors import cannot_write, is_disk_full, no_space

    if is_disk_full(e):
        hint = (maker or plain_maker(where))["resume"]
        return RunError(f"{no_space(where)}; free space and rerun (`{hint}` continues from the last complete "
                        "checkpoint)")
    return RunError(cannot_write(where, e))


def objective_record(objective) -> dict:
    """What a run folder records of its objective: the objective's metadata (its name and the
    settings its loss depends on), compared on resume."""
    from .objectives import FlowMatching

    return json.loads(json.dumps((objective or FlowMatching()).metadata(), default=str))


def _read_run_json(out: Path) -> dict:
    try:
        meta = json.loads((out / "run.json").read_text())
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError):
        return {}


def check_same_objective(out: Path, objective, maker: dict) -> None:
    """A resume continues the objective the folder was started with, by the command that started
    it: `train --resume` on a distillation folder would train plain flow matching and save it as
    the student."""
    meta = _read_run_json(out)
    was = meta.get("objective") or {"objective": "flow_matching"}  # folders from before this record
    was_maker = meta.get("made_by") or {"command": "train"}
    now = objective_record(objective)
    if was_maker.get("command") != maker["command"] or was.get("objective") != now.get("objective"):
        how = was_maker.get("resume") or f"train --resume latest --output-dir {out}"
        raise RunError(f"{out} holds a {was.get('objective')} run made by `{was_maker.get('command')}`; "
                       f"`{maker['command']}` cannot continue it as {now.get('objective')}. Continue it with "
                       f"`{how}`, or remove the folder to start again")
    # the teacher's path is where the parent run is now; the folder sits inside it, wherever it moved
    diff = sorted(k for k in set(was) | set(now) if k != "teacher_lora" and was.get(k) != now.get(k))
    if diff:
        raise RunError(f"{out} was started with other settings ("
                       + ", ".join(f"{k} {was.get(k)!r}, now {now.get(k)!r}" for k in diff)
                       + f"); resume it with the settings it was started with, or remove the folder to start again")


def _new_run(query, preset, overrides, output_dir, dry_run, echo, config_file=None, objective=None, maker=None,
             preview=None):
    from catalog import db

    cfg = resolve_config(query, preset, overrides, config_file)
    output_dir = output_dir or cfg.output_dir  # a config file may name the run folder
    cfg.catalog = str(db.resolve_path(cfg.catalog).absolute())  # a resume from elsewhere finds the same catalog
    try:
        manifest = build_manifest(cfg, select_rows(cfg))
    except DataError as e:
        raise RunError(str(e)) from e
    from .prompts import PromptError, validation_prompts

    if cfg.validation_prompts and Path(cfg.validation_prompts).is_file():  # a resume from elsewhere finds it
        cfg.validation_prompts = str(Path(cfg.validation_prompts).absolute())
    try:  # a bad prompts file fails now, not after the models load and the cache is built
        validation_prompts(cfg.validation_prompts)
    except PromptError as e:
        raise RunError(str(e)) from e
    cfg.name = default_name(cfg)
    out = Path(output_dir or Path("runs") / cfg.name)
    cfg.output_dir = str(out.absolute())
    echo(manifest.summary())
    for p in dict.fromkeys(w.prompt for w in manifest.windows[:3]):
        echo(f"  prompt: {p}")
    if cfg.model_spec.kind == "toy":
        from dataengine.world import TOY_WARNING, outside_world

        n = outside_world(w.video_path for w in manifest.windows)
        if n:
            echo(TOY_WARNING.format(n=n, total=len(manifest.windows), what="windows", model="SANA-Video",
                                    outcome="a LoRA trained on them shows nothing about real footage"), err=True)
    if dry_run:
        for line in dry_run_report(cfg):
            echo(line)
        echo(cache_estimate(cfg, manifest))
        if preview:
            from .preview import PreviewError, preview_run

            try:
                preview_run(cfg, manifest, preview, echo)
            except PreviewError as e:
                raise RunError(str(e)) from e
        echo(f"dry run: would write {out}/ (manifest, config, LoRA, gallery); no model loaded")
        return None
    check_trackers(cfg.report_to)
    maker = maker or plain_maker(out)
    if out.exists() and any(out.iterdir()):
        was = _read_run_json(out).get("made_by") or plain_maker(out)
        raise RunError(f"{out} already holds a run; continue it with `{was['resume']}`, or choose "
                       "another output folder (or remove this one to start again)")
    run_id = f"train-{cfg.name}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        # run.json first and atomically: from here on the folder is a run that --resume accepts
        write_json_atomic(out / "run.json", {"run_id": run_id, "catalog": cfg.catalog, "state": "starting",
                                             "objective": objective_record(objective), "made_by": maker})
        manifest.write(out / "manifest.jsonl")
        cfg.save(out / "config.json")
        write_sigma_plot(cfg, out)
    except OSError as e:
        raise _os_error(e, out, maker) from e
    try:
        record_start(cfg, run_id, manifest)
    except Exception as e:  # noqa: BLE001 - a read-only or busy catalog must not stop training
        echo(f"warning: the run is not recorded in the catalog ({e}); training goes on, the run folder is "
             "the record", err=True)
    return cfg, manifest, out, run_id


def _resumed_run(overrides, output_dir, echo, objective=None, maker=None):
    if not output_dir:
        raise RunError("--resume needs --output-dir (the run folder to continue)")
    out = Path(output_dir)
    if not (out / "config.json").exists() or not (out / "manifest.jsonl").exists():
        raise RunError(f"nothing to resume in {out}: it holds no config.json and manifest.jsonl (the run stopped "
                       "before it was frozen); remove the folder or use a new --output-dir")
    maker = maker or plain_maker(out)
    check_same_objective(out, objective, maker)
    cfg = TrainConfig.load(out / "config.json")
    if "max_steps" in overrides:  # extending a run is the one change a resume allows to what is trained
        cfg.max_steps = overrides["max_steps"]
    if "log_every" in overrides:  # how it reports is free to change
        cfg.log_every = overrides["log_every"]
    ignored = sorted(k for k in overrides if k not in ("max_steps", "log_every", "output_dir"))
    if ignored and _rank() == 0:
        echo(f"note: a resume trains what {out}/config.json froze; ignored: "
             f"{', '.join('--' + k.replace('_', '-') for k in ignored)} (only --max-steps and --log-every apply)",
             err=True)
    check_trackers(cfg.report_to)
    manifest = Manifest.read(out / "manifest.jsonl")
    meta = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
    run_id = meta.get("run_id") or f"train-{cfg.name or out.name}"
    if (out / "pytorch_lora_weights.safetensors").exists() and meta.get("state") == "finished" \
            and meta.get("steps", 0) >= cfg.max_steps:
        if _rank() == 0:  # every rank stops here (all read the same folder), so none waits for the others
            echo(f"nothing to resume: {out} finished all {cfg.max_steps} steps (give a larger --max-steps to "
                 "extend it)")
        return None  # done: exit 0 without loading any model
    if _rank() == 0:
        try:
            write_json_atomic(out / "run.json", {**meta, "run_id": run_id, "catalog": cfg.catalog, "state": "resuming",
                                                 "objective": objective_record(objective), "made_by": maker})
        except OSError as e:
            raise _os_error(e, out, maker) from e
        try:
            record_start(cfg, run_id, manifest)
        except Exception as e:  # noqa: BLE001
            echo(f"warning: the resume is not recorded in the catalog ({e})", err=True)
    return cfg, manifest, out, run_id


def _other_rank_run(output_dir):
    # Other DDP ranks never write the catalog (DuckDB's single-writer lock): they wait for rank 0
    # to freeze the run folder and read the same config and manifest from it.
    if not output_dir:
        raise RunError("under torchrun / accelerate launch, pass --output-dir so every rank finds the run")
    out = Path(output_dir)
    for _ in range(3000):
        if (out / "run.json").exists() and (out / "config.json").exists():
            break
        time.sleep(0.1)
    else:
        raise RunError(f"rank {_rank()}: rank 0 never created {out}/run.json")
    time.sleep(0.2)
    cfg = TrainConfig.load(out / "config.json")
    manifest = Manifest.read(out / "manifest.jsonl")
    run_id = json.loads((out / "run.json").read_text())["run_id"]
    return cfg, manifest, out, run_id


def cache_summary(out: Path) -> dict:
    tot = {"latents_reused": 0, "latents_encoded": 0, "text_reused": 0, "text_encoded": 0, "corrupt_replaced": 0,
           "decode_failures": 0}
    for f in sorted((out / "logs").glob("cache_rank*.json")):
        st = json.loads(f.read_text())
        for k in tot:
            v = st.get(k, 0)
            tot[k] += len(v) if isinstance(v, list) else int(v or 0)
    return tot


def start_training(*, query, preset, overrides, output_dir, resume, dry_run, progress, echo,
                   config_file=None, objective=None, maker: dict | None = None, preview=None) -> int:
    """A training run from the CLI's arguments. `objective` (train.objectives) replaces flow
    matching (the distillation commands pass theirs); `maker` names the command that writes the
    folder and the command line that continues it ({"command", "resume"}), recorded in run.json
    so that a resume continues the same objective through the same command."""
    if resume and (config_file or preset or query) and _rank() == 0:
        given = [n for n, v in (("--config", config_file), ("--preset", preset), ("--query", query)) if v]
        echo(f"note: a resume trains what {output_dir}/config.json froze; {' and '.join(given)} "
             f"{'is' if len(given) == 1 else 'are'} not read", err=True)
    if resume:
        resumed = _resumed_run(overrides, output_dir, echo, objective, maker)
        if resumed is None:
            return 0
        cfg, manifest, out, run_id = resumed
    elif _rank() != 0:
        if output_dir is None and config_file:  # the file may name the run folder every rank must find
            output_dir = read_config_file(config_file).get("output_dir")
        cfg, manifest, out, run_id = _other_rank_run(output_dir)
    else:
        made = _new_run(query, preset, overrides, output_dir, dry_run, echo, config_file, objective, maker, preview)
        if made is None:
            return 0
        cfg, manifest, out, run_id = made
    moved = resolve_video_paths(manifest, cfg.catalog)
    if moved and _rank() == 0:
        echo(f"{moved} window(s) read from their videos' current paths in the catalog (the library moved)")
    from catalog.db import cache_dir

    from .loop import TrainError, train
    from .models import ModelLoadError

    cache_root = cache_dir(cfg.catalog) / "train"
    try:
        from .clip_losses import write_catalog

        res = train(cfg, manifest, out, cache_root=cache_root, resume=resume, progress=progress,
                    clip_loss_sink=lambda rows: write_catalog(cfg.catalog, run_id, rows), objective=objective)
    except (TrainError, ModelLoadError) as e:
        if _rank() == 0:
            record_end(cfg, run_id, {"error": str(e)}, False, echo)
            if not resume and _nothing_trained(out):
                # a run that failed before its first step (no weights, no GPU) leaves no folder that
                # looks like a run; the catalog's runs table keeps the failure and its reason
                import shutil

                shutil.rmtree(out, ignore_errors=True)
                raise RunError(f"{e} (nothing was trained: {out} was removed)") from e
            _mark(out, run_id, cfg, "failed", error=str(e))
        raise RunError(str(e)) from e
    except OSError as e:
        err = _os_error(e, out, maker)
        if _rank() == 0:
            record_end(cfg, run_id, {"error": str(err)}, False, echo)
        raise err from e
    if _rank() == 0:
        cache = cache_summary(out)
        counts = {"steps": res.steps, "skipped_nonfinite": res.skipped_nonfinite, "final_loss": res.final_loss,
                  "windows": len(manifest.windows), "cache": cache}
        record_end(cfg, run_id, counts, res.lora_path is not None, echo)
        _mark(out, run_id, cfg, "finished" if res.lora_path else "stopped", steps=res.steps, cache=cache)
        loss = "n/a" if res.final_loss is None else f"{res.final_loss:.4f}"
        echo(f"trained {res.steps} step{'' if res.steps == 1 else 's'}; final loss {loss}; "
             f"skipped {res.skipped_nonfinite} non-finite")
        echo(f"cache: {cache['latents_reused']} latents reused, {cache['latents_encoded']} encoded; "
             f"{cache['text_reused']} prompt embeddings reused, {cache['text_encoded']} encoded; "
             f"{cache['corrupt_replaced']} corrupt entries replaced")
        if res.lora_path:
            echo(f"LoRA: {res.lora_path}")
        if (out / "gallery.md").exists():
            echo(f"gallery: {out / 'gallery.md'} (and gallery.html)")
        else:
            echo("no gallery: validation is off (--validation-every 0)")
    return 0


def _nothing_trained(out: Path) -> bool:
    """No step logged and no checkpoint written: the folder holds only what the start froze."""
    ckpts = out / "checkpoints"
    if ckpts.is_dir() and any(ckpts.iterdir()):
        return False
    try:
        return not any('"step"' in line for line in (out / "metrics.jsonl").read_text().splitlines())
    except OSError:
        return True


def _mark(out: Path, run_id: str, cfg: TrainConfig, state: str, **extra) -> None:
    try:
        meta = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
        write_json_atomic(out / "run.json", {**meta, "run_id": run_id, "catalog": cfg.catalog, "state": state, **extra})
    except (OSError, ValueError):
        pass  # the error being reported matters more than this record
