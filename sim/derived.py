"""Quantities a scenario implies: memory budget, engine time model, learner cost, sync time."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from stalesim.sim.hardware import GpuSpec
from stalesim.sim.learner import LearnerCost, learner_cost
from stalesim.sim.models import ModelSpec
from stalesim.sim.modes import MODES
from stalesim.sim.scenario import Scenario, check_feasible
from stalesim.sim.time_model import DecodeTimeModel, from_coefficients, roofline
from stalesim.sim.weight_sync import weight_sync_s


@dataclass(frozen=True)
class Derived:
    """Everything the simulation needs that is computed rather than configured."""

    gpu: GpuSpec
    model: ModelSpec
    time_model: DecodeTimeModel
    learner: LearnerCost
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
            "learner_train_s_per_token": self.learner.train_s_per_token,
            "learner_forward_s_per_token": self.learner.forward_s_per_token,
            "learner_overhead_s_per_step": self.learner.overhead_s_per_step,
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
    colocated = MODES[scenario.algorithm.mode].colocated
    tp = cluster.rollout_tp
    usable = tp * gpu.hbm_bytes * (1.0 - cluster.memory_reserve_fraction)
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
        )
    rollout_gpus = cluster.rollout_engines * tp
    learner_gpus = rollout_gpus if colocated else cluster.learner_gpus
    derived = Derived(
        gpu=gpu,
        model=model,
        time_model=time_model,
        learner=learner_cost(
            gpu,
            model,
            learner_gpus,
            cluster.learner_mfu,
            old_logprob_pass=scenario.algorithm.old_logprob_pass,
            reference_model=scenario.algorithm.reference_model,
        )
        if cluster.learner_coefficients is None
        else LearnerCost(
            train_s_per_token=cluster.learner_coefficients.train_s_per_token,
            forward_s_per_token=cluster.learner_coefficients.forward_s_per_token,
            gpus=learner_gpus,
            overhead_s_per_step=cluster.learner_coefficients.overhead_s_per_step,
        ),
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
