"""TrainConfig: one typed, validated config per training run, saved beside its outputs."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from catalog.templates import TEMPLATES, TemplateError, compile_template

REAL_BASE_MODEL = "Efficient-Large-Model/SANA-Video_2B_480p_diffusers"


class ConfigError(ValueError):
    """A config value that makes no sense; the message names the option."""


# The range every integer option's consumers accept. Seeds go to numpy's set_seed (< 2**32) and to
# torch generators as seed * 7919 (< 2**63); sizes and frames are bounded by what one clip of the
# real model can be (SANA-Video's own buckets stop at 1920 px; 1 + 4 * 256 frames is 64 s at 16 fps,
# far past the 81 it was trained on); counts and steps by what a run can mean.
MAX_SIDE = 4096
MAX_FRAMES = 1 + 4 * 256
INT_RANGES = {
    "seed": (0, 2**32 - 1), "validation_seed": (0, 2**32 - 1),
    "height": (32, MAX_SIDE), "width": (32, MAX_SIDE), "frames": (1, MAX_FRAMES),
    "max_sequence_length": (1, 8192),  # Gemma-2's max_position_embeddings
    "holdout": (0, 1_000_000), "rank": (1, 4096),
    "batch_size": (1, 65536), "grad_accum": (1, 65536),
    "max_steps": (1, 10**9), "warmup_steps": (0, 10**9), "max_nonfinite": (1, 10**9),
    "validation_every": (0, 10**9), "validation_steps": (1, 1000), "validation_batch": (1, 64), "checkpoint_every": (0, 10**9),
    "keep_checkpoints": (1, 10**6), "log_every": (0, 10**9),
}


@dataclass
class TrainConfig:
    # data
    query: str | None = None
    query_timeout: float = 30.0  # seconds the --query may run
    dedup: bool = False  # keep one clip per near-duplicate group (dup_rank = 1)
    cache_all: bool = False  # encode every window's latents before step 1 (else as batches first use them)
    catalog: str | None = None
    captioner: str | None = None  # CAPTIONER[@VERSION]; None = what the clips view shows
    prompt_template: str = "class"  # a built-in name or a format string
    class_prompt: str | None = None  # None = assets/prompts/class_tomjerry.txt
    motion_score: bool = False
    motion_scale: float = 5.0
    caption_dropout: float = 0.1
    holdout: int = 4  # windows kept out of training for the eval loss
    # model
    base_model: str = REAL_BASE_MODEL
    height: int = 224
    width: int = 224
    frames: int = 81
    fps: float = 16.0
    max_sequence_length: int = 300
    # buckets (train.buckets): square = one --width x --height bucket, the seed experiment's crop
    buckets: str = "square"  # square | auto | WxH,WxH,...
    frame_buckets: str | None = None  # e.g. "33,49,81"; None = --frames only. --frames becomes the largest
    # LoRA
    rank: int = 16
    alpha: float = 32.0
    lora_dropout: float = 0.1
    lora_targets: str = "linear"  # linear | linear+conv
    # optimisation
    lr: float = 2e-4
    batch_size: int = 8
    grad_accum: int = 1
    max_steps: int = 10_000
    optimizer: str = "adamw"  # adamw | adamw8bit
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    lr_schedule: str = "constant"  # constant | linear | cosine
    grad_clip: float = 1.0
    mixed_precision: str = "bf16"  # bf16 | fp16 | no
    gradient_checkpointing: bool | None = None  # None = on for every real model, off for tiny
    seed: int = 42
    # flow matching
    timestep_sampling: str = "logit_normal"  # logit_normal | uniform
    logit_mean: float = 0.0
    logit_std: float = 1.0
    # NVIDIA's SANA-Video 480p training config trains with flow_shift 3.0 and samples with 7-8
    # (configs/sana_video_config/Sana_2000M_480px_AdamW_fsdp.yaml); our 224x224 clips have ~8x fewer
    # tokens than 480x832, which argues for less shift, not more.
    flow_shift: float = 3.0
    sigma_min: float = 0.0  # training sigmas are mapped onto [sigma_min, sigma_max] after the shift
    sigma_max: float = 1.0
    max_nonfinite: int = 10  # abort after this many non-finite losses in a row
    # validation
    validation_every: int = 500
    validation_prompts: str | None = None  # file; None = assets/prompts/validation_tomjerry.txt
    validation_seed: int = 69420
    cfg: float = 4.0
    validation_steps: int = 50
    # prompts sampled together (same size, frames and cfg): same videos, fewer passes; 1 on the real
    # model, where each 480p video's VAE decode alone takes gigabytes
    validation_batch: int = 1
    validation_flow_shift: float = 8.0  # the inference shift (diffusers' SANA-Video scheduler)
    # checkpoints / output
    output_dir: str | None = None
    name: str | None = None
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    report_to: str = "none"  # none | tensorboard | wandb | all
    log_every: int = 10  # a log line every N steps when there is no progress bar (0 = none)
    device: str | None = None
    preset: str | None = None
    config_file: str | None = None  # the --config file this run was resolved from

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        for f in fields(self):  # inf or NaN from a config file or the command line ("--fps inf")
            v = getattr(self, f.name)
            if isinstance(v, float):
                need(math.isfinite(v), f"--{f.name.replace('_', '-')} must be a finite number, got {v}")
            if f.name in INT_RANGES and v is not None:
                lo, hi = INT_RANGES[f.name]
                need(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi,
                     f"--{f.name.replace('_', '-')} must be an integer in [{lo}, {hi}], got {v!r}")
        need(0 <= self.cfg < 100, f"--cfg must be in [0, 100), got {self.cfg:g}")
        need((self.frames - 1) % 4 == 0 and self.frames >= 1, f"--frames must be 1 + 4k (e.g. 81), got {self.frames}")
        need(self.height % 32 == 0 and self.width % 32 == 0 and self.height > 0 and self.width > 0,
             f"--height/--width must be positive multiples of 32 (SanaVideoPipeline.check_inputs), "
             f"got {self.height}x{self.width}")
        need(self.fps > 0, "--fps must be positive")
        from .buckets import BucketError, parse_frames

        if isinstance(self.frame_buckets, (list, tuple)):  # a config file may give a list
            self.frame_buckets = ",".join(str(f) for f in self.frame_buckets)
        try:
            fb = parse_frames(self.frame_buckets, self.frames)
        except BucketError as e:
            raise ConfigError(str(e)) from e
        if self.frame_buckets is not None:
            self.frame_buckets = ",".join(map(str, fb))
            self.frames = fb[-1]  # validation and generation use the longest
        self.buckets = str(self.buckets).strip().lower()
        if self.buckets not in ("square", "auto"):
            try:
                from .buckets import parse_sizes

                self.buckets = ",".join(f"{w}x{h}" for w, h in parse_sizes(self.buckets, self.width, self.height))
            except BucketError as e:
                raise ConfigError(str(e)) from e
        need(self.query_timeout > 0, "--query-timeout must be positive")
        need(self.rank >= 1, "--rank must be >= 1")
        need(self.alpha > 0, "--alpha must be positive")
        need(0 <= self.lora_dropout < 1, "--lora-dropout must be in [0, 1)")
        need(self.lora_targets in ("linear", "linear+conv"), "--lora-targets must be linear or linear+conv")
        need(self.lr > 0 and math.isfinite(self.lr), "--lr must be a positive finite number")
        need(self.batch_size >= 1 and self.grad_accum >= 1, "--batch-size and --grad-accum must be >= 1")
        need(self.max_steps >= 1, "--max-steps must be >= 1")
        need(self.optimizer in ("adamw", "adamw8bit"), "--optimizer must be adamw or adamw8bit")
        need(self.lr_schedule in ("constant", "linear", "cosine"), "--lr-schedule must be constant, linear or cosine")
        need(self.warmup_steps >= 0, "--warmup-steps must be >= 0")
        need(self.mixed_precision in ("bf16", "fp16", "no"), "--mixed-precision must be bf16, fp16 or no")
        need(self.timestep_sampling in ("logit_normal", "uniform"), "--timestep-sampling must be logit_normal or uniform")
        need(self.flow_shift > 0, "--flow-shift must be positive")
        need(0.0 <= self.sigma_min < self.sigma_max <= 1.0, "--sigma-min and --sigma-max: 0 <= min < max <= 1")
        need(self.validation_flow_shift > 0, "--validation-flow-shift must be positive")
        if self.gradient_checkpointing is None:
            self.gradient_checkpointing = self.model_spec.real_scale
        need(0 <= self.caption_dropout < 1, "--caption-dropout must be in [0, 1)")
        need(self.validation_every >= 0 and self.checkpoint_every >= 0, "intervals must be >= 0")
        need(self.keep_checkpoints >= 1, "--keep-checkpoints must be >= 1")
        need(self.report_to in ("none", "tensorboard", "wandb", "all"), "--report-to must be none, tensorboard, wandb or all")
        need(self.holdout >= 0, "--holdout must be >= 0")
        need(self.log_every >= 0, "--log-every must be >= 0")
        need(self.validation_steps >= 1, "--validation-steps must be >= 1")
        if self.prompt_template not in TEMPLATES:
            need("{" in str(self.prompt_template), f"--prompt-template must be one of {', '.join(TEMPLATES)} or a "
                                                   "format string with {caption}, {tags}, {class_prompt}...")
        try:
            compile_template(self.prompt_template)
        except TemplateError as e:
            raise ConfigError(f"--prompt-template: {e}") from e

    @property
    def template(self) -> str:
        return TEMPLATES.get(self.prompt_template, self.prompt_template)

    def bucket_sizes(self) -> list[tuple[int, int]]:
        """(width, height) of every aspect bucket (`auto` imports diffusers' table)."""
        from .buckets import parse_sizes

        return parse_sizes(self.buckets, self.width, self.height)

    def frame_bucket_list(self) -> list[int]:
        from .buckets import parse_frames

        return parse_frames(self.frame_buckets, self.frames)

    @property
    def model_spec(self):
        """What --base-model is (train.specs): its kind, and whether real-scale checks apply."""
        from .specs import video_model

        return video_model(self.base_model)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        data = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
