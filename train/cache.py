"""Latent and text-embedding cache, keyed by a hash of what produced each entry.

- latents: the Wan VAE posterior mode of a window's frames, normalised per channel exactly as
  the pipeline expects ((z - latents_mean) / latents_std; the pipeline decodes with the inverse);
- text: prompt embeddings and masks from the pipeline's own `encode_prompt`, *with* the complex
  human instruction prefix that `__call__` adds, so training and inference see the same encoding.
  The unconditional embedding (for caption dropout) is what the pipeline uses for the negative
  prompt "": encoded without the prefix.

Entries are safetensors files named by key, so other runs on the same clips reuse them.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path

import numpy as np

from .data import Window, read_window


def chi_default() -> list[str]:
    """The complex-human-instruction prefix SanaVideoPipeline.__call__ uses by default."""
    from diffusers import SanaVideoPipeline

    return list(inspect.signature(SanaVideoPipeline.__call__).parameters["complex_human_instruction"].default)


def _h(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


# Config keys that say nothing about what a model computes: private bookkeeping (diffusers'
# `_use_default_values` is a list whose order changes from process to process), library versions,
# where it was loaded from, and the dtype (recorded explicitly where it matters).
_NOT_IDENTITY = {"transformers_version", "diffusers_version", "torch_dtype", "dtype", "name_or_path",
                 "architectures", "use_cache"}


def canonical_config(cfg) -> dict:
    """A config as a plain dict without private or incidental keys, stable across processes."""
    d = dict(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)
    return {k: d[k] for k in sorted(d) if not k.startswith("_") and k not in _NOT_IDENTITY}


def vae_identity(components) -> str:
    return _h({"model": getattr(components, "weights_id", components.name), "vae": canonical_config(components.vae.config)})


def text_identity(components, max_len: int) -> str:
    return _h({"model": getattr(components, "weights_id", components.name),
               "te": canonical_config(components.text_encoder.config), "max_len": max_len,
               "chi": chi_default(), "dtype": str(components.text_encoder.dtype)})


def intact(path: Path) -> bool:
    """A safetensors file whose header parses and whose length matches it (a truncated or
    overwritten file fails). Cheap: reads the header only."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n <= 1 or 8 + n > size:
                return False
            header = json.loads(f.read(n))
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        return bool(ends) and size == 8 + n + max(ends)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False


def latent_key(vae_id: str, w: Window, height: int, width: int) -> str:
    return _h([vae_id, w.video_id, round(w.start_s, 4), w.frames, w.fps, height, width])


def text_key(text_id: str, prompt: str) -> str:
    return _h([text_id, prompt])


def _save(path: Path, tensors: dict) -> None:
    from safetensors.torch import save

    path.parent.mkdir(parents=True, exist_ok=True)
    from dataengine.atomic import atomic_bytes

    # atomic: a killed precompute never leaves half a file; a full disk is an OSError
    atomic_bytes(path, save({k: v.contiguous() for k, v in tensors.items()}))


def load(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def normalise_latents(z, vae):
    import torch

    mean = torch.tensor(vae.config.latents_mean, dtype=z.dtype, device=z.device).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, dtype=z.dtype, device=z.device).view(1, -1, 1, 1, 1)
    return (z - mean) / std


def frames_to_tensor(frames: np.ndarray):
    """uint8 (T,H,W,3) -> float (1,3,T,H,W) in [-1, 1]."""
    import torch

    x = torch.from_numpy(frames).float().div_(127.5).sub_(1.0)
    return x.permute(3, 0, 1, 2).unsqueeze(0)


def encode_text(pipe, prompts: list[str], max_len: int, device):
    """(embeds, mask) for prompts, plus the unconditional pair, exactly as the pipeline encodes."""
    import torch

    with torch.no_grad():
        pe, pm, ne, nm = pipe.encode_prompt(prompts, do_classifier_free_guidance=True, negative_prompt="",
                                            device=device, max_sequence_length=max_len,
                                            complex_human_instruction=chi_default())
    return pe.float().cpu(), pm.cpu(), ne[:1].float().cpu(), nm[:1].cpu()


