"""``stalesim simulate`` and ``stalesim presets``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click
from stalesim.cli.options import (
    law_options,
    law_readings_from,
    out_folder_option,
    overrides_option,
    progress_bar,
    quiet_option,
    seed_option,
)

if TYPE_CHECKING:
    from stalesim.sim.metrics import RunSummary
    from stalesim.sim.trace import Trace

DEFAULT_OUT = "stalesim-out"


@click.command()
@click.argument("scenario_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--preset", default=None, help="Built-in scenario to start from (see `stalesim presets`)."
)
@overrides_option("Override a scenario key, e.g. --set algorithm.mode=sync (repeatable).")
@click.option("--steps", default=50, show_default=True, type=int, help="Learner steps to simulate.")
@seed_option()
@out_folder_option(DEFAULT_OUT, "the trace (Parquet), summary.json and report.html.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary JSON instead of a table.")
@law_options()
@click.option(
    "--sensitivity",
    "with_sensitivity",
    is_flag=True,
    help="Also move each time-model coefficient by -20% and +20% and rerun a few steps: how "
    "much step time and the async speed-up move (summary key 'sensitivity', a page section).",
)
@click.option(
    "--vary",
    "vary",
    multiple=True,
    metavar="KEY=V1,V2,...",
    help="Compare variants in one call: simulate the scenario once per value of KEY (repeat to "
    "multiply), e.g. --vary algorithm.max_staleness=1,2,4,8; one table, one page, each "
    "variant's files in its own subfolder of --out.",
)
@quiet_option()
def simulate(
    scenario_file: Path | None,
    preset: str | None,
    overrides: tuple[str, ...],
    steps: int,
    seed: int,
    out_dir: Path,
    as_json: bool,
    law_file: Path | None,
    reading: str,
    with_sensitivity: bool,
    vary: tuple[str, ...],
    quiet: bool,
) -> None:
    """Simulate an RL cluster: throughput, utilisation and the staleness of its samples.

    Runs the built-in default scenario when given no SCENARIO_FILE; a file and --set
    overrides lie over the preset.

    The staleness-learning-rate law is applied as ratios to your own on-policy run: the
    learning-rate multiplier eta(S)/eta(0), the steps multiplier, and time to target relative
    to the same cluster run synchronously. With target.baseline_lr and target.baseline_steps
    (your synchronous run's learning rate and learner steps to target) it also gives your
    learning rate, steps and hours.
    """
    from stalesim.cli.tables import print_table, summary_table
    from stalesim.common.output_dir import output_folder
    from stalesim.reports.simulate_page import write_simulate_report
    from stalesim.sim.baseline import on_policy_summary
    from stalesim.sim.metrics import add_law, summarize
    from stalesim.sim.presets import load_scenario
    from stalesim.sim.run import check_run_size
    from stalesim.sim.run import simulate as run_simulation

    scenario = load_scenario(
        str(scenario_file) if scenario_file is not None else None, preset, overrides
    )
    check_run_size(scenario, steps)
    laws = law_readings_from(law_file, reading)
    if vary:
        if with_sensitivity:
            raise click.UsageError("--vary and --sensitivity: give one of them")
        _simulate_variants(
            scenario_file, preset, overrides, vary, steps, seed, out_dir, laws, as_json, quiet
        )
        return
    with progress_bar(quiet or as_json, transient=True) as bar:
        task = bar.add_task(f"simulating {scenario.name}", total=steps)
        trace = run_simulation(
            scenario, steps, seed, progress=lambda done, _total: bar.update(task, completed=done)
        )
    summary = summarize(trace, scenario, steps, seed)
    summary = add_law(summary, laws, scenario, on_policy_summary(scenario, steps, seed, summary))
    if with_sensitivity:
        from stalesim.sim.plan.sensitivity import sensitivity

        with progress_bar(quiet or as_json, transient=True) as bar:
            task = bar.add_task("sensitivity (+-20% per coefficient)", total=None)
            result = sensitivity(
                scenario,
                steps,
                seed,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        summary = summary.model_copy(update={"sensitivity": result})
    # Every file goes to a staging folder first and is published with a completion marker, so
    # a killed run never leaves its files beside those of an earlier run.
    with output_folder(out_dir, kind="simulate") as stage:
        _write_run(stage, trace, summary)
        write_simulate_report(stage)
    report = out_dir / "report.html"
    if as_json:
        click.echo(json.dumps(json.loads((out_dir / "summary.json").read_text()), indent=2))
        return
    from rich.console import Console

    console = Console()
    law_reading = summary.law or {}
    # the law is only as good as the regime it was measured in: say how far, once, at the top
    if law_reading.get("regime_distance"):
        console.print(f"law: {law_reading['regime_distance']}", markup=False)
    print_table(summary_table(summary), console)
    if with_sensitivity:
        from stalesim.cli.tables import sensitivity_table

        print_table(sensitivity_table(summary.sensitivity), console)
    for warning in law_reading.get("warnings") or []:
        console.print(f"law warning: {warning}", markup=False)
    console.print(f"wrote {out_dir}/ (samples, steps, busy, queue .parquet; summary.json)")
    console.print(f"report: {report}")


def _simulate_variants(
    scenario_file: Path | None,
    preset: str | None,
    overrides: tuple[str, ...],
    vary: tuple[str, ...],
    steps: int,
    seed: int,
    out_dir: Path,
    laws: list,
    as_json: bool,
    quiet: bool,
) -> None:
    """``simulate --vary``: every variant validated first, then simulated with the same steps
    and seed; one table, one page (``variants.parquet``, ``variants.json``, ``report.html``)
    and each variant's files in a subfolder, published together."""
    import polars as pl
    from stalesim.common.files import write_json, write_parquet
    from stalesim.common.output_dir import output_folder
    from stalesim.reports.variants_page import write_variants_report
    from stalesim.sim.baseline import on_policy_summary
    from stalesim.sim.metrics import add_law, summarize
    from stalesim.sim.presets import load_scenario
    from stalesim.sim.run import check_run_size
    from stalesim.sim.run import simulate as run_simulation
    from stalesim.sim.variants import folder_name, parse_vary, variant_row

    variants = parse_vary(vary)
    path = str(scenario_file) if scenario_file is not None else None
    scenarios = []
    for variant in variants:
        sets = tuple(f"{key}={value}" for key, value in variant)
        scenario = load_scenario(path, preset, (*overrides, *sets))
        check_run_size(scenario, steps)
        scenarios.append(scenario)
    rows, results = [], []
    # variants that share their synchronous counterpart share its simulation
    on_policy: dict[str, RunSummary | None] = {}
    with progress_bar(quiet or as_json, transient=True) as bar:
        task = bar.add_task("simulating variants", total=len(variants))
        for i, (variant, scenario) in enumerate(zip(variants, scenarios, strict=True)):
            trace = run_simulation(scenario, steps, seed)
            summary = summarize(trace, scenario, steps, seed)
            baseline = on_policy_summary(scenario, steps, seed, summary, cache=on_policy)
            summary = add_law(summary, laws, scenario, baseline)
            folder = folder_name(i, variant)
            rows.append(variant_row(variant, summary, folder))
            results.append((folder, trace, summary))
            bar.update(task, completed=i + 1)
    table = pl.DataFrame(rows, infer_schema_length=None)
    meta = {
        "vary": list(vary),
        "overrides": list(overrides),
        "steps": steps,
        "seed": seed,
        "law": {
            "reading": laws[0].name,
            "readings": {r.name: r.provenance for r in laws},
            "labels": {r.name: r.label for r in laws},
            "regime_distance": (results[0][2].law or {}).get("regime_distance"),
        },
        "variants": rows,
    }
    with output_folder(out_dir, kind="simulate-variants") as stage:
        for folder, trace, summary in results:
            (stage / folder).mkdir()
            _write_run(stage / folder, trace, summary)
        write_parquet(stage / "variants.parquet", table)
        write_json(stage / "variants.json", meta)
        write_variants_report(stage)
    if as_json:
        click.echo(json.dumps(json.loads((out_dir / "variants.json").read_text()), indent=2))
        return
    from rich.console import Console
    from stalesim.cli.tables import print_table, variants_table

    console = Console()
    if meta["law"]["regime_distance"]:
        console.print(f"law: {meta['law']['regime_distance']}", markup=False)
    print_table(variants_table(meta), console)
    console.print(f"wrote {out_dir}/ (variants.parquet, variants.json; one subfolder per variant)")
    console.print(f"report: {out_dir / 'report.html'}")


def _write_run(folder: Path, trace: Trace, summary: RunSummary) -> None:
    """One simulated run's files: the trace tables and ``summary.json``."""
    from stalesim.common.files import write_json, write_parquet

    for name in ("samples", "steps", "busy", "queue"):
        write_parquet(folder / f"{name}.parquet", getattr(trace, name))
    write_json(folder / "summary.json", summary.to_json())


@click.command()
def presets() -> None:
    """List the built-in scenarios, modes, model presets, GPUs and the shipped law readings."""
    from rich.console import Console
    from rich.table import Table
    from stalesim.cli.tables import print_table
    from stalesim.sim.hardware import CATALOG
    from stalesim.sim.models import MODELS
    from stalesim.sim.presets import preset_description, preset_names

    console = Console()
    scenarios = Table(title="scenarios (--preset NAME)")
    scenarios.add_column("name", no_wrap=True)
    scenarios.add_column("what it is")
    for name in preset_names():
        scenarios.add_row(name, preset_description(name))
    print_table(scenarios, console)
    from stalesim.sim.modes import MODES

    modes = Table(title="modes (algorithm.mode)")
    modes.add_column("mode", no_wrap=True)
    modes.add_column("what runs when")
    for name, spec in MODES.items():
        modes.add_row(name, spec.summary)
    print_table(modes, console)
    models = Table(title="models (model.preset)")
    for column in ("preset", "params", "active", "layers", "KV heads", "head dim", "KV KiB/token"):
        models.add_column(column, justify="right" if column != "preset" else "left", no_wrap=True)
    for key, m in MODELS.items():
        models.add_row(
            key,
            f"{m.params / 1e9:.2f}B",
            f"{m.active_params / 1e9:.2f}B",
            str(m.layers),
            str(m.kv_heads),
            str(m.head_dim),
            f"{m.kv_bytes_per_token / 1024:.0f}",
        )
    print_table(models, console)
    gpus = Table(title="hardware (hardware.gpu): dense bf16, HBM size and bandwidth")
    for column in (
        "gpu",
        "TFLOP/s",
        "GB",
        "TB/s",
        "NVLink GB/s",
        "net GB/s",
        "/node",
        "$/GPU-h",
    ):
        gpus.add_column(column, justify="right" if column != "gpu" else "left", no_wrap=True)
    for key, g in CATALOG.items():
        gpus.add_row(
            key,
            f"{g.peak_flops / 1e12:.0f}",
            f"{g.hbm_bytes / 1e9:.0f}",
            f"{g.hbm_bytes_per_s / 1e12:.2f}",
            f"{g.nvlink_bytes_per_s / 1e9:.0f}",
            f"{g.network_bytes_per_s / 1e9:.0f}",
            str(g.gpus_per_node),
            "-" if g.price_per_gpu_hour is None else f"{g.price_per_gpu_hour:.2f}",
        )
    print_table(gpus, console)
    print_table(law_readings_table(), console)


def law_readings_table():
    """The shipped law readings, each with what it was measured on: task, model size, batch,
    horizon and whether the task saturated within that horizon."""
    from rich.table import Table
    from stalesim.sim.law.readings import readings

    table = Table(
        title="law readings (--reading NAME): what each was measured on; only its ratios "
        "eta(S)/eta(0) and steps(S)/steps(0) are applied to your run"
    )
    for column in ("reading", "task", "parameters", "batch", "horizon", "saturated", "how"):
        table.add_column(column, no_wrap=column not in ("task", "how"))
    for reading in readings():
        regime = reading.law.regime
        if regime is None:
            table.add_row(
                reading.name, "regime not recorded", "-", "-", "-", "-", reading.provenance
            )
            continue
        batch = (
            f"{regime.prompts_per_step} x {regime.samples_per_prompt}"
            if regime.prompts_per_step and regime.samples_per_prompt
            else "-"
        )
        if (regime.minibatches_per_step or 1) > 1:
            batch += f" / {regime.minibatches_per_step} mini-batches"
        saturated = {True: "yes", False: "no", None: "not measured"}[regime.saturated]
        how = reading.provenance.split("; measured on ")[0]  # the label is in the columns
        table.add_row(
            reading.name,
            regime.task or "-",
            f"{regime.model_params:,}" if regime.model_params else "-",
            batch,
            f"{regime.steps} steps" if regime.steps else "-",
            saturated,
            how,
        )
    return table
