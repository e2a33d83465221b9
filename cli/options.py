"""What every command module shares, defined once: ``--quiet``, ``--set KEY=VALUE``, a command's
``--out`` folder, the progress bar and the law options."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click


def quiet_wanted(flag: bool) -> bool:
    """Progress bars are off under ``--quiet``, ``STALESIM_QUIET=1`` or in CI."""
    return (
        flag or os.environ.get("STALESIM_QUIET", "") not in ("", "0") or bool(os.environ.get("CI"))
    )


def quiet_option(help: str = "No progress bar."):
    """``--quiet``; the command receives :func:`quiet_wanted` of it (environment included)."""
    return click.option(
        "--quiet", is_flag=True, help=help, callback=lambda _ctx, _param, flag: quiet_wanted(flag)
    )


def overrides_option(help: str, scenario: bool = True):
    """``--set KEY=VALUE`` (repeatable), passed to the command as ``overrides``; ``--set
    @FILE`` lays a YAML file of sections over the configuration in its place."""
    fragment = "a scenario fragment such as `stalesim calibrate` writes" if scenario else "sections"
    return click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE|@FILE",
        help=f"{help} --set @FILE lays a YAML file ({fragment}) over it.",
    )


def _folder(_ctx: Any, param: click.Parameter, value: str | None) -> Path | None:
    if value is None:
        return None
    if not value.strip():
        raise click.BadParameter("is empty; give a folder", param=param)
    return Path(value)


def out_folder_option(default: str, holds: str, name: str = "out_dir"):
    """``--out FOLDER`` (a folder, never a file, never empty: an empty name would write into
    the current folder), passed to the command as ``name`` (a :class:`~pathlib.Path`);
    ``holds`` says what the command writes there."""
    return click.option(
        "--out",
        name,
        default=default,
        show_default=True,
        type=click.Path(file_okay=False),
        callback=_folder,
        help=f"Folder for {holds}",
    )


def seed_option(help: str = "Random seed."):
    """``--seed N`` (``N >= 0``: the generators take no negative seed)."""
    return click.option(
        "--seed", default=0, show_default=True, type=click.IntRange(min=0), help=help
    )


def progress_bar(quiet: bool, *, time_remaining: bool = False, **settings: Any):
    """A rich progress bar (description, bar, done/total, elapsed, optionally time remaining)
    that draws nothing when ``quiet``; ``settings`` go to :class:`rich.progress.Progress`."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ]
    if time_remaining:
        columns.append(TimeRemainingColumn())
    return Progress(*columns, disable=quiet, **settings)


def law_options():
    """``--law FILE`` (the user's own law) and ``--reading NAME`` (which shipped reading the
    answers lead with), for every command that applies the law; the command receives
    ``law_file`` and ``reading`` and builds the readings with :func:`law_readings_from`."""
    from stalesim.sim.law.readings import DEFAULT_READING, READING_NAMES

    def decorate(f):
        f = click.option(
            "--reading",
            type=click.Choice(READING_NAMES),
            default=DEFAULT_READING,
            show_default=True,
            help="The shipped law reading the answers lead with; the others are shown beside "
            "it (conservative: a task that does not saturate; optimistic: one that does; "
            "paper: alpha = 1).",
        )(f)
        return click.option(
            "--law",
            "law_file",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="Your own law.json (from `stalesim fit`), read beside its alpha = 1 reading "
            "instead of the shipped laws.",
        )(f)

    return decorate


def law_readings_from(law_file: Path | None, reading: str):
    """The readings a command weighs its answers under (see :mod:`stalesim.sim.law.readings`)."""
    from stalesim.sim.law.model import load_law
    from stalesim.sim.law.readings import readings

    return readings(load_law(law_file) if law_file is not None else reading)
