"""One evaluation set per run: what every compression command scores on.

The set is the run's held-out windows (their captions and latents) plus its validation prompts
(text only), each with a fixed list of noises. It is written to RUN/evalset.json the first time
a command uses it and read back after, so `distill-steps`, `distill-guidance`, `prune`,
`compress`, `sweep-steps` and `study` all measure on the same items from the same noises, and
each says which set and how large in its output and its JSON.

A sample is one (item, noise) pair; two variants compared on the set are paired sample by sample.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

FILE = "evalset.json"
WINDOWS = 8   # held-out windows in a new set (fewer if the run held out fewer)
NOISES = 4    # noises per item
PROMPTS = 4   # validation prompts in a new set (text only: no latents, so no eval loss)


@dataclass
class EvalSet:
    windows: list[str]                 # held-out window keys, in order
    prompts: list[str] = field(default_factory=list)  # validation prompts (the run's suffix applied)
    noises: int = NOISES
    seed: int = 20_000
    source: str = "holdout"            # holdout | train (a run that held nothing out)

    @property
    def items(self) -> int:
        return len(self.windows) + len(self.prompts)

    @property
    def samples(self) -> int:
        return self.items * self.noises

    def describe(self) -> str:
        what = f"{len(self.windows)} held-out windows" if self.source == "holdout" else \
            f"{len(self.windows)} training windows (the run held none out)"
        if self.prompts:
            what += f" + {len(self.prompts)} validation prompts"
        return f"evaluation set: {what} x {self.noises} noises = {self.samples} paired samples ({FILE})"

    def as_json(self) -> dict:
        return {**asdict(self), "items": self.items, "samples": self.samples}

    def noise_seed(self, key: str, k: int) -> int:
        """The seed of item `key`'s k-th noise: fixed by the set, whatever else the command samples."""
        return (self.seed + zlib.crc32(key.encode()) * 16 + k) % 2**62


class EvalSetError(Exception):
    pass


def define(run_dir: Path, windows: int | None = None, noises: int | None = None,
           prompts: int | None = None) -> EvalSet:
    """The run's set: read from RUN/evalset.json, or chosen now and written there. Asking for
    another size than the stored set's is an error that says how to redefine it."""
    from dataengine.atomic import atomic_text

    from ..data import Manifest

    path = Path(run_dir) / FILE
    if path.exists():
        try:
            d = json.loads(path.read_text())
            es = EvalSet(windows=list(d["windows"]), prompts=list(d.get("prompts", [])), noises=int(d["noises"]),
                         seed=int(d.get("seed", 20_000)), source=d.get("source", "holdout"))
        except (ValueError, KeyError, TypeError) as e:
            raise EvalSetError(f"{path} is damaged ({type(e).__name__}); remove it and the next command "
                               "defines the set again") from e
        asked = {"windows": (windows, len(es.windows)), "noises": (noises, es.noises),
                 "prompts": (prompts, len(es.prompts))}
        clash = [f"--{k} {a} (the set has {b})" for k, (a, b) in asked.items() if a is not None and a != b]
        if clash:
            raise EvalSetError(f"this run's evaluation set is fixed in {path}: {', '.join(clash)}. Every command "
                               "scores on the same set; remove that file to define another (earlier results "
                               "then no longer compare)")
        return es
    man = Manifest.read(Path(run_dir) / "manifest.jsonl")
    held = [w for w in man.windows if w.role == "holdout"]
    source = "holdout" if held else "train"
    pool = held or man.windows
    want = WINDOWS if windows is None else windows
    es = EvalSet(windows=[w.key for w in pool[:want]], prompts=_prompts(run_dir, PROMPTS if prompts is None
                                                                         else prompts),
                 noises=NOISES if noises is None else noises, source=source)
    if not es.windows and not es.prompts:
        raise EvalSetError("the run has no windows and no validation prompts to evaluate on")
    if es.noises < 1:
        raise EvalSetError("--noises must be at least 1")
    atomic_text(path, json.dumps(es.as_json(), indent=1) + "\n")
    return es


def _prompts(run_dir: Path, n: int) -> list[str]:
    if n <= 0:
        return []
    from ..prompts import validation_prompts, with_suffix
    from ..runfolder import read_config, read_metadata

    cfg = read_config(run_dir)
    suffix = read_metadata(run_dir).get("prompt_suffix", "")
    try:
        vps = validation_prompts(cfg.validation_prompts)
    except Exception:  # noqa: BLE001 - a run whose prompt file has gone: the windows still make a set
        return []
    return [with_suffix(v.prompt, suffix) for v in vps[:n]]


def load_items(ctx, es: EvalSet, prompts: bool = True) -> tuple[list[dict], list[dict]]:
    """(window items with latents, prompt items without): each a dict with key, embeds, mask and
    `shape` (the latent shape its noise takes; a prompt takes the first window's, or the run's).
    `prompts=False`: the windows only (what an eval loss needs)."""
    from ..cache import encode_text
    from ..data import Manifest
    from .runctx import eval_items

    man = Manifest.read(ctx.out_dir / "manifest.jsonl")
    by_key = {w.key: w for w in man.windows}
    gone = [k for k in es.windows if k not in by_key]
    if gone:
        raise EvalSetError(f"the evaluation set names {len(gone)} window(s) the run's manifest does not have; "
                           f"remove {ctx.out_dir / FILE} to define the set again")
    wins = eval_items(ctx, [by_key[k] for k in es.windows])
    for it in wins:
        it["shape"] = tuple(it["latents"].shape)
    out = []
    if es.prompts and prompts:
        shape = wins[0]["shape"] if wins else _run_shape(ctx)
        pe, pm, _, _ = encode_text(ctx.pipe, es.prompts, ctx.cfg.max_sequence_length, ctx.device)
        out = [{"key": f"prompt:{i}:{p}", "embeds": pe[i], "mask": pm[i], "latents": None, "shape": shape}
               for i, p in enumerate(es.prompts)]
    return wins, out


def _run_shape(ctx) -> tuple:
    vae = ctx.pipe.vae
    t = (ctx.cfg.frames - 1) // ctx.pipe.vae_scale_factor_temporal + 1
    s = ctx.pipe.vae_scale_factor_spatial
    return (vae.config.z_dim, t, ctx.cfg.height // s, ctx.cfg.width // s)


def noises(es: EvalSet, items: list[dict]) -> list[tuple[dict, object]]:
    """Every sample of the set, item-major: (item, its k-th noise), the same tensors every time."""
    import torch

    return [(it, torch.randn(it["shape"], generator=torch.Generator().manual_seed(es.noise_seed(it["key"], k))))
            for it in items for k in range(es.noises)]


def window_items(ctx) -> tuple[EvalSet, list[dict]]:
    """The set and its window items (what an eval loss needs), errors as ExperimentError."""
    from ..runfolder import ExperimentError

    try:
        es = define(ctx.out_dir)
        return es, load_items(ctx, es, prompts=False)[0]
    except EvalSetError as e:
        raise ExperimentError(str(e)) from e
