"""The time models, by hand: learner phases, data-parallel scaling, the optimizer step, the
colocated role switch, tensor-parallel decode, and the recipe's extra passes."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import simpy
from stalesim.sim.derived import derive
from stalesim.sim.engine import RolloutPool
from stalesim.sim.hardware import CATALOG, MEMORY_BYTES_PER_FLOP, TRAINING_MEASUREMENTS, train_mfu
from stalesim.sim.learner import (
    LearnerCost,
    allreduce_bus_bytes_per_s,
    dp_efficiency,
    optimizer_step_s,
)
from stalesim.sim.metrics import summarize
from stalesim.sim.models import MODELS
from stalesim.sim.presets import load_scenario
from stalesim.sim.run import simulate
from stalesim.sim.time_model import DecodeTimeModel, from_coefficients, roofline
from stalesim.sim.trace import TraceRecorder

QWEN7 = MODELS["qwen2.5-7b"]
H100 = CATALOG["H100"]


def derived(*overrides: str):
    return derive(load_scenario(None, None, overrides))


# -- learner ------------------------------------------------------------------------------
def test_attention_makes_long_sequences_cost_more_per_token() -> None:
    """The same 8192 tokens as one sequence or as eight: the difference is exactly the causal
    attention term, ``6 * layers * d_attn * (8192**2 - 8 * 1024**2)`` FLOPs."""
    cost = derived().learner
    one, eight = 8192**2, 8 * 1024**2
    extra = cost.train_s(8192, one) - cost.train_s(8192, eight)
    rate = 8 * 989e12 * H100.train_mfu
    assert extra == pytest.approx(6 * 28 * 28 * 128 * (one - eight) / rate, rel=1e-12)
    # Qwen2.5-7B at 8k context: attention adds 6*28*3584*8192 / (6*7.61e9) = 10.8% per token
    linear = cost.train_s(8192, 0.0)
    assert cost.train_s(8192, one) / linear - 1 == pytest.approx(
        28 * 3584 * 8192 / 7.61e9, rel=1e-9
    )


def test_step_phases_follow_the_recipe_and_forward_efficiency() -> None:
    sync = derived("algorithm.mode=sync").learner
    tokens, sq = 100_000, 100 * 1000**2
    names = [name for name, _ in sync.step_phases(tokens, sq)]
    assert names == ["old_logprob", "reference", "update"]
    # a forward-only pass costs a third of training's FLOPs (2N of 6N, both attention terms),
    # at the GPU's forward-only efficiency (nothing recomputed) instead of its training one
    phases = dict(sync.step_phases(tokens, sq))
    ratio = H100.train_mfu / H100.forward_mfu
    assert phases["old_logprob"] == pytest.approx(sync.train_s(tokens, sq) / 3 * ratio, rel=1e-12)
    assert phases["update"] == pytest.approx(
        sync.train_s(tokens, sq) + sync.step_overhead_s, rel=1e-12
    )
    # halving the forward-only efficiency doubles both forward passes and nothing else
    half = f"cluster.learner_forward_mfu={H100.forward_mfu / 2!r}"
    slow = dict(derived("algorithm.mode=sync", half).learner.step_phases(tokens, sq))
    assert slow["old_logprob"] == pytest.approx(2 * phases["old_logprob"], rel=1e-12)
    assert slow["reference"] == pytest.approx(2 * phases["reference"], rel=1e-12)
    assert slow["update"] == pytest.approx(phases["update"], rel=1e-12)
    # async reuses the rollout's log-probs; a KL-free recipe drops the reference model
    async_names = [n for n, _ in derived().learner.step_phases(tokens, sq)]
    assert async_names == ["reference", "update"]
    assert [n for n, _ in derived("algorithm.reference_model=false").learner.step_phases(1, 1)] == [
        "update"
    ]
    forced = derived("algorithm.old_logprob_pass=true").learner
    assert forced.old_logprob_pass and not derived().learner.old_logprob_pass


def test_data_parallel_scaling_is_linear_up_to_the_measured_scale_then_loses_per_doubling() -> None:
    assert dp_efficiency(1, 8192, 0.93) == 1.0
    assert dp_efficiency(128, 8192, 0.93) == 1.0
    assert dp_efficiency(8192, 8192, 0.93) == 1.0
    assert dp_efficiency(16384, 8192, 0.93) == pytest.approx(0.93)
    assert dp_efficiency(65536, 8192, 0.93) == pytest.approx(0.93**3)
    assert dp_efficiency(3 * 8192, 8192, 0.93) == pytest.approx(0.93 ** math.log2(3))
    # doubling 8 -> 16 -> 64 learner GPUs: training work scales linearly (FSDP measured flat)
    eight = derived("cluster.learner_gpus=8").learner
    for n in (16, 64):
        more = derived(f"cluster.learner_gpus={n}").learner
        assert eight.train_s(1e6, 1e9) / more.train_s(1e6, 1e9) == pytest.approx(n / 8, rel=1e-12)
    # past the linear range the per-doubling loss applies
    small = derived("cluster.learner_gpus=8", "cluster.learner_dp_linear_gpus=8").learner
    sixteen = derived("cluster.learner_gpus=16", "cluster.learner_dp_linear_gpus=8").learner
    assert small.train_s(1e6, 1e9) / sixteen.train_s(1e6, 1e9) == pytest.approx(1.86, rel=1e-12)


def test_training_flops_per_second_by_gpu_by_hand() -> None:
    """An analytic FLOP/s case: 6N FLOPs per token (N = 7.61e9) on two GPUs take
    ``6 N / (2 peak mfu)`` seconds, with mfu = 1 / (4/3 / matmul + b * peak / bandwidth)."""
    b = MEMORY_BYTES_PER_FLOP
    for gpu, peak, bandwidth, matmul in (
        ("H100", 989e12, 3.35e12, 0.803),
        ("H20", 148e12, 4.0e12, 0.803),
        ("A100-80GB", 312e12, 2.039e12, 0.869),
    ):
        mfu = 1 / (4 / 3 / matmul + b * peak / bandwidth)
        cost = derived(f"hardware.gpu={gpu}", "cluster.learner_gpus=2").learner
        assert cost.train_s(1.0) == pytest.approx(6 * 7.61e9 / (2 * peak * mfu), rel=1e-12)
        forward = 1 / (1 / matmul + b * peak / bandwidth)
        assert cost.forward_s(1.0) == pytest.approx(2 * 7.61e9 / (2 * peak * forward), rel=1e-12)
    # the compute-light H20 reaches a larger share of its peak than an H100: 0.56 vs 0.38
    assert CATALOG["H20"].train_mfu == pytest.approx(0.5615, abs=1e-3)
    assert H100.train_mfu == pytest.approx(0.3816, abs=1e-3)
    # a set learner_mfu overrides every GPU and keeps the GPU's forward-over-training ratio
    set_ = derived("hardware.gpu=H20", "cluster.learner_mfu=0.4", "cluster.learner_gpus=2")
    assert set_.learner.train_s(1.0) == pytest.approx(6 * 7.61e9 / (2 * 148e12 * 0.4), rel=1e-12)
    h20 = CATALOG["H20"]
    assert set_.learner.forward_s(1.0) == pytest.approx(
        2 * 7.61e9 / (2 * 148e12 * 0.4 * h20.forward_mfu / h20.train_mfu), rel=1e-12
    )


def test_mfu_fit_reproduces_the_training_table_it_comes_from() -> None:
    """The two FSDP rows (MPT-7B, sequence 4096, activation checkpointing) within 4%, after
    converting their full-attention FLOP count to the simulator's causal one."""
    for m in TRAINING_MEASUREMENTS:
        assert m.causal_mfu < m.mfu
        got = train_mfu(m.peak_flops, m.hbm_bytes_per_s, m.matmul_efficiency)
        assert got == pytest.approx(m.causal_mfu, rel=0.04)
    assert CATALOG["A100-80GB"].train_mfu > H100.train_mfu


