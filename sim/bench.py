"""``stalesim bench sim``: simulated samples per wall-second on the large reference scenario."""

from __future__ import annotations

import statistics

import click


@click.command("sim")
@click.option("--preset", default="bench-large", show_default=True, help="Scenario to time.")
@click.option("--steps", default=50, show_default=True, type=int, help="Learner steps per run.")
@click.option(
    "--runs", default=5, show_default=True, type=int, help="Timed runs (median reported)."
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a key.")
def bench_sim(preset: str, steps: int, runs: int, overrides: tuple[str, ...]) -> None:
    """Time the simulator: simulated samples per wall-second, median of several runs.

    A sample counts once it has finished generating (consumed or not).
    """
    import gc

    from stalesim.sim.presets import load_scenario
    from stalesim.sim.run import simulate

    if runs < 1 or steps < 1:
        raise click.BadParameter("--runs and --steps must be at least 1")
    scenario = load_scenario(None, preset, overrides)
    rates, walls, samples = [], [], 0
    for seed in range(runs):
        gc.collect()
        trace = simulate(scenario, steps, seed)
        samples = trace.info["samples_finished"]
        walls.append(trace.wall_s)
        rates.append(samples / trace.wall_s)
        click.echo(
            f"run {seed}: {samples:,} samples in {trace.wall_s:.2f} s = {rates[-1]:,.0f} samples/s"
        )
    click.echo(
        f"median: {statistics.median(rates):,.0f} simulated samples per wall-second "
        f"({scenario.name}, {steps} steps, {runs} runs, median wall {statistics.median(walls):.2f} s)"
    )
