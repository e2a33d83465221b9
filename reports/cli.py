"""``stalesim report``: re-render HTML pages from finished result files."""

from __future__ import annotations

import importlib
from pathlib import Path

import click


@click.group()
def report() -> None:
    """Render offline HTML pages from result files (no re-running)."""


@report.command()
@click.argument("out_dir", type=click.Path(path_type=Path, file_okay=False))
def simulate(out_dir: Path) -> None:
    """Re-render OUT_DIR/report.html from a finished `stalesim simulate --out OUT_DIR`."""
    from stalesim.reports.simulate_page import write_simulate_report

    if not out_dir.is_dir():
        raise ValueError(f"{out_dir}: no such directory (give the --out folder of a simulate run)")
    path = write_simulate_report(out_dir)
    click.echo(f"wrote {path}")


@report.command()
@click.argument("runs_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Where to write the page (default: chosen by the validate report, inside RUNS_DIR).",
)
def validate(runs_dir: Path, out: Path | None) -> None:
    """Render the validation page from the runs in RUNS_DIR."""
    render = _validate_renderer()
    if not runs_dir.is_dir():
        raise ValueError(
            f"{runs_dir}: no such directory (give the runs folder of `stalesim validate`)"
        )
    path = render(runs_dir, out)
    click.echo(f"wrote {path}")


def _validate_renderer():
    module_name = "stalesim.reports.validate_page"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise ValueError(
            "the validate report is not available in this version of stalesim "
            f"({module_name} is missing)"
        ) from None
    render = getattr(module, "render_validate_report", None)
    if render is None:
        raise ValueError(
            "the validate report is not available in this version of stalesim "
            f"({module_name}.render_validate_report is missing)"
        )
    return render
