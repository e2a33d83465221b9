"""Analytic cases: deterministic lengths and times, checked against hand computation."""

from __future__ import annotations

import math

import pytest
import simpy
from stalesim.sim.derived import derive
from stalesim.sim.engine import RolloutPool
from stalesim.sim.hardware import CATALOG
from stalesim.sim.metrics import summarize
from stalesim.sim.presets import load_scenario
from stalesim.sim.run import simulate
from stalesim.sim.time_model import from_coefficients
from stalesim.sim.trace import TraceRecorder

A, BETA, GAMMA, PREFILL = 0.01, 1e-6, 1e-4, 1e-5


def test_engine_completion_times_match_iteration_by_iteration() -> None:
    """Closed-form completions equal a brute-force loop over every decode iteration, with
    more sequences than slots (admissions at boundaries, each batch paying its prefill)."""
    prompts = [10, 20, 5, 40, 7, 12]
    lengths = [5, 3, 8, 2, 7, 4]
    slots = 3
    env = simpy.Environment()
    rec = TraceRecorder(group_size=1)
    pool = RolloutPool(
        env,
        rec,
        engines=1,
        slots=slots,
        kv_tokens=10_000,
        time_model=from_coefficients(A, BETA, GAMMA, PREFILL),
        inflight=False,
        on_group_complete=lambda g, now: None,
    )
    for prompt, length in zip(prompts, lengths, strict=True):
        pool.add_group(rec.add_group(0.0, prompt, [length]))
    pool.kick_all(0.0)
    env.run()

    # brute force: one loop turn per decode iteration
    t, queue, live, finish = 0.0, list(range(len(prompts))), [], {}
    while queue or live:
        admitted = []
        while queue and len(live) < slots:
            i = queue.pop(0)
            live.append([i, prompts[i], lengths[i]])  # id, context, remaining
            admitted.append(i)
        t += PREFILL * sum(prompts[i] for i in admitted)
        t += A + BETA * sum(s[1] for s in live) + GAMMA * len(live)
        for s in live:
            s[1] += 1
            s[2] -= 1
        for s in [s for s in live if s[2] == 0]:
            finish[s[0]] = t
            live.remove(s)
    finished = rec.frames().samples["finish_s"].to_list()
    for i in range(len(prompts)):
        assert finished[i] == pytest.approx(finish[i], rel=1e-12)


def test_sync_step_time_and_throughput_by_hand() -> None:
    P, L, B, G = 100, 50, 4, 2
    steps = 6
    scenario = load_scenario(
        None,
        None,
        (
            "algorithm.mode=sync",
            "model.preset=qwen2.5-1.5b",
            "hardware.gpu=H100",
            f"workload.prompts_per_step={B}",
            f"workload.group_size={G}",
            f"workload.prompt_tokens={{kind: fixed, value: {P}}}",
            f"workload.response_tokens={{kind: fixed, value: {L}}}",
            "cluster.rollout_engines=1",
            "cluster.learner_gpus=2",
            "cluster.learner_mfu=0.5",
            "cluster.learner_forward_mfu=0.5",
            f"cluster.decode_coefficients={{a_s: {A}, beta_s_per_token: {BETA}, gamma_s_per_seq: {GAMMA}, prefill_s_per_token: {PREFILL}}}",
            "weight_sync.bandwidth_bytes_per_s=1e10",
            "weight_sync.latency_s=0.5",
        ),
    )
    trace = simulate(scenario, steps, seed=3)
    b = B * G
    prefill = PREFILL * B * P  # prefix caching: one prompt prefill per group
    decode = L * (A + GAMMA * b + BETA * b * P) + BETA * b * L * (L - 1) / 2
    tokens = b * (P + L)
    sq = b * (P + L) ** 2  # causal attention grows with each sequence's length squared
    flops = 2 * 989e12 * 0.5
    attention = 28 * 12 * 128  # layers x query width of Qwen2.5-1.5B
    # old-policy and reference passes (sync recomputes old log-probs), then the update
    forward = 2 * (2 * 1.54e9 * tokens + 2 * attention * sq) / flops
    train = (6 * 1.54e9 * tokens + 6 * attention * sq) / flops
    # gradient all-reduce of bf16 grads over 2 GPUs on NVLink (450 GB/s one way, 80%), then
    # Adam streaming 30 bytes per parameter of each GPU's half through HBM at 70%
    optimizer = 2 * (2 - 1) / 2 * 2 * 1.54e9 / (450e9 * 0.8) + 30 * 1.54e9 / 2 / (3.35e12 * 0.7)
    train += optimizer
    sync = 1.54e9 * 2 / 1e10 + 0.5
    busy = prefill + decode + forward + train
    ends = trace.steps["end_s"].to_list()
    for k, end in enumerate(ends):
        assert end == pytest.approx((k + 1) * busy + k * sync, rel=1e-9)
    cadence = busy + sync
    summary = summarize(trace, scenario, steps, 3)
    assert summary.step_time_s.mean == pytest.approx(cadence, rel=1e-9)
    assert summary.throughput.steps_per_h == pytest.approx(3600 / cadence, rel=1e-9)
    assert summary.throughput.samples_per_s == pytest.approx(b / cadence, rel=1e-9)
    assert summary.throughput.tokens_per_s == pytest.approx(tokens / cadence, rel=1e-9)
    assert summary.utilisation.rollout == pytest.approx((prefill + decode) / cadence, rel=1e-9)
    assert summary.utilisation.learner == pytest.approx((forward + train) / cadence, rel=1e-9)
    # the learner takes each batch the instant its last group completes: nothing waits
    assert summary.mean_queue_groups == 0.0
    gpus = 1 + 2
    assert summary.gpu_hours == pytest.approx(gpus * ends[-1] / 3600, rel=1e-12)
    assert summary.cost_usd == pytest.approx(summary.gpu_hours * 2.99, rel=1e-12)


