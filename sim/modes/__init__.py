"""How generation and learning interleave: one small module per ``algorithm.mode``.

Each module describes its mode with a :class:`ModeSpec` (the controller that decides when
groups are launched and when engines take new weights, plus the facts the scenario checks
need) and registers it here. Adding a mode is one module plus its tests; the scenario accepts
every registered name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stalesim.sim.modes.asynchronous import ASYNC
from stalesim.sim.modes.base import ModeSpec
from stalesim.sim.modes.one_step import ONE_STEP
from stalesim.sim.modes.partial import PARTIAL_ROLLOUT
from stalesim.sim.modes.sync import SYNC, SYNC_COLOCATED

if TYPE_CHECKING:
    from stalesim.sim.cluster import Cluster

MODES: dict[str, ModeSpec] = {
    spec.name: spec for spec in (SYNC_COLOCATED, SYNC, ONE_STEP, ASYNC, PARTIAL_ROLLOUT)
}
#: The mode a setup's on-policy counterpart (the user's baseline run) is simulated in.
ON_POLICY_REFERENCE = SYNC.name
#: The mode an on-policy setup's asynchronous counterpart is simulated in (its speed-up).
OFF_POLICY_REFERENCE = ASYNC.name

__all__ = ["MODES", "OFF_POLICY_REFERENCE", "ON_POLICY_REFERENCE", "ModeSpec", "install"]


def install(cluster: Cluster) -> None:
    """Start the controller processes of the scenario's mode."""
    MODES[cluster.scenario.algorithm.mode].start(cluster)
