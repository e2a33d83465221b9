"""The ``stalesim`` command line: one click group; each command lives next to what it drives."""

from __future__ import annotations

import click
from stalesim.cli.errors import InputErrorGroup
from stalesim.cli.lazy_group import LazyGroup


class _RootGroup(InputErrorGroup, LazyGroup):
    pass


@click.group(
    cls=_RootGroup,
    lazy_subcommands={
        "simulate": "stalesim.cli.simulate:simulate",
        "presets": "stalesim.cli.simulate:presets",
        "plan": "stalesim.cli.plan:plan",
        "bench": "stalesim.cli.bench:bench",
        "check": "stalesim.cli.check:check",
        "validate": "stalesim.cli.validate:validate",
        "fit": "stalesim.cli.fit:fit",
        "calibrate": "stalesim.cli.calibrate:calibrate",
        "import": "stalesim.cli.import_cli:import_config",
        "report": "stalesim.cli.report:report",
    },
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="stalesim")
def main() -> None:
    """Plan asynchronous RL clusters: throughput, staleness, and the learning rate it allows."""


__all__ = ["main"]
