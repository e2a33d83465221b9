"""The scenario: one validated description of a cluster, a model and an RL algorithm.

Sections ``hardware``, ``model``, ``workload``, ``cluster``, ``algorithm`` and ``weight_sync``
mirror the YAML file. :func:`check_feasible` rejects scenarios that cannot run (a model that
does not fit an engine, a KV cache too small for one sequence, ...) with one-line
:class:`ConfigError` messages.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator
from stalesim.sim.config_file import ConfigError, StrictModel
from stalesim.sim.hardware import CATALOG, GpuSpec
from stalesim.sim.lengths import Fixed, LengthDistribution, LogNormal
from stalesim.sim.models import MODELS, ModelSpec

if TYPE_CHECKING:  # derived.py builds on this module
    from stalesim.sim.derived import Derived

Mode = Literal["sync_colocated", "sync", "one_step", "async", "partial_rollout"]
SYNC_MODES = ("sync_colocated", "sync")


class HardwareConfig(StrictModel):
    """A catalog GPU (``gpu``), with any datasheet figure overridden."""

    gpu: str = "H100"
    peak_flops: float | None = Field(default=None, ge=1e9, le=1e17)
    hbm_bytes: float | None = Field(default=None, ge=1e6, le=1e13)
    hbm_bytes_per_s: float | None = Field(default=None, ge=1e6, le=1e14)
    nvlink_bytes_per_s: float | None = Field(default=None, ge=1e6, le=1e14)
    network_bytes_per_s: float | None = Field(default=None, ge=1e6, le=1e14)
    gpus_per_node: int | None = Field(default=None, ge=1, le=1024)
    price_per_gpu_hour: float | None = Field(default=None, ge=0, le=1000)

    @field_validator("gpu")
    @classmethod
    def _known(cls, gpu: str) -> str:
        if gpu not in CATALOG:
            raise ValueError(f"unknown GPU; allowed: {', '.join(CATALOG)}")
        return gpu

    def spec(self) -> GpuSpec:
        base = CATALOG[self.gpu]
        changes = {k: v for k, v in self.model_dump(exclude={"gpu"}).items() if v is not None}
        return base.model_copy(update=changes)


class ModelConfig(StrictModel):
    """A model preset (``preset``), with any size overridden."""

    preset: str = "qwen2.5-7b"
    params: float | None = Field(default=None, ge=1e6, le=1e14)
    active_params: float | None = Field(default=None, ge=1e6, le=1e14)
    layers: int | None = Field(default=None, ge=1, le=1000)
    kv_heads: int | None = Field(default=None, ge=1, le=1024)
    head_dim: int | None = Field(default=None, ge=1, le=4096)
    dtype_bytes: int | None = Field(default=None, ge=1, le=8)

    @field_validator("preset")
    @classmethod
    def _known(cls, preset: str) -> str:
        if preset not in MODELS:
            raise ValueError(f"unknown model preset; allowed: {', '.join(MODELS)}")
        return preset

    def spec(self) -> ModelSpec:
        base = MODELS[self.preset]
        changes = {k: v for k, v in self.model_dump(exclude={"preset"}).items() if v is not None}
        if (
            "params" in changes
            and "active_params" not in changes
            and base.params == base.active_params
        ):
            changes["active_params"] = changes["params"]
        return base.model_copy(update=changes)


class WorkloadConfig(StrictModel):
    """What one learner step consumes: ``B`` prompts of ``G`` responses each."""

    prompts_per_step: int = Field(default=64, ge=1, le=1_000_000)
    group_size: int = Field(default=8, ge=1, le=4096)
    prompt_tokens: LengthDistribution = Fixed(value=512)
    response_tokens: LengthDistribution = LogNormal(mean=2000, sigma=0.8)
    max_prompt_tokens: int = Field(default=4096, ge=1, le=10_000_000)
    max_response_tokens: int = Field(default=8192, ge=1, le=10_000_000)
    group_correlation: float = Field(
        default=0.5, ge=0, le=1, description="share of response-length log-variance per prompt"
    )


class DecodeCoefficients(StrictModel):
    """Measured engine timings: ``t_iter = a_s + beta_s_per_token*C + gamma_s_per_seq*b``."""

    a_s: float = Field(ge=0, le=60)
    beta_s_per_token: float = Field(ge=0, le=1)
    gamma_s_per_seq: float = Field(ge=0, le=60)
    prefill_s_per_token: float = Field(default=0.0, ge=0, le=1)


class LearnerCoefficients(StrictModel):
    """Measured learner timings, replacing the FLOPs-over-MFU estimate."""

    train_s_per_token: float = Field(
        ge=0, le=1, description="forward + backward, per mini-batch token"
    )
    forward_s_per_token: float = Field(default=0.0, ge=0, le=1, description="extra forward passes")
    overhead_s_per_step: float = Field(default=0.0, ge=0, le=86400)


class ClusterConfig(StrictModel):
    """How the GPUs are split into rollout engines and the learner, and how well they run.

    In ``sync_colocated`` mode the learner trains on the rollout GPUs and ``learner_gpus`` is
    not used.
    """

    rollout_engines: int = Field(default=8, ge=1, le=100_000)
    rollout_tp: int = Field(default=1, ge=1, le=1024)
    learner_gpus: int = Field(default=8, ge=1, le=1_000_000)
    max_num_seqs: int = Field(default=256, ge=1, le=100_000)
    memory_reserve_fraction: float = Field(
        default=0.1, ge=0, lt=1, description="HBM kept for activations, graphs, fragmentation"
    )
    rollout_memory_efficiency: float = Field(default=0.7, gt=0, le=1)
    rollout_compute_efficiency: float = Field(default=0.5, gt=0, le=1)
    decode_overhead_s: float = Field(default=0.002, ge=0, le=60, description="per decode iteration")
    learner_mfu: float = Field(default=0.4, gt=0, le=1)
    decode_coefficients: DecodeCoefficients | None = None
    learner_coefficients: LearnerCoefficients | None = None


class AlgorithmConfig(StrictModel):
    """The RL loop: how generation and learning interleave, and what a learner step costs."""

    mode: Mode = "async"
    max_staleness: int = Field(default=2, ge=0, le=100_000)
    inflight_updates: bool = False
    minibatches_per_step: int = Field(default=1, ge=1, le=1_000_000)
    staleness_filter: int | None = Field(
        default=None, ge=0, le=100_000, description="drop groups staler than this when consumed"
    )
    partial_overprovision: float = Field(
        default=0.5, ge=0, le=100, description="partial_rollout: extra groups in flight, share of B"
    )
    round_token_budget: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="partial_rollout: tokens a sequence may generate per round (Kimi k1.5)",
    )
    old_logprob_pass: bool = True
    reference_model: bool = True


class WeightSyncConfig(StrictModel):
    """Publishing new weights from the learner to the rollout engines."""

    bandwidth_bytes_per_s: float | None = Field(
        default=None,
        ge=1e6,
        le=1e30,
        description="default: NVLink when colocated or within one node, else the network; "
        "up to 1e30 (an instant sync, for what-if runs)",
    )
    latency_s: float = Field(default=0.5, ge=0, le=3600)
    pause_policy: Literal["blocking", "overlapped"] = "blocking"


class Scenario(StrictModel):
    """A whole simulated setup."""

    name: str = "custom"
    hardware: HardwareConfig = HardwareConfig()
    model: ModelConfig = ModelConfig()
    workload: WorkloadConfig = WorkloadConfig()
    cluster: ClusterConfig = ClusterConfig()
    algorithm: AlgorithmConfig = AlgorithmConfig()
    weight_sync: WeightSyncConfig = WeightSyncConfig()


def check_consistent(scenario: Scenario) -> None:
    """Raise :class:`ConfigError` when sections contradict each other."""

    b = scenario.workload.prompts_per_step
    m = scenario.algorithm.minibatches_per_step
    if b % m:
        raise ConfigError(
            f"algorithm.minibatches_per_step={m} must divide workload.prompts_per_step={b}"
        )
    # Weights reach the engines once per learner step, so mini-batch m of a step is at least
    # m versions stale in every mode.
    floor = {"one_step": 2 * m - 1}.get(scenario.algorithm.mode, m - 1)
    s_max = scenario.algorithm.max_staleness
    if scenario.algorithm.mode == "async" and s_max < m - 1:
        raise ConfigError(
            f"algorithm.max_staleness={s_max} would never admit the groups of the last "
            f"mini-batch in mode async with {m} mini-batches per step (they are at least "
            f"{m - 1} versions stale); allowed: >= {m - 1}"
        )
    f = scenario.algorithm.staleness_filter
    if f is not None and f < floor:
        raise ConfigError(
            f"algorithm.staleness_filter={f} would drop every group of some mini-batch in "
            f"mode {scenario.algorithm.mode} with {m} mini-batches per step; allowed: >= {floor}"
        )
    if (
        scenario.algorithm.round_token_budget is not None
        and scenario.algorithm.mode != "partial_rollout"
    ):
        raise ConfigError(
            "algorithm.round_token_budget is for algorithm.mode=partial_rollout, "
            f"not {scenario.algorithm.mode}"
        )
    if scenario.algorithm.inflight_updates and scenario.algorithm.mode != "async":
        raise ConfigError(
            f"algorithm.inflight_updates=true needs algorithm.mode=async, not {scenario.algorithm.mode}"
        )


def check_feasible(scenario: Scenario, derived: Derived) -> None:
    """Raise :class:`ConfigError` when the scenario cannot run at all."""
    check_consistent(scenario)
    cluster, work = scenario.cluster, scenario.workload
    gib = 1024**3
    model = scenario.model
    if derived.weight_bytes > derived.engine_usable_bytes:
        sized_by = [f"model.preset={model.preset}"] + [
            f"model.{key}={getattr(model, key):g}"
            for key in ("params", "dtype_bytes")
            if getattr(model, key) is not None
        ]
        raise ConfigError(
            f"{', '.join(sized_by)}: {derived.weight_bytes / gib:.4g} GiB of "
            f"weights do not fit an engine of cluster.rollout_tp={cluster.rollout_tp} x "
            f"{scenario.hardware.gpu} ({derived.engine_usable_bytes / gib:.1f} GiB usable); "
            "raise cluster.rollout_tp or pick a smaller model"
        )
    longest = (
        math.ceil(min(work.prompt_tokens.upper(), work.max_prompt_tokens))
        + work.max_response_tokens
    )
    if derived.kv_tokens_per_engine < longest:
        spec = derived.model
        raise ConfigError(
            f"KV cache of {derived.kv_tokens_per_engine} tokens per engine is too small for one "
            f"sequence of {longest} tokens (prompt + workload.max_response_tokens): a token "
            f"takes {spec.kv_bytes_per_token / 1024:.4g} KiB (2 x model.layers={spec.layers} x "
            f"model.kv_heads={spec.kv_heads} x model.head_dim={spec.head_dim} x "
            f"model.dtype_bytes={spec.dtype_bytes}) of the "
            f"{max(0.0, derived.engine_usable_bytes - derived.weight_bytes) / gib:.3g} GiB left "
            "after the weights; raise cluster.rollout_tp, lower workload.max_response_tokens "
            "or use a smaller model"
        )
    if scenario.algorithm.mode in SYNC_MODES:
        samples = work.prompts_per_step * work.group_size
        slots = cluster.rollout_engines * cluster.max_num_seqs
        if samples > slots:
            raise ConfigError(
                f"algorithm.mode={scenario.algorithm.mode} launches a whole batch at once: "
                f"B*G={samples} samples (workload.prompts_per_step x workload.group_size) but the "
                f"engines hold at most {slots} (cluster.rollout_engines x cluster.max_num_seqs)"
            )
