"""The scenario: one validated description of a cluster, a model and an RL algorithm.

Sections ``hardware``, ``model``, ``workload``, ``cluster``, ``algorithm``, ``weight_sync`` and
``target`` mirror the YAML file. :func:`check_feasible` rejects scenarios that cannot run (a model that
does not fit an engine, a KV cache too small for one sequence, ...) with one-line
:class:`ConfigError` messages.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator
from stalesim.common.config_file import ConfigError, StrictModel
from stalesim.sim.hardware import CATALOG, GpuSpec
from stalesim.sim.lengths import Fixed, LengthDistribution, LogNormal
from stalesim.sim.models import MODELS, ModelSpec
from stalesim.sim.modes import MODES
from stalesim.sim.pass_rate import BetaPassRate

if TYPE_CHECKING:  # derived.py builds on this module
    from stalesim.sim.derived import Derived

# a group with all rewards equal this often or more makes dynamic sampling hopeless
MAX_UNIFORM_PROBABILITY = 0.95


class HardwareConfig(StrictModel):
    """A catalog GPU (``gpu``), with any datasheet figure overridden."""

    gpu: str = "H100"
    peak_flops: float | None = Field(default=None, ge=1e9, le=1e17)
    hbm_bytes: float | None = Field(default=None, ge=1e6, le=1e13)
    hbm_bytes_per_s: float | None = Field(default=None, ge=1e6, le=1e14)
    nvlink_bytes_per_s: float | None = Field(default=None, ge=1e6, le=1e14)
    network_bytes_per_s: float | None = Field(default=None, ge=1e6, le=1e14)
    host_bytes_per_s: float | None = Field(default=None, ge=1e6, le=1e14)
    gpus_per_node: int | None = Field(default=None, ge=1, le=1024)
    price_per_gpu_hour: float | None = Field(default=None, ge=0, le=1000)
    matmul_efficiency: float | None = Field(default=None, gt=0, le=1)

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
    params: float | None = Field(default=None, ge=1e3, le=1e14)
    active_params: float | None = Field(default=None, ge=1e3, le=1e14)
    layers: int | None = Field(default=None, ge=1, le=1000)
    hidden_size: int | None = Field(default=None, ge=1, le=1_000_000)
    attention_heads: int | None = Field(default=None, ge=1, le=4096)
    kv_heads: int | None = Field(default=None, ge=1, le=1024)
    head_dim: int | None = Field(default=None, ge=1, le=4096)
    dtype_bytes: int | None = Field(default=None, ge=1, le=8)
    experts: int | None = Field(default=None, ge=0, le=100_000)
    experts_per_token: int | None = Field(default=None, ge=0, le=100_000)
    expert_params: float | None = Field(default=None, ge=0, le=1e14)

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

    @model_validator(mode="after")
    def _active_within_total(self) -> ModelConfig:
        spec = self.spec()
        if spec.active_params > spec.params:
            raise ValueError(
                f"active_params={spec.active_params:g} exceeds params={spec.params:g}: a token "
                "cannot use more parameters than the model has"
            )
        if spec.expert_params > spec.params:
            raise ValueError(f"expert_params={spec.expert_params:g} exceeds params={spec.params:g}")
        if spec.experts_per_token > spec.experts or (spec.expert_params > 0) != (spec.experts > 0):
            raise ValueError(
                f"experts={spec.experts}, experts_per_token={spec.experts_per_token}, "
                f"expert_params={spec.expert_params:g}: a routed model needs experts >= "
                "experts_per_token and expert_params > 0; a dense one all three 0"
            )
        return self


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
    response_growth_per_step: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="response lengths grow by this share of their initial size per learner step",
    )
    pass_rate: BetaPassRate = Field(
        default=BetaPassRate(),
        description="per-prompt pass rate; with algorithm.dynamic_sampling it sets how many "
        "groups have all rewards equal",
    )


class DecodeCoefficients(StrictModel):
    """Measured engine timings: ``t_iter = a_s + beta_s_per_token*C + gamma_s_per_seq*b``."""

    a_s: float = Field(ge=0, le=60)
    beta_s_per_token: float = Field(ge=0, le=1)
    gamma_s_per_seq: float = Field(ge=0, le=60)
    prefill_s_per_token: float = Field(default=0.0, ge=0, le=1)


class LearnerCoefficients(StrictModel):
    """Measured per-GPU learner timings, replacing the roofline (FLOPs over MFU).

    A step of ``T`` tokens on ``n`` learner GPUs takes ``T * x / (n * dp_efficiency(n))`` for
    each pass ``x`` it runs, plus ``step_overhead_s``; ``stalesim calibrate`` fits them.
    """

    train_gpu_s_per_token: float = Field(
        gt=0, le=1, description="GPU-seconds per trained token, forward + backward"
    )
    forward_gpu_s_per_token: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="GPU-seconds per token of one forward-only pass; default a third of training",
    )
    step_overhead_s: float = Field(
        default=0.0, ge=0, le=3600, description="fixed seconds per optimizer step"
    )


class ClusterConfig(StrictModel):
    """How the GPUs are split into rollout engines and the learner, and how well they run.

    In ``sync_colocated`` mode the learner trains on the rollout GPUs and ``learner_gpus`` is
    not used.

    The built-in efficiencies come from component measurements, never from end-to-end step
    times of RL systems (those are kept to check the simulator):

    * ``rollout_memory_efficiency`` 0.7: gpt-fast's benchmarks (github.com/pytorch-labs/gpt-fast,
      README) decode Llama-3.1-8B in bf16 at batch 1 on A100-80GB at 93.9 tokens/s, reading
      1,411 of 2,039 GB/s (69%).
    * ``decode_overhead_s`` 1 ms: vLLM's own performance CI (buildkite.com/vllm/
      performance-benchmark, build 9515, latency test: batch 8, 32-token prompts, 128 output
      tokens, H200) measures 833 ms end to end for Llama-3.1-8B at TP 1 and 2,078 ms for
      Llama-3-70B at TP 4; these coefficients predict 785 and 1,990 ms (-6%, -4%). gpt-fast,
      with no server or scheduler, decodes faster than a serving engine: it bounds the model
      from below (within 20% above it at TP 1 to 8).
    * ``tp_allreduce_latency_s`` 20 us: gpt-fast's tensor-parallel table runs Llama-3.1-8B at
      TP 2/4/8 on A100 at 6.71/4.60/3.62 ms per token against 5.6/2.8/1.4 ms of weight reads:
      17-35 us for each of its 64 all-reduces per token.
    * ``allreduce_efficiency`` 0.8: NCCL reaches about 370 of H100 NVLink's 450 GB/s one-way
      line rate after protocol overhead (NCCL maintainer in NVIDIA/nccl-tests#212; p2p 380 of
      450 GB/s in NVIDIA/nccl#1264); DeepSeek-V3's report (arXiv 2412.19437) measures 160 of
      H800 NVLink's 200 GB/s.
    * ``learner_mfu`` and ``learner_forward_mfu`` unset: each GPU's own figures
      (:attr:`stalesim.sim.hardware.GpuSpec.train_mfu`, ``forward_mfu``): its measured matmul
      efficiency (Stas Bekman's maximum-achievable-matmul table: H100 80.3%, A100 86.9%, B200
      77.6%, MI300X 51.4%) for the GEMMs, the forward recomputed under activation
      checkpointing, and memory-bound work at a fixed number of HBM bytes per model FLOP,
      fitted to llm-foundry's FSDP training table (MPT-7B at sequence 4096, activation
      checkpointing: 54.8% MFU on A100, 40.4% on H100). H100 0.38 (0.45 forward-only), A100
      0.49, H20 0.56 (0.73). Llama 3 (arXiv 2407.21783, table 4) trains at 38-43% on H100.
      Set them to override every GPU's figure.
    * ``learner_dp_linear_gpus`` 8,192 and ``learner_dp_scaling`` 0.93: data-parallel training
      keeps its per-GPU rate up to 8,192 GPUs and loses 7% per doubling beyond. FSDP is
      measured flat from 8 to 128 GPUs (llm-foundry, MPT-7B on A100-40GB at sequence 2048:
      50.9, 50.4, 51.6, 50.7, 50.1% MFU on 8, 16, 32, 64, 128 GPUs; MPT-13B on H100: 39.8,
      39.6, 40.0, 39.9% on 8 to 64); Llama 3 holds 430 TFLOPS per H100 at 8,192 GPUs, as on
      small clusters, and drops to 400 at 16,384 with the batch fixed, as an RL learner's
      batch is when its GPU count doubles.
    * ``colocated_switch_latency_s`` 1 s: vLLM's sleep mode wakes an engine in 0.1 to 6 s, the
      larger figures for large models whose weights cross PCIe (vLLM blog, 2025-10-26); the
      weights of a colocated engine arrive by the reshard instead. Megatron-based colocation has
      been measured at 15 s per step (vllm-project/vime#443): set it from your logs.
    * ``host_link_efficiency`` 0.7: nvbandwidth measures 35 GB/s host-to-device and 53 GB/s
      device-to-host of an H100's 63 GB/s PCIe 5.0 link (NVIDIA/nvbandwidth#24).
    """

    rollout_engines: int = Field(default=8, ge=1, le=100_000)
    rollout_tp: int = Field(default=1, ge=1, le=1024)
    learner_gpus: int = Field(default=8, ge=1, le=1_000_000)
    max_num_seqs: int = Field(default=256, ge=1, le=100_000)
    prefix_caching: bool = Field(
        default=True,
        description="the G samples of a group share their prompt's prefill and KV cache "
        "(vLLM's and SGLang's default)",
    )
    memory_reserve_fraction: float = Field(
        default=0.1, ge=0, lt=1, description="HBM kept for activations, graphs, fragmentation"
    )
    rollout_memory_efficiency: float = Field(
        default=0.7,
        ge=0.01,
        le=1,
        description="share of HBM bandwidth a decode step reaches (gpt-fast: 1,411 of 2,039 GB/s, "
        "Llama-3.1-8B bf16 at batch 1 on A100)",
    )
    rollout_compute_efficiency: float = Field(
        default=0.5,
        ge=0.01,
        le=1,
        description="share of peak FLOP/s that prefill and large-batch decode reach",
    )
    decode_overhead_s: float = Field(
        default=0.001,
        ge=0,
        le=0.1,
        description="per decode iteration: scheduling, sampling, launches not hidden by the engine",
    )
    tp_allreduce_latency_s: float = Field(
        default=20e-6,
        ge=0,
        le=0.01,
        description="latency of one small tensor-parallel all-reduce (2 per layer per iteration)",
    )
    allreduce_efficiency: float = Field(
        default=0.8,
        ge=0.01,
        le=1,
        description="NCCL bus bandwidth over one-way link bandwidth (370 of 450 GB/s on H100)",
    )
    learner_mfu: float | None = Field(
        default=None,
        ge=0.01,
        le=1,
        description="training FLOP/s per GPU over peak; default: the GPU's own (H100 0.38, "
        "A100 0.49, H20 0.56)",
    )
    learner_forward_mfu: float | None = Field(
        default=None,
        ge=0.01,
        le=1,
        description="the same for forward-only passes (old-policy and reference log-probs); "
        "default: the GPU's own (H100 0.45, H20 0.73), scaled with learner_mfu when that is set",
    )
    learner_dp_linear_gpus: int = Field(
        default=8192,
        ge=1,
        le=1_000_000,
        description="learner GPUs up to which data parallelism keeps the per-GPU rate (FSDP "
        "flat from 8 to 128 GPUs; Llama 3 at 430 TFLOPS/GPU on 8,192)",
    )
    learner_dp_scaling: float = Field(
        default=0.93,
        ge=0.01,
        le=1,
        description="per-GPU rate kept per doubling of learner GPUs beyond "
        "learner_dp_linear_gpus (Llama 3: 430 -> 400 TFLOPS/GPU from 8,192 to 16,384 GPUs)",
    )
    colocated_offload: bool = Field(
        default=True,
        description="colocated: offload the training state to host memory while generating",
    )
    colocated_switch_latency_s: float = Field(
        default=1.0,
        ge=0,
        le=600,
        description="colocated: fixed seconds per learner step to sleep and wake the engine",
    )
    host_link_efficiency: float = Field(
        default=0.7,
        ge=0.01,
        le=1,
        description="share of PCIe bandwidth a host offload reaches (nvbandwidth on H100: "
        "35-53 of 63 GB/s)",
    )
    decode_iteration_cv: float = Field(
        default=0.0,
        ge=0,
        le=4,
        description="coefficient of variation of one decode iteration's time, independent "
        "from iteration to iteration (0: every iteration takes its modelled time)",
    )
    learner_step_cv: float = Field(
        default=0.0,
        ge=0,
        le=4,
        description="coefficient of variation of an optimizer step's time: each step's "
        "passes are multiplied by a lognormal factor of mean 1 (0: every step takes its mean)",
    )
    decode_coefficients: DecodeCoefficients | None = None
    learner_coefficients: LearnerCoefficients | None = None


class AlgorithmConfig(StrictModel):
    """The RL loop: how generation and learning interleave, and what a learner step costs."""

    mode: str = Field(default="async", description="one of the registered modes")
    max_staleness: int = Field(
        default=2,
        ge=0,
        le=1024,
        description="async admission limit: a group starts only if it can be consumed within "
        "this many versions",
    )
    max_stale_fraction: float | None = Field(
        default=None,
        ge=0,
        le=64,
        description="async: admission limit as a share of a publication period's groups that "
        "may be generated ahead (replaces max_staleness)",
    )
    inflight_updates: bool = False
    minibatches_per_step: int = Field(
        default=1, ge=1, le=65536, description="optimizer steps (versions) per learner step"
    )
    streaming: bool = Field(
        default=False,
        description="the learner takes each chunk of B/M groups as soon as it has arrived",
    )
    publish_interval: int | None = Field(
        default=None,
        ge=1,
        le=65536,
        description="async: optimizer steps between weight publications (default: M)",
    )
    staleness_filter: int | None = Field(
        default=None, ge=0, le=1024, description="drop groups staler than this when consumed"
    )
    consumption_order: Literal["completion", "deadline"] = Field(
        default="completion",
        description="async: take groups as they complete (a slow one may end up staler than "
        "max_staleness), or earliest deadline first, waiting for late ones (never staler)",
    )
    kv_cache_on_update: Literal["keep", "recompute"] | None = Field(
        default=None,
        description="a sequence that continues on new weights keeps its KV cache or recomputes "
        "it as prefill (default: keep for in-flight updates, recompute for partial rollouts)",
    )
    dynamic_sampling: bool = Field(
        default=False, description="discard groups whose rewards are all equal (DAPO)"
    )
    dynamic_sampling_policy: Literal["refill", "oversample", "regenerate"] = Field(
        default="refill",
        description="how dynamic sampling fills the batch: refill (a discarded group frees its "
        "place and another is launched, as AReaL's and PipelineRL's streaming rollouts do), "
        "oversample (launch dynamic_sampling_chunk groups whenever accepted plus running fall "
        "below the batch; abort the rest once it is full: slime), regenerate (generate whole "
        "batches of dynamic_sampling_chunk groups until enough are kept: verl's DAPO recipe)",
    )
    dynamic_sampling_chunk: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="oversample/regenerate: groups launched at a time (slime's "
        "over_sampling_batch_size, verl's data.gen_batch_size); default: the batch",
    )
    dynamic_sampling_max_rounds: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="regenerate: generation batches per step before the run fails (verl's "
        "algorithm.filter_groups.max_num_gen_batches); default: no limit",
    )
    max_concurrent_rollouts: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="groups generating at once over all engines (AReaL's "
        "rollout.max_concurrent_rollouts, verl's fully-async rollouter: 16 per server); "
        "default: only the engines' slots limit it",
    )
    partial_overprovision: float = Field(
        default=0.5,
        ge=0,
        le=64,
        description="partial_rollout: extra groups in flight, share of B",
    )
    round_token_budget: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="partial_rollout: tokens a sequence may generate per round (Kimi k1.5)",
    )
    old_logprob_pass: bool | None = Field(
        default=None,
        description="recompute the old policy's log-probs in a forward pass; default: follow "
        "the mode's recipe (see derived.old_logprob_pass)",
    )
    reference_model: bool = Field(
        default=True, description="a reference model's forward pass for the loss's KL term"
    )

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, mode: str) -> str:
        if mode not in MODES:
            raise ValueError(f"unknown mode; allowed: {', '.join(MODES)}")
        return mode


class WeightSyncConfig(StrictModel):
    """Publishing new weights from the learner to the rollout engines: the learner's publish
    (``publish_s``), the transfer (``weight_bytes / bandwidth + latency_s``) and each engine's
    load (``load_s``). See :mod:`stalesim.sim.weight_sync`."""

    bandwidth_bytes_per_s: float | None = Field(
        default=None,
        ge=1e6,
        le=1e30,
        description="default: NVLink when colocated or within one node, else the network; "
        "up to 1e30 (an instant sync, for what-if runs)",
    )
    latency_s: float = Field(default=0.5, ge=0, le=3600)
    pause_policy: Literal["blocking", "overlapped"] = "blocking"
    publish_s: float = Field(
        default=0.0,
        ge=0,
        description="learner-side seconds per publication before the transfer starts (e.g. "
        "gathering the state and handing it over); the learner waits for it in every policy",
    )
    load_s: float = Field(
        default=0.0,
        ge=0,
        description="engine-side stall per engine when it takes new weights, after the "
        "transfer (loading them into the engine); paid in every policy",
    )


class TargetConfig(StrictModel):
    """The user's own on-policy run, which the law's answers are relative to.

    The law is measured on a small model; its learning rates and step counts are not the
    user's. What carries over is the shape: ``eta(S) / eta(0)`` and ``steps(S) / steps(0)``.
    With ``baseline_lr`` and ``baseline_steps`` (the learning rate and the learner steps to the
    target of the user's synchronous, on-policy run) the answers are those ratios times these
    numbers; without them, only the ratios are shown.
    """

    baseline_lr: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="learning rate of the user's on-policy (synchronous) run",
    )
    baseline_steps: float | None = Field(
        default=None,
        gt=0,
        le=10_000_000,
        description="learner steps the user's on-policy run takes to reach its target reward",
    )


class Scenario(StrictModel):
    """A whole simulated setup."""

    name: str = "custom"
    hardware: HardwareConfig = HardwareConfig()
    model: ModelConfig = ModelConfig()
    workload: WorkloadConfig = WorkloadConfig()
    cluster: ClusterConfig = ClusterConfig()
    algorithm: AlgorithmConfig = AlgorithmConfig()
    weight_sync: WeightSyncConfig = WeightSyncConfig()
    target: TargetConfig = TargetConfig()


def check_consistent(scenario: Scenario) -> None:
    """Raise :class:`ConfigError` when sections contradict each other."""
    algo, work = scenario.algorithm, scenario.workload
    spec = MODES[algo.mode]
    b = work.prompts_per_step
    m = algo.minibatches_per_step
    if b % m:
        raise ConfigError(
            f"algorithm.minibatches_per_step={m} must divide workload.prompts_per_step={b}"
        )
    floor = spec.schedule_staleness(m) if spec.schedule_staleness is not None else None
    f = algo.staleness_filter
    if f is not None and floor is not None and f < floor:
        raise ConfigError(
            f"algorithm.staleness_filter={f} would drop every group of some mini-batch in "
            f"mode {algo.mode} with {m} mini-batches per step; allowed: >= {floor}"
        )
    if algo.round_token_budget is not None and not spec.preempts:
        raise ConfigError(
            f"algorithm.round_token_budget is for algorithm.mode=partial_rollout, not {algo.mode}"
        )
    if algo.inflight_updates and not spec.inflight_updates:
        raise ConfigError(
            f"algorithm.inflight_updates=true needs algorithm.mode=async, not {algo.mode}"
        )
    if algo.streaming and spec.colocated:
        raise ConfigError(
            f"algorithm.streaming=true cannot overlap training with generation in mode "
            f"{algo.mode}: its learner and engines share the same GPUs"
        )
    for key in ("publish_interval", "max_stale_fraction"):
        if getattr(algo, key) is not None and not spec.own_publication:
            raise ConfigError(
                f"algorithm.{key} is for algorithm.mode=async (weights are loaded between "
                f"batches in mode {algo.mode})"
            )
    if algo.consumption_order == "deadline" and (
        not spec.own_publication
        or algo.max_stale_fraction is not None
        or algo.staleness_filter is not None
    ):
        raise ConfigError(
            "algorithm.consumption_order=deadline keeps the max_staleness admission limit "
            "without dropping: it needs algorithm.mode=async with no algorithm.staleness_filter "
            "and no algorithm.max_stale_fraction"
        )
    if spec.check is not None:
        spec.check(scenario)
    if algo.kv_cache_on_update is not None and not (spec.preempts or algo.inflight_updates):
        raise ConfigError(
            f"algorithm.kv_cache_on_update={algo.kv_cache_on_update} needs sequences that "
            "continue on new weights: algorithm.inflight_updates=true or "
            "algorithm.mode=partial_rollout"
        )
    batch_keys = algo.dynamic_sampling_policy != "refill" or algo.dynamic_sampling_chunk
    if batch_keys and not algo.dynamic_sampling:
        raise ConfigError(
            "algorithm.dynamic_sampling_policy and dynamic_sampling_chunk need "
            "algorithm.dynamic_sampling=true"
        )
    # the batch-filling sampling policies apply to modes that generate one batch per step
    if algo.dynamic_sampling_policy != "refill" and not MODES[algo.mode].batch_sampling:
        batch_modes = [name for name, spec in MODES.items() if spec.batch_sampling]
        raise ConfigError(
            f"algorithm.dynamic_sampling_policy={algo.dynamic_sampling_policy} fills one "
            f"batch at a time: it needs algorithm.mode in {', '.join(batch_modes)}, "
            f"not {algo.mode} (use refill)"
        )
    if algo.dynamic_sampling_max_rounds is not None and algo.dynamic_sampling_policy != (
        "regenerate"
    ):
        raise ConfigError(
            "algorithm.dynamic_sampling_max_rounds needs algorithm.dynamic_sampling_policy="
            "regenerate"
        )
    if algo.dynamic_sampling:
        if work.group_size < 2:
            raise ConfigError(
                "algorithm.dynamic_sampling=true needs workload.group_size >= 2 (the rewards "
                "of a single response are always all equal)"
            )
        q = work.pass_rate.uniform_probability(work.group_size)
        if q > MAX_UNIFORM_PROBABILITY:
            raise ConfigError(
                f"workload.pass_rate={{alpha: {work.pass_rate.alpha:g}, beta: "
                f"{work.pass_rate.beta:g}}}: {q:.1%} of groups would have all rewards equal and "
                f"be discarded by algorithm.dynamic_sampling; allowed: at most "
                f"{MAX_UNIFORM_PROBABILITY:.0%}"
            )


def longest_sequence(work: WorkloadConfig) -> int:
    """Tokens of the longest possible sequence: the prompt cap plus the response cap."""
    return (
        math.ceil(min(work.prompt_tokens.upper(), work.max_prompt_tokens))
        + work.max_response_tokens
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
    longest = longest_sequence(work)
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
    memory = derived.learner_memory
    if memory.total_bytes > derived.learner_usable_bytes:
        gpus_key = (
            f"cluster.rollout_engines x cluster.rollout_tp={derived.learner_gpus} (colocated)"
            if derived.colocated
            else f"cluster.learner_gpus={derived.learner_gpus}"
        )
        raise ConfigError(
            f"learner: model.preset={model.preset} ({derived.model.params / 1e9:.3g}B "
            f"parameters) needs {memory.state_bytes / gib:.4g} GiB per GPU of training state "
            f"(16 bytes per parameter: bf16 weights and gradients, fp32 Adam master weights and "
            f"moments, sharded FSDP/ZeRO-3 style over {gpus_key}) plus "
            f"{memory.activation_bytes / gib:.3g} GiB of activations for one "
            f"{memory.tokens}-token sequence, but one {scenario.hardware.gpu} has "
            f"{derived.learner_usable_bytes / gib:.1f} GiB usable; raise the learner's GPUs, "
            "lower workload.max_response_tokens or pick a smaller model"
        )
