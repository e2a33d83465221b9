"""Quantities a scenario implies: memory budget, engine time model, learner cost, sync time."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from stalesim.sim.hardware import GpuSpec
from stalesim.sim.learner import (
    LEARNER_MEMORY_RESERVE,
    TRAINING_STATE_BYTES_PER_PARAM,
    LearnerCost,
    LearnerMemory,
    cluster_dp_efficiency,
    colocated_switch_s,
    learner_cost,
    learner_memory,
    optimizer_step_s,
)
from stalesim.sim.models import ModelSpec
from stalesim.sim.modes import MODES
from stalesim.sim.scenario import AlgorithmConfig, Scenario, check_feasible, longest_sequence
from stalesim.sim.time_model import DecodeTimeModel, from_coefficients, roofline
from stalesim.sim.weight_sync import weight_sync_s


def old_logprob_pass(algorithm: AlgorithmConfig) -> bool:
    """Whether the learner runs the old-policy forward pass: as set, or the mode's recipe."""
    if algorithm.old_logprob_pass is not None:
        return algorithm.old_logprob_pass
    return MODES[algorithm.mode].recomputes_old_logprobs


@dataclass(frozen=True)
class Derived:
    """Everything the simulation needs that is computed rather than configured."""

    gpu: GpuSpec
    model: ModelSpec
    time_model: DecodeTimeModel
    learner: LearnerCost
    learner_memory: LearnerMemory
    learner_usable_bytes: float
    sync_s: float
    weight_bytes: float
    engine_usable_bytes: float
    kv_tokens_per_engine: int
    rollout_gpus: int
    learner_gpus: int
    total_gpus: int
    colocated: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu.model_dump(),
            "model": self.model.model_dump(),
            "time_model": self.time_model.as_dict(),
            "learner": self.learner.as_dict(),
            "learner_memory": {
                "state_bytes": self.learner_memory.state_bytes,
                "activation_bytes": self.learner_memory.activation_bytes,
                "usable_bytes": self.learner_usable_bytes,
            },
            "weight_sync_s": self.sync_s,
            "weight_bytes": self.weight_bytes,
            "engine_usable_bytes": self.engine_usable_bytes,
            "kv_tokens_per_engine": self.kv_tokens_per_engine,
            "rollout_gpus": self.rollout_gpus,
            "learner_gpus": self.learner_gpus,
            "total_gpus": self.total_gpus,
            "colocated": self.colocated,
        }


def derive(scenario: Scenario) -> Derived:
    """Resolve presets and compute the derived quantities; raise ConfigError if infeasible."""
    gpu = scenario.hardware.spec()
    model = scenario.model.spec()
    cluster = scenario.cluster
    algo = scenario.algorithm
    colocated = MODES[algo.mode].colocated
    tp = cluster.rollout_tp
    rollout_gpus = cluster.rollout_engines * tp
    learner_gpus = rollout_gpus if colocated else cluster.learner_gpus
    usable = tp * gpu.hbm_bytes * (1.0 - cluster.memory_reserve_fraction)
    if colocated and not cluster.colocated_offload:
        # the training state stays on the GPUs while they generate
        usable -= tp * TRAINING_STATE_BYTES_PER_PARAM * model.params / learner_gpus
    kv_tokens = max(0, math.floor((usable - model.weight_bytes) / model.kv_bytes_per_token))
    if cluster.decode_coefficients is not None:
        c = cluster.decode_coefficients
        time_model = from_coefficients(
            c.a_s, c.beta_s_per_token, c.gamma_s_per_seq, c.prefill_s_per_token
        )
    else:
        time_model = roofline(
            gpu,
            model,
            tp,
            memory_efficiency=cluster.rollout_memory_efficiency,
            compute_efficiency=cluster.rollout_compute_efficiency,
            overhead_s=cluster.decode_overhead_s,
            tp_allreduce_latency_s=cluster.tp_allreduce_latency_s,
            allreduce_efficiency=cluster.allreduce_efficiency,
        )
    derived = Derived(
        gpu=gpu,
        model=model,
        time_model=time_model,
        learner=derive_learner(scenario, gpu, model, learner_gpus),
        # a colocated engine sleeps while the learner trains (vLLM sleep mode frees its
        # weights and KV cache), so the learner has each GPU's usable memory either way
        learner_memory=learner_memory(model, learner_gpus, longest_sequence(scenario.workload)),
        learner_usable_bytes=gpu.hbm_bytes * (1.0 - LEARNER_MEMORY_RESERVE),
        sync_s=weight_sync_s(
            gpu,
            model,
            same_node=colocated or rollout_gpus + learner_gpus <= gpu.gpus_per_node,
            bandwidth_bytes_per_s=scenario.weight_sync.bandwidth_bytes_per_s,
            latency_s=scenario.weight_sync.latency_s,
        ),
        weight_bytes=model.weight_bytes,
        engine_usable_bytes=usable,
        kv_tokens_per_engine=kv_tokens,
        rollout_gpus=rollout_gpus,
        learner_gpus=learner_gpus,
        total_gpus=rollout_gpus if colocated else rollout_gpus + learner_gpus,
        colocated=colocated,
    )
    check_feasible(scenario, derived)
    return derived


def learner_mfus(scenario: Scenario, gpu: GpuSpec) -> tuple[float, float]:
    """Training and forward-only MFU: ``cluster.learner_mfu`` / ``learner_forward_mfu`` where
    set, else the GPU's own; a set training MFU scales the GPU's forward-over-training ratio."""
    cluster = scenario.cluster
    train = gpu.train_mfu if cluster.learner_mfu is None else cluster.learner_mfu
    forward = cluster.learner_forward_mfu
    if forward is None:
        forward = min(1.0, train * gpu.forward_mfu / gpu.train_mfu)
    return train, forward


def derive_learner(scenario: Scenario, gpu: GpuSpec, model: ModelSpec, gpus: int) -> LearnerCost:
    """The learner's cost: measured per-GPU coefficients when given, else the roofline."""
    cluster, algo = scenario.cluster, scenario.algorithm
    efficiency = cluster_dp_efficiency(cluster, gpus)
    switch_s = 0.0
    if MODES[algo.mode].colocated:
        switch_s = colocated_switch_s(
            gpu,
            model,
            gpus,
            offload=cluster.colocated_offload,
            host_link_efficiency=cluster.host_link_efficiency,
            latency_s=cluster.colocated_switch_latency_s,
        )
    recipe = {
        "old_logprob_pass": old_logprob_pass(algo),
        "reference_model": algo.reference_model,
    }
    measured = cluster.learner_coefficients
    if measured is not None:
        forward = measured.forward_gpu_s_per_token
        return LearnerCost(
            train_gpu_s_per_token=measured.train_gpu_s_per_token,
            forward_gpu_s_per_token=measured.train_gpu_s_per_token / 3.0
            if forward is None
            else forward,
            gpus=gpus,
            dp_efficiency=efficiency,
            step_overhead_s=measured.step_overhead_s,
            switch_s=switch_s,
            source="measured",
            **recipe,
        )
    return learner_cost(
        gpu,
        model,
        gpus,
        mfu=learner_mfus(scenario, gpu)[0],
        forward_mfu=learner_mfus(scenario, gpu)[1],
        dp_efficiency=efficiency,
        step_overhead_s=optimizer_step_s(
            gpu,
            model,
            gpus,
            allreduce_efficiency=cluster.allreduce_efficiency,
            memory_efficiency=cluster.rollout_memory_efficiency,
        ),
        switch_s=switch_s,
        **recipe,
    )
