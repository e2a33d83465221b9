"""``stalesim plan``: the capacity-planning command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from stalesim.sim.cli_options import out_folder_option, overrides_option, progress_bar, quiet_option

DEFAULT_OUT = "stalesim-plan"


def _gpu_list(_ctx, _param, value: str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    if not names:
        raise click.BadParameter("expected GPU names separated by commas, e.g. H100,H200")
    return names


@click.command()
@click.argument("plan_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@overrides_option("Override a key of the base scenario, e.g. --set model.preset=qwen2.5-1.5b.")
@click.option(
    "--law",
    "law_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A law.json from `stalesim fit` [default: the law shipped with stalesim].",
)
@click.option("--budget-gpus", type=int, default=None, help="GPUs per setup (replaces the plan's).")
@click.option(
    "--gpu",
    "gpus",
    default=None,
    callback=_gpu_list,
    metavar="NAMES",
    help="GPU types to consider, comma-separated, e.g. H100,H200 (replaces the plan's).",
)
@click.option(
    "--objective",
    type=click.Choice(["time", "cost"]),
    default=None,
    help="Rank by wall-clock time or by cost to the target [default: the plan's, time].",
)
@out_folder_option(
    DEFAULT_OUT, "candidates.parquet, plan.json and report.html; a stopped plan resumes from it."
)
@click.option(
    "--workers", type=int, default=None, help="Worker processes [default: one per CPU core]."
)
@click.option(
    "--ray",
    "ray_address",
    default=None,
    metavar="ADDRESS|local",
    help="Run the simulations on a Ray cluster (`local` starts one here).",
)
@click.option(
    "--no-screen", is_flag=True, help="Simulate every feasible candidate (slow; exact ranking)."
)
@click.option("--json", "as_json", is_flag=True, help="Print plan.json instead of tables.")
@quiet_option()
def plan(
    plan_file: Path | None,
    overrides: tuple[str, ...],
    law_file: Path | None,
    budget_gpus: int | None,
    gpus: tuple[str, ...],
    objective: str | None,
    out_dir: Path,
    workers: int | None,
    ray_address: str | None,
    no_screen: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Find the setup that reaches the target reward soonest (or cheapest) and its learning rate.

    Evaluates every candidate setup of PLAN_FILE (the built-in default plan without one):
    infeasible ones are listed with their reason; a closed-form screen picks the ones that can
    still win; those are simulated, and the staleness-learning-rate law turns each one's step
    time and staleness into the learning rate, steps, wall-clock time and cost to target.
    Writes OUT/candidates.parquet (every candidate, ranked), OUT/plan.json (recommendation,
    frontier, inputs) and OUT/report.html.
    """
    from stalesim.reports.plan_page import write_plan_report
    from stalesim.sim.law import default_law, load_law
    from stalesim.sim.plan import run_plan
    from stalesim.sim.plan_config import load_plan
    from stalesim.sim.plan_evaluate import make_backend

    config, folder = load_plan(
        plan_file, overrides=overrides, budget_gpus=budget_gpus, gpus=gpus, objective=objective
    )
    if no_screen:
        config = config.model_copy(
            update={"evaluation": config.evaluation.model_copy(update={"screen": False})}
        )
    law = load_law(law_file) if law_file is not None else default_law()
    backend = make_backend(workers, ray_address)
    _stop_on_sigterm()
    try:
        with progress_bar(quiet or as_json, transient=True) as bar:
            task = bar.add_task(f"planning {config.name}: simulations", total=None)
            result = run_plan(
                config,
                law,
                out_dir,
                folder=folder,
                backend=backend,
                progress=lambda done, _total: bar.update(task, completed=done),
                render=write_plan_report,
            )
    finally:
        backend.close()
    report = out_dir / "report.html"
    if as_json:
        click.echo(json.dumps(json.loads((out_dir / "plan.json").read_text()), indent=2))
        return
    from rich.console import Console

    console = Console()
    for line in recommendation_lines(result.summary):
        console.print(line, highlight=False)
    console.print(top_table(result.table))
    console.print(f"wrote {out_dir}/ (candidates.parquet, plan.json, simulated.parquet)")
    console.print(f"report: {report}")