def test_optimizer_step_all_reduce_inside_and_across_nodes() -> None:
    """Qwen2.5-7B: bf16 gradients (15.22 GB) ring-all-reduced, then Adam over each shard."""
    grads = 2 * 7.61e9
    update = lambda n: 30 * 7.61e9 / n / (3.35e12 * 0.7)  # noqa: E731
    inside = optimizer_step_s(H100, QWEN7, 8, allreduce_efficiency=0.8, memory_efficiency=0.7)
    assert inside == pytest.approx(2 * 7 / 8 * grads / (450e9 * 0.8) + update(8), rel=1e-12)
    # across nodes a ring per NIC: bounded by the node's 8 x 50 GB/s of network
    across = optimizer_step_s(H100, QWEN7, 16, allreduce_efficiency=0.8, memory_efficiency=0.7)
    assert allreduce_bus_bytes_per_s(H100, 16, 0.8) == pytest.approx(400e9 * 0.8)
    assert across == pytest.approx(2 * 15 / 16 * grads / (400e9 * 0.8) + update(16), rel=1e-12)
    # the H800's NVLink (400 GB/s both ways) makes the same all-reduce 2.25x slower
    h800 = optimizer_step_s(
        CATALOG["H800"], QWEN7, 8, allreduce_efficiency=0.8, memory_efficiency=0.7
    )
    assert h800 - update(8) == pytest.approx(2.25 * (inside - update(8)), rel=1e-12)
    assert optimizer_step_s(H100, QWEN7, 1, allreduce_efficiency=0.8, memory_efficiency=0.7) == (
        pytest.approx(update(1), rel=1e-12)
    )


