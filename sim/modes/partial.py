"""``partial_rollout``: a round runs until ``B`` groups are complete (APRIL); unfinished
sequences are preempted and resume next round on newer weights.

With ``round_token_budget`` a sequence also stops once it generated that many tokens in a
round (Kimi k1.5); rounds that run out of work before ``B`` groups complete repeat on the same
weights. A resumed sequence recomputes its KV cache (prompt plus generated tokens, charged as
prefill) unless ``algorithm.kv_cache_on_update=keep``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

from stalesim.sim.modes.base import ModeSpec, overlapped_screen

if TYPE_CHECKING:
    from stalesim.sim.cluster import Cluster


def _partial(c: Cluster) -> Generator:
    env, pool, buffer, rec = c.env, c.pool, c.buffer, c.rec
    target = c.groups_in_flight_target(c.scenario.algorithm.partial_overprovision)
    parked: list[int] = []
    round_open = False

    def replace(now: float, count: int) -> None:
        # during a round a dropped or discarded group is replaced at once; between rounds the
        # engines are parked for the weight load, and the next round's launch tops the groups
        # in flight back up to the target
        if round_open:
            c.launch(count, now)
            pool.request_kick()

    c.on_drop = replace
    for step in range(c.steps):
        round_open = True
        while True:
            for sid in parked:
                rec.s_round_base[sid] = rec.s_done[sid]
            pool.pending.extend(parked)
            c.launch(max(0, target - len(buffer) - pool.open_groups), env.now)
            pool.kick_all(env.now)
            ready = c.batch_ready[step]
            yield ready | pool.drained()
            if ready.triggered:
                break
            # every unfinished sequence spent its round's token budget before B groups were
            # complete: another round on the same weights
            parked = sorted(pool.out_of_budget)
            pool.out_of_budget.clear()
        round_open = False
        parked = sorted(pool.preempt_all(env.now) + list(pool.pending) + pool.out_of_budget)
        pool.pending.clear()
        pool.out_of_budget.clear()
        trained_at = yield c.trained[step]
        yield from c.load_between_batches((step + 1) * c.M, trained_at)


def _start(c: Cluster) -> None:
    c.env.process(_partial(c))


PARTIAL_ROLLOUT = ModeSpec(
    name="partial_rollout",
    summary="rounds end when B groups are complete; the rest resume on newer weights",
    start=_start,
    preempts=True,
    # a round's groups were generated before the step's first optimizer step, so mini-batch k
    # is at least k versions stale (a tighter drop filter would discard and replace forever)
    schedule_staleness=lambda m: m - 1,
    # engines and learner overlap, with no bound on a sample's age
    screen=lambda i, algo: overlapped_screen(i, algo),
)
