"""How generation and learning interleave: one controller per ``algorithm.mode``.

* ``sync`` / ``sync_colocated``: launch a batch, wait for the learner to train on it, load the
  new weights into the (idle) engines, repeat. Colocated differs only in its resources: the
  learner uses every rollout GPU and weights are resharded over NVLink.
* ``one_step``: batch ``k+1`` is generated while the learner trains on batch ``k``; it starts
  once batch ``k`` is generated and the weights of step ``k-1`` are loaded.
* ``async``: a group is launched whenever an engine has room, unless the admission bound says it
  could not be consumed within ``max_staleness`` versions; new weights reach running engines
  in flight or after they drain.
* ``partial_rollout``: a round runs until ``B`` groups are complete; unfinished sequences are
  preempted and resume next round on newer weights.
"""

from __future__ import annotations

from collections.abc import Generator

from stalesim.sim.cluster import Cluster


def install(cluster: Cluster) -> None:
    """Start the controller processes of the scenario's mode."""
    mode = cluster.scenario.algorithm.mode
    if mode in ("sync", "sync_colocated"):
        cluster.env.process(_sync(cluster))
    elif mode == "one_step":
        cluster.env.process(_one_step(cluster))
    elif mode == "async":
        _async(cluster)
    elif mode == "partial_rollout":
        cluster.env.process(_partial(cluster))
    else:  # pragma: no cover - the scenario model only allows the modes above
        raise ValueError(f"algorithm.mode={mode!r} is not simulated")


def _sync(c: Cluster) -> Generator:
    env = c.env
    for step in range(c.steps):
        c.launch(c.B, env.now)
        c.pool.kick_all(env.now)
        trained_at = yield c.trained[step]
        yield from c.load_between_batches((step + 1) * c.M, trained_at)


def _one_step(c: Cluster) -> Generator:
    env = c.env
    c.launch(c.B, env.now)
    c.pool.kick_all(env.now)
    for batch in range(c.steps - 1):
        yield c.all_complete()
        if batch >= 1:
            trained_at = yield c.trained[batch - 1]
            yield from c.load_between_batches(batch * c.M, trained_at)
        c.launch(c.B, env.now)
        c.pool.kick_all(env.now)


def _async(c: Cluster) -> None:
    env, pool = c.env, c.pool
    algo = c.scenario.algorithm
    per_minibatch = c.B // c.M
    s_max = algo.max_staleness

    def try_launch(now: float) -> bool:
        # The next group lands in minibatch ``valid // per_minibatch`` (that version consumes
        # it) if groups are consumed in launch order; AReaL's bound on that lag.
        valid = c.launched - c.dropped
        if valid // per_minibatch - pool.min_version > s_max:
            return False
        c.launch(1, now)
        return True

    def kick(_now: float) -> None:
        pool.request_kick()

    def publish(step: int, end: float) -> None:
        version = (step + 1) * c.M
        sync_s = c.derived.sync_s
        if c.blocking:
            pool.publish(version, end, stall_until=end + sync_s, stall_s=sync_s)
        else:
            event = env.timeout(sync_s)
            event.callbacks.append(
                lambda _e: pool.publish(version, env.now, stall_until=0.0, stall_s=0.0)
            )

    pool.on_starve = try_launch
    pool.on_versions_advanced = kick
    c.on_drop = kick
    c.after_step = publish
    pool.request_kick()


def _partial(c: Cluster) -> Generator:
    env, pool, buffer = c.env, c.pool, c.buffer
    target = c.groups_in_flight_target(c.scenario.algorithm.partial_overprovision)
    parked: list[int] = []
    for step in range(c.steps):
        pool.pending.extend(parked)
        c.launch(max(0, target - len(buffer) - pool.open_groups), env.now)
        pool.kick_all(env.now)
        yield buffer.wait_for(c.B)
        parked = sorted(pool.preempt_all(env.now) + list(pool.pending))
        pool.pending.clear()
        trained_at = yield c.trained[step]
        yield from c.load_between_batches((step + 1) * c.M, trained_at)
