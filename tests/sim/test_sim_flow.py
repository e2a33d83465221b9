"""When things happen: streaming consumption, weight publication, the two staleness bounds,
prefix caching, KV recompute, length drift and dynamic sampling. Hand-computed cases first,
then the direction and size each mechanism moves a prediction."""

from __future__ import annotations

import math

import polars as pl
import pytest
import simpy
from stalesim.common.config_file import ConfigError
from stalesim.sim.buffer import Buffer
from stalesim.sim.metrics import summarize
from stalesim.sim.modes import MODES
from stalesim.sim.modes.sync import SYNC
from stalesim.sim.pass_rate import BetaPassRate
from stalesim.sim.presets import load_scenario
from stalesim.sim.run import simulate
from stalesim.sim.trace import TraceRecorder

A, BETA, GAMMA, PREFILL = 0.01, 1e-6, 1e-4, 1e-5
COEFFS = (
    f"cluster.decode_coefficients={{a_s: {A}, beta_s_per_token: {BETA}, "
    f"gamma_s_per_seq: {GAMMA}, prefill_s_per_token: {PREFILL}}}"
)
QWEN_1_5B_WEIGHT_BYTES = 1.54e9 * 2
QWEN_1_5B_KV_BYTES_PER_TOKEN = 2 * 28 * 2 * 128 * 2


def decode(n: int, context: int, live: int = 1) -> float:
    """``n`` decode iterations of ``live`` sequences starting at ``context`` tokens."""
    return n * (A + GAMMA * live + BETA * context) + BETA * live * n * (n - 1) / 2


def scenario(*overrides: str):
    return load_scenario(None, None, ("model.preset=qwen2.5-1.5b", COEFFS, *overrides))


SMALL = (
    "workload.prompts_per_step=16",
    "workload.group_size=4",
    "workload.max_response_tokens=4096",
    "cluster.rollout_engines=4",
    "cluster.learner_gpus=4",
    "cluster.max_num_seqs=32",
)


def small(*overrides: str, steps: int = 12, seed: int = 0):
    sc = load_scenario(None, None, (*SMALL, *overrides))
    return sc, simulate(sc, steps, seed)


def consumed(trace) -> pl.DataFrame:
    return trace.samples.filter(pl.col("consumed_step").is_not_null())


# -- streaming consumption -------------------------------------------------------------


@pytest.mark.parametrize("streaming", [False, True])
def test_streaming_trains_the_first_chunk_while_the_second_generates(streaming: bool) -> None:
    """One engine whose KV cache holds one sequence: group 0 finishes at ``t1``, group 1 at
    ``2 t1``. A batch learner then trains both chunks (``2u``); a streaming one trained chunk
    0 during group 1's generation and has only chunk 1 left (``u``)."""
    P, L = 100, 50
    kv_tokens = 1.5 * (P + L)  # one sequence fits, two do not
    hbm = (QWEN_1_5B_WEIGHT_BYTES + (kv_tokens + 0.5) * QWEN_1_5B_KV_BYTES_PER_TOKEN) / 0.9
    train, forward = 1e-3, 2e-4
    sc = scenario(
        "algorithm.mode=sync",
        "algorithm.minibatches_per_step=2",
        f"algorithm.streaming={str(streaming).lower()}",
        f"hardware.hbm_bytes={hbm}",
        "workload.prompts_per_step=2",
        "workload.group_size=1",
        f"workload.prompt_tokens={{kind: fixed, value: {P}}}",
        f"workload.response_tokens={{kind: fixed, value: {L}}}",
        f"workload.max_response_tokens={L}",
        "cluster.rollout_engines=1",
        # the tiny GPU holds a 64th of the training state; per GPU on the 64 learner GPUs: the
        # update and each of sync's two forward passes
        "cluster.learner_gpus=64",
        f"cluster.learner_coefficients={{train_gpu_s_per_token: {64 * train}, "
        f"forward_gpu_s_per_token: {64 * forward / 2}}}",
        "weight_sync.bandwidth_bytes_per_s=1e30",
        "weight_sync.latency_s=0.25",
    )
    trace = simulate(sc, 4, seed=0)
    t1 = PREFILL * P + decode(L, P)
    u = (train + forward) * (P + L)
    assert u < t1  # chunk 0's training hides behind group 1's generation
    learn = u if streaming else 2 * u
    cadence = 2 * t1 + learn + 0.25
    ends = trace.steps["end_s"].to_list()
    assert ends[0] == pytest.approx(2 * t1 + learn, rel=1e-12)
    for k in range(1, 4):
        assert ends[k] - ends[k - 1] == pytest.approx(cadence, rel=1e-12)
    used = consumed(trace)
    # the mini-batch convention holds either way: chunk m is m versions stale
    assert (used["staleness_max"] == used["consumed_version"] - 2 * used["consumed_step"]).all()
    first = used.filter(pl.col("consumed_step") == 0).sort("consumed_version")["consumed_s"]
    assert first.to_list() == pytest.approx([t1, 2 * t1] if streaming else [2 * t1, 2 * t1])


