"""How long an engine's work takes: the decode iteration and the prefill, in one small interface.

A decode iteration over ``b`` live sequences holding ``C`` context tokens takes
``t_iter = a + beta * C + gamma * b``. With a fixed live set the context grows by ``b`` tokens
per iteration, so ``n`` iterations take the closed form
``T(n) = n * (a + gamma*b + beta*C0) + beta * b * n*(n-1)/2``, and the number of iterations that
fit a time span is the root of that quadratic. The coefficients come from a roofline of the
hardware (:func:`roofline`) or from measured engine timings (:func:`from_coefficients`), in the
way Vidur keeps its execution-time predictor separate from the entities it times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from stalesim.sim.hardware import GpuSpec
from stalesim.sim.models import ModelSpec


@dataclass(frozen=True)
class DecodeTimeModel:
    """Linear decode iteration time plus a per-token prefill cost, for one engine."""

    a_s: float
    beta_s_per_token: float
    gamma_s_per_seq: float
    prefill_s_per_token: float
    source: str = "roofline"

    def iteration_s(self, live: int, context_tokens: float) -> float:
        """One decode iteration of ``live`` sequences holding ``context_tokens`` tokens."""
        return self.a_s + self.beta_s_per_token * context_tokens + self.gamma_s_per_seq * live

    def iterations_s(self, n: int, live: int, context_tokens: float) -> float:
        """``n`` iterations of a fixed live set whose context starts at ``context_tokens``."""
        first = self.iteration_s(live, context_tokens)
        return n * first + self.beta_s_per_token * live * n * (n - 1) / 2.0

    def iterations_within(self, span_s: float, live: int, context_tokens: float) -> int:
        """The fewest iterations whose total time reaches ``span_s`` (0 when ``span_s <= 0``)."""
        if span_s <= 0 or live == 0:
            return 0
        first = self.iteration_s(live, context_tokens)
        q = self.beta_s_per_token * live / 2.0
        lin = first - q
        if q > 0:
            n = math.ceil((-lin + math.sqrt(lin * lin + 4.0 * q * span_s)) / (2.0 * q) - 1e-9)
        else:
            n = math.ceil(span_s / first - 1e-9)
        n = max(n, 0)
        while self.iterations_s(n, live, context_tokens) < span_s * (1 - 1e-12):
            n += 1
        return n

    def as_dict(self) -> dict[str, float | str]:
        return {
            "a_s": self.a_s,
            "beta_s_per_token": self.beta_s_per_token,
            "gamma_s_per_seq": self.gamma_s_per_seq,
            "prefill_s_per_token": self.prefill_s_per_token,
            "source": self.source,
        }


def roofline(
    gpu: GpuSpec,
    model: ModelSpec,
    tp: int,
    *,
    memory_efficiency: float,
    compute_efficiency: float,
    overhead_s: float,
) -> DecodeTimeModel:
    """Coefficients from bytes over bandwidth and FLOPs over compute, summed (a linear model).

    Each iteration reads every weight once (``a``), the KV cache of every live token (``beta``)
    and spends ``2 * active_params`` FLOPs per sequence (``gamma``); a prefill token costs
    ``2 * active_params`` FLOPs. Mixture-of-experts models read all experts at RL batch sizes.
    """
    bandwidth = tp * gpu.hbm_bytes_per_s * memory_efficiency
    compute = tp * gpu.peak_flops * compute_efficiency
    return DecodeTimeModel(
        a_s=overhead_s + model.weight_bytes / bandwidth,
        beta_s_per_token=model.kv_bytes_per_token / bandwidth,
        gamma_s_per_seq=2.0 * model.active_params / compute,
        prefill_s_per_token=2.0 * model.active_params / compute,
        source="roofline",
    )


def from_coefficients(
    a_s: float, beta_s_per_token: float, gamma_s_per_seq: float, prefill_s_per_token: float
) -> DecodeTimeModel:
    """Coefficients fitted to measured engine timings."""
    return DecodeTimeModel(a_s, beta_s_per_token, gamma_s_per_seq, prefill_s_per_token, "measured")
