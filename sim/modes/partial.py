"""``partial_rollout``: a round runs until ``B`` groups are complete (APRIL); unfinished
sequences are preempted and resume next round on newer weights.

With ``round_token_budget`` a sequence also stops once it generated that many tokens in a
round (Kimi k1.5); rounds that run out of work before ``B`` groups complete repeat on the same
weights. A resumed sequence recomputes its KV cache (prompt plus generated tokens, charged as
prefill) unless ``algorithm.kv_cache_on_update=keep``.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import TYPE_CHECKING

from stalesim.sim.modes.base import Admission, AdmissionState, ModeSpec, RunShape, overlapped_screen

if TYPE_CHECKING:
    from stalesim.sim.cluster import Cluster


class PartialAdmission(Admission):
    """Round ``r`` starts once step ``r-1`` is trained and every engine holds its weights; it
    tops the groups generating or waiting up to ``B`` plus the overprovision. Engines admit
    only while a round is open (launched, its batch not yet taken: with enough groups left
    over, the learner may have taken it already, and the round closes at once); taking a
    batch preempts them."""

    replaces_dropped = True
    preempts_on_take = True
    rounds = True

    def top_up(self, state: AdmissionState, run: RunShape) -> int:
        """Groups that bring those in flight or in the buffer up to the round's target."""
        target = math.ceil(run.batch_groups * (1.0 + run.overprovision))
        return max(0, target - state.buffered - state.open_groups)

    def batch(self, state: AdmissionState, run: RunShape) -> int | None:
        r = state.batches_launched
        ready = r < run.steps and state.trained >= r and state.min_version >= r * run.minibatches
        return self.top_up(state, run) if ready else None


def _partial(c: Cluster) -> Generator:
    env, pool = c.env, c.pool
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
        first_round = True
        while True:
            pool.new_round(parked)
            pool.pending.extend(parked)
            if first_round:
                c.launch_batch(env.now)
            else:  # the same round again, on the same weights
                c.launch(c.admission.top_up(c.admission_state(), c.run), env.now)
            first_round = False
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
    admission=PartialAdmission(),
)