class Cache:
    def __init__(self, root: str | Path, components, height: int, width: int, max_len: int):
        self._seen: set = set()  # windows a batch has used in this run (ensure counts each once)
        self.root = Path(root)
        self.c = components
        self.height, self.width, self.max_len = height, width, max_len
        self.vae_id = vae_identity(components)
        self.text_id = text_identity(components, max_len)
        self.corrupt: list[str] = []

    def latent_path(self, w: Window) -> Path:
        # the key holds the bucket (frames, height, width): the same window in another bucket is another entry
        key = latent_key(self.vae_id, w, w.height or self.height, w.width or self.width)
        return self.root / "latents" / f"{key}.safetensors"

    def text_path(self, prompt: str) -> Path:
        return self.root / "text" / f"{text_key(self.text_id, prompt)}.safetensors"

    def null_path(self) -> Path:
        return self.root / "text" / f"{text_key(self.text_id, '<uncond>')}.safetensors"

    def eval_items(self, windows: list[Window]) -> list[dict]:
        """What `validate.eval_loss` needs per cached window: key, latents, prompt embeds and mask."""
        return [{"key": w.key, "latents": load(self.latent_path(w))["latents"], **load(self.text_path(w.prompt))}
                for w in windows if self.latent_path(w).exists()]

    def missing(self, windows: list[Window], prompts: list[str], shard: tuple[int, int] = (0, 1)
                ) -> tuple[list[Window], list[str]]:
        """This rank's share of what is not cached yet.

        The share is cut from the full, sorted lists *before* looking at the disk, so ranks that
        look at different moments still split the same work: no window is encoded twice.
        """
        rank, world = shard
        mine_w = sorted(windows, key=lambda w: (w.video_id, w.start_s, w.key))[rank::world]
        mine_p = sorted(set(prompts))[rank::world]
        lat = [w for w in mine_w if not self._usable(self.latent_path(w))]
        txt = [p for p in mine_p if not self._usable(self.text_path(p))]
        if rank == 0 and not self._usable(self.null_path()):
            txt = txt or [prompts[0]]  # rank 0 alone writes the unconditional embedding
        return lat, txt

    def _usable(self, path: Path) -> bool:
        """Cached and intact; a corrupt entry is deleted (and counted) so it is encoded again."""
        if not path.exists():
            return False
        if intact(path):
            return True
        path.unlink(missing_ok=True)
        self.corrupt.append(path.name)
        return False

    def _encode_latents(self, windows: list[Window], device, stats: dict, progress: bool = False) -> None:
        """VAE latents of `windows`, written to the cache; a window that cannot be decoded is
        recorded in stats["decode_failures"] and left uncached."""
        import torch
        from tqdm import tqdm

        self.c.vae.to(device)
        readers: dict = {}
        for w in tqdm(sorted(windows, key=lambda w: (w.video_path, w.start_s)), desc="cache latents",
                      unit="window", disable=not progress):
            try:
                frames = read_window(w, self.height, self.width, readers)
            except Exception as e:  # recorded; the window is then left out of training
                stats["decode_failures"].append((w.key, f"{type(e).__name__}: {e}"))
                continue
            x = frames_to_tensor(frames).to(device, self.c.vae.dtype)
            with torch.no_grad():
                z = self.c.vae.encode(x).latent_dist.mode()
            z = normalise_latents(z.float(), self.c.vae)[0].cpu()
            _save(self.latent_path(w), {"latents": z})
            stats["latents_encoded"] += 1
            stats["latents_encoded_keys"].append(w.key)

    def ensure(self, windows: list[Window], device, stats: dict) -> set:
        """Encode the latents of `windows` that are not cached yet (the first batch that uses a
        window pays for it; every later batch and run reuses it). Returns the keys that could not
        be decoded. On a GPU the VAE goes back to the CPU after, so training keeps its memory."""
        import time

        first = {w.key: w for w in windows if w.key not in self._seen}  # first use in this run
        self._seen.update(first)
        todo = [w for w in first.values() if not self._usable(self.latent_path(w))]
        stats["latents_reused"] = stats.get("latents_reused", 0) + len(first) - len(todo)
        stats["corrupt_replaced"] = list(self.corrupt)  # a damaged entry found at first use counts too
        if not todo:
            return set()
        before, done = len(stats["decode_failures"]), stats["latents_encoded"]
        t0 = time.perf_counter()
        self._encode_latents(todo, device, stats)
        stats["lazy_seconds"] = stats.get("lazy_seconds", 0.0) + time.perf_counter() - t0
        stats["lazy_encoded"] = stats.get("lazy_encoded", 0) + stats["latents_encoded"] - done
        if str(device).startswith("cuda"):
            self.c.vae.to("cpu")
        return {k for k, _ in stats["decode_failures"][before:]}

    def precompute(self, windows: list[Window], prompts: list[str], device, progress: bool = True,
                   text_batch: int = 8, shard: tuple[int, int] = (0, 1)) -> dict:
        """Encode this rank's share of whatever is missing, one pass; the caller then frees the
        VAE and text encoder. Under DDP every rank calls this with its (rank, world)."""
        import torch
        from tqdm import tqdm

        self.corrupt = []
        self._seen.update(w.key for w in windows)  # counted here; ensure() will not count them again
        lat, txt = self.missing(windows, prompts, shard)
        rank, world = shard
        share_w = len(windows[rank::world]) if world > 1 else len(windows)
        share_t = len(sorted(set(prompts))[rank::world])
        stats = {"rank": rank, "world": world, "latents_total": len(windows), "latents_encoded": 0,
                 "latents_reused": share_w - len(lat), "latents_encoded_keys": [], "text_encoded": 0,
                 "text_reused": max(0, share_t - len(txt)), "corrupt_replaced": list(self.corrupt),
                 "decode_failures": []}
        if txt:
            pipe = self.c.pipeline()
            self.c.text_encoder.to(device)
            for i in tqdm(range(0, len(txt), text_batch), desc="cache text", disable=not progress):
                chunk = txt[i : i + text_batch]
                pe, pm, ne, nm = encode_text(pipe, chunk, self.max_len, device)
                for j, p in enumerate(chunk):
                    _save(self.text_path(p), {"embeds": pe[j], "mask": pm[j]})
                if shard[0] == 0 and not self.null_path().exists():
                    _save(self.null_path(), {"embeds": ne[0], "mask": nm[0]})
                stats["text_encoded"] += len(chunk)
        if lat:
            self._encode_latents(lat, device, stats, progress)
        return stats
