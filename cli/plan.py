"""``stalesim plan``: the capacity-planning command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from stalesim.cli.options import (
    law_options,
    law_readings_from,
    out_folder_option,
    overrides_option,
    progress_bar,
    quiet_option,
)
from stalesim.cli.tables import _sci as _g
from stalesim.cli.tables import _x, print_table

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
@law_options()
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
    reading: str,
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
    from stalesim.sim.plan.config import load_plan
    from stalesim.sim.plan.evaluate import make_backend
    from stalesim.sim.plan.planner import run_plan

    config, folder = load_plan(
        plan_file, overrides=overrides, budget_gpus=budget_gpus, gpus=gpus, objective=objective
    )
    if no_screen:
        config = config.model_copy(
            update={"evaluation": config.evaluation.model_copy(update={"screen": False})}
        )
    laws = law_readings_from(law_file, reading)
    backend = make_backend(workers, ray_address)
    _stop_on_sigterm()
    try:
        with progress_bar(quiet or as_json, transient=True) as bar:
            task = bar.add_task(f"planning {config.name}: simulations", total=None)
            result = run_plan(
                config,
                laws,
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
    print_table(top_table(result.table), console)
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


def decision_lines(summary: dict[str, Any]) -> list[str]:
    """The decision summary: the verdict under every reading, then sync or async, the bound,
    the split and the learning-rate multiplier, each with how sure and why."""
    decision = summary.get("decision") or {}
    if not decision.get("items"):
        return []
    lines = [f"decision ({decision['verdict']}):"]
    for item in decision["items"]:
        if item["name"] == "learning-rate multiplier":
            others = ", ".join(f"{r} {_x(v)}" for r, v in item["under_readings"].items())
            lines.append(
                f"  learning-rate multiplier {_x(item['value'])} ({others}): {item['why']}"
            )
            continue
        sure = (
            "same under every reading"
            if item["same_under_all"]
            else "; ".join(f"{r} picks {v}" for r, v in item["differ"].items())
        )
        why = f"; {item['why']}" if item.get("why") else ""
        lines.append(f"  {item['name']}: {item['value']} ({sure}{why})")
    return lines


def recommendation_lines(summary: dict[str, Any]) -> list[str]:
    """The recommendation in a few lines of text: the decision first, then the setup in the
    user's units where the plan's base scenario gives a baseline, in ratios otherwise."""
    from stalesim.sim.plan.rank import describe_setup

    counts, rec, law = summary["counts"], summary["recommendation"], summary["law"]
    lines = [
        f"stalesim plan: {summary['name']}: {counts['candidates']:,} candidates "
        f"({counts['feasible']:,} feasible, {counts['infeasible']:,} infeasible); "
        f"{counts['simulated']:,} simulated, {counts['screened_out']:,} screened out "
        f"({summary['evaluation']['wall_s']:.1f} s)"
    ]
    lines += (summary.get("plan") or {}).get("notes") or []
    if law.get("regime_distance"):
        lines.append(f"law: {law['regime_distance']}")
    lines += [
        f"law reading {name}: measured on {label}" for name, label in law.get("labels", {}).items()
    ]
    best = rec["best"]
    if best is None:
        lines.append("no feasible candidate: see the infeasible list in the report")
        return lines
    lines += decision_lines(summary)
    word = "fastest" if summary["objective"] == "time" else "cheapest"
    lines.append(
        f"recommended ({word} to target, law reading {law['reading']}): {describe_setup(best)}"
    )
    lr = f"  learning rate {_x(best['lr_multiplier'])} your on-policy run's"
    if law.get("baseline_lr") is not None:
        lr = (
            f"  learning rate {best['lr_multiplier']:.3g} × your {law['baseline_lr']:.3g} = "
            f"{_g(best.get('learning_rate'))} [{_g(best.get('learning_rate_lo'))}, "
            f"{_g(best.get('learning_rate_hi'))}]"
        )
    lines.append(
        f"{lr} at staleness {law['staleness_summary']} {best['staleness']:.3g}; "
        f"learner steps to target {_x(best['learner_steps_multiplier'])} your baseline run's "
        f"(batch {law['baseline_batch']})"
    )
    if law.get("baseline_steps") is not None and best.get("time_to_target_s") is not None:
        lines.append(
            f"  time to target: {law['baseline_steps']:,.0f} × "
            f"{best['learner_steps_multiplier']:.3g} = {best['learner_steps_to_target']:,.0f} "
            f"learner steps × {best['step_time_s']:.3g} s = {_hours(best['time_to_target_s'])} "
            f"[{_hours(best['time_to_target_s_lo'])}, {_hours(best['time_to_target_s_hi'])}], "
            f"cost {_usd(best['cost_to_target_usd'])}, {best['samples_per_s']:.2f} samples/s"
        )
    else:
        lines.append(
            f"  time to target {_x(best['time_to_target_rel'])} the best synchronous setup's, "
            f"cost {_x(best['cost_to_target_rel'])} (set target.baseline_steps for hours; "
            f"{best['samples_per_s']:.2f} samples/s)"
        )
    runner = rec["runner_up"]
    if runner is not None:
        worse = rec["runner_up_worse_by"]
        lines.append(
            f"runner-up: {describe_setup(runner)}"
            + (f" ({worse:+.1%} {summary['objective']})" if worse is not None else "")
        )
    return lines


def top_table(table, rows: int = 10, others: list[str] | None = None):
    """The best ``rows`` simulated candidates as a rich table: GPUs and price of each, the
    multipliers, time and cost relative to the best synchronous setup, and the rank under each
    other reading of the law."""
    import polars as pl
    from rich.table import Table

    others = (
        others
        if others is not None
        else [c.removeprefix("rank_") for c in table.columns if c.startswith("rank_")]
    )
    out = Table(
        title=f"best {rows} candidates",
        caption="LR×, steps×: multipliers of your on-policy run's; time×, cost×: relative to the "
        "fastest synchronous setup; #reading: rank under that reading of the law",
    )
    out.add_column("#", justify="right", no_wrap=True)
    out.add_column("setup: GPUs, rollout+learner, mode, B×G/M", ratio=1, min_width=28)
    headers = ("samples/s", "S", "LR×", "steps×", "time×", "cost×", *(f"#{o}" for o in others))
    for column in headers:
        out.add_column(column, justify="right", no_wrap=True)
    for row in table.filter(pl.col("rank") > 0).sort("rank").head(rows).iter_rows(named=True):
        mode = row["mode"]
        if row["max_staleness"] is not None:
            mode += f"≤{row['max_staleness']}" + ("+inflight" if row["inflight_updates"] else "")
            mode += "+streaming" if row.get("streaming") else ""
        shared = row["total_gpus"] == row["rollout_gpus"]
        learner = "shared" if shared else str(row["learner_gpus"])
        price = row.get("price_per_gpu_hour")
        setup = (
            f"{row['total_gpus']}×{row['gpu']}"
            + ("" if price is None else f" (${price:g}/h)")
            + f" {row['rollout_engines']}×TP{row['rollout_tp']}"
            f"+{learner} {mode} {row['prompts_per_step']}×{row['group_size']}/"
            f"{row['minibatches_per_step']}"
        )
        out.add_row(
            str(row["rank"]),
            setup,
            f"{row['samples_per_s']:.2f}",
            f"{row['staleness']:.3g}",
            _g(row["lr_multiplier"]),
            _g(row["learner_steps_multiplier"]),
            _g(row["time_to_target_rel"]),
            _g(row["cost_to_target_rel"]),
            *(str(row[f"rank_{o}"]) for o in others),
        )
    return out
