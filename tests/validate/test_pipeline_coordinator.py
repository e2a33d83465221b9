"""The pipeline's coordinator admits and drops by the simulator's rules (no Ray: a plain object).

Async: ``max_staleness`` (or ``max_stale_fraction``) limits admission to the simulator's
``groups_ahead`` beyond the engines' oldest version, counted in groups launched and not dropped;
only ``staleness_filter`` drops, as ``Cluster._take_chunk`` does.
"""

from __future__ import annotations

import time

import polars as pl
import pytest

pytest.importorskip("torch")

from stalesim.common.config_file import ConfigError
from stalesim.sim.modes import MODES
from stalesim.validate.pipeline.config import PipelineConfig
from stalesim.validate.pipeline.coordinator import Coordinator

G = 2


def config(B: int = 4, M: int = 1, **algorithm) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "train": {
                "task": {"n_digits": 3, "base": 5},
                "prompts_per_step": B,
                "samples_per_prompt": G,
                "minibatches_per_step": M,
            },
            "algorithm": {
                "mode": "async",
                "old_logprob_pass": False,
                "reference_model": False,
                "minibatches_per_step": M,
                **algorithm,
            },
            "max_num_seqs": 1000,
        }
    ).check()


def admit(c: Coordinator, version: int = 0) -> list[int]:
    reply = c.exchange(0, version, 0, 10_000, 0, [], [], {}, wait=False)
    return [w["sample_id"] for w in reply["admit"]]


def groups(c: Coordinator):
    """One row per group of the coordinator's trace so far."""
    return c.snapshot()["samples"].unique("group_id", keep="first", maintain_order=True)


def finish(c: Coordinator, ids: list[int], version: int) -> None:
    items = [
        {"sample_id": i, "tokens": [1], "logps": [0.0], "versions": [version],
         "finish_s": 0.0, "reward": 1.0}
        for i in ids
    ]  # fmt: skip
    c.exchange(0, version, 0, 0, 0, items, [], {}, wait=False)


@pytest.mark.parametrize(
    ("B", "M", "algorithm", "groups"),
    [
        (4, 1, {"max_staleness": 0}, 4),  # (S + 1) * B / M
        (4, 1, {"max_staleness": 2}, 12),
        (4, 2, {"max_staleness": 3}, 8),  # chunk 2, 4 chunks
        (4, 2, {"max_stale_fraction": 0.5}, 6),  # floor((1 + f) * K * chunk), K = M = 2
    ],
)
def test_async_admits_the_simulators_limit(B, M, algorithm, groups) -> None:
    c = Coordinator(config(B, M, **algorithm), time.time())
    assert len(admit(c)) == groups * G
    assert admit(c) == []  # the limit holds until the engines' weights move
    chunk = B // M
    assert len(admit(c, version=1)) == chunk * G  # one version later: one chunk more


def test_max_staleness_never_drops_only_the_filter_does() -> None:
    for filt, dropped in ((None, 0), (1, 2)):
        c = Coordinator(config(B=2, max_staleness=0, staleness_filter=filt), time.time())
        first = admit(c)
        assert len(first) == 2 * G
        finish(c, first, version=0)
        batch = c.take_batch(step=2, timeout_s=0.05)  # version 2: both groups lag 2 > 0
        assert c.dropped == dropped
        if filt is None:
            assert batch is not None and batch["groups"] == [0, 1]
            assert groups(c)["consumed_version"].to_list()[:2] == [2, 2]
        else:
            assert batch is None  # both dropped, nothing left to consume
            assert groups(c)["dropped_reason"].to_list()[:2] == ["staleness_filter"] * 2
            # dropped groups leave the admission count, as the simulator's launched - dropped
            assert len(admit(c)) == 2 * G
    # the rule both runtimes ask: the drop filter's bound, never max_staleness
    policy = MODES["async"].admission
    assert policy is not None
    assert Coordinator(config(max_staleness=1), 0.0).run.staleness_filter is None
    run = Coordinator(config(staleness_filter=3), 0.0).run
    assert policy.drop_reason(5, 2, run) is None  # 3 versions stale: within the filter
    assert policy.drop_reason(6, 2, run) == "staleness_filter"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("streaming", True),
        ("consumption_order", "deadline"),
        ("dynamic_sampling", True),
        ("publish_interval", 2),
        ("kv_cache_on_update", "recompute"),
    ],
)
def test_settings_the_pipeline_does_not_run_are_refused(key, value) -> None:
    with pytest.raises(ConfigError, match=f"algorithm.{key}={value} is not run by the pipeline"):
        config(M=1, **{key: value})


