"""How long an engine's work takes: the decode iteration and the prefill, in one small interface.

A decode iteration over ``b`` live sequences holding ``C`` context tokens takes
``t_iter = a + beta * C + gamma * b``. With a fixed live set the context grows by ``b`` tokens
per iteration, so ``n`` iterations take the closed form
``T(n) = n * (a + gamma*b + beta*C0) + beta * b * n*(n-1)/2``, and the number of iterations that
fit a time span is the root of that quadratic. The coefficients come from a roofline of the
hardware (:func:`roofline`) or from measured engine timings (:func:`from_coefficients`), in the
way Vidur keeps its execution-time predictor separate from the entities it times: the engines
(:mod:`stalesim.sim.engine`) ask this model for every time they need.
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
    # mixture of experts: reading every routed expert takes expert_s; a batch of b sequences
    # reads the share 1 - expert_miss**b of them (expert_miss = 1 - k/E)
    expert_s: float = 0.0
    expert_miss: float = 1.0

    def fixed_s(self, live: float) -> float:
        """The part of an iteration that does not grow with context or per sequence: ``a``
        plus, for a mixture of experts, reading the experts the batch touches."""
        if self.expert_s:
            return self.a_s + self.expert_s * (1.0 - self.expert_miss**live)
        return self.a_s

    def iteration_s(self, live: int, context_tokens: float) -> float:
        """One decode iteration of ``live`` sequences holding ``context_tokens`` tokens."""
        return (
            self.fixed_s(live)
            + self.beta_s_per_token * context_tokens
            + self.gamma_s_per_seq * live
        )

    def iterations_s(self, n: int, live: int, context_tokens: float) -> float:
        """``n`` iterations of a fixed live set whose context starts at ``context_tokens``."""
        first = self.a_s + self.beta_s_per_token * context_tokens + self.gamma_s_per_seq * live
        if self.expert_s:
            first += self.expert_s * (1.0 - self.expert_miss**live)
        return n * first + self.beta_s_per_token * live * n * (n - 1) * 0.5

    def _root(self, span_s: float, live: int, context_tokens: float) -> float:
        # the real n at which iterations_s(n) == span_s
        first = self.a_s + self.beta_s_per_token * context_tokens + self.gamma_s_per_seq * live
        if self.expert_s:
            first += self.expert_s * (1.0 - self.expert_miss**live)
        q = self.beta_s_per_token * live * 0.5
        lin = first - q
        if q > 0:
            return (-lin + math.sqrt(lin * lin + 4.0 * q * span_s)) / (2.0 * q)
        return span_s / first

    def iterations_within(self, span_s: float, live: int, context_tokens: float) -> int:
        """The fewest iterations whose total time reaches ``span_s`` (0 when ``span_s <= 0``)."""
        if span_s <= 0 or live == 0:
            return 0
        n = max(math.ceil(self._root(span_s, live, context_tokens) - 1e-9), 0)
        while self.iterations_s(n, live, context_tokens) < span_s * (1 - 1e-12):
            n += 1
        return n

    def iterations_before(self, span_s: float, live: int, context_tokens: float) -> int:
        """The most iterations that end within ``span_s`` (up to a rounding tolerance)."""
        if span_s <= 0 or live == 0:
            return 0
        return max(math.floor(self._root(span_s, live, context_tokens) + 1e-9), 0)

    def prefill_s(self, tokens: float) -> float:
        """Prefill of ``tokens`` prompt (or recomputed) tokens."""
        return self.prefill_s_per_token * tokens

    def as_dict(self) -> dict[str, float | str]:
        return {
            "a_s": self.a_s,
            "beta_s_per_token": self.beta_s_per_token,
            "gamma_s_per_seq": self.gamma_s_per_seq,
            "prefill_s_per_token": self.prefill_s_per_token,
            "source": self.source,
        }


def tp_allreduce_bus_bytes_per_s(gpu: GpuSpec, efficiency: float) -> float:
    """Bus bandwidth of an all-reduce among the GPUs of one engine (one node, over NVLink)."""
    return gpu.nvlink_one_way_bytes_per_s * efficiency


def roofline(
    gpu: GpuSpec,
    model: ModelSpec,
    tp: int,
    *,
    memory_efficiency: float,
    compute_efficiency: float,
    overhead_s: float,
    tp_allreduce_latency_s: float = 0.0,
    allreduce_efficiency: float = 1.0,
) -> DecodeTimeModel:
    """Coefficients from bytes over bandwidth and FLOPs over compute, summed (a linear model).

    Each iteration reads every weight once (``a``), the KV cache of every live token (``beta``)
    and spends ``2 * active_params`` FLOPs per sequence (``gamma``); a prefill token costs
    ``2 * active_params`` FLOPs. A mixture-of-experts model reads its shared weights every
    iteration and, of its routed experts, those the batch's ``b`` tokens touch: the expected
    share ``1 - (1 - k/E)^b`` when each token picks ``k`` of ``E`` (``expert_s`` reads them
    all; 1 - (15/16)^b for Qwen3's 8 of 128 is 6% at batch 1, 64% at 16, 98% at 64).

    With tensor parallelism (``tp > 1``) every layer all-reduces its attention and its MLP
    output (Megatron-LM's layout, Shoeybi et al. 2019): ``2 * layers`` all-reduces per
    iteration, each paying ``tp_allreduce_latency_s`` (into ``a``) and sending
    ``2 (tp-1)/tp * hidden_size * dtype_bytes`` per sequence over NVLink (into ``gamma``, and
    per token into the prefill).
    """
    bandwidth = tp * gpu.hbm_bytes_per_s * memory_efficiency
    compute = tp * gpu.peak_flops * compute_efficiency
    comm_latency_s = 0.0
    comm_s_per_token = 0.0
    if tp > 1:
        allreduces = 2 * model.layers
        comm_latency_s = allreduces * tp_allreduce_latency_s
        token_bytes = model.hidden_size * model.dtype_bytes
        comm_s_per_token = (
            allreduces
            * 2.0
            * (tp - 1)
            / tp
            * token_bytes
            / tp_allreduce_bus_bytes_per_s(gpu, allreduce_efficiency)
        )
    return DecodeTimeModel(
        a_s=overhead_s + (model.weight_bytes - model.expert_bytes) / bandwidth + comm_latency_s,
        beta_s_per_token=model.kv_bytes_per_token / bandwidth,
        gamma_s_per_seq=2.0 * model.active_params / compute + comm_s_per_token,
        prefill_s_per_token=2.0 * model.active_params / compute + comm_s_per_token,
        source="roofline",
        expert_s=model.expert_bytes / bandwidth,
        expert_miss=1.0 - model.experts_per_token / model.experts if model.experts else 1.0,
    )


def from_coefficients(
    a_s: float, beta_s_per_token: float, gamma_s_per_seq: float, prefill_s_per_token: float
) -> DecodeTimeModel:
    """Coefficients fitted to measured engine timings."""
    return DecodeTimeModel(a_s, beta_s_per_token, gamma_s_per_seq, prefill_s_per_token, "measured")