def test_measured_learner_coefficients_are_per_gpu_and_scale_with_data_parallelism() -> None:
    cost = derived(
        "cluster.learner_gpus=16",
        "cluster.learner_coefficients={train_gpu_s_per_token: 0.016, step_overhead_s: 2}",
        "algorithm.mode=sync",
    ).learner
    assert cost.source == "measured"
    phases = dict(cost.step_phases(1000, 0))
    assert phases["update"] == pytest.approx(1000 * 0.016 / 16 + 2, rel=1e-12)
    # unmeasured forward passes default to a third of training
    assert phases["old_logprob"] == pytest.approx(1000 * 0.016 / 3 / 16, rel=1e-12)


# -- colocated role switch ---------------------------------------------------------------
def test_colocated_switch_by_hand_and_slower_than_a_dedicated_learner() -> None:
    colocated = derived("algorithm.mode=sync_colocated", "cluster.rollout_engines=16")
    # 16 bytes per parameter of training state, each GPU's 1/16 of it out and back over PCIe
    moved = 2 * 16 * 7.61e9 / 16
    assert colocated.learner.switch_s == pytest.approx(1.0 + moved / (63e9 * 0.7), rel=1e-12)
    dedicated = derived("algorithm.mode=sync", "cluster.learner_gpus=16")
    assert dedicated.learner.switch_s == 0.0
    assert replace(colocated.learner, switch_s=0.0) == dedicated.learner
    # per GPU, the colocated learner is slower by the switch on every learner step
    tokens, sq = 1.6e6, 640 * 2500**2
    step_colocated = colocated.learner.step_s(tokens, sq) + colocated.learner.switch_s
    assert step_colocated - dedicated.learner.step_s(tokens, sq) == pytest.approx(
        colocated.learner.switch_s, rel=1e-9
    )
    # keeping the state on the GPUs instead costs KV cache: 16 * 7.61e9 / 16 bytes per GPU
    resident = derived(
        "algorithm.mode=sync_colocated",
        "cluster.rollout_engines=16",
        "cluster.colocated_offload=false",
    )
    assert resident.learner.switch_s == pytest.approx(1.0)
    lost = colocated.engine_usable_bytes - resident.engine_usable_bytes
    assert lost == pytest.approx(16 * 7.61e9 / 16, rel=1e-12)


