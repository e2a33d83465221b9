"""``stalesim validate``: real GRPO training that measures the staleness-learning-rate law."""

from __future__ import annotations

import os
import time

import click
from stalesim.cli.options import overrides_option, progress_bar, quiet_option


def _parse_list(text: str | None, option: str, kind: type[float] | type[int]) -> list | None:
    """A comma- (or space-) separated option value as numbers of ``kind``; None when not given."""
    if text is None:
        return None
    try:
        return [kind(x) for x in text.replace(",", " ").split()]
    except ValueError:
        expected = "numbers" if kind is float else "integers"
        example = "1e-3,2e-3" if kind is float else "0,1,2"
        raise ValueError(
            f"{option} {text!r}: expected {expected} separated by commas, e.g. {example}"
        ) from None


#: More worker processes than this is a typo, not a machine.
MAX_WORKERS = 1024


def check_backend(backend: str, device: str) -> None:
    """Refuse the Triton kernels on a CPU device unless the interpreter was asked for."""
    interpreted = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    if backend == "triton" and device.startswith("cpu") and not interpreted:
        from stalesim.common.config_file import ConfigError

        raise ConfigError(
            "train.backend=triton with train.device=cpu: Triton kernels run on CPU only under "
            "the Triton interpreter (set TRITON_INTERPRET=1), which is for tests and far too "
            "slow to train; use train.backend=auto (the torch reference on CPU) or a CUDA device"
        )


@click.group()
def validate() -> None:
    """Train real GRPO under controlled staleness and measure how the best LR moves."""


@validate.command()
@click.option(
    "--preset",
    default="cpu-tiny",
    show_default=True,
    help="cpu-tiny, cpu-tiny-mb4, gpu-small, or a law experiment: law-clip, "
    "law-clip-tight, law-decoupled, law-batch-{4,8,32,96}, law-horizon-ns, law-knee-ns, "
    "law-opt-sgd, law-opt-sgd-m0.9, law-opt-adam-0, law-sched-{constant,ess,law}, law-gpu-ns, "
    "law-task2 (adding numbers, exact-match reward), law-batch-ns-{16,64,64-mb4}, "
    "law-sched-alt-{eta0,constant,law,ess}",
)
@click.option(
    "--lrs", default=None, help="peak learning rates, comma-separated (default: the preset's)"
)
@click.option(
    "--staleness",
    default=None,
    help="staleness specs, comma-separated: S, fixed:S, uniform:A-B, alternating:A-B, "
    "geometric:p=P,max=M "
    "(default: the preset's)",
)
@click.option("--seeds", default=None, help="seeds, comma-separated (default: the preset's)")
@click.option(
    "--out",
    default=None,
    help="runs directory (default: stalesim-runs/<preset>); an existing one is resumed",
)
@click.option(
    "--workers", default=None, type=int, help="parallel processes (default: CPU count, at most 8)"
)
@overrides_option("override a train config field, e.g. train.steps=50", scenario=False)
@quiet_option("no progress bar")
def sweep(preset, lrs, staleness, seeds, out, workers, overrides, quiet) -> None:
    """Run the learning-rate x staleness x seed grid; resumable; writes runs.parquet and steps.parquet."""
    from stalesim.common.config_file import apply_overrides, validate_config
    from stalesim.validate.law.sweep import describe, run_sweep
    from stalesim.validate.train.presets import SweepConfig, preset_sweep
    from stalesim.validate.train.run_memory import check_sweep_fits
    from stalesim.validate.train.staleness import split_staleness_list

    base = preset_sweep(
        preset,
        lrs=_parse_list(lrs, "--lrs", float),
        staleness=split_staleness_list(staleness) if staleness is not None else None,
        seeds=_parse_list(seeds, "--seeds", int),
    )
    if overrides:
        data = apply_overrides(base.model_dump(mode="json"), overrides)
        base = validate_config(SweepConfig, data, source="--set")
    workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"--workers {workers}: allowed 1..{MAX_WORKERS}")
    check_backend(base.train.backend, base.train.device)
    check_sweep_fits(base, workers)
    from stalesim.validate.train.trainer import resolve_device

    resolve_device(base.train.device)
    out = out or os.path.join("stalesim-runs", preset)
    size = describe(base)
    if not quiet:
        click.echo(
            f"sweep {preset}: {size['runs']} runs ({size['lrs']} LRs, {size['staleness']} "
            f"staleness specs, {size['seeds']} seeds), {workers} workers -> {out}"
        )
    started = time.perf_counter()
    with progress_bar(quiet, time_remaining=True) as progress:
        task = progress.add_task("runs", total=size["runs"])
        runs, _ = run_sweep(
            base,
            out,
            workers=workers,
            on_progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    wall_s = time.perf_counter() - started
    collapsed = int(runs["collapsed"].sum()) if runs.height else 0
    click.echo(
        f"{runs.height} runs finished ({collapsed} collapsed) in {wall_s:.0f} s -> {out}/runs.parquet"
    )


def _add_pipeline_commands() -> None:
    # the pipeline's commands live beside what they drive; importing them loads only click
    from stalesim.cli.knee_probe import knee_probe
    from stalesim.cli.validate_pipeline import pipeline, replay

    validate.add_command(pipeline)
    validate.add_command(replay)
    validate.add_command(knee_probe)


_add_pipeline_commands()
