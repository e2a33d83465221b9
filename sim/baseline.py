"""The user's baseline: the same cluster and batch run on-policy.

The law's multipliers are ratios to the user's own on-policy run, so every answer needs that
run's staleness (0, or its mini-batch schedule's when it makes several optimizer steps per
batch) and, without ``target.baseline_steps``, its step time, which time to target is relative
to. This module simulates it.
"""

from __future__ import annotations

from stalesim.common.config_file import ConfigError
from stalesim.sim.derived import derive
from stalesim.sim.metrics import RunSummary, summarize
from stalesim.sim.modes import MODES, ON_POLICY_REFERENCE
from stalesim.sim.plan.sensitivity import with_mode
from stalesim.sim.run import simulate
from stalesim.sim.scenario import Scenario, check_feasible


def on_policy_counterpart(scenario: Scenario) -> Scenario | None:
    """The same cluster and batch run on-policy (the scenario itself when it is), or None
    when that setup cannot run."""
    if MODES[scenario.algorithm.mode].on_policy:
        return scenario
    try:
        sync = with_mode(scenario, ON_POLICY_REFERENCE)
        check_feasible(sync, derive(sync))
    except ConfigError:
        return None
    return sync


def on_policy_summary(
    scenario: Scenario,
    steps: int,
    seed: int,
    own: RunSummary | None = None,
    cache: dict[str, RunSummary | None] | None = None,
) -> RunSummary | None:
    """The simulate summary of :func:`on_policy_counterpart` (``own``, the scenario's own
    summary, when the scenario is on-policy); None when that setup cannot run. With ``cache``,
    scenarios that share their counterpart share its simulation."""
    if own is not None and MODES[scenario.algorithm.mode].on_policy:
        if cache is not None:
            cache.setdefault(scenario.model_dump_json(), own)
        return own
    sync = on_policy_counterpart(scenario)
    if sync is None:
        return None
    key = sync.model_dump_json()
    if cache is not None and key in cache:
        return cache[key]
    summary = summarize(simulate(sync, steps, seed), sync, steps, seed)
    if cache is not None:
        cache[key] = summary
    return summary
