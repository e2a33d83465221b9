"""The global cap on concurrent rollouts and the batch-filling dynamic sampling policies:
hand-computed timings, the expected number of generated groups per step, and invariants."""

from __future__ import annotations

import math

import polars as pl
import pytest
from scipy.stats import binom
from stalesim.common.config_file import ConfigError
from stalesim.sim.presets import load_scenario
from stalesim.sim.run import simulate

A, BETA, GAMMA, PREFILL = 0.01, 1e-6, 1e-4, 1e-5
COEFFS = (
    f"cluster.decode_coefficients={{a_s: {A}, beta_s_per_token: {BETA}, "
    f"gamma_s_per_seq: {GAMMA}, prefill_s_per_token: {PREFILL}}}"
)


def decode(n: int, context: int, live: int) -> float:
    """``n`` decode iterations of ``live`` sequences starting at ``context`` tokens."""
    return n * (A + GAMMA * live + BETA * context) + BETA * live * n * (n - 1) / 2


# -- the global cap ----------------------------------------------------------------------


@pytest.mark.parametrize("cap", [None, 2, 3])
def test_cap_runs_the_batch_in_waves(cap: int | None) -> None:
    """One engine with room for the whole batch of 6 single-sample groups of fixed length:
    with a cap of ``k`` groups it generates ``6/k`` waves of ``k`` sequences, each paying
    its prefill and ``L`` iterations at batch ``k``; without one, a single wave of 6."""
    P, L, B = 100, 40, 6
    overrides = [
        "model.preset=qwen2.5-1.5b",
        COEFFS,
        "algorithm.mode=sync",
        "cluster.rollout_engines=1",
        "cluster.max_num_seqs=64",
        f"workload.prompts_per_step={B}",
        "workload.group_size=1",
        f"workload.prompt_tokens={{kind: fixed, value: {P}}}",
        f"workload.response_tokens={{kind: fixed, value: {L}}}",
        f"workload.max_response_tokens={L}",
    ]
    if cap is not None:
        overrides.append(f"algorithm.max_concurrent_rollouts={cap}")
    trace = simulate(load_scenario(None, None, tuple(overrides)), 1, 0)
    k = cap or B
    wave = k * P * PREFILL + decode(L, k * P, k)
    finish = trace.samples.sort("finish_s")["finish_s"].to_list()
    for w in range(B // k):
        assert finish[w * k : (w + 1) * k] == pytest.approx([(w + 1) * wave] * k, rel=1e-9)


def live_groups_max(samples: pl.DataFrame) -> int:
    """The most groups that were started and not yet complete at any moment."""
    groups = (
        samples.filter(pl.col("start_s").is_not_null())
        .group_by("group_id")
        .agg(pl.col("start_s").min(), pl.col("group_complete_s").first())
    )
    events = [(t, 1) for t in groups["start_s"]] + [
        (t, -1) for t in groups["group_complete_s"] if t is not None
    ]
    live = most = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):  # ends before starts
        live += delta
        most = max(most, live)
    return most


@pytest.mark.parametrize("mode", ["async", "sync", "one_step", "partial_rollout"])
def test_cap_holds_over_all_engines_and_binds(mode: str) -> None:
    """Four engines of 32 slots would run 16 groups of 4 at once; a cap of 5 keeps at most 5
    started and unfinished at any time (the trace's own start and completion times), and the
    run takes longer than without it."""
    small = (
        "workload.prompts_per_step=16",
        "workload.group_size=4",
        "workload.max_response_tokens=4096",
        "cluster.rollout_engines=4",
        "cluster.learner_gpus=4",
        "cluster.max_num_seqs=32",
        f"algorithm.mode={mode}",
    )
    free = simulate(load_scenario(None, None, small), 6, 1)
    capped = simulate(
        load_scenario(None, None, (*small, "algorithm.max_concurrent_rollouts=5")), 6, 1
    )
    assert live_groups_max(free.samples) > 5
    assert live_groups_max(capped.samples) <= 5
    assert capped.steps["end_s"][-1] > 1.2 * free.steps["end_s"][-1]


