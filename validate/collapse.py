"""Collapse detection: when a training run has failed and should stop.

A run has collapsed at step ``k`` when, after step ``k``:

* the loss, the gradient norm or the reward is NaN or infinite; or
* the smoothed reward (mean of the last ``window`` steps) has fallen below
  ``reward_drop_fraction`` times the best smoothed reward seen so far; or
* the approximate KL between the learner's and the behaviour policy exceeds ``kl_max``.

A collapse ends the run early; it is recorded, never raised.
"""

from __future__ import annotations

import math
from collections import deque

from pydantic import Field
from stalesim.sim.config_file import StrictModel


class CollapseConfig(StrictModel):
    """Thresholds that declare a run failed."""

    window: int = Field(10, ge=1, le=1_000_000, description="steps in the reward moving average")
    reward_drop_fraction: float = Field(
        0.5, gt=0, lt=1, description="collapsed below this fraction of the best smoothed reward"
    )
    kl_max: float = Field(
        5.0, gt=0, le=1e6, description="collapsed when the per-step approx KL exceeds this"
    )


class CollapseDetector:
    """Feeds on one step's numbers at a time; says why the run collapsed, or ``None``."""

    def __init__(self, config: CollapseConfig) -> None:
        self.config = config
        self._recent: deque[float] = deque(maxlen=config.window)
        self.best_smoothed = -math.inf
        self.reason: str | None = None

    def update(self, *, reward: float, loss: float, grad_norm: float, kl: float) -> str | None:
        if not all(math.isfinite(x) for x in (reward, loss, grad_norm, kl)):
            self.reason = "non-finite loss, gradient, reward or KL"
            return self.reason
        if kl > self.config.kl_max:
            self.reason = f"KL {kl:.3g} > {self.config.kl_max:g}"
            return self.reason
        self._recent.append(reward)
        if len(self._recent) == self.config.window:
            smoothed = sum(self._recent) / len(self._recent)
            self.best_smoothed = max(self.best_smoothed, smoothed)
            if smoothed < self.config.reward_drop_fraction * self.best_smoothed:
                self.reason = (
                    f"smoothed reward {smoothed:.3f} < {self.config.reward_drop_fraction:g} x "
                    f"best {self.best_smoothed:.3f}"
                )
                return self.reason
        return None