def test_one_step_overlaps_training_with_generation_by_hand() -> None:
    """Generation-bound one_step: batches follow each other, each waiting only for the weight
    load (a blocking stall of ``sync``), so the cadence is ``gen + sync``."""
    P, L, B, G = 64, 400, 2, 2
    scenario = load_scenario(
        None,
        None,
        (
            "algorithm.mode=one_step",
            "model.preset=qwen2.5-1.5b",
            f"workload.prompts_per_step={B}",
            f"workload.group_size={G}",
            f"workload.prompt_tokens={{kind: fixed, value: {P}}}",
            f"workload.response_tokens={{kind: fixed, value: {L}}}",
            "cluster.rollout_engines=1",
            "cluster.learner_gpus=8",
            f"cluster.decode_coefficients={{a_s: {A}, beta_s_per_token: {BETA}, gamma_s_per_seq: {GAMMA}, prefill_s_per_token: {PREFILL}}}",
            "weight_sync.bandwidth_bytes_per_s=1e11",
            "weight_sync.latency_s=0.1",
        ),
    )
    steps = 8
    trace = simulate(scenario, steps, seed=0)
    b = B * G
    gen = PREFILL * B * P + L * (A + GAMMA * b + BETA * b * P) + BETA * b * L * (L - 1) / 2
    tokens = b * (P + L)
    sq = b * (P + L) ** 2
    train_rate = 8 * 989e12 * CATALOG["H100"].train_mfu
    forward_rate = 8 * 989e12 * CATALOG["H100"].forward_mfu
    attention = 28 * 12 * 128
    # one_step recomputes old log-probs and has a reference model: 2 + 2 + 6 FLOPs per param
    learn = (4 / forward_rate + 6 / train_rate) * (1.54e9 * tokens + attention * sq)
    learn += 2 * 7 / 8 * 2 * 1.54e9 / (450e9 * 0.8) + 30 * 1.54e9 / 8 / (3.35e12 * 0.7)
    sync = 1.54e9 * 2 / 1e11 + 0.1
    assert learn + sync < gen  # generation-bound, as the case intends
    # batch 0 and 1 generate back to back; batch k >= 2 starts after batch k-1 and a load
    done = [gen, 2 * gen]
    for _ in range(2, steps):
        done.append(done[-1] + sync + gen)
    ends = trace.steps["end_s"].to_list()
    for k in range(steps):
        assert ends[k] == pytest.approx(done[k] + learn, rel=1e-9)
    assert math.isclose(ends[-1] - ends[-2], gen + sync, rel_tol=1e-9)


