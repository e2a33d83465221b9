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

from stalesim.sim.modes.base import ModeSpec

if TYPE_CHECKING:
    from stalesim.sim.cluster import Cluster


def admission_ahead(c: Cluster) -> int:
    """Groups that may be launched beyond ``m * chunk`` (``m``: the engines' oldest version)."""
    algo = c.scenario.algorithm
    if algo.max_stale_fraction is not None:
        return math.floor((1.0 + algo.max_stale_fraction) * c.K * c.chunk + 1e-9)
    return (algo.max_staleness + 1) * c.chunk


def _start(c: Cluster) -> None:
    env, pool = c.env, c.pool
    algo = c.scenario.algorithm
    chunk = c.chunk
    ahead = admission_ahead(c)
    if algo.consumption_order == "deadline":
        c.consume_by_deadline(algo.max_staleness)

    def try_launch(now: float) -> bool:
        if c.launched - c.dropped >= pool.min_version * chunk + ahead:
            return False
        c.launch(1, now)
        return True

    def launchable() -> int:
        return max(0, pool.min_version * chunk + ahead - (c.launched - c.dropped))

    def kick(_now: float, _count: int = 0) -> None:
        pool.request_kick()

    def publish(version: int, end: float) -> None:
        sync_s = c.derived.sync_s
        if c.blocking:
            pool.publish(version, end, stall_until=end + sync_s, stall_s=sync_s)
        else:
            event = env.timeout(sync_s)
            event.callbacks.append(
                lambda _e: pool.publish(version, env.now, stall_until=0.0, stall_s=0.0)
            )

    pool.on_starve = try_launch
    pool.launchable = launchable
    pool.on_versions_advanced = kick
    c.on_drop = kick
    c.on_publish = publish
    pool.request_kick()


ASYNC = ModeSpec(
    name="async",
    summary="generation never waits, except for the admission limit on staleness",
    start=_start,
    inflight_updates=True,
    own_publication=True,
)
