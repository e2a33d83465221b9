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
    "--preset", default="cpu", show_default=True, help="cpu, cpu-2w or gpu-small (needs CUDA)"
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
    with the timing tables `stalesim calibrate` and `stalesim validate replay` read.
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
    click.echo(
        f"{summary['status']}: {summary['steps_done']} steps in {summary['run_s']:.1f} s "
        f"(wall {summary['wall_s']:.0f} s) -> {out}"
    )


@click.command()
@click.argument(
    "run_dir", required=False, default=DEFAULT_OUT, type=click.Path(file_okay=False, path_type=Path)
)
@click.option("--seed", default=None, type=int, help="simulator seed (default: the run's)")
@click.option(
    "--out",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="where the simulated trace, replay.json and replay.html go (default: RUN_DIR/replay)",
)
@click.option("--json", "as_json", is_flag=True, help="print replay.json's errors as JSON")
def replay(run_dir: Path, seed: int | None, out: Path | None, as_json: bool) -> None:
    """Replay a pipeline run (default: stalesim-runs/pipeline) in the simulator and compare.

    Calibrates a scenario from the run's own timing tables and response lengths, simulates
    the same mode, batch and bound, and compares throughput, the staleness distribution,
    learner idle time and queue occupancy with the run. Writes RUN_DIR/replay/.
    """
    from stalesim.reports.pipeline_page import write_pipeline_page
    from stalesim.validate.pipeline.replay import replay as run_replay

    result = run_replay(run_dir, seed=seed, out=out)
    out_dir = out if out is not None else run_dir / "replay"
    page = write_pipeline_page(run_dir, out_dir)
    if as_json:
        click.echo(json.dumps({k: result[k] for k in ("errors", "targets", "met")}, indent=2))
        return
    real, sim, err = result["real"], result["sim"], result["errors"]
    rows = [
        ("samples/s", real["samples_per_s"], sim["samples_per_s"], err["samples_per_s_rel"], "rel"),
        ("learner steps/s", real["steps_per_s"], sim["steps_per_s"], err["steps_per_s_rel"], "rel"),
        (
            "staleness mean",
            real["staleness_mean"],
            sim["staleness_mean"],
            err["staleness_mean_abs"],
            "abs",
        ),
        (
            "token staleness mean",
            real["staleness_token_mean"],
            sim["staleness_token_mean"],
            err["staleness_token_mean_abs"],
            "abs",
        ),
        (
            "learner idle fraction",
            real["learner_idle_fraction"],
            sim["learner_idle_fraction"],
            err["learner_idle_fraction_abs"],
            "abs",
        ),
        (
            "groups waiting (mean)",
            real["queue_mean_groups"],
            sim["queue_mean_groups"],
            err["queue_mean_groups_abs"],
            "abs",
        ),
    ]
    click.echo(f"replay of {run_dir} ({result['mode']}, {result['steps']} steps)")
    click.echo(f"{'':24}{'real':>10}{'sim':>10}{'error':>10}")
    for name, r, s, e, kind in rows:
        shown = f"{e:+.1%}" if kind == "rel" and e is not None else f"{e:.3f}"
        click.echo(f"{name:24}{r:10.3f}{s:10.3f}{shown:>10}")
    click.echo(f"KS distance (samples / tokens): {err['ks_samples']:.3f} / {err['ks_tokens']:.3f}")
    met = ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in result["met"].items())
    click.echo(f"targets: {met}")
    click.echo(f"wrote {out_dir}/ (trace, replay.json); page: {page}")
