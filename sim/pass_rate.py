"""How often a prompt's responses earn the reward: a Beta distribution of per-prompt pass rates.

Dynamic sampling (DAPO, arXiv 2503.14476) discards a group whose ``G`` rewards are all equal
(every response right, or every one wrong): its advantages are all zero and it teaches
nothing. With a pass rate ``p ~ Beta(alpha, beta)`` per prompt and ``G`` independent responses,
a group is uniform with probability ``E[p^G + (1-p)^G] = (B(alpha+G, beta) + B(alpha,
beta+G)) / B(alpha, beta)``.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field
from scipy.special import betaln
from stalesim.common.config_file import StrictModel


class BetaPassRate(StrictModel):
    """Per-prompt pass rate ``p ~ Beta(alpha, beta)``; the default is uniform on [0, 1]."""

    alpha: float = Field(default=1.0, gt=0, le=1e4)
    beta: float = Field(default=1.0, gt=0, le=1e4)

    def uniform_probability(self, group_size: int) -> float:
        """Probability that all ``group_size`` rewards of a group are equal."""
        a, b, g = self.alpha, self.beta, group_size
        base = betaln(a, b)
        return math.exp(betaln(a + g, b) - base) + math.exp(betaln(a, b + g) - base)

    def sample_uniform(self, rng: np.random.Generator, groups: int, group_size: int) -> np.ndarray:
        """For each of ``groups`` prompts: are all its ``group_size`` rewards equal?"""
        passed = rng.binomial(group_size, rng.beta(self.alpha, self.beta, groups))
        return (passed == 0) | (passed == group_size)
