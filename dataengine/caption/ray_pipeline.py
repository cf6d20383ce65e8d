"""`de caption --ray`: the same labelling as a Ray Data pipeline.

    clip rows  ->  PrepareFrames (CPU tasks: read the range, sample by time, resize)
               ->  Captioner actors (one model each, `num_gpus=G`; 0 on CPU)
               ->  the driver parses and writes each batch (the only catalog writer)

Ray Data streams blocks between the stages, so a slow model applies backpressure to decoding and
nothing is held in memory beyond a few batches. The prompt, frames, sampling, metadata, parser and
rows are the local path's (`Preparer`, `catalog_rows`, the driver `label_clips`): with a greedy
model the same clips give identical rows either way. A killed actor is restarted and its batch
retried (`max_restarts`, `max_task_retries`); a bad video is a row with its error, never retried.
"""

from __future__ import annotations

import logging
import socket
import time
import warnings
from collections import Counter

import numpy as np

from ..executors import ray_init
from ..faults import exit_once
from .models import Generation
from .prompts import Prompt
from .run import Backend, CaptionSummary, FrameGeometry, Preparer, Prepared, Step, label_clips


class PrepareFrames:
    """CPU stage: read each clip's range and prepare its frames (no model needed), with the local
    path's `Preparer`; the frames travel as bytes plus a shape."""

    def __init__(self, sampling, patch: int, merge: int):
        self.prep = Preparer(FrameGeometry(patch, merge), sampling)

    def __call__(self, batch: dict) -> dict:
        out = {k: [] for k in ("clip_id", "pixels", "shape", "fps", "error", "seconds")}
        for cid, vid, path, s, e in zip(batch["clip_id"], batch["video_id"], batch["video_path"], batch["start_s"],
                                        batch["end_s"]):
            p = self.prep.one({"clip_id": cid, "video_id": vid, "video_path": path, "start_s": float(s),
                               "end_s": float(e)})
            out["clip_id"].append(cid)
            out["pixels"].append(b"" if p.error else p.video.tobytes())
            out["shape"].append(np.asarray([0, 0, 0, 0] if p.error else p.video.shape, dtype=np.int64))
            out["fps"].append(0.0 if p.error else p.metadata["fps"])
            out["error"].append(p.error)
            out["seconds"].append(p.seconds)
        return {k: (np.stack(v) if k == "shape" else np.asarray(v, dtype=object if k in ("pixels", "clip_id", "error")
                                                                   else None)) for k, v in out.items()}


class CaptionActor:
    """Model stage: one captioner per actor, loaded once."""

    def __init__(self, model: str, name: str | None, device: str | None, dtype: str | None, sampling, text: str,
                 schema: dict | None = None):
        import ray

        from .models import load_captioner

        self.cap = load_captioner(model, device=device, dtype=dtype, name=name)
        self.sampling, self.text, self.schema = sampling, text, schema
        self.node = f"{ray.get_runtime_context().get_node_id()[:12]}@{socket.gethostname()}"

    def __call__(self, batch: dict) -> dict:
        import torch

        from .models import video_metadata

        exit_once(self.node)  # test hook: an actor process dying mid-batch, once (dataengine.faults)
        n = len(batch["clip_id"])
        good = [i for i in range(n) if not batch["error"][i]]
        texts, tokens, nframes = [""] * n, [0] * n, [0] * n
        gen_s = 0.0
        if good:
            vids, metas = [], []
            for i in good:
                shape = tuple(int(x) for x in batch["shape"][i])
                arr = np.frombuffer(batch["pixels"][i], dtype=np.uint8).reshape(shape)
                vids.append(torch.from_numpy(arr.copy()).float())
                metas.append(video_metadata(None, shape[0], float(batch["fps"][i])))  # fps measured in the CPU stage
            t0 = time.perf_counter()
            gens = self.cap.generate(vids, self.text, self.sampling, metas, schema=self.schema)
            gen_s = time.perf_counter() - t0
            for i, g in zip(good, gens):
                texts[i], tokens[i], nframes[i] = g.text, g.visual_tokens, g.num_frames
        return {"clip_id": batch["clip_id"], "error": batch["error"], "seconds": batch["seconds"],
                "text": np.asarray(texts, dtype=object), "visual_tokens": np.asarray(tokens),
                "num_frames": np.asarray(nframes), "per_clip": np.full(n, gen_s / max(1, len(good))),
                "node": np.asarray([self.node] * n, dtype=object),
                "is_random": np.asarray([self.cap.is_random] * n),
                "kind": np.asarray([self.cap.kind] * n, dtype=object)}


