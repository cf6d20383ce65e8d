"""The toy's configuration, its world batches and its VAE (train.toy builds the toy SANA-Video
from these): an AutoencoderKLWan that codes each frame on its own, trained on crops of world clips."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

import numpy as np

from dataengine.caption.toy import warmup_cosine


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