def test_the_simulators_own_mode_check_applies() -> None:
    """Two optimizer steps per learner step need chunks one version past the engines' weights:
    ``max_staleness=0`` could never admit them (the simulator refuses it; so does the pipeline)."""
    with pytest.raises(ConfigError, match=r"algorithm\.max_staleness=0"):
        config(B=4, M=2, max_staleness=0)
    assert config(B=4, M=2, max_staleness=1).algorithm.max_staleness == 1


def test_partial_rollout_round_ends_at_the_report_that_completes_the_batch() -> None:
    """The reply to the report that completes the round's ``B`` groups admits nothing and stops
    the engine's live sequences, as the simulator stops them at that iteration boundary; the
    next round starts on the next version once the engine has stopped."""
    c = Coordinator(config(B=2, mode="partial_rollout", partial_overprovision=0.5), time.time())
    first = c.exchange(0, 0, 0, 4, 0, [], [], {}, wait=False)
    assert [w["sample_id"] for w in first["admit"]] == [0, 1, 2, 3]  # 3 groups launched, 4 slots
    assert c.launched == 3
    # groups 0 and 1 complete: the batch is there; samples 4 and 5 wait, none is live
    items = [
        {"sample_id": i, "tokens": [1], "logps": [0.0], "versions": [0],
         "finish_s": 0.0, "reward": 1.0}
        for i in range(4)
    ]  # fmt: skip
    reply = c.exchange(0, 0, 0, 4, 0, items, [], {}, wait=False)
    assert reply["admit"] == []
    assert reply["preempt"] and reply["epoch"] == 1
    batch = c.take_batch(step=0, timeout_s=0.05)
    assert batch is not None and batch["groups"] == [0, 1]
    assert c.preempt_epoch == 1  # the take does not end the round a second time
    # the engine stopped (epoch 1); round 1 waits for step 0's weights
    assert c.exchange(0, 0, 1, 4, 0, [], [], {}, wait=False)["admit"] == []
    c.trained = 1
    resumed = c.exchange(0, 1, 1, 4, 0, [], [], {}, wait=False)
    # the waiting group first, then two new ones topping the round back up to 3 groups
    assert [w["sample_id"] for w in resumed["admit"]] == [4, 5, 6, 7]
    assert c.launched == 5 and not resumed["preempt"]


def drive(c: Coordinator, steps: int) -> pl.DataFrame:
    """Run ``steps`` learner steps with one engine that generates everything it is given at
    once on the weights it holds, and loads each new version as soon as it is published."""
    version = 0
    for step in range(steps):
        finish(c, admit(c, version), version)
        batch = c.take_batch(step, timeout_s=1.0)
        assert batch is not None, f"step {step}: no batch"
        now = c.now()
        row = {"step": step, "start_s": now, "end_s": now, "idle_before_s": 0.0,
               "version_start": step * c.M, "version_end": (step + 1) * c.M, "tokens": 0}  # fmt: skip
        c.step_done(row, [], [], batch["groups"])
        version = (step + 1) * c.M
        c.publish(version, object(), now, "digest")
    return c.snapshot()["samples"]


@pytest.fixture
def toy_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two registered toy modes: a renamed sync, and an async one chunk ahead at most."""
    from dataclasses import replace

    from stalesim.sim.modes.asynchronous import ASYNC
    from stalesim.sim.modes.sync import SYNC

    from tests.sim.test_toy_mode import OneChunkAhead

    monkeypatch.setitem(MODES, "toy", replace(SYNC, name="toy"))
    ahead = replace(ASYNC, name="toy_ahead", admission=OneChunkAhead())
    monkeypatch.setitem(MODES, "toy_ahead", ahead)


def test_a_registered_toy_mode_runs_through_the_coordinator(toy_modes) -> None:
    """The coordinator admits by the toy's policy: one chunk ahead although max_staleness=3
    (async itself admits four), and every consumed sample is fresh; the renamed sync runs its
    batches one after the other, on-policy."""
    c = Coordinator(config(B=4, M=1, mode="toy_ahead", max_staleness=3), time.time())
    assert len(admit(c)) == 4 * G
    assert admit(c) == []
    assert len(Coordinator(config(B=4, M=1, max_staleness=3), time.time()).exchange(
        0, 0, 0, 10_000, 0, [], [], {}, wait=False)["admit"]) == 16 * G  # fmt: skip

    steps = 4
    for mode, stalest in (("toy_ahead", 0), ("async", 3), ("toy", 0)):
        c = Coordinator(config(B=4, M=1, mode=mode, max_staleness=3), time.time())
        c.start(time.time())
        samples = drive(c, steps)
        used = samples.filter(pl.col("consumed_step").is_not_null())
        assert used.height == steps * 4 * G, mode
        assert used["staleness_max"].max() == stalest, mode
        assert sorted(set(used["consumed_step"].to_list())) == list(range(steps)), mode
