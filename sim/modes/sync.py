"""``sync`` and ``sync_colocated``: launch a batch, wait for the learner to train on it, load
the new weights into the (idle) engines, repeat. A batch larger than the engines' slots
(``rollout_engines x max_num_seqs``) queues: each engine admits a waiting sample whenever a
sequence finishes, as vLLM's and SGLang's schedulers do.

Colocated differs only in its resources: the learner uses every rollout GPU and weights are
resharded over NVLink (verl's default). Staleness is the mini-batch index inside a step.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

from stalesim.sim.modes.base import (
    BatchAfterTraining,
    ModeSpec,
    ScreenInputs,
    ScreenTiming,
    generate_batch,
)

if TYPE_CHECKING:
    from stalesim.sim.cluster import Cluster
    from stalesim.sim.scenario import AlgorithmConfig


def _sync(c: Cluster) -> Generator:
    for step in range(c.steps):
        yield from generate_batch(c)
        trained_at = yield c.trained[step]
        yield from c.load_between_batches((step + 1) * c.M, trained_at)


def _start(c: Cluster) -> None:
    c.env.process(_sync(c))


def _screen(i: ScreenInputs, _algo: AlgorithmConfig) -> ScreenTiming:
    """Generation, training and the weight update one after the other; staleness is the
    mini-batch index."""
    m = i.minibatches
    mean = (m - 1.0) / 2.0
    return ScreenTiming(
        i.generate_s + i.learn_s + i.weights_s, i.learn_s >= i.generate_s, m - 1.0, mean, mean
    )


SYNC = ModeSpec(
    name="sync",
    summary="separate pools, each waits for the other",
    start=_start,
    schedule_staleness=lambda m: m - 1,
    on_policy=True,
    screen=_screen,
    admission=BatchAfterTraining(),
    batch_sampling=True,
)
SYNC_COLOCATED = ModeSpec(
    name="sync_colocated",
    summary="all GPUs generate, then all train, then reshard (verl's default)",
    start=_start,
    colocated=True,
    schedule_staleness=lambda m: m - 1,
    on_policy=True,
    screen=_screen,
    admission=BatchAfterTraining(),
    batch_sampling=True,
)
