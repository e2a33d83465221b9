"""What a learner step costs: forward passes for old-policy and reference log-probs, then the
training (forward + backward) of each mini-batch, at the learner's model FLOPs utilisation."""

from __future__ import annotations

from dataclasses import dataclass

from stalesim.sim.hardware import GpuSpec
from stalesim.sim.models import ModelSpec


@dataclass(frozen=True)
class LearnerCost:
    """Seconds per token of the learner's passes."""

    train_s_per_token: float
    forward_s_per_token: float
    gpus: int
    overhead_s_per_step: float = 0.0

    def forward_s(self, tokens: float) -> float:
        """The extra forward passes over a whole batch (old policy, reference), plus the
        fixed cost of a step."""
        return self.overhead_s_per_step + self.forward_s_per_token * tokens

    def train_s(self, tokens: float) -> float:
        """Forward and backward over one mini-batch: ``6 * active_params`` FLOPs per token."""
        return self.train_s_per_token * tokens


def learner_cost(
    gpu: GpuSpec,
    model: ModelSpec,
    gpus: int,
    mfu: float,
    *,
    old_logprob_pass: bool,
    reference_model: bool,
) -> LearnerCost:
    """Cost per token on ``gpus`` GPUs at utilisation ``mfu``."""
    flops = gpus * gpu.peak_flops * mfu
    passes = int(old_logprob_pass) + int(reference_model)
    return LearnerCost(
        train_s_per_token=6.0 * model.active_params / flops,
        forward_s_per_token=passes * 2.0 * model.active_params / flops,
        gpus=gpus,
    )
