"""The toy SANA-Video: the real classes (AutoencoderKLWan, SanaVideoTransformer3DModel, Gemma-2),
small enough to train on the toy world (dataengine.world) in minutes on 2 CPU cores.

`build_sana(out)` trains, from a fixed seed:
1. the VAE on world clips (9 frames, 64x64), MSE plus a small KL, then measures its latents'
   per-channel mean and std into its config (what the pipeline and our cache normalise with);
2. the transformer with flow matching (the trainer's own maths: train.flow) on the VAE's
   normalised latents of *day* scenes (the base is off-style for night, as SANA-Video was for
   cartoons), each clip's truth caption encoded exactly as the trainer and pipeline encode it.
The text encoder stays random and frozen. The result is a normal diffusers pipeline folder that
`--base-model toy` loads through the same `from_pretrained` path as the hub model.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path

from .toy_vae import (TOY_NAME, Z_DIM, ToyConfig, crops, new_vae, psnr, single_frame_convs,  # noqa: F401
                      to_tensor, train_vae, vae_psnr, vae_steps, warmup_cosine, world_batch)

log = logging.getLogger(__name__)


def new_transformer(seed: int, caption_channels: int):
    import torch
    from diffusers import SanaVideoTransformer3DModel

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return SanaVideoTransformer3DModel(
            in_channels=Z_DIM, out_channels=Z_DIM, num_attention_heads=4, attention_head_dim=16, num_layers=4,
            num_cross_attention_heads=4, cross_attention_head_dim=16, cross_attention_dim=64,
            caption_channels=caption_channels, mlp_ratio=2.5, dropout=0.0, attention_bias=False, sample_size=8,
            patch_size=(1, 2, 2), norm_elementwise_affine=False, norm_eps=1e-6, qk_norm="rms_norm_across_heads",
            rope_max_seq_len=32)


def toy_tokenizer():
    """A word-level tokenizer over the toy world's words (its captions, the toy and class prompts and
    the pipeline's instruction prefix), trained in-process with `tokenizers`. One token per word: a
    frozen random encoder then gives "night" and "day" embeddings of their own, where the tiny
    model's byte-level BPE spelled them out in letters shared with every other word."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    from catalog.assets import asset
    from dataengine.world import all_scenes

    from .cache import chi_default

    corpus = [s.caption() for s in all_scenes()] + chi_default()
    for name in ("validation_toy.toml", "class_tomjerry.txt", "validation_tomjerry.txt"):
        corpus.append(asset("prompts", name).read_text())
    tk = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.train_from_iterator(corpus, trainers.WordLevelTrainer(
        special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"], show_progress=False))
    tk.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", tk.token_to_id("<bos>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", padding_side="right", model_max_length=4096)


def encoder_parts(seed: int = 0):
    """The toy's word-level tokenizer and its random, frozen one-layer Gemma-2 text encoder."""
    from .models import one_layer_gemma

    tok = toy_tokenizer()
    return tok, one_layer_gemma(tok, hidden=64, init_range=1.0, seed=seed).eval()


def pipeline_of(tok, te, vae, tr, flow_shift: float):
    from diffusers import SanaVideoPipeline

    from .models import flow_scheduler

    return SanaVideoPipeline(tokenizer=tok, text_encoder=te, vae=vae, transformer=tr,
                             scheduler=flow_scheduler(flow_shift))


def base_sigmas(cfg: ToyConfig, g):
    """Training sigmas for the base: half the batch as the trainer draws them (logit-normal, shifted),
    half uniform in [cfg.high_sigma, 1). The global picture (setting, time of day) survives noise
    down to sigma ~0.95 in the latents' channel means, so only the noisiest steps need the prompt;
    the trainer's draw puts ~3% of samples there, too few to learn text in minutes."""
    import torch

    from . import flow

    half = cfg.dit_batch // 2
    low = flow.sample_sigmas(cfg.dit_batch - half, shift=cfg.flow_shift, generator=g)
    high = cfg.high_sigma + (1 - cfg.high_sigma) * torch.rand(half, generator=g)
    return torch.cat([low, high.clamp(max=1 - 1e-5)])


MAX_LEN = 300  # as the tiny preset: the complex human instruction plus the prompt


def trim_padding(emb, mask, null_e, null_m):
    """Drop the trailing token columns that no prompt (nor the empty one) uses. The pipeline pads
    every prompt to MAX_LEN (300) tokens, of which a toy caption fills about 30 after the
    instruction is cut; the cross-attention gives masked tokens zero weight, so the trimmed batch
    is the same function at a tenth of the cross-attention's work."""
    from .objectives import used_tokens

    n = max(used_tokens(mask), used_tokens(null_m))
    return emb[:, :n], mask[:, :n], null_e[:, :n], null_m[:, :n]


def train_transformer(cfg: ToyConfig, vae, tok, te, echo=print, night_share: float = 0.15, between_steps=None):
    """Flow matching on the VAE's normalised latents of world clips, mostly day scenes (a small
    share of night scenes lets the caption's "at night" mean something), each with its truth
    caption encoded as the trainer encodes prompts; caption dropout 0.1 for CFG."""
    import torch

    from dataengine.world import random_scene

    from . import flow
    from .cache import encode_text, normalise_latents
    from .prompts import class_prompt

    rng = random.Random(cfg.seed + 1)
    scenes = [random_scene(rng, "night" if rng.random() < night_share else "day") for _ in range(cfg.clips)]
    tr = new_transformer(cfg.seed, te.config.hidden_size)
    pipe = pipeline_of(tok, te, vae, tr, cfg.flow_shift)
    t0 = time.perf_counter()
    lat = []
    with torch.no_grad():
        for i in range(0, len(scenes), 8):
            x = to_tensor(world_batch(scenes[i:i + 8], cfg, rng))
            lat.append(normalise_latents(vae.encode(x).latent_dist.mode(), vae))
    lat = torch.cat(lat)
    # a share of the day clips under the class prompt: as the real base answers a cartoon prompt
    # with a coherent, off-style video, the toy base answers it with day scenes (without this it
    # had never seen the prompt, and its class-prompt samples were mush that no captioner reads)
    cls = class_prompt(None)
    prompts = [cls if s.time_of_day == "day" and rng.random() < cfg.class_share else s.caption() for s in scenes]
    captions = sorted(set(prompts))
    emb, mask, null_e, null_m = encode_text(pipe, captions, MAX_LEN, "cpu")
    emb, mask, null_e, null_m = trim_padding(emb, mask, null_e, null_m)
    index = {c: i for i, c in enumerate(captions)}
    cap_idx = torch.tensor([index[p] for p in prompts])
    echo(f"transformer data: {len(scenes)} clips ({sum(s.time_of_day == 'night' for s in scenes)} night, "
         f"{prompts.count(cls)} under the class prompt), {len(captions)} prompts of up to {mask.shape[1]} tokens, "
         f"latents {tuple(lat.shape[1:])}, {time.perf_counter() - t0:.0f} s")
    g = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(tr.parameters(), lr=cfg.dit_lr, weight_decay=0.0)
    sched = warmup_cosine(opt, cfg.dit_steps)
    tr.train()
    for step in range(1, cfg.dit_steps + 1):
        if between_steps:
            between_steps()
        idx = torch.randint(0, len(scenes), (cfg.dit_batch,), generator=g)
        x0 = lat[idx]
        e, m = emb[cap_idx[idx]].clone(), mask[cap_idx[idx]].clone()
        drop = torch.rand(cfg.dit_batch, generator=g) < 0.1
        e[drop], m[drop] = null_e, null_m
        noise = torch.randn(x0.shape, generator=g)
        sig = base_sigmas(cfg, g)
        pred = tr(flow.noisy(x0, noise, sig), encoder_hidden_states=e, encoder_attention_mask=m,
                  timestep=flow.timesteps(sig), return_dict=False)[0]
        loss = flow.per_sample_loss(pred, flow.target(x0, noise)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tr.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 250 == 0 or step == cfg.dit_steps:
            echo(f"transformer step {step}/{cfg.dit_steps}  loss {loss.item():.4f}  {time.perf_counter() - t0:.0f} s")
    return tr.eval()


class CoreShare:
    """Two builds on a 2-core machine: the toy models are small, so a training step uses a second
    thread poorly, and the captioner builds in a side process on one core while this process trains on the
    other. Called between steps, it gives this process every core once the side process ends."""

    def __init__(self, proc, threads: int):
        import torch

        self.proc, self.threads = proc, threads
        torch.set_num_threads(1)

    def __call__(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            import torch

            torch.set_num_threads(self.threads)
            self.proc = None


def build_sana(out_dir, cfg: ToyConfig | None = None, echo=print, vae_from: str | Path | None = None,
               between_steps=None) -> dict:
    """Train the toy SANA-Video and save it as a diffusers pipeline folder; returns the figures.
    With `vae_from` (a toy pipeline folder), reuse its VAE and train only the transformer."""
    cfg = cfg or ToyConfig()
    t0 = time.perf_counter()
    tok, te = encoder_parts(cfg.seed)
    if vae_from:
        from diffusers import AutoencoderKLWan

        vae = AutoencoderKLWan.from_pretrained(Path(vae_from) / "vae").eval()
        echo(f"vae: reused from {vae_from}")
    else:
        vae = train_vae(cfg, echo, between_steps)
    t_vae = time.perf_counter() - t0
    rand = new_vae(cfg.seed + 7).eval()
    with single_frame_convs(rand):
        p_random = vae_psnr(rand, cfg)
    # every clip the rest of the build encodes goes through thin kernels: the same codes, a third
    # of the work (384 clips of 9 frames for the transformer's data)
    with single_frame_convs(vae):
        p = vae_psnr(vae, cfg)
        echo(f"vae: held-out PSNR {p:.1f} dB (a random VAE of the same shape: {p_random:.1f} dB); {t_vae:.0f} s")
        tr = train_transformer(cfg, vae, tok, te, echo, between_steps=between_steps)
    pipe = pipeline_of(tok, te, vae, tr, cfg.flow_shift)
    final = Path(out_dir)
    figures = {"vae_psnr_db": round(p, 2), "random_vae_psnr_db": round(p_random, 2),
               "vae_seconds": round(t_vae), "seconds": round(time.perf_counter() - t0), "config": asdict(cfg),
               "vae_reused_from": str(vae_from) if vae_from else None}
    from dataengine.atomic import atomic_dir

    with atomic_dir(final) as out:  # built aside and swapped whole: an interrupted build leaves the old model
        pipe.save_pretrained(out, safe_serialization=True)
        if vae_from:  # a loaded model's config remembers where it came from; the shipped one must not
            vc = out / "vae" / "config.json"
            vc.write_text(json.dumps({k: v for k, v in json.loads(vc.read_text()).items() if k != "_name_or_path"},
                                     indent=2) + "\n")  # in the order diffusers wrote it
        (out / "TOY_MODEL").write_text(json.dumps({"name": TOY_NAME, **figures}, indent=1) + "\n")
    echo(f"toy SANA-Video saved to {final} in {figures['seconds']} s")
    return figures


class ToyBuildError(Exception):
    """The toy build failed; the message is for the user (the side process's output is above it)."""


def build_toy(out: Path, parts: tuple[str, ...], seed: int, quick: bool, vae_from=None, one_process: bool = False,
              echo=print) -> None:
    """Build the toy models into `out`: the SANA-Video (`sana`) and the captioner (`captioner`).
    Both at once on more than one core: the captioner builds in a side process on one core
    (`CoreShare`) while this process trains the SANA-Video; its output is relayed line by line."""
    import torch

    t0 = time.perf_counter()
    side = None
    if "sana" in parts and "captioner" in parts and not one_process:
        side = side_build(out, seed, quick, echo)
        parts = ("sana",)
    try:
        if "sana" in parts:
            cfg = ToyConfig(seed=seed)
            if quick:
                cfg.vae_steps, cfg.dit_steps, cfg.clips = 20, 30, 32
            share = CoreShare(side, torch.get_num_threads()) if side is not None else None
            f = build_sana(out / "sana", cfg, echo=echo, vae_from=vae_from, between_steps=share)
            echo(f"toy SANA-Video: VAE PSNR {f['vae_psnr_db']} dB (random: {f['random_vae_psnr_db']} dB); "
                 f"{f['seconds']} s")
    except BaseException:
        if side is not None and side.poll() is None:
            side.terminate()
            side.wait()
        raise
    if side is not None:
        code = side.wait()
        side.relay.join()
        if code != 0:
            raise ToyBuildError(f"the captioner's build failed (exit {code}); its output is above")
        echo(f"toy models built in {out} in {time.perf_counter() - t0:.0f} s")
    if "captioner" in parts:
        from dataengine.caption.toy import train_captioner

        steps = dict(vision_steps=40, short_steps=20, steps=10) if quick else {}
        f = train_captioner(out / "qwen2-vl", seed=seed, echo=echo, **steps)
        echo(f"toy captioner: {f['vision_steps']} + {f['short_prompt_steps']} + {f['steps']} steps "
             f"(vision, short prompt, full prompt), {f['seconds']} s")


def side_build(out: Path, seed: int, quick: bool, echo):
    """The captioner's build in a side process on one core; its output is relayed line by line."""
    echo("toy captioner: building in a side process on one core")
    return relayed([sys.executable, "-m", "train.cli", "build-toy", "--out", str(out), "--part", "captioner",
                    "--seed", str(seed), "--threads", "1"] + (["--quick"] if quick else []), echo)


def relayed(cmd: list[str], echo):
    """A one-thread side process whose output lines are echoed as they come."""
    import os
    import subprocess
    import threading

    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    relay = threading.Thread(target=lambda: [echo(line.rstrip("\n")) for line in proc.stdout], daemon=True)
    relay.start()
    proc.relay = relay  # joined after the process ends, so its last lines are printed first
    return proc
