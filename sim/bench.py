"""``stalesim bench sim``: simulated samples per wall-second on the large reference scenario."""

from __future__ import annotations

import statistics

import click
from stalesim.sim.cli_options import overrides_option


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
    whole simulation including building the trace frames, not writing files.
    """
    import gc

    from stalesim.sim.config_file import ConfigError
    from stalesim.sim.presets import load_scenario
    from stalesim.sim.run import simulate

    if runs < 1 or steps < 1:
        raise ConfigError(f"--runs={runs} --steps={steps}: both must be at least 1")
    scenario = load_scenario(None, preset, overrides)
    wall_rates, cpu_rates, walls = [], [], []
    for seed in range(runs):
        gc.collect()
        trace = simulate(scenario, steps, seed)
        samples = trace.info["samples_finished"]
        cpu_s = trace.info["cpu_s"]
        walls.append(trace.wall_s)
        wall_rates.append(samples / trace.wall_s)
        cpu_rates.append(samples / cpu_s)
        click.echo(
            f"run {seed}: {samples:,} samples in {trace.wall_s:.2f} s wall ({cpu_s:.2f} s CPU)"
            f" = {wall_rates[-1]:,.0f} samples per wall-second"
        )
    click.echo(
        f"median: {statistics.median(wall_rates):,.0f} simulated samples per wall-second "
        f"({scenario.name}, {steps} steps, {runs} runs, median wall {statistics.median(walls):.2f} s); "
        f"{statistics.median(cpu_rates):,.0f} per CPU-second (they differ on a shared machine)"
    )
