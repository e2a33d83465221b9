"""``stalesim bench``: benchmark commands that print measured figures."""

from __future__ import annotations

import click
from stalesim.cli.lazy_group import LazyGroup


@click.group(
    cls=LazyGroup,
    lazy_subcommands={
        "sim": "stalesim.cli.bench_sim:bench_sim",
        "kernels": "stalesim.cli.bench_kernels:bench_kernels",
        "plan": "stalesim.cli.bench_sim:bench_plan",
        "gpu": "stalesim.cli.bench_gpu:bench_gpu",
    },
)
def bench() -> None:
    """Measure speed: the simulator (samples per wall-second), planning (candidates per minute)
    or the Triton kernels; check a GPU in one command."""
