"""``stalesim bench``: benchmark commands that print measured figures."""

from __future__ import annotations

import click
from stalesim.cli.lazy_group import LazyGroup


@click.group(
    cls=LazyGroup,
    lazy_subcommands={
        "sim": "stalesim.sim.bench:bench_sim",
        "kernels": "stalesim.kernels.bench:bench_kernels",
        "plan": "stalesim.sim.bench:bench_plan",
        "gpu": "stalesim.kernels.gpu_check_cli:bench_gpu",
    },
)
def bench() -> None:
    """Measure speed: the simulator (samples per wall-second), planning (candidates per minute)
    or the Triton kernels; check a GPU in one command."""
