"""``stalesim validate pipeline`` and ``stalesim validate replay``."""

from __future__ import annotations

import json
from pathlib import Path

import click
from stalesim.cli.options import (
    out_folder_option,
    overrides_option,
    progress_bar,
    quiet_option,
)

DEFAULT_OUT = "stalesim-runs/pipeline"


@click.command()
@click.option(
    "--preset",
    default="cpu",
    show_default=True,
    help="cpu, cpu-2w, cpu-ns (the law experiments' non-saturating task, 300 steps) or gpu-small (needs CUDA)",
)
@click.option(
    "--mode",
    default=None,
    help="sync, one_step, async or partial_rollout (default: the preset's, async)",
)
@click.option("--max-staleness", default=None, type=int, help="async admission limit S_max")
@click.option("--inflight", is_flag=True, help="async: weights change under running sequences")
@click.option("--steps", default=None, type=int, help="learner steps (default: the preset's)")
@click.option("--lr", default=None, type=float, help="peak learning rate (default: 1e-3)")
@click.option("--seed", default=None, type=int, help="seed (default: 0)")
@click.option("--workers", default=None, type=int, help="rollout workers (default: the preset's)")
@click.option(
    "--address", default=None, help="join this Ray cluster (e.g. auto); default: a local Ray"
)
@out_folder_option(DEFAULT_OUT, "the run (Parquet tables, config.json, summary.json).", name="out")
@overrides_option(
    "override a pipeline config field, e.g. train.prompts_per_step=16", scenario=False
)
@quiet_option("no progress bar")
def pipeline(
    preset, mode, max_staleness, inflight, steps, lr, seed, workers, address, out, overrides, quiet
) -> None:
    """Real asynchronous GRPO on Ray: rollout workers and a learner running concurrently.

    Staleness emerges from the mode (sync, one_step, async with --max-staleness and
    --inflight, partial_rollout) and is logged per sample in the simulator's trace columns,
    with the timing tables `stalesim calibrate` and `stalesim validate replay` read. At the
    end it prints, and writes into summary.json, the steady-state throughput, the staleness
    of the samples consumed (mean, p50, p90, max) and the overlap (the share of the learner's
    training time with rollouts running).
    """
    from stalesim.common.config_file import apply_overrides
    from stalesim.validate.pipeline.config import load_pipeline, preset_pipeline
    from stalesim.validate.pipeline.run import check_pipeline, run_pipeline

    data = preset_pipeline(preset)
    flags = {
        "algorithm.mode": mode,
        "algorithm.max_staleness": max_staleness,
        "algorithm.inflight_updates": "true" if inflight else None,
        "train.steps": steps,
        "lr": lr,
        "seed": seed,
        "rollout_workers": workers,
    }
    given = [f"{k}={v}" for k, v in flags.items() if v is not None]
    config = load_pipeline(apply_overrides(data, [*given, *overrides]), source="--set")
    # everything that would stop the run once started is refused here, before any output
    check_pipeline(config, out, address)
    if not quiet:
        from stalesim.sim.modes import MODES

        algo = config.algorithm
        admission = MODES[algo.mode].admission
        bounded = admission is not None and admission.bounded_by_max_staleness
        click.echo(
            f"pipeline {config.preset}: {algo.mode}"
            + (f" (max_staleness {algo.max_staleness})" if bounded else "")
            + f", {config.rollout_workers} worker(s) + 1 learner, {config.train.steps} steps"
            + f", lr {config.lr:g} -> {out}"
        )
    with progress_bar(quiet) as bar:
        task = bar.add_task("learner steps", total=config.train.steps)
        summary = run_pipeline(
            config,
            out,
            address=address,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    print_run_figures(summary)
    click.echo(
        f"{summary['status']}: {summary['steps_done']} steps in {summary['run_s']:.1f} s "
        f"(wall {summary['wall_s']:.0f} s) -> {out}"
    )


def print_run_figures(summary: dict) -> None:
    """The run's throughput, staleness and overlap (``summary["figures"]``) as a table."""
    from rich.table import Table
    from stalesim.cli.tables import print_table
    from stalesim.validate.pipeline.summary import figure_rows

    table = Table(title=f"pipeline {summary['mode']}: steady state")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in figure_rows(summary["figures"]):
        table.add_row(name, value)
    print_table(table)


@click.command()
@click.argument(
    "run_dir", required=False, default=DEFAULT_OUT, type=click.Path(file_okay=False, path_type=Path)
)
@click.option("--seed", default=None, type=int, help="first simulator seed (default: the run's)")
@click.option(
    "--seeds",
    default=5,
    show_default=True,
    type=click.IntRange(1, 100),
    help="simulator runs (seeds SEED, SEED+1, ...); the comparison reads their mean",
)
@click.option(
    "--out",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="where the simulated trace, replay.json and replay.html go (default: RUN_DIR/replay)",
)
@click.option("--json", "as_json", is_flag=True, help="print replay.json's errors as JSON")
def replay(run_dir: Path, seed: int | None, seeds: int, out: Path | None, as_json: bool) -> None:
    """Replay a pipeline run (default: stalesim-runs/pipeline) in the simulator and compare.

    Calibrates a scenario from the run's own timing tables (steady-state rows), dispersions
    and response lengths, simulates the same mode, batch and bound with several seeds, and
    compares throughput, the staleness distribution, learner idle time and queue occupancy
    with the run, then prints each stage's figures (cadence, learner work and wait, batch
    generation, engine load) for both. Writes RUN_DIR/replay/. Exits 1 when a target
    (throughput within 3%, mean staleness within 0.1, KS distance <= 0.1) is missed.
    """
    from stalesim.reports.pipeline_page import write_pipeline_page
    from stalesim.validate.pipeline.replay import replay as run_replay

    result = run_replay(run_dir, seed=seed, seeds=seeds, out=out)
    out_dir = out if out is not None else run_dir / "replay"
    page = write_pipeline_page(run_dir, out_dir)
    missed = [name for name, ok in result["met"].items() if not ok]
    if as_json:
        click.echo(json.dumps({k: result[k] for k in ("errors", "targets", "met")}, indent=2))
    else:
        print_replay(result, run_dir)
        click.echo(f"wrote {out_dir}/ (trace, replay.json); page: {page}")
    if missed:
        raise SystemExit(1)


def print_replay(result: dict, run_dir: Path) -> None:
    """The comparison, the stage figures and the targets, as terminal tables."""
    from rich.console import Console
    from rich.table import Table
    from stalesim.cli.tables import print_table
    from stalesim.reports.pipeline_page import stage_rows

    real, sim, err = result["real"], result["sim"], result["errors"]
    rows = [
        ("samples/s", "samples_per_s", "samples_per_s_rel", "rel"),
        ("learner steps/s", "steps_per_s", "steps_per_s_rel", "rel"),
        ("staleness mean", "staleness_mean", "staleness_mean_abs", "abs"),
        ("token staleness mean", "staleness_token_mean", "staleness_token_mean_abs", "abs"),
        ("learner idle fraction", "learner_idle_fraction", "learner_idle_fraction_abs", "abs"),
        ("groups waiting (mean)", "queue_mean_groups", "queue_mean_groups_abs", "abs"),
    ]
    seeds = result["seeds"]
    console = Console()
    table = Table(
        title=f"replay of {run_dir} ({result['mode']}, {result['steps']} steps; "
        f"sim: mean of {len(seeds)} seed{'s' if len(seeds) > 1 else ''})"
    )
    for name in ("", "real", "sim", "error"):
        table.add_column(name, justify="left" if not name else "right")
    for name, key, err_key, kind in rows:
        e = err[err_key]
        shown = "-" if e is None else (f"{e:+.1%}" if kind == "rel" else f"{e:.3f}")
        table.add_row(name, _num(real[key]), _num(sim[key]), shown)
    table.add_row(
        "KS distance (samples / tokens)",
        "",
        "",
        f"{err['ks_samples']:.3f} / {err['ks_tokens']:.3f}",
    )
    print_table(table, console)
    spread = [s["samples_per_s_rel"] for s in result["per_seed"] if s["samples_per_s_rel"]]
    if len(spread) > 1:
        console.print(
            f"throughput error by seed: {min(spread):+.1%} to {max(spread):+.1%}; the run's own "
            f"throughput standard error (block bootstrap): {_pct(result['real_throughput_standard_error'])}"
        )
    stages = Table(title="stages per learner step (steady state)")
    for name in ("", "real", "sim"):
        stages.add_column(name, justify="left" if not name else "right")
    for label, r, s in stage_rows(result["stages"]["real"], result["stages"]["sim"]):
        stages.add_row(label, r, s)
    console.print(stages)
    met = ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in result["met"].items())
    console.print(f"targets: {met}", highlight=False)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"