class RayBackend(Backend):
    """Generation by captioner actors on a Ray cluster; frames prepared by CPU tasks."""

    desc = "caption (ray)"

    def __init__(self, model: str, label: str, *, address: str, workers: int = 1, gpus_per_worker: float = 0.0,
                 batch_size: int = 4, device: str | None = None, dtype: str | None = None, name: str | None = None):
        self.model, self.name, self.address, self.workers = model, label, address, workers
        self.gpus_per_worker, self.batch_size, self.dtype, self.model_name = gpus_per_worker, batch_size, dtype, name
        self.device = device or ("cuda" if gpus_per_worker > 0 else "cpu")
        self.nodes: Counter = Counter()
        ray_init(address)

    def run_params(self) -> dict:
        return {"executor": "ray", "batch_size": self.batch_size, "workers": self.workers,
                "gpus_per_worker": self.gpus_per_worker}

    def _dataset(self, todo: list[dict], prompt: Prompt):
        import ray

        from .models import processor_geometry

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # our own bar counts clips; Ray's per-operator bars would interleave
        ctx.wait_for_min_actors_s = 900  # start once every captioner has loaded, so the work is shared from batch 1
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        patch, merge = processor_geometry(self.model)
        items = [{k: r[k] for k in ("clip_id", "video_id", "video_path", "start_s", "end_s")} for r in todo]
        ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 4 * self.workers)))
        ds = ds.map_batches(PrepareFrames, fn_constructor_kwargs=dict(sampling=prompt.sampling, patch=patch,
                                                                      merge=merge),
                            batch_size=self.batch_size, compute=ray.data.ActorPoolStrategy(size=max(1, self.workers)),
                            num_cpus=0.5 if self.gpus_per_worker > 0 else 0)
        with warnings.catch_warnings():  # Ray 2.5x deprecates passing actor options this way; they still apply
            warnings.simplefilter("ignore")
            # One CPU per model actor (on GPU nodes the GPUs are what they reserve), and SPREAD: the actors
            # land on different nodes when they can. On CPU-only clusters the frame stage reserves no
            # CPU of its own (it shares the node with the actors) so it can never starve behind them.
            return ds.map_batches(CaptionActor, fn_constructor_kwargs=dict(
                model=self.model, name=self.model_name, device=self.device, dtype=self.dtype,
                sampling=prompt.sampling, text=prompt.render(), schema=prompt.schema),
                batch_size=self.batch_size, compute=ray.data.ActorPoolStrategy(size=self.workers),
                num_gpus=self.gpus_per_worker, num_cpus=1, max_restarts=3, max_task_retries=3,
                scheduling_strategy="SPREAD")

    def steps(self, todo, prompt, s):
        by_id = {r["clip_id"]: r for r in todo}
        seen: set[str] = set()
        for out in self._dataset(todo, prompt).iter_batches(batch_size=None, batch_format="numpy"):
            pairs, kind = [], None
            for i, cid in enumerate(out["clip_id"]):
                if cid in seen:  # a retried batch can never write a clip twice
                    continue
                seen.add(cid)
                self.nodes[str(out["node"][i])] += 1
                p = Prepared(by_id[cid], error=str(out["error"][i] or ""), seconds=float(out["seconds"][i]))
                g = None if p.error else Generation(str(out["text"][i]), int(out["visual_tokens"][i]),
                                                    int(out["num_frames"][i]))
                pairs.append((p, g))
                s.is_random = s.is_random or bool(out["is_random"][i])
                kind = str(out["kind"][i])
            per_clip = float(out["per_clip"][0]) if len(out["clip_id"]) else 0.0
            s.generate_seconds += per_clip * sum(1 for _, g in pairs if g is not None)
            yield Step(pairs, per_clip, kind)

    def close(self, s, failed):
        s.nodes = dict(self.nodes)


def caption_on_ray(catalog_path, model: str, label: str, prompt: Prompt, todo: list[dict], *, address: str,
                   workers: int = 1, gpus_per_worker: float = 0.0, batch_size: int = 4, device: str | None = None,
                   dtype: str | None = None, name: str | None = None, **driver) -> CaptionSummary:
    """Label `todo` on a Ray cluster (the one driver, `run.label_clips`, with `RayBackend`)."""
    backend = RayBackend(model, label, address=address, workers=workers, gpus_per_worker=gpus_per_worker,
                         batch_size=batch_size, device=device, dtype=dtype, name=name)
    return label_clips(catalog_path, backend, prompt, todo, **driver)