def test_colocated_simulation_pays_the_switch_every_step() -> None:
    common = (
        "algorithm.mode=sync_colocated",
        "model.preset=qwen2.5-1.5b",
        "workload.prompts_per_step=2",
        "workload.group_size=2",
        "workload.prompt_tokens={kind: fixed, value: 10}",
        "workload.response_tokens={kind: fixed, value: 20}",
        "cluster.rollout_engines=2",
        "cluster.decode_coefficients={a_s: 0.01, beta_s_per_token: 0, gamma_s_per_seq: 0}",
    )
    base = simulate(load_scenario(None, None, (*common, "cluster.colocated_offload=false")), 4)
    slow = simulate(load_scenario(None, None, (*common, "cluster.colocated_switch_latency_s=3")), 4)
    switch = 3 + 2 * 16 * 1.54e9 / 2 / (63e9 * 0.7)
    added = switch - 1.0  # the resident-state run pays the 1 s default latency only
    base_ends, slow_ends = base.steps["end_s"].to_list(), slow.steps["end_s"].to_list()
    for k in range(4):
        assert slow_ends[k] - base_ends[k] == pytest.approx((k + 1) * added, rel=1e-9)
    phases = slow.busy.filter(slow.busy["pool"] == "learner")["kind"].to_list()
    assert phases[:4] == ["switch", "old_logprob", "reference", "update"]


def test_learner_phases_in_the_trace_sum_to_the_step() -> None:
    scenario = load_scenario(
        None, None, ("algorithm.mode=sync", "algorithm.minibatches_per_step=2")
    )
    trace = simulate(scenario, 3, seed=1)
    learner = trace.busy.filter(trace.busy["pool"] == "learner")
    step0 = trace.steps.row(0, named=True)
    inside = learner.filter(
        (learner["start_s"] >= step0["start_s"]) & (learner["end_s"] <= step0["end_s"])
    )
    # batch consumption runs every chunk's forward passes, then the updates
    assert inside["kind"].to_list() == ["old_logprob", "reference"] * 2 + ["update"] * 2
    total = (inside["end_s"] - inside["start_s"]).sum()
    assert total == pytest.approx(step0["end_s"] - step0["start_s"], rel=1e-12)
    summary = summarize(trace, scenario, 3, 1)
    assert 0 < summary.utilisation.learner < 1


# -- rollout engines ----------------------------------------------------------------------
GPT_FAST_A100_LLAMA31_8B_MS = {1: 10.65, 2: 6.71, 4: 4.60, 8: 3.62}


def batch_one_ms(tp: int, latency_s: float = 20e-6) -> float:
    tm = roofline(
        CATALOG["A100-80GB"],
        MODELS["llama-3.1-8b"],
        tp,
        memory_efficiency=0.7,
        compute_efficiency=0.5,
        overhead_s=0.001,
        tp_allreduce_latency_s=latency_s,
        allreduce_efficiency=0.8,
    )
    return tm.iteration_s(1, 100) * 1e3


@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_batch_one_decode_sits_just_above_gpt_fast(tp: int) -> None:
    """gpt-fast's README (A100-80GB, bf16, batch 1, 5-token prompt): Llama-3.1-8B decodes at
    93.83/149.10/217.21/276.01 tokens/s at TP 1/2/4/8. With no server or scheduler it is a
    lower bound for a serving engine: the defaults predict 0-20% slower at every TP."""
    ratio = batch_one_ms(tp) / GPT_FAST_A100_LLAMA31_8B_MS[tp]
    assert 1.0 <= ratio <= 1.2


