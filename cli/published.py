"""``stalesim check published``: predicted vs measured async speed-up on published setups."""

from __future__ import annotations

from pathlib import Path

import click
from stalesim.cli.options import out_folder_option, progress_bar, quiet_option, seed_option
from stalesim.sim.published_check import DEFAULT_STEPS

DEFAULT_OUT = "stalesim-out/published-check"


@click.command("published")
@click.option(
    "--steps",
    default=DEFAULT_STEPS,
    show_default=True,
    type=int,
    help="Learner steps per simulation (the first tenth is warm-up).",
)
@seed_option()
@out_folder_option(
    DEFAULT_OUT, "published_check.csv, mechanisms.csv, published_check.json, report.html."
)
@click.option(
    "--no-mechanisms",
    is_flag=True,
    help="Skip the reruns with one mechanism switched (streaming, in-flight updates, ...).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON instead of a table.")
@quiet_option()
def check_published(
    steps: int, seed: int, out_dir: Path, no_mechanisms: bool, as_json: bool, quiet: bool
) -> None:
    """Simulate published setups of real asynchronous RL trainers and compare the predicted
    speed-up of going asynchronous with the measured one.

    Two predictions per setup: from datasheet figures and the simulator's defaults, and
    "calibrated from the sync run": `stalesim calibrate --from verl` on the synchronous run's
    published per-phase breakdown (sim/data/published/sync-breakdowns.yaml) alone, laid over
    both scenarios.

    Each setup is a pair of scenarios in sim/data/published/ (every setup figure cited in the
    file; what the source does not say is left at the simulator's default, and the file says
    so). The measured step times live in sim/data/published/measurements.yaml, which only this
    check reads: nothing is fitted to them. Predicted speed-up = synchronous mean step time /
    asynchronous mean step time, after warm-up, same steps and seed. The mechanism table reruns
    each pair with one switch flipped to show what moves the prediction.
    """
    import json

    import polars as pl
    from rich.console import Console
    from rich.table import Table
    from stalesim.cli.tables import print_table
    from stalesim.common.files import write_json, write_text
    from stalesim.common.output_dir import output_folder
    from stalesim.reports.published_page import PUBLISHED_KIND, write_published_report
    from stalesim.sim.published_check import run_check, work_units

    mechanisms = not no_mechanisms
    with progress_bar(quiet) as bar:
        task = bar.add_task("simulating published setups", total=work_units(mechanisms))
        result = run_check(steps, seed, mechanisms, advance=lambda: bar.advance(task))
    pairs = pl.DataFrame(result["pairs"])
    wrote_mechanisms = bool(result["mechanisms"])
    # every file goes through a staging folder and is published with a completion marker, so
    # an earlier run's files (a mechanism table this run did not make) never sit beside these
    with output_folder(out_dir, kind=PUBLISHED_KIND) as stage:
        write_text(stage / "published_check.csv", pairs.write_csv())
        if wrote_mechanisms:
            mech = pl.DataFrame(result["mechanisms"], infer_schema_length=None)
            write_text(stage / "mechanisms.csv", mech.write_csv())
        write_json(stage / "published_check.json", result)
        write_published_report(stage)
        if not wrote_mechanisms:
            # a folder written before completion markers: its table is not in a marker
            (out_dir / "mechanisms.csv").unlink(missing_ok=True)
    page = out_dir / "report.html"
    if as_json:
        click.echo(json.dumps(json.loads((out_dir / "published_check.json").read_text()), indent=2))
        return
    table = Table(title=f"Predicted vs measured async speed-up ({steps} steps, seed {seed})")
    for col in ("setup", "GPUs", "measured sync/async s", "predicted sync/async s"):
        table.add_column(col)
    for col in ("measured", "predicted", "error"):
        table.add_column(col, justify="right")
    table.add_column("calibrated from sync: sync/async s")
    for col in ("speed-up", "error", "async step error"):
        table.add_column(col, justify="right")
    for r in result["pairs"]:
        calibrated = r.get("calibrated_speedup") is not None
        table.add_row(
            r["id"].removeprefix("verl-"),
            f"{r['gpus_sync']}/{r['gpus_async']}",
            f"{r['measured_sync_step_s']:.0f} / {r['measured_async_step_s']:.0f}",
            f"{r['predicted_sync_step_s']:.0f} / {r['predicted_async_step_s']:.0f}",
            f"{r['measured_speedup']:.2f}x",
            f"{r['predicted_speedup']:.2f}x",
            f"{r['speedup_rel_error']:+.0%}",
            f"{r['calibrated_sync_step_s']:.0f} / {r['calibrated_async_step_s']:.0f}"
            if calibrated
            else "-",
            f"{r['calibrated_speedup']:.2f}x" if calibrated else "-",
            f"{r['calibrated_speedup_rel_error']:+.0%}" if calibrated else "-",
            f"{r['calibrated_async_step_rel_error']:+.0%}" if calibrated else "-",
        )
    console = Console()
    print_table(table, console)
    written = "published_check.csv/.json" + (", mechanisms.csv" if wrote_mechanisms else "")
    console.print(f"wrote {out_dir}/ ({written}, {page.name})")
