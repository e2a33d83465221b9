"""``stalesim check``: independent checks of the simulator against what real systems measured."""

from __future__ import annotations

import click
from stalesim.cli.lazy_group import LazyGroup


@click.group(
    cls=LazyGroup,
    lazy_subcommands={"published": "stalesim.cli.published:check_published"},
)
def check() -> None:
    """Check the simulator's predictions against measurements it was not calibrated on."""
