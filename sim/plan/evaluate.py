"""Simulating candidates: one full simulation per candidate, run here, in worker processes, or on
a Ray cluster, with the same results whichever runs them.

A candidate travels as its scenario's JSON and comes back as a flat row of simulation metrics
(no law: the law is applied by the plan, so a result stays valid for any law). Every candidate
runs with the plan's one seed (common random numbers: candidates are compared on the same
random workload), and the simulator is deterministic for a seed, so the backends agree exactly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from stalesim.common.ray_address import check_ray_address

#: Columns a simulated candidate carries (besides its id), in this order: a selection of
#: :meth:`stalesim.sim.metrics.RunSummary.row`.
SIM_COLUMNS = (
    "samples_per_s",
    "tokens_per_s",
    "step_time_s",
    "staleness_mean",
    "staleness_p50",
    "staleness_p90",
    "staleness_p99",
    "staleness_max",
    "token_staleness_mean",
    "token_staleness_p99",
    "utilisation_rollout",
    "utilisation_learner",
    "mean_queue_groups",
    "dropped_samples",
    "simulated_s",
    "sim_wall_s",
)

#: The text column of a simulated candidate: why its simulation failed (None when it ran).
FAILURE = "failure"

Job = tuple[str, str]  # (candidate id, scenario JSON)


def simulate_one(scenario_json: str, steps: int, seed: int) -> dict[str, float | None]:
    """Simulate one scenario and reduce its trace to the plan's metric columns."""
    from stalesim.sim.metrics import summarize
    from stalesim.sim.run import simulate
    from stalesim.sim.scenario import Scenario

    scenario = Scenario.model_validate_json(scenario_json)
    try:
        trace = simulate(scenario, steps, seed)
    except (RuntimeError, ValueError) as exc:
        # a setup the checks let through but the simulation cannot finish (e.g. an admission
        # bound that can never admit) is a finding about that setup, not a failed plan
        return {**dict.fromkeys(SIM_COLUMNS), FAILURE: _failure(exc, steps)}
    row = summarize(trace, scenario, steps, seed).row()
    return {**{name: row[name] for name in SIM_COLUMNS}, FAILURE: None}


def _failure(exc: BaseException, steps: int) -> str:
    import re

    text = " ".join(str(exc).split())
    if "No scheduled events left" in text:
        return (
            f"the simulation stalls before {steps} learner steps: nothing is left to happen "
            "while the learner waits (a bound that never admits the groups it needs)"
        )
    return f"the simulation failed: {type(exc).__name__}: {re.sub(r' at 0x[0-9a-f]+', '', text)}"


def simulate_batch(jobs: Sequence[Job], steps: int, seed: int) -> list[tuple[str, dict]]:
    """Simulate several candidates in one call (one task per batch keeps overheads small)."""
    return [(cid, simulate_one(text, steps, seed)) for cid, text in jobs]


class Backend(Protocol):
    """Runs batches of jobs; yields each batch's results as soon as that batch is done (in any
    order), so the caller can save finished work while the rest still runs."""

    workers: int

    def run(
        self, batches: list[list[Job]], steps: int, seed: int
    ) -> Iterator[list[tuple[str, dict]]]: ...

    def close(self) -> None: ...


class SerialBackend:
    """Everything in this process."""

    workers = 1

    def run(self, batches, steps, seed):
        for batch in batches:
            yield simulate_batch(batch, steps, seed)

    def close(self) -> None:
        pass


class ProcessBackend:
    """A pool of worker processes on this machine (started once per plan, spawned: no forked
    copies of the parent's thread pools)."""

    def __init__(self, workers: int) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.workers = workers
        self._pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn")
        )

    def run(self, batches, steps, seed):
        from concurrent.futures import as_completed

        futures = [self._pool.submit(simulate_batch, batch, steps, seed) for batch in batches]
        for future in as_completed(futures):
            yield future.result()

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)


class RayBackend:
    """Tasks on a Ray cluster: ``address="local"`` starts one on this machine, anything else
    joins the cluster at that address (``ray.init(address=...)``)."""

    def __init__(self, address: str) -> None:
        try:
            import ray
        except ModuleNotFoundError:
            raise ValueError(
                "--ray needs Ray: pip install -e '.[ray]' (or run without --ray)"
            ) from None
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "configure_logging": False,
            }
            try:
                if address == "local":
                    ray.init(**kwargs)
                else:
                    check_ray_address(address, "--ray")
                    ray.init(address=address, **kwargs)
            except (ConnectionError, RuntimeError) as exc:
                raise ValueError(f"--ray {address}: cannot reach a Ray cluster ({exc})") from None
            self._started = True
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._task = ray.remote(simulate_batch)

    def run(self, batches, steps, seed):
        refs = [self._task.remote(batch, steps, seed) for batch in batches]
        while refs:
            ready, refs = self._ray.wait(refs, num_returns=1)
            yield self._ray.get(ready[0])

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()


def make_backend(workers: int | None, ray_address: str | None) -> Backend:
    """Ray when an address is given; else worker processes (one per core by default), or this
    process alone for one worker."""
    if ray_address is not None and not ray_address.strip():
        raise ValueError("--ray '': give a Ray address (host:port) or `local`")
    if ray_address:
        return RayBackend(ray_address)
    n = workers if workers is not None else (os.cpu_count() or 1)
    if n < 1:
        raise ValueError(f"--workers={n}: must be at least 1")
    return SerialBackend() if n == 1 else ProcessBackend(n)


def split(jobs: list[Job], parts: int, chunk: int = 4) -> list[list[Job]]:
    """Jobs in batches of about ``chunk``, at least ``parts`` batches when there are enough."""
    if not jobs:
        return []
    size = max(1, min(chunk, -(-len(jobs) // max(1, parts))))
    return [jobs[i : i + size] for i in range(0, len(jobs), size)]


ProgressFn = Callable[[int], None]