def vllm_latency_ms(model: str, tp: int) -> float:
    """End to end: 8 sequences, 32-token prompts, 128 tokens each, on one H200 engine."""
    # 70B training state (16 bytes per parameter) needs 16 learner GPUs; decode ignores them
    d = derived(
        f"model.preset={model}",
        "hardware.gpu=H200",
        f"cluster.rollout_tp={tp}",
        "cluster.learner_gpus=16",
    )
    env = simpy.Environment()
    rec = TraceRecorder(group_size=8)
    pool = RolloutPool(
        env,
        rec,
        engines=1,
        slots=256,
        kv_tokens=10**6,
        time_model=d.time_model,
        inflight=False,
        on_group_complete=lambda g, now: None,
    )
    pool.add_group(rec.add_group(0.0, 32, [128] * 8))
    pool.kick_all(0.0)
    env.run()
    return rec.frames().samples["finish_s"].max() * 1e3


@pytest.mark.parametrize(
    ("model", "tp", "measured_ms"), [("llama-3.1-8b", 1, 833.4), ("llama-3.1-70b", 4, 2077.5)]
)
def test_small_batch_latency_matches_vllm_ci(model: str, tp: int, measured_ms: float) -> None:
    """vLLM's performance CI (buildkite vllm/performance-benchmark build 9515, latency test:
    batch 8, input 32, output 128, H200): 833.4 ms for Llama-3.1-8B at TP 1, 2,077.5 ms for
    Llama-3-70B at TP 4. A long tail on one engine costs what it costs on a real one."""
    assert vllm_latency_ms(model, tp) == pytest.approx(measured_ms, rel=0.1)


def test_tensor_parallel_communication_is_not_free() -> None:
    # without the per-layer all-reduces TP 8 would be predicted 30% faster than gpt-fast, a
    # lower bound
    assert batch_one_ms(8, latency_s=0.0) < 0.7 * GPT_FAST_A100_LLAMA31_8B_MS[8]
    assert batch_one_ms(8) - batch_one_ms(8, latency_s=0.0) == pytest.approx(
        2 * 32 * 20e-6 * 1e3, rel=1e-9
    )
    # TP 1 pays no communication
    assert batch_one_ms(1) == pytest.approx(batch_one_ms(1, latency_s=1.0), rel=1e-12)


class DoubledTime(DecodeTimeModel):
    """A replacement time model: everything takes twice as long."""

    def iterations_s(self, n: int, live: int, context_tokens: float) -> float:
        return 2 * super().iterations_s(n, live, context_tokens)

    def iterations_within(self, span_s: float, live: int, context_tokens: float) -> int:
        return super().iterations_within(span_s / 2, live, context_tokens)

    def iterations_before(self, span_s: float, live: int, context_tokens: float) -> int:
        return super().iterations_before(span_s / 2, live, context_tokens)


def run_engine(time_model: DecodeTimeModel) -> list[float]:
    env = simpy.Environment()
    rec = TraceRecorder(group_size=1)
    pool = RolloutPool(
        env,
        rec,
        engines=1,
        slots=2,
        kv_tokens=10_000,
        time_model=time_model,
        inflight=False,
        on_group_complete=lambda g, now: None,
    )
    for prompt, length in [(10, 5), (20, 3), (5, 8), (40, 2)]:
        pool.add_group(rec.add_group(0.0, prompt, [length]))
    pool.kick_all(0.0)
    env.run()
    return rec.frames().samples["finish_s"].to_list()


def test_engine_takes_its_times_from_the_time_model() -> None:
    """The engine asks its DecodeTimeModel for every closed form, so a replaced (profiled)
    model is the one that runs."""
    base = from_coefficients(0.01, 1e-6, 1e-4, 0.0)
    doubled = DoubledTime(0.01, 1e-6, 1e-4, 0.0)
    for plain, twice in zip(run_engine(base), run_engine(doubled), strict=True):
        assert twice == pytest.approx(2 * plain, rel=1e-12)