def test_partial_rollout_round_token_budget_by_hand() -> None:
    """One sequence of 10 tokens with a budget of 4 per round: rounds of 4, 4 and 2 tokens on
    the same weights (no batch is complete before), each resuming with a fresh prefill of the
    prompt plus what was generated."""
    P, L, budget = 30, 10, 4
    scenario = load_scenario(
        None,
        None,
        (
            "algorithm.mode=partial_rollout",
            f"algorithm.round_token_budget={budget}",
            "algorithm.partial_overprovision=0",
            "model.preset=qwen2.5-1.5b",
            "workload.prompts_per_step=1",
            "workload.group_size=1",
            f"workload.prompt_tokens={{kind: fixed, value: {P}}}",
            f"workload.response_tokens={{kind: fixed, value: {L}}}",
            "cluster.rollout_engines=1",
            f"cluster.decode_coefficients={{a_s: {A}, beta_s_per_token: {BETA}, gamma_s_per_seq: {GAMMA}, prefill_s_per_token: {PREFILL}}}",
        ),
    )
    trace = simulate(scenario, 1, seed=0)

    def decode(n: int, context: int) -> float:
        return n * (A + GAMMA + BETA * context) + BETA * n * (n - 1) / 2

    t = 0.0
    for done, n in ((0, 4), (4, 4), (8, 2)):
        t += PREFILL * (P + done) + decode(n, P + done)
    first = trace.samples.row(0, named=True)
    assert first["finish_s"] == pytest.approx(t, rel=1e-12)
    assert first["staleness_max"] == 0 and first["consumed_step"] == 0


def test_measured_learner_coefficients_set_the_step_time() -> None:
    scenario = load_scenario(
        None,
        None,
        (
            "algorithm.mode=sync",
            "workload.prompts_per_step=2",
            "workload.group_size=2",
            "workload.prompt_tokens={kind: fixed, value: 10}",
            "workload.response_tokens={kind: fixed, value: 20}",
            "cluster.rollout_engines=1",
            f"cluster.decode_coefficients={{a_s: {A}, beta_s_per_token: 0, gamma_s_per_seq: 0}}",
            "cluster.learner_coefficients={train_gpu_s_per_token: 0.08, forward_gpu_s_per_token: 0.008, step_overhead_s: 0.75}",
            "algorithm.minibatches_per_step=2",
            "weight_sync.bandwidth_bytes_per_s=1e30",
            "weight_sync.latency_s=0.25",
        ),
    )
    trace = simulate(scenario, 3, seed=0)
    tokens = 4 * 30
    # per-GPU coefficients on the 8 learner GPUs (one node: no data-parallel loss); each of the
    # two optimizer steps runs its old-policy and reference passes, then its update
    learn = 2 * 0.75 + 2 * 0.008 * tokens / 8 + 0.08 * tokens / 8
    cadence = 20 * A + learn + 0.25 + 7.61e9 * 2 / 1e30
    ends = trace.steps["end_s"].to_list()
    assert ends[0] == pytest.approx(20 * A + learn, rel=1e-12)
    assert ends[2] - ends[1] == pytest.approx(cadence, rel=1e-12)


def test_sync_batch_larger_than_the_slots_queues_by_hand() -> None:
    """B*G = 8 samples on one engine of 4 slots: two waves of 4 (as vLLM's scheduler admits
    waiting sequences when running ones finish), each its two groups' prompt prefill plus L
    iterations at batch 4; then the learner. Throughput is B*G over that cadence."""
    P, L, B, G = 100, 50, 4, 2
    steps = 4
    scenario = load_scenario(
        None,
        None,
        (
            "algorithm.mode=sync",
            "model.preset=qwen2.5-1.5b",
            f"workload.prompts_per_step={B}",
            f"workload.group_size={G}",
            f"workload.prompt_tokens={{kind: fixed, value: {P}}}",
            f"workload.response_tokens={{kind: fixed, value: {L}}}",
            "cluster.rollout_engines=1",
            "cluster.max_num_seqs=4",
            f"cluster.decode_coefficients={{a_s: {A}, beta_s_per_token: {BETA}, gamma_s_per_seq: {GAMMA}, prefill_s_per_token: {PREFILL}}}",
            "weight_sync.bandwidth_bytes_per_s=1e10",
            "weight_sync.latency_s=0.5",
        ),
    )
    derived = derive(scenario)  # refused before: "launches a whole batch at once"
    trace = simulate(scenario, steps, seed=0)
    b = 4
    wave = PREFILL * 2 * P + L * (A + GAMMA * b + BETA * b * P) + BETA * b * L * (L - 1) / 2
    learn = derived.learner.step_s(B * G * (P + L), B * G * (P + L) ** 2)
    sync = 1.54e9 * 2 / 1e10 + 0.5
    ends = trace.steps["end_s"].to_list()
    for k, end in enumerate(ends):
        assert end == pytest.approx((k + 1) * (2 * wave + learn) + k * sync, rel=1e-9)
    summary = summarize(trace, scenario, steps, 0)
    cadence = 2 * wave + learn + sync
    assert summary.throughput.samples_per_s == pytest.approx(B * G / cadence, rel=1e-9)
    # never more than 4 sequences at once on the engine
    assert trace.samples["start_s"].n_unique() == 2 * steps
