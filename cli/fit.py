"""``stalesim fit RUNS_DIR``: turn a learning-rate × staleness sweep into ``law.json``."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import click
from stalesim.cli.options import progress_bar, quiet_option


@click.command()
@click.argument(
    "runs_dir",
    metavar="RUNS",
    type=click.Path(path_type=Path),
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Where to write the fitted law [default: RUNS/law.json for a folder, NAME.law.json "
    "beside a table NAME.csv].",
)
@click.option(
    "--mapping",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="YAML saying what your table's columns or your logs hold (see above).",
)
@click.option(
    "--target-reward",
    type=float,
    default=None,
    help="Reward that counts as reached, for steps to target (tables and log folders) "
    "[default: start + 0.8 x (best on-policy reward - start)].",
)
@click.option(
    "--bootstrap",
    type=click.IntRange(min=0),
    default=500,
    show_default=True,
    help="Draws of eta_max inside its grid bracket (its resolution) for the leave-one-seed-out "
    "intervals; with fewer than 2 seeds or --bootstrap-unit run, bootstrap replicates.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option(
    "--objective",
    default="reward_auc",
    show_default=True,
    help="runs.parquet column whose maximum over the LR grid defines eta_opt (higher is better).",
)
@click.option(
    "--window",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="LRs on each side of the best grid LR in the quadratic that locates eta_opt.",
)
@click.option(
    "--min-final-reward",
    type=float,
    default=None,
    help="Also count a run as failed (for eta_max) when its final reward ends below this.",
)
@click.option(
    "--reach-fraction",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="A run made no progress if its best smoothed reward never got this fraction of the "
    "way from its warm start to the best S=0 reward (reported apart; eta_max ignores it).",
)
@click.option(
    "--bootstrap-unit",
    type=click.Choice(["seed", "run"]),
    default="seed",
    show_default=True,
    help="Resample whole seeds (each with its own warm start; needs 3+ seeds) or runs per cell.",
)
@click.option(
    "--lag-axis",
    type=click.Choice(["realised", "nominal"]),
    default="realised",
    show_default=True,
    help="Fit against each S group's realised mean lag, or the nominal S.",
)
@click.option(
    "--horizon",
    type=click.IntRange(min=1),
    default=None,
    help="Judge every run on its first HORIZON steps only (a shorter training horizon).",
)
@click.option(
    "--max-staleness",
    type=click.IntRange(min=0),
    default=None,
    help="Leave out runs whose (largest) staleness exceeds this, e.g. to keep every run at "
    "least 5 x S long at a short --horizon.",
)
@quiet_option()
def fit(
    runs_dir: Path,
    out: Path | None,
    bootstrap: int,
    seed: int,
    objective: str,
    window: int,
    min_final_reward: float | None,
    reach_fraction: float,
    bootstrap_unit: str,
    lag_axis: str,
    horizon: int | None,
    max_staleness: int | None,
    mapping: Path | None,
    target_reward: float | None,
    quiet: bool,
) -> None:
    """Fit the staleness–learning-rate law to RUNS and write law.json.

    RUNS is a sweep folder of `stalesim validate sweep` (runs.parquet), or runs from any
    trainer: a table (.csv or .jsonl) with one row per logged step, columns
    run,lr,staleness,seed,step,reward (optional: lag, the measured mean lag of the step's
    batch, and warm_reward, the start policy's reward); or a folder of per-run logs, RUN.jsonl
    files or RUN/ TensorBoard event folders (needs the `logs` extra). --mapping renames the
    table's columns (`columns: {lr: learning_rate, lag: async/lag}`) and, for a log folder, is
    required: `logs: {reward: TAG, step: KEY, lag: TAG, pattern: "lr{lr}_s{staleness}_seed{seed}"}`
    or `logs: {runs: {NAME: {lr: 1e-6, staleness: 0, seed: 0}}}`.

    \b
    Rules for tables and logs:
    - staleness is each run's bound, a whole number; with a lag column the fit's axis is each
      run's mean measured lag (--lag-axis realised), without one the bound;
    - every run logs at the same steps; steps count logged points (the first is step 0);
    - a run whose log ends before the longest run's (or before --horizon), or whose reward
      turns non-finite, stopped early: it counts as collapsed at its last finite step;
    - the reward is smoothed over 10 logged points;
    - the start reward is warm_reward, else the mean first logged reward of all runs;
    - the target is --target-reward, else start + 0.8 x (best per-lr mean final reward of the
      lowest-staleness runs - start).

    For each staleness S: the best learning rate eta_opt(S) (vertex of the parabola in ln lr
    through the objective at the best grid LR and its neighbours), the largest stable one
    eta_max(S) (where half the seeds are unstable: collapse, or ending below the warm start;
    a run that never reaches REACH_FRACTION of the S=0 gain made no progress, reported apart),
    and steps to target at eta_opt(S). Then eta(S) = eta0 / (1 + (S/s_c)^k)^(alpha/k) is
    fitted to both, with leave-one-seed-out intervals whose coverage is checked on synthetic
    sweeps, next to slopes d ln eta / d ln S read against bands around 0 and -1, eta_opt by
    three scores at several horizons, and the staleness summaries (max, mean, token-weighted
    mean) compared on the runs whose staleness was drawn from a distribution.
    """
    from rich.console import Console
    from stalesim.validate.law.external_runs import (
        TABLE_SUFFIXES,
        fit_external,
        is_sweep_folder,
        read_mapping,
    )
    from stalesim.validate.law.fit import FitSettings, fit_runs_dir

    settings = FitSettings(
        objective=objective,
        window=window,
        bootstrap=bootstrap,
        seed=seed,
        min_final_reward=min_final_reward,
        reach_fraction=reach_fraction,
        bootstrap_unit=bootstrap_unit,
        lag_axis=lag_axis,
        horizon=horizon,
        max_staleness=max_staleness,
    )
    sweep = is_sweep_folder(runs_dir) or (
        not runs_dir.exists() and runs_dir.suffix.lower() not in TABLE_SUFFIXES
    )
    if sweep and (mapping is not None or target_reward is not None):
        raise ValueError(
            f"{runs_dir}: --mapping and --target-reward are for tables and log folders, not a "
            "sweep folder (runs.parquet)"
        )
    external = None if sweep else read_mapping(mapping)
    command = "stalesim fit " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    console = Console()
    with progress_bar(quiet, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("bootstrap", total=bootstrap)
        if external is None:
            result, path = fit_runs_dir(
                runs_dir, out, settings, command=command, progress=lambda n: bar.advance(task, n)
            )
        else:
            result, path = fit_external(
                runs_dir,
                out,
                settings,
                mapping=external,
                target_reward=target_reward,
                command=command,
                progress=lambda n: bar.advance(task, n),
            )
    _print_points(console, result.points)
    _print_law(console, result.law)
    click.echo(f"wrote {path}")


def _fmt(value: Any, spec: str = ".3g") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    return format(value, spec)


def _estimate(value: Any, lo: Any, hi: Any, flag: str, fitted: bool) -> str:
    text = f"{_fmt(value)} [{_fmt(lo)}, {_fmt(hi)}]"
    if flag != "ok":
        text += f" {flag}"
    if not fitted:
        text += " (not fitted)"
    return text


def _print_points(console: Any, points: Any) -> None:
    from rich.table import Table
    from stalesim.cli.tables import print_table

    table = Table(title="Per-staleness estimates [95% interval]")
    table.add_column("S", justify="right")
    table.add_column("runs", justify="right")
    table.add_column("eta_opt", justify="right")
    table.add_column("eta_max", justify="right")
    table.add_column("steps to target", justify="right")
    for row in points.iter_rows(named=True):
        table.add_row(
            str(row["staleness"]),
            str(row["n_runs"]),
            _estimate(
                row["eta_opt"],
                row["eta_opt_lo"],
                row["eta_opt_hi"],
                row["eta_opt_flag"],
                row["eta_opt_in_fit"],
            ),
            _estimate(
                row["eta_max"],
                row["eta_max_lo"],
                row["eta_max_hi"],
                row["eta_max_flag"],
                row["eta_max_in_fit"],
            ),
            _fmt(row["steps_to_target"], ".0f"),
        )
    print_table(table, console)


def _print_law(console: Any, law: Any) -> None:
    from rich.table import Table
    from stalesim.cli.tables import print_table
    from stalesim.validate.law.slopes import VERDICT_TEXT

    table = Table(title="eta(S) = eta0 / (1 + (S/s_c)^k)^(alpha/k)")
    table.add_column("curve")
    for name in ("eta0", "s_c", "k", "alpha", "R² (ln)", "rms ln-resid"):
        table.add_column(name, justify="right")
    for label, curve in (("eta_opt", law.eta_opt), ("eta_max", law.eta_max)):
        if curve is None:
            continue
        cells = []
        for name in ("eta0", "s_c", "k", "alpha"):
            value = getattr(curve, name)
            if name in curve.fixed:
                cells.append(f"{_fmt(value)} (fixed)")
            else:
                lo, hi = curve.intervals.get(name, (None, None))
                cells.append(f"{_fmt(value)} [{_fmt(lo)}, {_fmt(hi)}]")
        quality = curve.quality
        cells += [_fmt(quality.r2_log, ".3f"), _fmt(quality.rmse_log, ".3f")]
        table.add_row(label, *cells)
    print_table(table, console)
    console.print(f"paper's prediction: alpha ≈ {law.alpha_paper:g} in the stale-limited regime")
    if law.regime is not None:
        console.print(f"measured on: {law.regime.label()}")
        if law.regime.saturation:
            console.print(f"  {law.regime.saturation}")
    steps = law.steps_to_target
    if steps is not None:
        console.print(steps.describe())
        other = steps.alternative
        if other:
            console.print(
                f"  chosen by AIC ({other['aic_of_chosen']:.3g}) over the {other['form']} form "
                f"(AIC {other['aic']:.3g}, rms ln-resid {other['rmse_log']:.3f})"
            )
    for label, block in (law.slopes or {}).items():
        for name in ("early", "late"):
            slope = block.get(name)
            if slope:
                console.print(
                    f"{label} slope d ln eta / d ln S over S {slope['from']:.3g}..{slope['to']:.3g}"
                    f" = {slope['slope']:.2f} [{slope['lo']:.2f}, {slope['hi']:.2f}]: "
                    f"{VERDICT_TEXT[slope['verdict']]}"
                )
    for note in law.notes:
        console.print(f"note: {note}")
    comparison = law.summary_comparison or {}
    if comparison.get("status") == "compared":
        errors = ", ".join(f"{k} {v:.3f}" for k, v in comparison["rmse_log"].items())
        console.print(f"staleness summary, held-out rms ln-error: {errors}")
        console.print(f"  {comparison['verdict']}")
    else:
        console.print(f"staleness summary comparison: {comparison.get('status', 'not run')}")
