"""``stalesim report``: re-render HTML pages from finished result files."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def report() -> None:
    """Render offline HTML pages from result files (no re-running)."""


@report.command()
@click.argument("out_dir", type=click.Path(path_type=Path, file_okay=False))
def simulate(out_dir: Path) -> None:
    """Re-render OUT_DIR/report.html from a finished `stalesim simulate --out OUT_DIR` (with
    or without --vary)."""
    from stalesim.common.output_dir import require_complete
    from stalesim.reports.simulate_page import SIMULATE_FILES, write_simulate_report
    from stalesim.reports.variants_page import VARIANTS_FILES, write_variants_report

    if not out_dir.is_dir():
        raise ValueError(f"{out_dir}: no such directory (give the --out folder of a simulate run)")
    if (out_dir / "variants.json").exists():
        require_complete(out_dir, "simulate-variants", VARIANTS_FILES)
        path = write_variants_report(out_dir)
    else:
        require_complete(out_dir, "simulate", SIMULATE_FILES)
        path = write_simulate_report(out_dir)
    click.echo(f"wrote {path}")


@report.command()
@click.argument("out_dir", type=click.Path(path_type=Path, file_okay=False))
def kernels(out_dir: Path) -> None:
    """Re-render OUT_DIR/report.html from a finished `stalesim bench kernels --out OUT_DIR`."""
    from stalesim.common.output_dir import require_complete
    from stalesim.reports.kernel_bench_page import write_kernel_bench_report

    if not out_dir.is_dir():
        raise ValueError(
            f"{out_dir}: no such directory (give the --out folder of a bench kernels run)"
        )
    # Folders from before completion markers (and hand-made ones) are read as they are.
    require_complete(out_dir, "bench kernels", ["kernels.csv", "summary.json"], legacy_ok=True)
    path = write_kernel_bench_report(out_dir)
    click.echo(f"wrote {path}")


@report.command()
@click.argument("out_dir", type=click.Path(path_type=Path, file_okay=False))
def plan(out_dir: Path) -> None:
    """Re-render OUT_DIR/report.html from a finished `stalesim plan --out OUT_DIR`."""
    from stalesim.reports.plan_page import rerender_plan_report

    if not out_dir.is_dir():
        raise ValueError(f"{out_dir}: no such directory (give the --out folder of a plan)")
    path = rerender_plan_report(out_dir)
    click.echo(f"wrote {path}")


#: Bootstrap replicates when the page has to fit the law itself (no law.json yet).
PAGE_BOOTSTRAP = 200


@report.command()
@click.argument("runs_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Where to write the page [default: RUNS_DIR/report.html].",
)
def validate(runs_dir: Path, out: Path | None) -> None:
    """Render the validation page from the runs in RUNS_DIR (and its law.json, when fitted).

    A results folder holding the law experiments (law-objective/clip/law.json, ...) and no
    runs.parquet of its own gets the findings page instead: one verdict per paper prediction.
    """
    from stalesim.reports.validate_page import render_findings_report, render_validate_report

    if not runs_dir.is_dir():
        raise ValueError(
            f"{runs_dir}: no such directory (give the runs folder of `stalesim validate`)"
        )
    if not (runs_dir / "runs.parquet").exists() and any(runs_dir.glob("law-*/**/law*.json")):
        click.echo(f"wrote {render_findings_report(runs_dir, out)}")
        return
    law = None
    if not (runs_dir / "law.json").exists():
        # The page reads results as data; fitting is the validate package's job, so a missing
        # law.json is fitted here, in the command, and handed over without being written.
        from stalesim.validate.law.fit import FitSettings, describe_source, fit_sweep
        from stalesim.validate.law.sweep_runs import read_sweep

        runs, _ = read_sweep(runs_dir)
        source = describe_source(runs_dir, runs, "stalesim report validate (fitted in memory)")
        law = fit_sweep(runs, FitSettings(bootstrap=PAGE_BOOTSTRAP), source=source).law
    path = render_validate_report(runs_dir, out, law_fitted_in_memory=law)
    click.echo(f"wrote {path}")


@report.command()
@click.argument("out_dir", type=click.Path(path_type=Path, file_okay=False))
def published(out_dir: Path) -> None:
    """Re-render OUT_DIR/report.html from a finished `stalesim check published --out OUT_DIR`."""
    from stalesim.reports.published_page import write_published_report

    if not out_dir.is_dir():
        raise ValueError(
            f"{out_dir}: no such directory (give the --out folder of a check published run)"
        )
    path = write_published_report(out_dir)
    click.echo(f"wrote {path}")


@report.command()
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--replay-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="The folder `stalesim validate replay --out` wrote [default: RUN_DIR/replay].",
)
def replay(run_dir: Path, replay_dir: Path | None) -> None:
    """Re-render REPLAY_DIR/replay.html from a finished `stalesim validate replay RUN_DIR`
    (the run's tables and the replay's trace and replay.json; nothing is simulated again)."""
    from stalesim.reports.pipeline_page import write_pipeline_page

    replay_dir = replay_dir if replay_dir is not None else run_dir / "replay"
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: no such directory (give the --out folder of a pipeline run)")
    if not (replay_dir / "replay.json").is_file():
        raise ValueError(
            f"{replay_dir / 'replay.json'}: no such file (run `stalesim validate replay {run_dir}`)"
        )
    click.echo(f"wrote {write_pipeline_page(run_dir, replay_dir)}")


@report.command()
@click.argument(
    "results_dir",
    required=False,
    default=Path("reports/results"),
    type=click.Path(path_type=Path, file_okay=False),
)
@click.option(
    "--check",
    is_flag=True,
    help="Compare the files with the manifests instead of writing them; exit 2 on a mismatch.",
)
def manifest(results_dir: Path, check: bool) -> None:
    """Write (or --check) manifest.json in every experiment folder under RESULTS_DIR
    (default: reports/results, run from the repository root).

    An experiment folder holds a README.md and data files; the files below it belong to it
    unless a deeper folder has its own README.md. The manifest records the command(s), the
    code commit, the machine and the date as the README gives them (commit and date from git
    when it gives none) and every file's size and SHA-256. HTML pages, shards/ and hidden
    files are generated, not evidence, and are left out. --check compares only the files.
    """
    from stalesim.reports.manifest import check_manifests, owned_files, write_manifests

    if not results_dir.is_dir():
        raise ValueError(
            f"{results_dir}: no such directory (run from the repository root or give RESULTS_DIR)"
        )
    if check:
        problems = check_manifests(results_dir)
        if problems:
            rest = len(problems) - 1
            more = f" ({rest} more mismatch{'es' if rest > 1 else ''})" if rest else ""
            raise ValueError(problems[0] + more)
        folders = owned_files(results_dir)
        files = sum(len(f) for f in folders.values())
        click.echo(f"{len(folders)} experiment folders match their manifests ({files} files)")
        return
    written = write_manifests(results_dir)
    click.echo(f"wrote {len(written)} manifests under {results_dir}")