def _stop_on_sigterm() -> None:
    """A plan killed with SIGTERM stops like one interrupted with Ctrl-C: its worker processes
    are shut down (the rounds already saved stay for the resume)."""
    import signal
    import sys

    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))


def _hours(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 3600:.2f} h"


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:,.0f}"


def recommendation_lines(summary: dict[str, Any]) -> list[str]:
    """The recommendation in a few lines of text."""
    from stalesim.sim.plan_rank import describe_setup

    counts, rec = summary["counts"], summary["recommendation"]
    lines = [
        f"stalesim plan: {summary['name']}: {counts['candidates']:,} candidates "
        f"({counts['feasible']:,} feasible, {counts['infeasible']:,} infeasible); "
        f"{counts['simulated']:,} simulated, {counts['screened_out']:,} screened out "
        f"({summary['evaluation']['wall_s']:.1f} s)"
    ]
    best = rec["best"]
    if best is None:
        lines.append("no feasible candidate: see the infeasible list in the report")
        return lines
    word = "fastest" if summary["objective"] == "time" else "cheapest"
    lines += [
        f"recommended ({word} to target): {describe_setup(best)}",
        f"  learning rate {best['eta_opt']:.3g} [{_g(best['eta_opt_lo'])}, "
        f"{_g(best['eta_opt_hi'])}] at staleness {summary['law']['staleness_summary']} "
        f"{best['staleness']:.3g}",
        f"  time to target {_hours(best['time_to_target_s'])} "
        f"[{_hours(best['time_to_target_s_lo'])}, {_hours(best['time_to_target_s_hi'])}], "
        f"cost {_usd(best['cost_to_target_usd'])}, "
        f"{best['learner_steps_to_target']:.0f} learner steps, "
        f"{best['samples_per_s']:.2f} samples/s",
    ]
    runner = rec["runner_up"]
    if runner is not None:
        worse = rec["runner_up_worse_by"]
        lines.append(
            f"runner-up: {describe_setup(runner)}"
            + (f" ({worse:+.1%} {summary['objective']})" if worse is not None else "")
        )
    alpha1 = rec.get("best_alpha1")
    if alpha1 is not None:
        if alpha1["candidate_id"] == best["candidate_id"]:
            lines.append("with the paper's alpha = 1 the recommendation stays the best")
        else:
            lines.append(
                f"with the paper's alpha = 1 the best would be {describe_setup(alpha1)}; "
                f"the recommendation ranks #{rec['best_rank_alpha1']}"
            )
    return lines


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def top_table(table, rows: int = 10):
    """The best ``rows`` simulated candidates as a rich table."""
    import polars as pl
    from rich.table import Table

    out = Table(title=f"best {rows} candidates (time in hours; #α=1: rank with alpha = 1)")
    out.add_column("#", justify="right", no_wrap=True)
    out.add_column("setup: GPUs, rollout+learner, mode, B×G/M", ratio=1)
    for column in ("samples/s", "S", "LR", "steps", "time", "cost", "#α=1"):
        out.add_column(column, justify="right", no_wrap=True)
    for row in table.filter(pl.col("rank") > 0).sort("rank").head(rows).iter_rows(named=True):
        mode = row["mode"]
        if mode == "async":
            mode += f"≤{row['max_staleness']}" + ("+inflight" if row["inflight_updates"] else "")
            mode += "+streaming" if row.get("streaming") else ""
        learner = "shared" if row["mode"] == "sync_colocated" else str(row["learner_gpus"])
        setup = (
            f"{row['total_gpus']}×{row['gpu']} {row['rollout_engines']}×TP{row['rollout_tp']}"
            f"+{learner} {mode} {row['prompts_per_step']}×{row['group_size']}/"
            f"{row['minibatches_per_step']}"
        )
        out.add_row(
            str(row["rank"]),
            setup,
            f"{row['samples_per_s']:.2f}",
            f"{row['staleness']:.3g}",
            f"{row['eta_opt']:.2e}",
            f"{row['learner_steps_to_target']:.0f}",
            f"{row['time_to_target_s'] / 3600:.2f}",
            _usd(row["cost_to_target_usd"]),
            str(row["rank_alpha1"]),
        )
    return out
