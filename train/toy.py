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
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
TOY_NAME = "toy-sana-video"
Z_DIM = 16


@dataclass
class ToyConfig:
    seed: int = 0
    size: int = 64
    frames: int = 9
    fps: float = 16.0
    vae_steps: int = 2750  # single-frame crops, batch vae_batch; ends about when the captioner's side build does
    vae_batch: int = 8
    vae_lr: float = 2e-3  # held-out test PSNR (goal 28): 2,500 steps 27.3 dB, 2,750 30.1, 3,000 30.7
    vae_crop: int = 32  # the VAE trains on random crops of this side
    dit_steps: int = 1100
    dit_batch: int = 8
    dit_lr: float = 1e-3
    clips: int = 384  # training clips rendered for the transformer (day scenes)
    flow_shift: float = 3.0
    high_sigma: float = 0.8  # half of each base batch is drawn from [high_sigma, 1)
    class_share: float = 0.25  # share of day clips the base trains on under the class prompt


def world_batch(scenes, cfg: ToyConfig, rng: random.Random, frames: int | None = None):
    """uint8 (N, T, H, W, 3) clips of the scenes, each from a random start within its scene."""
    from dataengine.world import render

    n = frames or cfg.frames
    return np.stack([render(s, n / cfg.fps, cfg.fps, cfg.size, cfg.size, t0=rng.uniform(0, 2.0)) for s in scenes])


def crops(clips: np.ndarray, side: int, rng: random.Random) -> np.ndarray:
    """A random side x side window of each clip (the VAE is convolutional: it trains on crops,
    4x fewer pixels per step at 32 of 64, and codes whole frames)."""
    n, _, h, w, _ = clips.shape
    if side >= min(h, w):
        return clips
    out = []
    for c in clips:
        y, x = rng.randrange(0, h - side + 1, 4), rng.randrange(0, w - side + 1, 4)  # on the latent grid
        out.append(c[:, y:y + side, x:x + side])
    return np.stack(out)


def to_tensor(clips: np.ndarray):
    """uint8 (N,T,H,W,3) -> float (N,3,T,H,W) in [-1, 1], as train.cache.frames_to_tensor."""
    import torch

    return torch.from_numpy(clips).float().div_(127.5).sub_(1.0).permute(0, 4, 1, 2, 3).contiguous()


def psnr(a, b) -> float:
    """PSNR in dB of two float tensors in [-1, 1]."""
    mse = float(((a.clamp(-1, 1) - b.clamp(-1, 1)) ** 2).mean()) / 4.0  # on a [0, 1] scale
    return 10 * math.log10(1.0 / max(mse, 1e-12))


from dataengine.caption.toy import warmup_cosine  # noqa: E402 - one schedule for both builds


def new_vae(seed: int):
    """An AutoencoderKLWan that codes each frame on its own: two down stages (4x in space, 16x16
    latents at 64x64), no temporal compression, and the causal convolutions' taps on earlier frames
    set to zero. Trained on single frames those taps only ever see the causal zero padding, so they
    get no gradient and stay zero: the code of a clip is the code of its frames, and a CPU build
    spends its minutes on the picture (at 4x temporal compression, 7 minutes reached 17 dB)."""
    import torch
    from diffusers import AutoencoderKLWan

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        vae = AutoencoderKLWan(base_dim=16, z_dim=Z_DIM, dim_mult=[1, 2, 2], num_res_blocks=1,
                               temperal_downsample=[False, False], latents_mean=[0.0] * Z_DIM,
                               latents_std=[1.0] * Z_DIM, scale_factor_spatial=4, scale_factor_temporal=1)
    with torch.no_grad():
        for m in vae.modules():
            if isinstance(m, torch.nn.Conv3d) and m.kernel_size[0] > 1:
                m.weight[:, :, :-1].zero_()  # causal: the last tap is the current frame
    return vae