# -- dynamic sampling policies -------------------------------------------------------------


def expected_groups_per_step(b: int, chunk: int, keep: float) -> tuple[float, float]:
    """Mean and standard deviation of the groups generated for one batch of ``b`` kept groups
    when groups are generated ``chunk`` at a time and each is kept with probability ``keep``:
    ``chunk * R`` with ``R`` the fewest chunks whose groups hold ``b`` kept ones,
    ``P(R > r) = P(Binomial(r * chunk, keep) < b)``."""
    tail = [binom.cdf(b - 1, r * chunk, keep) for r in range(400)]
    mean = sum(tail)
    second = sum((2 * r + 1) * p for r, p in enumerate(tail))
    return chunk * mean, chunk * math.sqrt(second - mean * mean)


FAST = (
    "model.preset=qwen2.5-1.5b",
    COEFFS,
    "workload.prompts_per_step=8",
    "workload.group_size=4",  # Beta(1, 1) pass rate: a group is uniform with 2/(G+1) = 0.4
    "workload.prompt_tokens={kind: fixed, value: 32}",
    "workload.response_tokens={kind: lognormal, mean: 40, sigma: 0.5}",
    "workload.max_response_tokens=128",
    "cluster.rollout_engines=2",
    "cluster.learner_gpus=2",
    "cluster.max_num_seqs=64",
    "algorithm.dynamic_sampling=true",
)


@pytest.mark.parametrize("policy", ["oversample", "regenerate"])
@pytest.mark.parametrize(("mode", "chunk"), [("sync", 8), ("sync", 3), ("one_step", 12)])
def test_generated_groups_per_step_match_the_chunk_count(policy: str, mode: str, chunk: int):
    """Both policies stop generating at the first chunk that completes the batch, so the
    groups generated per step are ``chunk`` times that chunk count (its law above); the
    learner trains on exactly ``B`` kept groups per step."""
    steps, b = 300, 8
    sc = load_scenario(
        None,
        None,
        (
            *FAST,
            f"algorithm.mode={mode}",
            f"algorithm.dynamic_sampling_policy={policy}",
            f"algorithm.dynamic_sampling_chunk={chunk}",
        ),
    )
    trace = simulate(sc, steps, 2)
    s = trace.samples
    mean, sd = expected_groups_per_step(b, chunk, 1 - 2 / 5)
    generated = s["group_id"].n_unique()
    assert generated / steps == pytest.approx(mean, abs=4 * sd / math.sqrt(steps))
    assert generated % chunk == 0
    used = s.filter(pl.col("consumed_step").is_not_null())
    assert used["group_id"].n_unique() == steps * b
    reasons = set(s["dropped_reason"].drop_nulls().unique())
    assert reasons <= {"zero_variance", "aborted", "surplus"}
    if policy == "oversample":
        # aborted groups were cut off: none of their samples is still counted as generated
        aborted = s.filter(pl.col("dropped_reason") == "aborted")
        assert aborted.height > 0
        assert aborted["group_complete_s"].null_count() == aborted.height
    else:
        assert "aborted" not in reasons


def test_regenerate_trains_only_after_the_whole_generation_batch() -> None:
    """verl trains on a step's batch once its last generation batch is complete: no step
    starts before the last group launched for it completed."""
    sc = load_scenario(
        None,
        None,
        (*FAST, "algorithm.mode=sync", "algorithm.dynamic_sampling_policy=regenerate"),
    )
    trace = simulate(sc, 30, 0)
    s = trace.samples
    for step, start in zip(trace.steps["step"], trace.steps["start_s"], strict=True):
        before = s.filter(pl.col("group_launch_s") < start)
        assert before["group_complete_s"].max() <= start + 1e-9, step


def test_policy_with_the_default_refill_is_unchanged() -> None:
    """``refill`` is today's behaviour: naming it changes nothing."""
    base = (*FAST, "algorithm.mode=sync")
    plain = simulate(load_scenario(None, None, base), 20, 0)
    named = simulate(
        load_scenario(None, None, (*base, "algorithm.dynamic_sampling_policy=refill")), 20, 0
    )
    assert plain.samples.equals(named.samples)


