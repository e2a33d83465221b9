"""Entry point: run one scenario for a number of learner steps and return its trace."""

from __future__ import annotations

import time

from stalesim.common.config_file import ConfigError
from stalesim.common.memory import refuse_if_too_big
from stalesim.sim import modes
from stalesim.sim.cluster import Cluster, Progress
from stalesim.sim.derived import derive
from stalesim.sim.scenario import Scenario
from stalesim.sim.trace import Trace

#: Memory a run holds per generated sample (trace columns while it runs, then the frames).
#: Measured as the peak-RSS growth of `simulate(load_scenario(None, None, ()), steps, 0)`:
#: 1043 B/sample at 50 steps (26k samples), 532 B/sample at 400 steps (205k samples); the
#: larger figure, rounded up, so that a refusal never underestimates.
BYTES_PER_SAMPLE = 1100


def planned_samples(scenario: Scenario, steps: int) -> int:
    """Samples a run of ``steps`` learner steps generates at least: the ones it consumes plus
    as many as the engines can hold in flight at the end."""
    work, cluster = scenario.workload, scenario.cluster
    return steps * work.prompts_per_step * work.group_size + (
        cluster.rollout_engines * cluster.max_num_seqs
    )


def check_run_size(scenario: Scenario, steps: int) -> None:
    """Refuse, before any work, a run whose trace cannot fit in this machine's memory."""
    if steps < 1:
        raise ConfigError(f"--steps={steps}: need at least 1 learner step")
    samples = planned_samples(scenario, steps)
    refuse_if_too_big(
        samples * BYTES_PER_SAMPLE,
        f"--steps={steps}: {samples:,} samples (--steps x workload.prompts_per_step x "
        "workload.group_size, plus those in flight)",
        "simulate fewer steps or a smaller batch",
    )


def simulate(
    scenario: Scenario, steps: int, seed: int = 0, progress: Progress | None = None
) -> Trace:
    """Simulate ``steps`` learner steps of ``scenario``; the same seed gives the same trace."""
    check_run_size(scenario, steps)
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
        "rollout_engines": scenario.cluster.rollout_engines,
        "samples_finished": cluster.pool.finished_samples,
        "groups_launched": cluster.launched,
        "prefill_s": cluster.pool.prefill_s,
        "kv_recompute_s": cluster.pool.recompute_s,
        "cpu_s": cpu_s,
    }
    return trace
