"""``one_step``: batch ``k+1`` is generated while the learner trains on batch ``k``.

It starts once batch ``k`` is generated and the weights of step ``k-1`` are loaded, so every
sample of batch ``k >= 1`` is exactly one learner step (``M`` versions, plus its mini-batch
index) old.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

from stalesim.sim.modes.base import (
    Admission,
    AdmissionState,
    ModeSpec,
    RunShape,
    ScreenInputs,
    ScreenTiming,
    generate_batch,
)

if TYPE_CHECKING:
    from stalesim.sim.cluster import Cluster
    from stalesim.sim.scenario import AlgorithmConfig


class OneStepAdmission(Admission):
    """Batch ``k+1`` starts once batch ``k`` is generated (no group open) and, from the third
    batch on, once step ``k-1`` is trained and every engine holds its weights."""

    replaces_dropped = True

    def batch(self, state: AdmissionState, run: RunShape) -> int | None:
        k = state.batches_launched  # the batch to launch next
        ready = (
            k < run.steps
            and state.open_groups == 0
            and (
                k < 2 or (state.trained >= k - 1 and state.min_version >= (k - 1) * run.minibatches)
            )
        )
        return run.batch_groups if ready else None


def _one_step(c: Cluster) -> Generator:
    yield from generate_batch(c)
    for batch in range(c.steps - 1):
        yield c.all_complete()
        if batch >= 1:
            trained_at = yield c.trained[batch - 1]
            yield from c.load_between_batches(batch * c.M, trained_at)
        yield from generate_batch(c)


def _start(c: Cluster) -> None:
    c.env.process(_one_step(c))


def _screen(i: ScreenInputs, _algo: AlgorithmConfig) -> ScreenTiming:
    """Generation and its weight load overlap training: the slower side sets the pace; every
    sample is one learner step (M versions) plus its mini-batch index old."""
    m = i.minibatches
    rollout = i.generate_s + i.weights_s
    mean = m + (m - 1.0) / 2.0
    return ScreenTiming(
        max(rollout, i.learner_side_s), i.learner_side_s >= rollout, 2.0 * m - 1.0, mean, mean
    )


ONE_STEP = ModeSpec(
    name="one_step",
    summary="generation of batch k+1 overlaps training on batch k",
    start=_start,
    schedule_staleness=lambda m: 2 * m - 1,
    screen=_screen,
    admission=OneStepAdmission(),
    batch_sampling=True,
)