def test_regenerate_stops_after_its_generation_batches() -> None:
    """verl stops the run when ``max_num_gen_batches`` batches did not keep ``B`` groups."""
    sc = load_scenario(
        None,
        None,
        (
            *FAST,
            "algorithm.mode=sync",
            "algorithm.dynamic_sampling_policy=regenerate",
            "algorithm.dynamic_sampling_chunk=1",
            "algorithm.dynamic_sampling_max_rounds=2",
        ),
    )
    with pytest.raises(ConfigError, match="dynamic_sampling_max_rounds=2: learner step 0"):
        simulate(sc, 3, 0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("algorithm.dynamic_sampling_policy=oversample",), "need algorithm.dynamic_sampling"),
        (
            ("algorithm.dynamic_sampling=true", "algorithm.dynamic_sampling_policy=oversample"),
            "not async",
        ),
        (
            (
                "algorithm.mode=sync",
                "algorithm.dynamic_sampling=true",
                "algorithm.dynamic_sampling_max_rounds=3",
            ),
            "needs algorithm.dynamic_sampling_policy=regenerate",
        ),
        (("algorithm.max_concurrent_rollouts=0",), "max_concurrent_rollouts"),
    ],
)
def test_policy_keys_are_checked(overrides: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_scenario(None, None, overrides)


# -- learner step variance -------------------------------------------------------------------


def test_learner_step_cv_varies_steps_around_the_same_mean() -> None:
    """A sync run whose learner steps take a lognormal multiple of their cost with CV 0.3: the
    update phases' CV is 0.3 and their mean the deterministic run's (both within sampling
    error over 400 steps); lengths are the same draws."""
    base = (*FAST, "algorithm.mode=sync", "algorithm.dynamic_sampling=false")
    steps, cv = 400, 0.3
    plain = simulate(load_scenario(None, None, base), steps, 0)
    noisy = simulate(load_scenario(None, None, (*base, f"cluster.learner_step_cv={cv}")), steps, 0)
    assert noisy.samples["response_tokens"].equals(plain.samples["response_tokens"])

    def updates(trace) -> pl.Series:
        b = trace.busy.filter(pl.col("kind") == "update")
        return b["end_s"] - b["start_s"]

    quiet, varied = updates(plain), updates(noisy)
    ratio = varied / quiet
    assert ratio.mean() == pytest.approx(1.0, abs=4 * cv / math.sqrt(steps))
    assert ratio.std() == pytest.approx(cv, rel=0.15)
    assert (quiet / quiet.mean() - 1).abs().max() < 0.5  # the plain steps are near-constant


def test_decode_iteration_cv_spreads_generation_around_the_modelled_time() -> None:
    """One sequence of ``L`` iterations per step on one engine: with independent iterations of
    CV ``c`` its decode time has mean the modelled time and CV ``c / sqrt(L)`` (300 steps)."""
    P, L, cv, steps = 100, 64, 0.8, 300
    sc = load_scenario(
        None,
        None,
        (
            "model.preset=qwen2.5-1.5b",
            COEFFS,
            "algorithm.mode=sync",
            "cluster.rollout_engines=1",
            "workload.prompts_per_step=1",
            "workload.group_size=1",
            f"workload.prompt_tokens={{kind: fixed, value: {P}}}",
            f"workload.response_tokens={{kind: fixed, value: {L}}}",
            f"workload.max_response_tokens={L}",
            f"cluster.decode_iteration_cv={cv}",
        ),
    )
    s = simulate(sc, steps, 0).samples
    ratio = (s["finish_s"] - s["start_s"] - P * PREFILL) / decode(L, P, 1)
    expected = cv / math.sqrt(L)
    assert ratio.mean() == pytest.approx(1.0, abs=4 * expected / math.sqrt(steps))
    assert ratio.std() == pytest.approx(expected, rel=0.15)
