"""What a training step minimises: the loop's one seam.

The loop (train.loop) owns batching, accumulation, the non-finite guard, DDP, checkpoints,
resume, validation and logging. It draws each micro-batch's clean latents, noise and sigmas from
its one seeded stream and hands them to an objective, which returns the per-sample loss. An
objective owns its maths and its teacher, if any; the loop knows nothing of either.

- `FlowMatching`: the velocity `eps - x0` of the clip's own noisy latent (SANA's objective).
- `GuidanceDistillation` (train.distill): the teacher's classifier-free-guided velocity, in one
  conditional pass of the student.
- `Reflow` (train.distill): straight paths from noise to the teacher's own samples, for few-step
  sampling.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from . import flow


def used_tokens(mask) -> int:
    """How many leading token columns some row of `mask` (batch, tokens) uses: the pipeline pads
    every prompt to max_sequence_length (300), and after SANA cuts the complex human instruction
    a prompt keeps its own few dozen tokens. At least 1."""
    used = mask.bool().any(0).nonzero()
    return int(used.max()) + 1 if len(used) else 1


def predict(model, xt, embeds, mask, sigmas, weight_dtype, device):
    """The transformer's velocity prediction. Latents and text go in the weight dtype; the timestep
    (sigma * 1000) stays fp32, as the pipeline passes it at inference: in bf16 it would round to
    multiples of 4 above 512 (and of 2 above 256).

    The text goes in without the trailing padding no prompt of the batch uses: the cross-attention
    gives masked tokens zero weight, so it is the same prediction (to float rounding; tested) with
    the cross-attention's keys cut from 300 to the longest prompt's."""
    n = used_tokens(mask)
    embeds, mask = embeds[:, :n], mask[:, :n]
    return model(xt.to(device, weight_dtype), encoder_hidden_states=embeds.to(device, weight_dtype),
                 encoder_attention_mask=mask.to(device), timestep=flow.timesteps(sigmas).to(device).float(),
                 return_dict=False)[0]


class Objective(ABC):
    """The interface. `prepare_base` may change the base model before the LoRA is added (a
    distillation fuses its teacher's LoRA into it); `bind` sees the adapted run (its unwrapped
    transformer, null text, dtype and device); `per_sample` returns a (batch,) fp32 loss."""

    name = "objective"
    caption_dropout: float | None = None  # None: the run's --caption-dropout

    def prepare_base(self, comps) -> None:
        pass

    def bind(self, run) -> None:
        pass

    @abstractmethod
    def per_sample(self, model, batch: dict, x0, noise, sigmas, weight_dtype, device):
        """The (batch,) fp32 loss of this micro-batch (an objective must define it)."""

    def metadata(self) -> dict:
        """Extra keys for the saved LoRA's lora_metadata.json."""
        return {"objective": self.name}


class FlowMatching(Objective):
    """x_t = (1 - sigma) x0 + sigma eps; the model predicts v = eps - x0 (mean squared error)."""

    name = "flow_matching"

    def per_sample(self, model, batch, x0, noise, sigmas, weight_dtype, device):
        xt = flow.noisy(x0, noise, sigmas)
        pred = predict(model, xt, batch["embeds"], batch["mask"], sigmas, weight_dtype, device)
        return flow.per_sample_loss(pred, flow.target(x0, noise))
