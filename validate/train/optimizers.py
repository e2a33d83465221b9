"""The learner's optimizer, chosen in the training config.

Two families, because they react differently to a biased (stale) gradient:

* ``adamw`` — Adam with decoupled weight decay. Its update is the gradient divided by a running
  estimate of its own scale, so the step length is set by the learning rate, not by the
  gradient's size; ``beta1 = 0`` turns off its momentum.
* ``sgd`` — plain stochastic gradient descent, optionally with (heavy-ball) ``momentum``; the
  step is the learning rate times the gradient itself, so an O(S·η) bias from stale samples is
  not normalised away. SGD needs far larger learning rates than Adam for the same progress.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from pydantic import Field
from stalesim.common.config_file import StrictModel


class OptimizerConfig(StrictModel):
    """Which optimizer the learner uses and its hyper-parameters (the learning rate is the run's)."""

    name: Literal["adamw", "sgd"] = "adamw"
    beta1: float = Field(0.9, ge=0, lt=1, description="adamw: first-moment decay (0: no momentum)")
    beta2: float = Field(0.999, ge=0, lt=1, description="adamw: second-moment decay")
    eps: float = Field(1e-8, gt=0, description="adamw: denominator floor")
    momentum: float = Field(0.0, ge=0, lt=1, description="sgd: heavy-ball momentum (0: none)")

    @property
    def label(self) -> str:
        """A short name for tables, e.g. ``adamw(b1=0.9)`` or ``sgd(m=0)``."""
        if self.name == "adamw":
            return f"adamw(b1={self.beta1:g})"
        return f"sgd(m={self.momentum:g})"


def build_optimizer(
    params: Iterable[torch.nn.Parameter], config: OptimizerConfig, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """The configured optimizer over ``params`` at learning rate ``lr``."""
    if config.name == "adamw":
        return torch.optim.AdamW(
            params,
            lr=lr,
            betas=(config.beta1, config.beta2),
            eps=config.eps,
            weight_decay=weight_decay,
        )
    return torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=weight_decay)
