"""``async``: generation never waits, except for the bound on staleness.

A group is launched whenever an engine has room, unless the admission limit says it could not
be consumed in time. Two forms of the limit, both counted in groups launched (and not dropped)
beyond ``m * chunk``, where ``m`` is the version every engine has loaded and a chunk is the
groups of one optimizer step:

* versions (``max_staleness`` ``S``, AReaL's ``max_head_offpolicyness``): at most
  ``(S + 1) * chunk`` ahead, so every group has a consumption slot within ``S`` versions of
  the weights that start it. The learner takes groups as they complete, so a slow group can
  still be consumed later than that (nothing is discarded; an optional drop filter discards
  what got staler anyway). With ``consumption_order=deadline`` the learner keeps the promise:
  it takes groups earliest deadline first and waits for an unfinished one rather than let it
  go stale (no consumed sample is staler than ``S``, at the cost of learner idle time);
* a share of the batch (``max_stale_fraction`` ``f``, verl's fully-async
  ``staleness_threshold``): at most ``(1 + f) * K * chunk`` ahead, ``K`` the publish
  interval: the engines may start ``f`` times the groups of one publication period beyond what
  the current weights are for, and those are consumed later, off-policy: with ``f <= 1`` about
  a share ``f`` of what the learner consumes comes from older weights. The learner consumes in
  completion order and no age is guaranteed.

New weights are published every ``publish_interval`` optimizer steps; they reach running
engines in flight (PipelineRL) or after the engines drain.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from stalesim.common.config_file import ConfigError
from stalesim.sim.modes.base import (
    Admission,
    ModeSpec,
    RunShape,
    ScreenInputs,
    ScreenTiming,
    overlapped_screen,
)

if TYPE_CHECKING:
    from stalesim.sim.cluster import Cluster
    from stalesim.sim.scenario import AlgorithmConfig, Scenario


def learner_lead(minibatches: int, interval: int, streaming: bool) -> int:
    """How many versions past the weights the engines hold the learner can ask for a chunk.

    Streaming, it takes chunk ``v`` after publishing ``floor(v/K)*K``: up to ``K-1`` ahead.
    Taking a whole batch of ``M`` chunks at version ``v0 = s*M`` before training, it is at
    most ``v0 mod K`` past the last publication and needs ``M-1`` more; ``s*M mod K`` reaches
    ``K - gcd(M, K)``.
    """
    if streaming:
        return interval - 1
    return minibatches - 1 + interval - math.gcd(minibatches, interval)


def check(scenario: Scenario) -> None:
    """An admission limit that could never admit the groups the learner waits for would stall
    the run: refuse it."""
    algo = scenario.algorithm
    m = algo.minibatches_per_step
    k = algo.publish_interval or m
    lead = learner_lead(m, k, algo.streaming)
    how = "streaming" if algo.streaming else "taking whole batches"
    if algo.staleness_filter is not None and algo.staleness_filter < lead:
        # the engines only ever hold published weights, so every chunk the learner asks for
        # `lead` versions past them would be dropped and relaunched forever
        raise ConfigError(
            f"algorithm.staleness_filter={algo.staleness_filter}: a learner {how} with "
            f"minibatches_per_step={m} and publish_interval={k} consumes chunks up to {lead} "
            f"versions past the engines' weights, which the filter would always drop; "
            f"allowed: >= {lead}"
        )
    if algo.max_stale_fraction is None:
        if algo.max_staleness < lead:
            raise ConfigError(
                f"algorithm.max_staleness={algo.max_staleness}: a learner {how} with "
                f"minibatches_per_step={m} and publish_interval={k} needs chunks up to {lead} "
                f"versions past the engines' weights, which could never be admitted; "
                f"allowed: >= {lead}"
            )
    elif (1.0 + algo.max_stale_fraction) * k + 1e-9 < lead + 1:
        least = (lead + 1) / k - 1.0
        raise ConfigError(
            f"algorithm.max_stale_fraction={algo.max_stale_fraction:g}: a learner {how} with "
            f"minibatches_per_step={m} and publish_interval={k} needs {lead + 1} chunks ahead "
            f"of the engines' weights; allowed: >= {least:g}"
        )


def groups_ahead(algo: AlgorithmConfig, chunk: int, interval: int) -> int:
    """Groups that may be launched (and not dropped) beyond ``m * chunk``, ``m`` the engines'
    oldest version, ``chunk`` the groups of one optimizer step and ``interval`` the publish
    interval ``K``: ``(S + 1) * chunk``, or ``floor((1 + f) * K * chunk)`` with
    ``max_stale_fraction`` ``f``. The real pipeline admits by this same function."""
    if algo.max_stale_fraction is not None:
        return math.floor((1.0 + algo.max_stale_fraction) * interval * chunk + 1e-9)
    return (algo.max_staleness + 1) * chunk


class AsyncAdmission(Admission):
    """A group starts whenever an engine has room, while the groups launched and not dropped
    stay within ``m * chunk`` plus :func:`groups_ahead` (``m``: the engines' oldest version).
    Without in-flight updates an engine with newer weights waiting drains first."""

    drains_for_weights = True
    bounded_by_max_staleness = True

    def group_limit(self, min_version: int, run: RunShape) -> int | None:
        return min_version * run.chunk + run.groups_ahead


def _start(c: Cluster) -> None:
    env, pool = c.env, c.pool
    algo = c.scenario.algorithm
    admission, run = c.admission, c.run
    if algo.consumption_order == "deadline":
        c.consume_by_deadline(algo.max_staleness)
    # the limit moves only when the engines' oldest version does: ask the policy then
    limit = admission.group_limit(pool.min_version, run)

    def try_launch(now: float) -> bool:
        if c.launched - c.dropped >= limit:
            return False
        c.launch(1, now)
        return True

    def launchable() -> int:
        return max(0, limit - (c.launched - c.dropped))

    def kick(_now: float, _count: int = 0) -> None:
        pool.request_kick()

    def advanced(now: float) -> None:
        nonlocal limit
        limit = admission.group_limit(pool.min_version, run)
        kick(now)

    def publish(version: int, sent: float) -> None:
        sync_s, load_s = c.derived.sync_s, c.scenario.weight_sync.load_s
        if c.blocking:
            pool.publish(version, sent, stall_until=sent + sync_s, stall_s=sync_s, load_s=load_s)
        else:
            event = env.timeout(sync_s)
            event.callbacks.append(
                lambda _e: pool.publish(
                    version, env.now, stall_until=0.0, stall_s=0.0, load_s=load_s
                )
            )

    pool.on_starve = try_launch
    pool.launchable = launchable
    pool.on_versions_advanced = advanced
    c.on_drop = kick
    c.on_publish = publish
    pool.request_kick()


def _screen(i: ScreenInputs, algo: AlgorithmConfig) -> ScreenTiming:
    """Engines and learner overlap up to the bound: it lets generation run ``(S_max + 1) / M``
    batches ahead of the learner, so a tight one serialises part of each batch's generation
    with its training (only the last chunk's training for a streaming learner, which trains on
    each chunk while later ones generate)."""
    m = i.minibatches
    depth = max(1.0, (algo.max_staleness + 1.0) / m)
    serial_learn = i.learn_s / m if algo.streaming else i.learn_s
    floor_s = (i.generate_s + serial_learn + i.weights_s) / depth
    return overlapped_screen(i, algo, bound=float(algo.max_staleness), floor_s=floor_s)


ASYNC = ModeSpec(
    name="async",
    summary="generation never waits, except for the admission limit on staleness",
    start=_start,
    inflight_updates=True,
    own_publication=True,
    check=check,
    recomputes_old_logprobs=False,
    screen=_screen,
    admission=AsyncAdmission(),
)
