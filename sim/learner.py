"""What the learner's work costs: the phases of one optimizer step, and the colocated role switch.

An optimizer step over ``T`` tokens whose sequences have lengths ``T_s`` runs, in order:

* ``old_logprob`` — one forward-only pass for the old policy's log-probs, when the recipe
  recomputes them (``algorithm.old_logprob_pass``);
* ``reference`` — one forward-only pass of the reference model, when the loss has a KL term
  (``algorithm.reference_model``);
* ``update`` — forward and backward, then the optimizer step: the gradient all-reduce and the
  Adam update.

The roofline prices a pass from its FLOPs at a per-GPU rate: ``6 * active_params`` per trained
token (``2 *`` for a forward-only pass) plus causal attention, ``6 * layers * d_attn * T_s**2``
per sequence (``2 *`` forward-only), so long sequences cost more per token (PaLM, Chowdhery et
al. 2022, appendix B counts ``6N + 12 * L * H * Q * T`` FLOPs per token for full attention;
a causal mask halves the attention term, as FlashAttention skips the masked tiles). ``n``
learner GPUs work at ``n * dp_efficiency(n)`` times one GPU's rate. Measured per-GPU
coefficients (:class:`stalesim.sim.scenario.LearnerCoefficients`) replace the roofline's: a
step of ``T`` tokens then takes ``T * x / (n * dp_efficiency(n))`` plus ``step_overhead_s``.

A colocated learner trains on the rollout GPUs, so every learner step also switches them
between roles (:func:`colocated_switch_s`): the inference engine sleeps and wakes, and the
training state is offloaded to host memory and brought back over PCIe. The weight reshard from
the training layout to the inference layout is the colocated weight sync
(:mod:`stalesim.sim.weight_sync`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from stalesim.sim.hardware import GpuSpec
from stalesim.sim.models import ModelSpec

#: Mixed-precision Adam keeps 16 bytes per parameter of training state: bf16 weights and
#: gradients (2 + 2) and fp32 master weights, momentum and variance (12) (ZeRO, Rajbhandari et
#: al. 2020, section 3.1). Offloading it moves these bytes to host memory and back.
TRAINING_STATE_BYTES_PER_PARAM = 16.0
#: The Adam update streams the fp32 state through HBM once: it reads weights, momentum,
#: variance and the fp32 gradient (16 bytes) and writes weights, momentum, variance and the
#: bf16 copy (14 bytes).
OPTIMIZER_HBM_BYTES_PER_PARAM = 30.0
#: Gradients are reduced in bf16 (PyTorch FSDP ``MixedPrecision(reduce_dtype=bfloat16)``, the
#: verl and OpenRLHF default), two bytes per parameter.
GRADIENT_BYTES_PER_PARAM = 2.0

#: Activation bytes one transformer layer holds per token and unit of hidden size while its
#: backward runs: ``34 s b h`` in 16-bit (Korthikanti et al. 2022, "Reducing Activation
#: Recomputation in Large Transformer Models", eq. 1, without the ``5 a s / h`` attention-score
#: term that FlashAttention never stores).
LAYER_ACTIVATION_BYTES = 34.0
#: With activation checkpointing each layer keeps only its bf16 input between passes.
CHECKPOINT_BYTES = 2.0
#: Share of a learner GPU's memory not available to tensors (CUDA context, NCCL buffers,
#: allocator fragmentation); the engines' ``cluster.memory_reserve_fraction`` default.
LEARNER_MEMORY_RESERVE = 0.1

PHASES = ("old_logprob", "reference", "update")


@dataclass(frozen=True)
class LearnerMemory:
    """What one learner GPU holds while it trains, in bytes.

    The training state (bf16 weights and gradients, fp32 master weights and Adam moments:
    :data:`TRAINING_STATE_BYTES_PER_PARAM` per parameter) is sharded evenly over the learner's
    GPUs, as FSDP (verl) and ZeRO-3 (OpenRLHF) do; activations are those of one micro-batch of
    ``tokens`` tokens with activation checkpointing: every layer's bf16 input, one layer's full
    working set while it recomputes and runs backward, and two layers' parameters gathered
    unsharded (the one running and the one prefetched). Logits are not counted (trainers chunk
    the log-prob computation).
    """

    state_bytes: float
    activation_bytes: float
    gpus: int
    tokens: int

    @property
    def total_bytes(self) -> float:
        return self.state_bytes + self.activation_bytes


def learner_memory(model: ModelSpec, gpus: int, tokens: int) -> LearnerMemory:
    """Per-GPU memory of a learner of ``gpus`` GPUs training micro-batches of ``tokens``."""
    state = TRAINING_STATE_BYTES_PER_PARAM * model.params / gpus
    checkpoints = CHECKPOINT_BYTES * model.hidden_size * tokens * model.layers
    working = LAYER_ACTIVATION_BYTES * model.hidden_size * tokens
    gathered = 2.0 * model.dtype_bytes * model.params / model.layers
    return LearnerMemory(state, checkpoints + working + gathered, gpus, tokens)


def dp_efficiency(gpus: int, linear_gpus: int, scaling_per_doubling: float) -> float:
    """Share of linear speed-up ``gpus`` data-parallel learner GPUs keep.

    Up to ``linear_gpus`` none is lost beyond the explicit gradient all-reduce (priced in
    :func:`optimizer_step_s`): FSDP is measured to scale flat over tens to a hundred GPUs.
    Each doubling beyond keeps ``scaling_per_doubling`` of the per-GPU rate (stragglers, load
    imbalance, network at thousands of GPUs).
    """
    if gpus <= linear_gpus:
        return 1.0
    return scaling_per_doubling ** math.log2(gpus / linear_gpus)


def cluster_dp_efficiency(cluster: Any, gpus: int) -> float:
    """:func:`dp_efficiency` with the cluster's own settings (``learner_dp_linear_gpus``,
    ``learner_dp_scaling``): the one rule the simulator and the log calibration share."""
    return dp_efficiency(gpus, cluster.learner_dp_linear_gpus, cluster.learner_dp_scaling)


def allreduce_bus_bytes_per_s(gpu: GpuSpec, gpus: int, efficiency: float) -> float:
    """Bus bandwidth of a ring all-reduce over ``gpus`` GPUs (nccl-tests' ``busbw``).

    Within a node each GPU sends over NVLink, one direction; across nodes NCCL runs one ring
    per NIC, so the bus bandwidth is bounded by the node's NICs together
    (``gpus_per_node * network``) as well as by NVLink.
    """
    one_way = gpu.nvlink_one_way_bytes_per_s
    if gpus > gpu.gpus_per_node:
        one_way = min(one_way, gpu.gpus_per_node * gpu.network_bytes_per_s)
    return one_way * efficiency


def allreduce_s(nbytes: float, gpus: int, bus_bytes_per_s: float, latency_s: float = 0.0) -> float:
    """A ring all-reduce of ``nbytes`` over ``gpus`` GPUs: each sends ``2 (n-1)/n`` of it."""
    if gpus <= 1:
        return 0.0
    return latency_s + 2.0 * (gpus - 1) / gpus * nbytes / bus_bytes_per_s


def optimizer_step_s(
    gpu: GpuSpec,
    model: ModelSpec,
    gpus: int,
    *,
    allreduce_efficiency: float,
    memory_efficiency: float,
) -> float:
    """Fixed cost of one optimizer step: the gradient all-reduce over the learner's GPUs, then
    the Adam update of each GPU's shard of the state (ZeRO/FSDP shards it over ``gpus``),
    streamed through HBM at ``memory_efficiency`` of its bandwidth. The all-reduce is not
    overlapped with the backward pass (an upper bound; it is small next to training)."""
    grads = GRADIENT_BYTES_PER_PARAM * model.params
    reduce_s = allreduce_s(grads, gpus, allreduce_bus_bytes_per_s(gpu, gpus, allreduce_efficiency))
    update_s = (
        OPTIMIZER_HBM_BYTES_PER_PARAM
        * model.params
        / gpus
        / (gpu.hbm_bytes_per_s * memory_efficiency)
    )
    return reduce_s + update_s


def colocated_switch_s(
    gpu: GpuSpec,
    model: ModelSpec,
    gpus: int,
    *,
    offload: bool,
    host_link_efficiency: float,
    latency_s: float,
) -> float:
    """One learner step's role switches on colocated GPUs: the engine sleeps and wakes
    (``latency_s``), and with ``offload`` each GPU's shard of the training state goes to host
    memory after training and comes back before the next (twice over PCIe)."""
    moved = 2.0 * TRAINING_STATE_BYTES_PER_PARAM * model.params / gpus if offload else 0.0
    return latency_s + moved / (gpu.host_bytes_per_s * host_link_efficiency)


@dataclass(frozen=True)
class LearnerCost:
    """Per-GPU costs of the learner's passes, and what ``gpus`` GPUs make of them.

    ``*_gpu_s_per_token`` are GPU-seconds per token (the linear layers); ``*_gpu_s_per_sq_token``
    GPU-seconds per squared sequence length (causal attention). ``step_overhead_s`` is paid
    once per optimizer step, ``switch_s`` once per learner step (colocated only).
    """

    train_gpu_s_per_token: float
    forward_gpu_s_per_token: float
    gpus: int
    dp_efficiency: float = 1.0
    train_gpu_s_per_sq_token: float = 0.0
    forward_gpu_s_per_sq_token: float = 0.0
    step_overhead_s: float = 0.0
    old_logprob_pass: bool = True
    reference_model: bool = True
    switch_s: float = 0.0
    source: str = "roofline"

    @property
    def effective_gpus(self) -> float:
        return self.gpus * self.dp_efficiency

    def train_s(self, tokens: float, sq_context_tokens: float = 0.0) -> float:
        """Forward and backward over ``tokens`` tokens whose sequence lengths' squares sum to
        ``sq_context_tokens``."""
        gpu_s = (
            self.train_gpu_s_per_token * tokens + self.train_gpu_s_per_sq_token * sq_context_tokens
        )
        return gpu_s / self.effective_gpus

    def forward_s(self, tokens: float, sq_context_tokens: float = 0.0) -> float:
        """One forward-only pass over the same tokens."""
        gpu_s = (
            self.forward_gpu_s_per_token * tokens
            + self.forward_gpu_s_per_sq_token * sq_context_tokens
        )
        return gpu_s / self.effective_gpus

    def step_phases(self, tokens: float, sq_context_tokens: float) -> list[tuple[str, float]]:
        """The phases of one optimizer step, in order, with their seconds."""
        phases: list[tuple[str, float]] = []
        if self.old_logprob_pass or self.reference_model:
            forward = self.forward_s(tokens, sq_context_tokens)
            if self.old_logprob_pass:
                phases.append(("old_logprob", forward))
            if self.reference_model:
                phases.append(("reference", forward))
        phases.append(("update", self.train_s(tokens, sq_context_tokens) + self.step_overhead_s))
        return phases

    def step_s(self, tokens: float, sq_context_tokens: float) -> float:
        """All phases of one optimizer step."""
        return sum(s for _, s in self.step_phases(tokens, sq_context_tokens))

    def as_dict(self) -> dict[str, float | int | bool | str]:
        return {
            "train_gpu_s_per_token": self.train_gpu_s_per_token,
            "forward_gpu_s_per_token": self.forward_gpu_s_per_token,
            "train_gpu_s_per_sq_token": self.train_gpu_s_per_sq_token,
            "forward_gpu_s_per_sq_token": self.forward_gpu_s_per_sq_token,
            "gpus": self.gpus,
            "dp_efficiency": self.dp_efficiency,
            "step_overhead_s": self.step_overhead_s,
            "old_logprob_pass": self.old_logprob_pass,
            "reference_model": self.reference_model,
            "switch_s": self.switch_s,
            "source": self.source,
        }


def learner_cost(
    gpu: GpuSpec,
    model: ModelSpec,
    gpus: int,
    *,
    mfu: float,
    forward_mfu: float,
    dp_efficiency: float,
    step_overhead_s: float,
    old_logprob_pass: bool,
    reference_model: bool,
    switch_s: float = 0.0,
) -> LearnerCost:
    """The roofline: FLOPs per token at ``mfu`` (training) or ``forward_mfu`` (forward-only)
    of one GPU's peak."""
    attention = model.layers * model.attention_dim
    train_rate = gpu.peak_flops * mfu
    forward_rate = gpu.peak_flops * forward_mfu
    return LearnerCost(
        train_gpu_s_per_token=6.0 * model.active_params / train_rate,
        forward_gpu_s_per_token=2.0 * model.active_params / forward_rate,
        gpus=gpus,
        dp_efficiency=dp_efficiency,
        train_gpu_s_per_sq_token=6.0 * attention / train_rate,
        forward_gpu_s_per_sq_token=2.0 * attention / forward_rate,
        step_overhead_s=step_overhead_s,
        old_logprob_pass=old_logprob_pass,
        reference_model=reference_model,
        switch_s=switch_s,
    )
