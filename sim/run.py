"""Entry point: run one scenario for a number of learner steps and return its trace."""

from __future__ import annotations

import time

from stalesim.sim import modes
from stalesim.sim.cluster import Cluster, Progress
from stalesim.sim.config_file import ConfigError
from stalesim.sim.derived import derive
from stalesim.sim.scenario import Scenario
from stalesim.sim.trace import Trace


def simulate(
    scenario: Scenario, steps: int, seed: int = 0, progress: Progress | None = None
) -> Trace:
    """Simulate ``steps`` learner steps of ``scenario``; the same seed gives the same trace."""
    if steps < 1:
        raise ConfigError(f"--steps={steps}: need at least 1 learner step")
    started = time.perf_counter()
    cpu_started = time.process_time()
    derived = derive(scenario)
    cluster = Cluster(scenario, derived, steps, seed, progress)
    modes.install(cluster)
    learner = cluster.env.process(cluster.learner())
    cluster.env.run(until=learner)
    trace = cluster.rec.frames()
    trace.end_s = cluster.env.now
    trace.wall_s = time.perf_counter() - started
    cpu_s = time.process_time() - cpu_started
    trace.info = {
        "derived": derived.as_dict(),
        "samples_finished": cluster.pool.finished_samples,
        "groups_launched": cluster.launched,
        "prefill_s": cluster.pool.prefill_s,
        "kv_recompute_s": cluster.pool.recompute_s,
        "cpu_s": cpu_s,
    }
    return trace
