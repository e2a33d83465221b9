"""``stalesim calibrate``: fit decode and learner coefficients to measured timing tables."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import click


def default_timings_dir() -> Path:
    """The timing tables shipped with stalesim: a real CPU pipeline run (async mode, the `cpu`
    preset, `stalesim validate pipeline`) on a quiet 2-core machine, 2026-11-27. A loaded
    machine's run fitted far worse (decode R² 0.02 against 0.25; prefill 0.11 against 0.88)."""
    return Path(str(resources.files("stalesim.sim") / "data" / "timings"))


@click.command()
@click.argument("timings_dir", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_file",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the scenario fragment (YAML) here; printed to stdout otherwise.",
)
@click.option("--json", "as_json", is_flag=True, help="Print coefficients and fit errors as JSON.")
def calibrate(timings_dir: Path | None, out_file: Path | None, as_json: bool) -> None:
    """Fit cluster.decode_coefficients and cluster.learner_coefficients to TIMINGS_DIR.

    TIMINGS_DIR holds decode_timings.parquet (engine, live_seqs, context_tokens, seconds per
    decode iteration) and optionally prefill_timings.parquet (engine, tokens, seconds) and
    learner_timings.parquet (phase train|forward|overhead, tokens, gpus, seconds), as
    `stalesim validate pipeline` writes them. Without TIMINGS_DIR it fits the tables shipped
    with stalesim (a CPU pipeline run). Reports R² and relative RMS error of each fit.
    """
    from stalesim.sim.calibrate import calibrate as fit
    from stalesim.sim.calibrate import fragment_yaml
    from stalesim.sim.files import write_text

    source = timings_dir if timings_dir is not None else default_timings_dir()
    result = fit(source)
    text = fragment_yaml(result)
    if out_file is not None:
        write_text(out_file, text)
    if as_json:
        click.echo(
            json.dumps(
                {"source": str(source), **result.fragment(), "fit": result.fit_report()}, indent=2
            )
        )
        return
    click.echo(f"# calibrated from {source}")
    for name, q in result.fit_report().items():
        if name == "learner":
            for phase, lq in q.items():
                click.echo(
                    f"# learner {phase}: {lq['rows']} rows, R² {lq['r2']:.3f}, "
                    f"relative RMS {lq['relative_rms']:.3f}"
                )
        elif q is not None:
            click.echo(
                f"# {name}: {q['rows']} rows, R² {q['r2']:.3f}, relative RMS {q['relative_rms']:.3f}"
            )
    if out_file is not None:
        click.echo(f"wrote {out_file}")
    else:
        click.echo(text, nl=False)