class single_frame_convs:
    """Within the block, each causal convolution of `new_vae` keeps only its current-frame tap, so a
    single-frame step costs a third: a causal 3x3x3 convolution of one frame pads two zero frames in
    front and multiplies them by the taps that `new_vae` zeroed. On leaving, the trained taps go
    back into full-size kernels with the earlier taps zero again, which is the same function, so
    the saved model is a plain AutoencoderKLWan. Build the optimizer inside the block: the
    parameters it trains are the thin ones."""

    def __init__(self, vae):
        from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

        self.convs = [m for m in vae.modules() if isinstance(m, WanCausalConv3d) and m.kernel_size[0] > 1]

    def __enter__(self):
        import torch

        if any(bool(m.weight.detach()[:, :, :-1].abs().max() > 0) for m in self.convs):
            raise ValueError("single_frame_convs needs the earlier-frame taps at zero (new_vae sets them)")
        self.saved = []
        for m in self.convs:
            w = m.weight
            self.saved.append((w.shape, m.kernel_size, m._padding))
            m.weight = torch.nn.Parameter(w.detach()[:, :, -1:].clone())
            m.kernel_size = (1, *m.kernel_size[1:])
            m._padding = (*m._padding[:4], 0, 0)
        return self

    def __exit__(self, *exc):
        import torch

        for m, (shape, kernel, padding) in zip(self.convs, self.saved):
            full = torch.zeros(shape, dtype=m.weight.dtype)
            full[:, :, -1:] = m.weight.detach()
            m.weight = torch.nn.Parameter(full)
            m.kernel_size, m._padding = kernel, padding
        return False


def train_vae(cfg: ToyConfig, echo=print, between_steps=None):
    import torch

    from dataengine.world import random_scene

    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    vae = new_vae(cfg.seed).train()
    with single_frame_convs(vae):
        vae_steps(vae, cfg, rng, echo, between_steps)
        vae.eval()
        # the per-channel statistics of its latents: what the pipeline and the trainer normalise with
        with torch.no_grad():
            x = to_tensor(world_batch([random_scene(rng) for _ in range(32)], cfg, rng))
            z = torch.cat([vae.encode(x[i:i + 8]).latent_dist.mode() for i in range(0, 32, 8)])
    mean = z.mean(dim=(0, 2, 3, 4)).tolist()
    std = z.std(dim=(0, 2, 3, 4)).clamp_min(1e-3).tolist()
    vae.register_to_config(latents_mean=[round(v, 5) for v in mean], latents_std=[round(v, 5) for v in std])
    return vae


def vae_steps(vae, cfg: ToyConfig, rng: random.Random, echo=print, between_steps=None) -> None:
    """The VAE's training loop on single-frame crops of random world scenes; `between_steps()`, if
    given, runs before each step (`CoreShare` uses it)."""
    import torch

    from dataengine.world import random_scene

    total = cfg.vae_steps
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    sched = warmup_cosine(opt, total)
    t0 = time.perf_counter()
    for step in range(1, total + 1):
        if between_steps:
            between_steps()
        x = to_tensor(crops(world_batch([random_scene(rng) for _ in range(cfg.vae_batch)], cfg, rng, 1),
                            cfg.vae_crop, rng))
        # deterministic (the posterior's mode: what the cache encodes with), MSE plus L1 for the
        # hard outlines, and a small pull on the latents' scale
        z = vae.encode(x).latent_dist.mode()
        rec = vae.decode(z).sample
        loss = torch.nn.functional.mse_loss(rec, x) + 0.5 * (rec - x).abs().mean() + 1e-4 * z.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 250 == 0 or step == total:
            vae.eval()
            echo(f"vae step {step}/{total}  loss {loss.item():.5f}  held-out PSNR {vae_psnr(vae, cfg, n=4):.1f} dB  "
                 f"{time.perf_counter() - t0:.0f} s")
            vae.train()


def vae_psnr(vae, cfg: ToyConfig, n: int = 16, seed: int = 12345) -> float:
    """Reconstruction PSNR on held-out world clips (a seed the build never draws)."""
    import torch

    from dataengine.world import random_scene

    rng = random.Random(seed)
    x = to_tensor(world_batch([random_scene(rng) for _ in range(n)], cfg, rng))
    with torch.no_grad():
        rec = torch.cat([vae.decode(vae.encode(x[i:i + 4]).latent_dist.mode()).sample for i in range(0, n, 4)])
    return psnr(rec, x)


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
    import torch

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
