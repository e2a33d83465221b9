"""Collapse detection: when a training run has failed and should stop.

A run has collapsed at step ``k`` when, after step ``k``:

* the loss, the gradient norm, the reward or the drift is NaN or infinite; or
* the smoothed reward (mean of the last ``window`` steps) has fallen below
  ``reward_drop_fraction`` times the best smoothed reward seen so far; or
* the policy moved more than ``drift_kl_max`` in one learner step: the KL between the learner
  before and after the step's updates, measured on the learner's own fresh samples
  (``KL(π_v ‖ π_v+m)``). It depends on the step size, not on how stale the training batch was,
  so it does not grow with the staleness by construction; or
* (off by default) the approximate KL between the behaviour policy and the learner on the
  consumed batch exceeds ``kl_max``. That KL includes the ``S`` versions of lag between the two
  policies, so it grows with the staleness by construction, and a rule on it calls high-S runs
  failed for being stale rather than for being broken; it is kept only for old configs.

A collapse ends the run early; it is recorded, never raised. Ending below the warm start's
reward is a failure too, but it can only be judged at the end: the fit applies it
(``stalesim.validate.law.failure``).
"""

from __future__ import annotations

import math
from collections import deque

from pydantic import Field
from stalesim.common.config_file import StrictModel


class CollapseConfig(StrictModel):
    """Thresholds that declare a run failed."""

    window: int = Field(10, ge=1, le=1_000_000, description="steps in the reward moving average")
    reward_drop_fraction: float = Field(
        0.5, gt=0, lt=1, description="collapsed below this fraction of the best smoothed reward"
    )
    drift_kl_max: float | None = Field(
        2.0,
        gt=0,
        le=1e6,
        description="collapsed when one learner step moves the policy by more than this KL "
        "(nats per token, on the learner's own samples); None: no drift rule",
    )
    kl_max: float | None = Field(
        None,
        gt=0,
        le=1e6,
        description="collapsed when KL(behaviour || learner) exceeds this; grows with S by "
        "construction, so off by default",
    )


class CollapseDetector:
    """Feeds on one step's numbers at a time; says why the run collapsed, or ``None``."""

    def __init__(self, config: CollapseConfig) -> None:
        self.config = config
        self._recent: deque[float] = deque(maxlen=config.window)
        self.best_smoothed = -math.inf
        self.reason: str | None = None

    def update(
        self, *, reward: float, loss: float, grad_norm: float, kl: float, drift_kl: float = 0.0
    ) -> str | None:
        if not all(math.isfinite(x) for x in (reward, loss, grad_norm, kl, drift_kl)):
            self.reason = "non-finite loss, gradient, reward or KL"
            return self.reason
        if self.config.drift_kl_max is not None and drift_kl > self.config.drift_kl_max:
            self.reason = f"drift KL {drift_kl:.3g} > {self.config.drift_kl_max:g}"
            return self.reason
        if self.config.kl_max is not None and kl > self.config.kl_max:
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
