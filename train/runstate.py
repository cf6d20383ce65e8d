"""What the phases of one training run share (Run), what training returns (TrainResult), and how
it fails (TrainError, Diverged). train.loop runs the phases; train.batches feeds them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .cache import Cache
from .config import TrainConfig


class TrainError(Exception):
    """Training cannot go on; the message is for the user."""


class Diverged(TrainError):
    """The LoRA's weights became non-finite: nothing non-finite is ever saved as the result."""

    def __init__(self, step: int, last_good: Path | None):
        self.step, self.last_good = step, last_good
        keep = (f"the last finite checkpoint, {last_good}, stays in the run folder" if last_good
                else "no checkpoint was written before it")
        super().__init__(f"training diverged at step {step}: the LoRA weights became non-finite after the optimizer "
                         f"update. Lower --lr or add --warmup-steps. No LoRA was saved as the result; {keep}.")


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    lora_path: Path | None
    skipped_nonfinite: int
    final_loss: float | None


@dataclass
class Run:
    """What the phases of one training run share. Built by `setup`, filled by `build_cache` and
    `adapt`, moved on by `resume` and `step`."""
    cfg: TrainConfig
    out_dir: Path
    acc: object
    device: object
    weight_dtype: object
    want_cuda: bool
    comps: object = None
    cache: Cache | None = None
    cache_stats: dict = field(default_factory=dict)  # this rank's cache counts (logs/cache_rank*.json)
    bad_windows: set = field(default_factory=set)  # training windows found undecodable at first use
    train_w: list = field(default_factory=list)
    hold_w: list = field(default_factory=list)
    vps: list = field(default_factory=list)
    val_embeds: list = field(default_factory=list)
    null: dict | None = None
    holdout_items: list = field(default_factory=list)
    suffix: str = ""
    model: object = None
    unwrapped: object = None
    params: list = field(default_factory=list)
    optimizer: object = None
    scheduler: object = None
    gen: object = None
    order: object = None
    step: int = 0
    skipped: int = 0
    nonfinite_run: int = 0
    last_loss: float | None = None
    trackers: object = None
    losses_by_clip: object = None

    @property
    def ckpt_root(self) -> Path:
        return self.out_dir / "checkpoints"

    @property
    def null_pair(self) -> tuple:
        return self.null["embeds"], self.null["mask"]
