"""``stalesim bench sim``: simulated samples per wall-second on the large reference scenario,
and as a ratio to a plain SimPy producer/consumer timed in the same run;
``stalesim bench plan``: candidate setups a plan decides per minute."""

from __future__ import annotations

import gc
import statistics
from pathlib import Path

import click
from stalesim.cli.options import overrides_option

#: Producers of the plain SimPy reference (one per rollout engine of bench-large).
REFERENCE_PRODUCERS = 64


def plain_simpy_rate(items: int, seed: int = 0) -> tuple[float, float]:
    """Items per wall-second through the plainest SimPy model of the same shape: producers
    that each wait a random time per item and put it into a store, and one consumer that takes
    them (a timeout, a put and a get per item); per wall-second and per CPU-second. The
    machine's speed moves it as it moves the simulator, so the simulator's rate over it
    compares runs on different machines (per CPU-second also under different load)."""
    import random
    import time

    import simpy

    rng = random.Random(seed)
    env = simpy.Environment()
    store = simpy.Store(env)
    per_producer = max(1, items // REFERENCE_PRODUCERS)
    total = per_producer * REFERENCE_PRODUCERS

    def producer(delays: list[float]):
        for i, delay in enumerate(delays):
            yield env.timeout(delay)
            yield store.put(i)

    def consumer():
        for _ in range(total):
            yield store.get()

    for _ in range(REFERENCE_PRODUCERS):
        env.process(producer([rng.expovariate(1.0) for _ in range(per_producer)]))
    done = env.process(consumer())
    started, cpu_started = time.perf_counter(), time.process_time()
    env.run(until=done)
    return (
        total / (time.perf_counter() - started),
        total / (time.process_time() - cpu_started),
    )


@click.command("sim")
@click.option("--preset", default="bench-large", show_default=True, help="Scenario to time.")
@click.option("--steps", default=50, show_default=True, type=int, help="Learner steps per run.")
@click.option(
    "--runs", default=5, show_default=True, type=int, help="Timed runs (median reported)."
)
@overrides_option("Override a key.")
def bench_sim(preset: str, steps: int, runs: int, overrides: tuple[str, ...]) -> None:
    """Time the simulator: simulated samples per wall-second, median of several runs.

    A sample counts once it has finished generating (consumed or not). The time covers the
    whole simulation including building the trace frames, not writing files. After each run a
    plain SimPy producer/consumer moves as many items (a timeout, a put and a get each); the
    median ratio of the two rates compares the simulator's speed across machines and loads.
    """
    from stalesim.common.config_file import ConfigError
    from stalesim.sim.presets import load_scenario
    from stalesim.sim.run import simulate

    if runs < 1 or steps < 1:
        raise ConfigError(f"--runs={runs} --steps={steps}: both must be at least 1")
    scenario = load_scenario(None, preset, overrides)
    wall_rates, cpu_rates, walls, ratios, cpu_ratios = [], [], [], [], []
    for seed in range(runs):
        gc.collect()
        trace = simulate(scenario, steps, seed)
        samples = trace.info["samples_finished"]
        cpu_s = trace.info["cpu_s"]
        walls.append(trace.wall_s)
        wall_rates.append(samples / trace.wall_s)
        cpu_rates.append(samples / cpu_s)
        del trace
        gc.collect()
        reference, cpu_reference = plain_simpy_rate(samples, seed)
        ratios.append(wall_rates[-1] / reference)
        cpu_ratios.append(cpu_rates[-1] / cpu_reference)
        click.echo(
            f"run {seed}: {samples:,} samples in {walls[-1]:.2f} s wall ({cpu_s:.2f} s CPU)"
            f" = {wall_rates[-1]:,.0f} samples per wall-second; plain SimPy "
            f"{reference:,.0f} items per wall-second; ratio {ratios[-1]:.3f}x "
            f"({cpu_ratios[-1]:.3f}x per CPU-second)"
        )
    click.echo(
        f"median: {statistics.median(wall_rates):,.0f} simulated samples per wall-second "
        f"({scenario.name}, {steps} steps, {runs} runs, median wall {statistics.median(walls):.2f} s); "
        f"{statistics.median(cpu_rates):,.0f} per CPU-second (they differ on a shared machine)"
    )
    click.echo(
        f"ratio to a plain SimPy producer/consumer: {statistics.median(ratios):.3f}x per "
        f"wall-second (per run {min(ratios):.3f}-{max(ratios):.3f}x), "
        f"{statistics.median(cpu_ratios):.3f}x per CPU-second (median of {runs})"
    )


@click.command("plan")
@click.argument("plan_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--runs", default=3, show_default=True, type=int, help="Timed runs (median reported)."
)
@click.option(
    "--workers", type=int, default=None, help="Worker processes [default: one per CPU core]."
)
@click.option("--no-screen", is_flag=True, help="Simulate every feasible candidate.")
@overrides_option("Override a key of the base scenario.")
def bench_plan(
    plan_file: Path | None,
    runs: int,
    workers: int | None,
    no_screen: bool,
    overrides: tuple[str, ...],
) -> None:
    """Time `stalesim plan`: candidate setups decided per minute, median of several runs.

    Runs the plan (the built-in default without PLAN_FILE) from scratch each time, in a fresh
    temporary folder (no resumed simulations), with the worker processes it would use. The
    time covers everything `stalesim plan` does before drawing its page: resolving and checking
    the candidates, the screen, the simulations (worker start-up included) and writing the
    table. A candidate counts once it is decided: infeasible, screened out or simulated.
    """
    import os
    import tempfile
    import time

    from stalesim.common.config_file import ConfigError
    from stalesim.sim.law.readings import readings
    from stalesim.sim.plan.config import load_plan
    from stalesim.sim.plan.evaluate import make_backend
    from stalesim.sim.plan.planner import run_plan

    if runs < 1:
        raise ConfigError(f"--runs={runs}: must be at least 1")
    plan, folder = load_plan(plan_file, overrides=overrides)
    if no_screen:
        plan = plan.model_copy(
            update={"evaluation": plan.evaluation.model_copy(update={"screen": False})}
        )
    laws = readings()
    rates, sim_rates, walls = [], [], []
    for run in range(runs):
        gc.collect()
        load = os.getloadavg()[0]
        with tempfile.TemporaryDirectory(prefix="stalesim-bench-plan-") as out:
            started = time.perf_counter()
            backend = make_backend(workers, None)
            try:
                result = run_plan(plan, laws, Path(out), folder=folder, backend=backend)
            finally:
                backend.close()
            wall = time.perf_counter() - started
        counts = result.summary["counts"]
        walls.append(wall)
        rates.append(counts["candidates"] / wall * 60)
        sim_rates.append(counts["simulated_this_run"] / wall * 60)
        click.echo(
            f"run {run}: {counts['candidates']:,} candidates ({counts['infeasible']:,} "
            f"infeasible, {counts['screened_out']:,} screened out, "
            f"{counts['simulated_this_run']:,} simulated) in {wall:.1f} s with "
            f"{backend.workers} worker(s) = {rates[-1]:,.0f} candidates/min "
            f"(load average {load:.1f} on {os.cpu_count()} cores)"
        )
    click.echo(
        f"median: {statistics.median(rates):,.0f} candidates per minute "
        f"({plan.name}, {counts['candidates']:,} candidates, {runs} runs, median wall "
        f"{statistics.median(walls):.1f} s); {statistics.median(sim_rates):,.0f} full "
        f"simulations of {plan.evaluation.steps} learner steps per minute"
    )
