"""The three costs of a weight publication, by hand: the learner's publish (``publish_s``), the
transfer (``bytes / bandwidth + latency_s``) and each engine's load (``load_s``).

Deterministic lengths, decode at ``A`` seconds per iteration, measured learner coefficients;
every figure below is a binary fraction or a short sum, so the comparisons are exact to 1e-12.
"""

from __future__ import annotations

import polars as pl
import pytest
from stalesim.sim.presets import load_scenario
from stalesim.sim.run import simulate

A = 0.01
PUBLISH, SYNC, LOAD = 0.125, 0.25, 0.0625
B, G, P = 2, 2, 10


def scenario(mode: str, L: int, *extra: str, split: bool = True):
    return load_scenario(
        None,
        None,
        (
            f"algorithm.mode={mode}",
            "algorithm.old_logprob_pass=false",
            "algorithm.reference_model=false",
            f"workload.prompts_per_step={B}",
            f"workload.group_size={G}",
            f"workload.prompt_tokens={{kind: fixed, value: {P}}}",
            f"workload.response_tokens={{kind: fixed, value: {L}}}",
            "cluster.rollout_engines=1",
            "cluster.learner_gpus=8",
            f"cluster.decode_coefficients={{a_s: {A}, beta_s_per_token: 0, gamma_s_per_seq: 0}}",
            "cluster.learner_coefficients={train_gpu_s_per_token: 0.008, forward_gpu_s_per_token: 0, step_overhead_s: 0.75}",
            "weight_sync.bandwidth_bytes_per_s=1e30",
            f"weight_sync.latency_s={SYNC}",
            *((f"weight_sync.publish_s={PUBLISH}", f"weight_sync.load_s={LOAD}") if split else ()),
            *extra,
        ),
    )


def learn(L: int) -> float:
    # per-GPU coefficient over the 8 learner GPUs of one node, plus the optimizer step's overhead
    return 0.75 + 0.008 * B * G * (P + L) / 8


def engine_syncs(trace) -> list[float]:
    rows = trace.busy.filter((pl.col("pool") == "rollout") & (pl.col("kind") == "sync"))
    return (rows["end_s"] - rows["start_s"]).to_list()


@pytest.mark.parametrize("policy", ["blocking", "overlapped"])
@pytest.mark.parametrize("split", [False, True])
def test_sync_pays_publish_transfer_and_load_in_series(policy: str, split: bool) -> None:
    """Sync: the engines wait for the learner's publish, the transfer and their own load, so
    each costs the cadence its full value once (the default, no split, is today's model)."""
    L = 20
    trace = simulate(scenario("sync", L, f"weight_sync.pause_policy={policy}", split=split), 4, 0)
    gen = L * A
    extra = PUBLISH + LOAD if split else 0.0
    ends = trace.steps["end_s"].to_list()
    assert ends[0] == pytest.approx(gen + learn(L), rel=1e-12)
    for k in range(1, 4):
        assert ends[k] - ends[k - 1] == pytest.approx(gen + learn(L) + SYNC + extra, rel=1e-12)
    # the engines' stall for each version: the transfer when it blocks them, then the load
    stall = (SYNC if policy == "blocking" else 0.0) + (LOAD if split else 0.0)
    # a load between every two batches (the one after the last step may fall past the run)
    stalls = engine_syncs(trace)
    assert len(stalls) >= 3 if stall else not stalls
    assert stalls == pytest.approx([stall] * len(stalls), rel=1e-12)


def test_one_step_hides_the_publish_but_not_the_load() -> None:
    """Generation-bound one_step (as test_sim_analytic's case): training and its publish end
    before the next batch is generated, so the cadence is ``gen + transfer + load``."""
    L = 400
    gen = L * A
    assert learn(L) + PUBLISH + SYNC < gen
    steps = 6
    trace = simulate(scenario("one_step", L), steps, 0)
    done = [gen, 2 * gen]
    for _ in range(2, steps):
        done.append(done[-1] + SYNC + LOAD + gen)
    ends = trace.steps["end_s"].to_list()
    for k in range(steps):
        assert ends[k] == pytest.approx(done[k] + learn(L), rel=1e-12)


@pytest.mark.parametrize("policy", ["blocking", "overlapped"])
def test_learner_bound_async_pays_the_publish_and_the_engine_the_load(policy: str) -> None:
    """Learner-bound async (generation of a batch: 0.2 s; training: 0.87 s): the learner's
    cadence is ``learn + publish`` (plus the transfer when it blocks), and every engine stall
    for new weights is the load (after the transfer when it blocks)."""
    L = 20
    trace = simulate(scenario("async", L, f"weight_sync.pause_policy={policy}"), 8, 0)
    blocking = policy == "blocking"
    cadence = learn(L) + PUBLISH + (SYNC if blocking else 0.0)
    ends = trace.steps["end_s"].to_list()
    for k in range(3, 8):
        assert ends[k] - ends[k - 1] == pytest.approx(cadence, rel=1e-12)
    stalls = engine_syncs(trace)
    assert len(stalls) >= 5
    assert stalls == pytest.approx([LOAD + (SYNC if blocking else 0.0)] * len(stalls), rel=1e-12)


def test_inflight_engines_load_at_their_next_boundary() -> None:
    """In flight (overlapped transfer), an engine takes the weights at its first iteration
    boundary after they arrive and stalls ``load_s`` there."""
    L = 400
    trace = simulate(
        scenario(
            "async",
            L,
            "algorithm.inflight_updates=true",
            "algorithm.max_staleness=4",
            "weight_sync.pause_policy=overlapped",
        ),
        4,
        0,
    )
    stalls = engine_syncs(trace)
    assert len(stalls) >= 3
    assert stalls == pytest.approx([LOAD] * len(stalls), rel=1e-12)