def test_streaming_async_raises_throughput_on_a_long_tailed_workload() -> None:
    rates = {}
    for streaming in (False, True):
        sc, trace = small(
            "algorithm.mode=async",
            "algorithm.minibatches_per_step=4",
            "algorithm.max_staleness=4",
            "algorithm.consumption_order=deadline",
            f"algorithm.streaming={str(streaming).lower()}",
            steps=30,
        )
        used = consumed(trace)
        assert used.height == 30 * 64 and used["staleness_max"].max() <= 4
        rates[streaming] = summarize(trace, sc, 30, 0).throughput.samples_per_s
    assert rates[True] > 1.03 * rates[False]


# -- weight publication ------------------------------------------------------------------


@pytest.mark.parametrize("interval", [1, 2, 4])
def test_publish_interval_sets_the_learner_bound_cadence(interval: int) -> None:
    """Generation is nearly free, so the learner never waits: each learner step makes ``M``
    updates of ``u`` and ``M/K`` blocking publications of ``sync``."""
    M, P, L, B, G = 4, 20, 30, 8, 2
    train = 1e-3
    sc = load_scenario(
        None,
        None,
        (
            "algorithm.mode=async",
            f"algorithm.minibatches_per_step={M}",
            f"algorithm.publish_interval={interval}",
            "algorithm.max_staleness=8",
            "model.preset=qwen2.5-1.5b",
            f"workload.prompts_per_step={B}",
            f"workload.group_size={G}",
            f"workload.prompt_tokens={{kind: fixed, value: {P}}}",
            f"workload.response_tokens={{kind: fixed, value: {L}}}",
            "cluster.rollout_engines=2",
            "cluster.decode_coefficients={a_s: 1e-7, beta_s_per_token: 0, gamma_s_per_seq: 0}",
            f"cluster.learner_coefficients={{train_gpu_s_per_token: {8 * train}, "
            "forward_gpu_s_per_token: 0}",
            "weight_sync.bandwidth_bytes_per_s=1e30",
            "weight_sync.latency_s=0.5",
        ),
    )
    steps = 10
    trace = simulate(sc, steps, seed=0)
    u = train * (B // M) * G * (P + L)
    cadence = M * u + (M // interval) * 0.5
    ends = trace.steps["end_s"].to_list()
    for k in range(3, steps):
        assert ends[k] - ends[k - 1] == pytest.approx(cadence, rel=1e-9)
    used = consumed(trace)
    # engines only ever hold published versions
    assert (used["behaviour_version_min"] % interval == 0).all()
    syncs = trace.busy.filter((pl.col("pool") == "learner") & (pl.col("kind") == "sync"))
    assert syncs.height == steps * M // interval


# -- admission limit and drop filter -----------------------------------------------------


def test_deadlines_hold_by_hand() -> None:
    """S_max=2, one group per version: A, B, C started on version 0 (deadline 2); version 0
    took A; D started on version 1 (deadline 3) finished first. Taking D at version 1 would
    leave B and C both due at version 2: the learner must wait for B or C."""
    env = simpy.Environment()
    buffer = Buffer(env, TraceRecorder(group_size=1))
    buffer.put(3, 0.0, key=3)  # D
    assert not buffer.deadlines_hold(1, 1, 1, {2: 2})
    buffer.put(1, 0.0, key=2)  # B completes
    assert buffer.deadlines_hold(1, 1, 1, {2: 1})
    assert buffer.take(1, 0.0) == [1]  # earliest deadline first
    assert not buffer.deadlines_hold(1, 2, 1, {2: 1})  # C due now and unfinished
    # two groups per version absorb the same load
    assert buffer.deadlines_hold(1, 1, 2, {2: 2})


def test_admission_limit_keeps_what_the_drop_filter_discards() -> None:
    """On a long-tailed workload with in-flight updates, a drop filter at S_max discards the
    slow groups. The admission limit alone keeps them: consumed as they complete, part of them
    end up staler than S_max; consumed by deadline, none does, and the learner waits for them."""
    base = ("algorithm.mode=async", "algorithm.max_staleness=1", "algorithm.inflight_updates=true")
    runs = {
        name: small(*base, *extra, steps=40)
        for name, extra in (
            ("filter", ("algorithm.staleness_filter=1",)),
            ("completion", ()),
            ("deadline", ("algorithm.consumption_order=deadline",)),
        )
    }
    filtered = runs["filter"][1]
    dropped = filtered.samples.filter(pl.col("dropped_reason") == "staleness_filter")
    assert dropped.height > 0.03 * 40 * 64
    # the filter discards the long tail: its dropped samples are longer than what it keeps
    assert dropped["response_tokens"].mean() > consumed(filtered)["response_tokens"].mean()
    rates = {}
    for name in ("completion", "deadline"):
        sc, trace = runs[name]
        assert trace.samples["dropped_reason"].is_in(["staleness_filter"]).sum() == 0
        assert (
            consumed(trace)["response_tokens"].mean() > consumed(filtered)["response_tokens"].mean()
        )
        rates[name] = summarize(trace, sc, 40, 0).throughput.samples_per_s
    late = consumed(runs["completion"][1])["staleness_max"]
    assert late.max() > 1 and 0 < float((late > 1).mean()) < 0.5
    assert consumed(runs["deadline"][1])["staleness_max"].max() == 1
    assert rates["deadline"] < rates["completion"]


def test_stale_fraction_zero_is_the_on_policy_admission_limit() -> None:
    _, by_fraction = small("algorithm.mode=async", "algorithm.max_stale_fraction=0")
    _, by_version = small("algorithm.mode=async", "algorithm.max_staleness=0")
    assert by_fraction.samples.equals(by_version.samples)
    assert consumed(by_fraction)["staleness_max"].max() == 0


def test_stale_fraction_caps_the_share_of_off_policy_samples() -> None:
    """With ``f <= 1`` the engines start ``f`` chunks beyond what their weights are for: a
    share ``f`` of each chunk comes from the previous weights, the rest is on-policy. With
    ``f = 2`` every sample is off-policy and some are two versions old."""
    for f, share, oldest in ((0.25, 0.25, 1), (0.5, 0.5, 1), (1.0, 1.0, 1), (2.0, 1.0, 2)):
        _, trace = small(
            "algorithm.mode=async",
            f"algorithm.max_stale_fraction={f}",
            "workload.response_tokens={kind: fixed, value: 2000}",
            steps=40,
        )
        used = consumed(trace).filter(pl.col("consumed_step") >= 4)
        assert float((used["staleness_max"] >= 1).mean()) == pytest.approx(share, abs=1e-9)
        assert used["staleness_max"].max() == oldest


# -- engines: prefix caching and KV recompute -------------------------------------------


@pytest.mark.parametrize("caching", [False, True])
def test_prefix_caching_prefills_a_prompt_once_per_group(caching: bool) -> None:
    P, L, B, G = 300, 20, 3, 4
    sc = scenario(
        "algorithm.mode=sync",
        f"cluster.prefix_caching={str(caching).lower()}",
        f"workload.prompts_per_step={B}",
        f"workload.group_size={G}",
        f"workload.prompt_tokens={{kind: fixed, value: {P}}}",
        f"workload.response_tokens={{kind: fixed, value: {L}}}",
        "cluster.rollout_engines=1",
    )
    trace = simulate(sc, 2, seed=0)
    prompts = B if caching else B * G
    assert trace.info["prefill_s"] == pytest.approx(2 * PREFILL * prompts * P, rel=1e-12)
    finish = trace.samples.filter(pl.col("group_id") < B)["finish_s"]
    assert finish.to_list() == pytest.approx(
        [PREFILL * prompts * P + decode(L, P * B * G, B * G)] * (B * G), rel=1e-12
    )


@pytest.mark.parametrize("policy", ["keep", "recompute"])
def test_inflight_update_keeps_or_recomputes_the_kv_cache(policy: str) -> None:
    """One slot: sequence 1 starts when sequence 0 finishes (``t1``); the learner trains on
    sequence 0 for ``u`` and publishes with a blocking stall of ``sync``. Sequence 1 takes the
    weights at the first boundary after ``t1 + u``, after ``n`` tokens, and with ``recompute``
    prefills its ``P + n`` tokens again before going on."""
    P, L, train, sync = 100, 400, 1e-4, 0.1
    sc = scenario(
        "algorithm.mode=async",
        "algorithm.max_staleness=1",
        "algorithm.inflight_updates=true",
        f"algorithm.kv_cache_on_update={policy}",
        "workload.prompts_per_step=1",
        "workload.group_size=1",
        f"workload.prompt_tokens={{kind: fixed, value: {P}}}",
        f"workload.response_tokens={{kind: fixed, value: {L}}}",
        "cluster.rollout_engines=1",
        "cluster.max_num_seqs=1",
        f"cluster.learner_coefficients={{train_gpu_s_per_token: {8 * train}, "
        "forward_gpu_s_per_token: 0}",
        "weight_sync.bandwidth_bytes_per_s=1e30",
        f"weight_sync.latency_s={sync}",
    )
    trace = simulate(sc, 2, seed=0)
    t1 = PREFILL * P + decode(L, P)
    u = train * (P + L)
    start = t1 + PREFILL * P
    n = 0
    while start + decode(n, P) < t1 + u:
        n += 1
    recompute = PREFILL * (P + n) if policy == "recompute" else 0.0
    resume = max(start + decode(n, P), t1 + u + sync) + recompute
    second = trace.samples.row(1, named=True)
    assert second["finish_s"] == pytest.approx(resume + decode(L - n, P + n), rel=1e-12)
    # sequence 2 takes version 2 the same way (same timeline shifted): two recomputes
    assert trace.info["kv_recompute_s"] == pytest.approx(2 * recompute, rel=1e-12)
    assert summarize(trace, sc, 2, 0).kv_recompute_s == trace.info["kv_recompute_s"]
    assert second["behaviour_version_min"] == 0 and second["behaviour_version_max"] == 1


# -- workload: length drift and dynamic sampling -----------------------------------------


def test_response_lengths_grow_per_learner_step() -> None:
    L, growth = 100, 0.05
    sc = scenario(
        "algorithm.mode=sync",
        f"workload.response_growth_per_step={growth}",
        "workload.prompts_per_step=2",
        "workload.group_size=2",
        "workload.prompt_tokens={kind: fixed, value: 10}",
        f"workload.response_tokens={{kind: fixed, value: {L}}}",
        "workload.max_response_tokens=140",
        "cluster.rollout_engines=1",
    )
    trace = simulate(sc, 12, seed=0)
    per_step = consumed(trace).group_by("consumed_step").agg(pl.col("response_tokens").unique())
    for step, lengths in per_step.iter_rows():
        assert lengths == [min(140, round(L * (1 + growth * step)))]
    durations = trace.steps.select(pl.col("end_s").diff()).to_series().drop_nulls().to_list()
    assert durations[0] < durations[5] and durations[-1] == pytest.approx(durations[-2])


def test_uniform_reward_probability_by_hand() -> None:
    assert BetaPassRate().uniform_probability(8) == pytest.approx(2 / 9, rel=1e-12)
    # Beta(2, 3), G=2: E[p^2] + E[(1-p)^2] = 6/30 + 12/30
    assert BetaPassRate(alpha=2, beta=3).uniform_probability(2) == pytest.approx(0.6, rel=1e-12)


def test_dynamic_sampling_discards_uniform_groups_and_refills_the_batch() -> None:
    G, steps = 4, 40
    q = 2 / (G + 1)  # Beta(1, 1)
    runs = {}
    for on in (False, True):
        sc, trace = small(
            "algorithm.mode=sync", f"algorithm.dynamic_sampling={str(on).lower()}", steps=steps
        )
        runs[on] = (sc, trace)
    sc, trace = runs[True]
    s = trace.samples
    discarded = s.filter(pl.col("dropped_reason") == "zero_variance")
    groups = s["group_id"].n_unique()
    assert discarded["group_id"].n_unique() == pytest.approx(
        q * groups, abs=4 * (q * groups) ** 0.5
    )
    assert consumed(trace).height == steps * 64  # every batch is full
    # generated = consumed + dropped + in flight, each sample exactly one of them
    reason = s["dropped_reason"]
    assert (s["consumed_step"].is_not_null() ^ reason.is_not_null()).all()
    assert set(reason.drop_nulls().unique()) <= {"zero_variance", "in_flight", "in_buffer"}
    assert (discarded["finish_s"].is_not_null()).all()
    assert trace.info["samples_finished"] == s.filter(pl.col("finish_s").is_not_null()).height
    # lengths are the same draws with and without it; the batch costs more generation
    plain = runs[False][1].samples
    assert s["response_tokens"].head(64).equals(plain["response_tokens"].head(64))
    slow = summarize(trace, sc, steps, 0).step_time_s.mean
    fast = summarize(runs[False][1], runs[False][0], steps, 0).step_time_s.mean
    assert slow > 1.2 * fast


# -- the house: modes in a registry, checks --------------------------------------------------


def test_a_mode_is_one_registry_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    monkeypatch.setitem(MODES, "sync_copy", replace(SYNC, name="sync_copy"))
    _, trace = small("algorithm.mode=sync_copy")
    _, reference = small("algorithm.mode=sync")
    assert trace.samples.equals(reference.samples)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("algorithm.mode=warp",), "allowed: sync_colocated, sync, one_step, async"),
        (("algorithm.mode=sync", "algorithm.publish_interval=2"), "publish_interval is for"),
        (("algorithm.mode=one_step", "algorithm.max_stale_fraction=0.5"), "max_stale_fraction"),
        (
            ("algorithm.minibatches_per_step=4", "algorithm.max_staleness=1"),
            "allowed: >= 3",
        ),
        (
            (
                "algorithm.minibatches_per_step=4",
                "algorithm.publish_interval=2",
                "algorithm.max_staleness=2",
            ),
            "allowed: >= 3",
        ),
        (
            (
                "algorithm.minibatches_per_step=4",
                "algorithm.publish_interval=1",
                "algorithm.max_stale_fraction=1",
            ),
            "allowed: >= 3",
        ),
        (("algorithm.kv_cache_on_update=recompute",), "needs sequences that continue"),
        (("algorithm.mode=sync_colocated", "algorithm.streaming=true"), "share the same GPUs"),
        (
            ("algorithm.consumption_order=deadline", "algorithm.staleness_filter=3"),
            "consumption_order=deadline keeps",
        ),
        (("algorithm.dynamic_sampling=true", "workload.group_size=1"), "group_size >= 2"),
        (
            (
                "algorithm.dynamic_sampling=true",
                "workload.pass_rate={alpha: 0.01, beta: 0.01}",
            ),
            "at most 95%",
        ),
        (("workload.response_growth_per_step=2",), "response_growth_per_step"),
        (("algorithm.max_stale_fraction=-1",), "max_stale_fraction"),
    ],
)
def test_flow_keys_are_checked(overrides: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_scenario(None, None, overrides)


@pytest.mark.parametrize(
    ("m", "k", "streaming", "inflight", "policy"),
    [
        (1, 1, False, False, "blocking"),
        (2, 1, True, False, "overlapped"),
        (2, 3, False, False, "overlapped"),
        (2, 2, True, True, "blocking"),
        (4, 1, True, True, "overlapped"),
        (4, 2, False, True, "blocking"),
        (4, 4, True, False, "blocking"),
    ],
)
def test_deadline_order_never_stalls_and_keeps_the_bound(
    m: int, k: int, streaming: bool, inflight: bool, policy: str
) -> None:
    """Whatever the chunking and publication, the learner consuming by deadline finishes its
    steps (never waits forever) and no consumed group is staler than the admission limit."""
    s_max = (k - 1 if streaming else m - 1 + k - math.gcd(m, k)) + 1
    _, trace = small(
        "algorithm.mode=async",
        f"algorithm.minibatches_per_step={m}",
        f"algorithm.publish_interval={k}",
        f"algorithm.streaming={str(streaming).lower()}",
        f"algorithm.inflight_updates={str(inflight).lower()}",
        f"algorithm.max_staleness={s_max}",
        "algorithm.consumption_order=deadline",
        "algorithm.dynamic_sampling=true",
        f"weight_sync.pause_policy={policy}",
        steps=10,
    )
    used = consumed(trace)
    assert trace.steps.height == 10 and used.height == 10 * 64
    assert used["staleness_max"].max() <= s_max
    assert (used["behaviour_version_min"] % k == 0).all()


def test_chunk_size_counts_tokens_and_squared_context() -> None:
    """The learner's per-chunk inputs to the cost block: tokens and sum of (prompt+response)^2."""
    from stalesim.sim.cluster import Cluster
    from stalesim.sim.derived import derive

    sc = load_scenario(None, None, SMALL)
    cluster = Cluster(sc, derive(sc), 1, 3)
    cluster.launch(5, 0.0)
    rec = cluster.rec
    groups = [0, 2, 4]
    sids = [g * 4 + i for g in groups for i in range(4)]
    lengths = [rec.prompt_tokens[i] + rec.response_tokens[i] for i in sids]
    assert cluster._chunk_size(groups) == (sum(lengths), sum(n * n for n in lengths))


def test_partial_rollout_groups_dropped_between_rounds_wait_for_the_next_round() -> None:
    """A drop filter at 0 discards resumed groups when the learner takes them, while the
    engines are parked for the weight load; their replacements join the next round instead of
    starting on the parked engines (which stopped the simulation before)."""
    sc = load_scenario(
        None,
        None,
        (
            "algorithm.mode=partial_rollout",
            "algorithm.staleness_filter=0",
            "algorithm.partial_overprovision=1.0",
            "weight_sync.pause_policy=overlapped",
            "model.preset=qwen2.5-1.5b",
            "workload.prompts_per_step=2",
            "workload.group_size=1",
            "workload.response_tokens={kind: fixed, value: 1}",
            "workload.max_response_tokens=64",
            "cluster.rollout_engines=1",
            "cluster.learner_gpus=2",
        ),
    )
    steps = 4
    trace = simulate(sc, steps, seed=0)
    used = consumed(trace)
    assert used.height == steps * 2
    assert (used["staleness_max"] == 0).all()
    assert (used.group_by("consumed_step").len()["len"] == 2).all()


def test_partial_rollout_refuses_a_drop_filter_below_its_schedule() -> None:
    """With 2 mini-batches the second is 1 version stale by construction: a filter at 0 would
    drop and replace its groups forever (the simulation never ended)."""
    with pytest.raises(ConfigError, match="would drop every group of some mini-batch"):
        load_scenario(
            None,
            None,
            (
                "algorithm.mode=partial_rollout",
                "algorithm.minibatches_per_step=2",
                "algorithm.staleness_filter=0",
            ),
        )
