"""``stalesim bench gpu``: everything that needs a GPU, in one command and one folder.

On a bare CUDA machine it runs, in order:

1. **correctness** in bf16 (and fp32/fp16) of every kernel against the float64 reference,
   including the fused path, at small odd shapes and at real ones (a 151,936-token vocabulary;
   the fused backward over several row chunks and vocabulary slabs);
2. **the kernel bench** (``stalesim bench kernels`` at the target shapes) against every
   baseline that is installed, with "not installed" rows for the others and each target as
   pass/fail;
3. **a short gpu-small training run** through the compiled kernels (``backend="triton"``, the
   32,768-token vocabulary), checking that the loss and rewards stay finite.

Everything goes under ``--out``: ``kernels/`` (``kernels.csv``, ``summary.json``,
``report.html``), ``train/`` (``steps.parquet``, ``run.json``), the warm-start cache, and
``gpu_check.json`` (device, versions, each part's wall time and verdict). The exit code is 0
when every correctness check passes and training stays finite, 1 otherwise, 2 without CUDA.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import click
from stalesim.cli.bench_kernels import cuda_graphs_option
from stalesim.cli.options import out_folder_option, quiet_option

DEFAULT_OUT = "stalesim-out/bench-gpu"
NEEDS_CUDA = (
    "stalesim bench gpu needs a CUDA GPU and none is visible on this machine; "
    "'stalesim bench kernels' runs the correctness half on CPU"
)
TRAIN_LR = 3e-4
"""A learning rate inside gpu-small's grid, where runs neither stall nor collapse."""


@click.command("gpu")
@out_folder_option(DEFAULT_OUT, "every result of the check.")
@click.option(
    "--train-steps",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="GRPO steps of the gpu-small training run.",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Timed repeats per kernel bench measurement (median reported).",
)
@cuda_graphs_option()
@quiet_option()
def bench_gpu(
    out_dir: Path, train_steps: int, repeats: int, cuda_graphs: bool, quiet: bool
) -> None:
    """Check the kernels on a GPU: bf16 correctness (fused path included), the kernel bench
    against every installed baseline, and a short gpu-small training run through the compiled
    kernels, all under one folder; fails on a correctness failure. Needs CUDA."""
    import torch

    if not torch.cuda.is_available():
        raise ValueError(NEEDS_CUDA)
    from stalesim.cli.bench_kernels import correctness_failures, run_kernel_bench
    from stalesim.common.files import write_json
    from stalesim.kernels import _bench_cases as cases

    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda")
    started = time.perf_counter()
    parts: dict[str, Any] = {}

    click.echo("1-2/3 kernel correctness (bf16 at real shapes too) and the kernel bench")
    t0 = time.perf_counter()
    frame = run_kernel_bench(
        out_dir / "kernels",
        quick=False,
        device="cuda",
        repeats=repeats,
        quiet=quiet,
        extra_correctness=cases.real_shape_correctness_cases(device),
        cuda_graphs=cuda_graphs,
    )
    failures = correctness_failures(frame)
    parts["kernels"] = {
        "wall_s": time.perf_counter() - t0,
        "correctness_rows": frame.filter(frame["pass"] == "correctness").height,
        "correctness_failures": failures,
    }

    click.echo(f"3/3 gpu-small training, {train_steps} steps through the compiled kernels")
    t0 = time.perf_counter()
    training = _train_gpu_small(out_dir, train_steps)
    parts["train"] = training | {"wall_s": time.perf_counter() - t0}

    summary = {
        "device": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "triton": _triton_version(),
        "wall_s": time.perf_counter() - started,
        "parts": parts,
        "ok": not failures and training["finite"],
    }
    write_json(out_dir / "gpu_check.json", summary)
    click.echo(
        f"{summary['device']}: {summary['wall_s']:.0f} s; correctness failures: "
        f"{len(failures)}; training finite: {training['finite']}; wrote {out_dir}"
    )
    if failures:
        raise click.ClickException(f"correctness check failed: {', '.join(failures)}")
    if not training["finite"]:
        raise click.ClickException("gpu-small training produced a non-finite loss or reward")


def gpu_small_check_run(train_steps: int, device: str = "cuda"):
    """The gpu-small preset's training config for the check: ``train_steps`` steps through the
    Triton kernels (``backend="triton"``), at :data:`TRAIN_LR`, staleness 0, seed 0."""
    from stalesim.validate.train.presets import RunConfig, preset_sweep

    train = preset_sweep("gpu-small").train.model_copy(
        update={"steps": train_steps, "backend": "triton", "device": device}
    )
    return RunConfig(preset="gpu-small", train=train, lr=TRAIN_LR, staleness="0", seed=0)


def _train_gpu_small(out_dir: Path, train_steps: int) -> dict[str, Any]:
    import math

    import polars as pl
    from stalesim.common.files import write_json, write_parquet

    # The warm start caches its weights; on a bare box that cache belongs in the output folder.
    os.environ.setdefault("STALESIM_CACHE_DIR", str(out_dir / "cache"))
    from stalesim.validate.train.trainer import train_run

    run = gpu_small_check_run(train_steps)
    result = train_run(run)
    steps = pl.DataFrame(result.steps)
    train_dir = out_dir / "train"
    write_parquet(train_dir / "steps.parquet", steps)
    write_json(train_dir / "run.json", result.run)
    losses = steps["loss"].to_list() if steps.height else []
    rewards = steps["reward_mean"].to_list() if steps.height else []
    finite = bool(losses) and all(math.isfinite(v) for v in losses + rewards)
    return {
        "steps": steps.height,
        "vocab_size": run.train.task.vocab_size,
        "finite": finite,
        "first_reward": rewards[0] if rewards else None,
        "last_reward": rewards[-1] if rewards else None,
        "mean_learn_s": float(steps["learn_s"].mean()) if steps.height else None,
    }


def _triton_version() -> str:
    import triton

    return triton.__version__