def test_new_gpus_in_the_catalog() -> None:
    h800, a800, mi300x = CATALOG["H800"], CATALOG["A800"], CATALOG["MI300X"]
    assert h800.nvlink_bytes_per_s == 400e9 and h800.peak_flops == CATALOG["H100"].peak_flops
    assert a800.nvlink_bytes_per_s == 400e9 and a800.peak_flops == CATALOG["A100-80GB"].peak_flops
    assert mi300x.hbm_bytes == 192e9 and mi300x.hbm_bytes_per_s == 5.3e12

    # the same scenario on an H800 decodes at TP 4 slower than on an H100 (NVLink), the same at
    # TP 1
    def a_s(gpu: str, tp: int) -> float:
        return derived(f"hardware.gpu={gpu}", f"cluster.rollout_tp={tp}").time_model.gamma_s_per_seq

    assert a_s("H800", 1) == pytest.approx(a_s("H100", 1), rel=1e-12)
    assert a_s("H800", 4) > a_s("H100", 4)


def test_learner_cost_default_fields() -> None:
    cost = LearnerCost(train_gpu_s_per_token=1.0, forward_gpu_s_per_token=0.5, gpus=4)
    assert cost.step_s(8, 0) == pytest.approx(2 * 0.5 * 8 / 4 + 8 / 4)


def test_weight_sync_uses_one_direction_of_nvlink() -> None:
    colocated = derived("algorithm.mode=sync_colocated")
    assert colocated.sync_s == pytest.approx(2 * 7.61e9 / 450e9 + 0.5, rel=1e-12)
    h800 = derived("algorithm.mode=sync_colocated", "hardware.gpu=H800")
    assert h800.sync_s == pytest.approx(2 * 7.61e9 / 200e9 + 0.5, rel=1e-12)
    # separate pools on two nodes send over the network
    assert derived().sync_s == pytest.approx(2 * 7.61e9 / 50e9 + 0.5, rel=1e-12)


@pytest.mark.parametrize(
    ("extra", "learner_gpus"),
    [((), 8), (("algorithm.old_logprob_pass=true",), 8), ((), 16)],
)
def test_learner_bound_async_cadence_moves_with_the_learner_model(
    extra: tuple[str, ...], learner_gpus: int
) -> None:
    """Generation is nearly free, so async runs at the learner's pace: each step's cadence is
    its phases plus a blocking publication. The old-policy pass adds one forward pass; 16 GPUs
    (two nodes) divide the work by 16: FSDP is measured to scale linearly at this size."""
    P, L, B, G = 20, 30, 8, 2
    sc = load_scenario(
        None,
        None,
        (
            "algorithm.mode=async",
            "algorithm.max_staleness=4",
            "model.preset=qwen2.5-1.5b",
            f"workload.prompts_per_step={B}",
            f"workload.group_size={G}",
            f"workload.prompt_tokens={{kind: fixed, value: {P}}}",
            f"workload.response_tokens={{kind: fixed, value: {L}}}",
            "cluster.rollout_engines=2",
            f"cluster.learner_gpus={learner_gpus}",
            "cluster.decode_coefficients={a_s: 1e-7, beta_s_per_token: 0, gamma_s_per_seq: 0}",
            "cluster.learner_coefficients={train_gpu_s_per_token: 0.03, "
            "forward_gpu_s_per_token: 0.01, step_overhead_s: 0.2}",
            "weight_sync.bandwidth_bytes_per_s=1e30",
            "weight_sync.latency_s=0.5",
            *extra,
        ),
    )
    tokens = B * G * (P + L)
    rate = learner_gpus
    passes = 1 + ("algorithm.old_logprob_pass=true" in extra)  # reference, maybe old policy
    cadence = (passes * 0.01 + 0.03) * tokens / rate + 0.2 + 0.5
    ends = simulate(sc, 8, seed=0).steps["end_s"].to_list()
    for k in range(3, 8):
        assert ends[k] - ends[k - 1] == pytest.approx(cadence, rel=1e-9)
