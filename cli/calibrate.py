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
@click.argument(
    "source", required=False, metavar="[TIMINGS_DIR | LOGS]", type=click.Path(path_type=Path)
)
@click.option(
    "--from",
    "framework",
    type=click.Choice(["verl", "openrlhf", "areal"]),
    default=None,
    help="Read LOGS, per-step metrics as this trainer writes them: a JSONL metrics file, a "
    "wandb history export (.csv or .json) or TensorBoard event files (a folder).",
)
@click.option(
    "--scenario",
    "scenario_file",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --from: the scenario of the logged run (GPUs, batch, model, mode), e.g. one "
    "`stalesim import` wrote [default: the built-in default scenario].",
)
@click.option(
    "--sim-steps",
    default=None,
    type=int,
    help="With --from: learner steps simulated to fit the generation rate [default: 6].",
)
@click.option("--seed", default=0, show_default=True, type=int, help="With --from: random seed.")
@click.option(
    "--out",
    "out_file",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the scenario fragment (YAML) here; printed to stdout otherwise.",
)
@click.option("--json", "as_json", is_flag=True, help="Print coefficients and fit errors as JSON.")
def calibrate(
    source: Path | None,
    framework: str | None,
    scenario_file: Path | None,
    sim_steps: int | None,
    seed: int,
    out_file: Path | None,
    as_json: bool,
) -> None:
    """Fit the simulator's time models to measured timings: a scenario fragment.

    Without --from, TIMINGS_DIR holds decode_timings.parquet (engine, live_seqs,
    context_tokens, seconds per decode iteration) and optionally prefill_timings.parquet
    (engine, tokens, seconds) and learner_timings.parquet (phase train|forward|overhead,
    tokens, gpus, seconds), as `stalesim validate pipeline` writes them; without TIMINGS_DIR
    it fits the tables shipped with stalesim (a CPU pipeline run).

    With --from verl|openrlhf|areal, LOGS are a trainer's per-step metrics (phase seconds,
    response and prompt lengths). It fits the response-length distribution and its growth
    over the run, the learner's per-GPU training and forward-only rates and its fixed cost
    per optimizer step, and (from a synchronous run) a scale on the decode time model found
    by simulating the generation phase. The GPU counts, batch, model and mode come from
    --scenario. The fragment lies over that scenario: `stalesim simulate SCENARIO.yaml --set
    @FRAGMENT.yaml`, `stalesim plan --set @FRAGMENT.yaml`.

    Reports R² and relative RMS error of each fit, and warns when a fit explains little.
    """
    if framework is not None:
        _calibrate_logs(source, framework, scenario_file, sim_steps, seed, out_file, as_json)
        return
    for name, value in (("--scenario", scenario_file), ("--sim-steps", sim_steps)):
        if value is not None:
            raise click.UsageError(f"{name} is for --from (calibrating from a trainer's logs)")
    from stalesim.common.files import write_text
    from stalesim.sim.calibrate.timings import calibrate as fit
    from stalesim.sim.calibrate.timings import fragment_yaml

    timings_dir = source if source is not None else default_timings_dir()
    result = fit(timings_dir)
    text = fragment_yaml(result)
    if out_file is not None:
        write_text(out_file, text)
    if as_json:
        click.echo(
            json.dumps(
                {"source": str(timings_dir), **result.fragment(), "fit": result.fit_report()},
                indent=2,
            )
        )
        return
    click.echo(f"# calibrated from {timings_dir}")
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


def _calibrate_logs(
    logs: Path | None,
    framework: str,
    scenario_file: Path | None,
    sim_steps: int | None,
    seed: int,
    out_file: Path | None,
    as_json: bool,
) -> None:
    from stalesim.common.files import write_text
    from stalesim.sim.calibrate.logs import DEFAULT_SIM_STEPS, calibrate_log, fragment_yaml
    from stalesim.sim.calibrate.trainer_logs import read_log
    from stalesim.sim.presets import load_scenario

    if logs is None:
        raise click.UsageError(f"--from {framework} needs LOGS (a metrics file or folder)")
    scenario = load_scenario(str(scenario_file) if scenario_file is not None else None)
    scenario_from = (
        str(scenario_file) if scenario_file is not None else "the built-in default scenario"
    )
    log = read_log(logs, framework)
    result = calibrate_log(
        log,
        scenario,
        scenario_from=scenario_from,
        sim_steps=sim_steps if sim_steps is not None else DEFAULT_SIM_STEPS,
        seed=seed,
    )
    text = fragment_yaml(result)
    # everything is validated and fitted before anything is written
    if out_file is not None:
        write_text(out_file, text)
    if as_json:
        payload = {
            "source": str(logs),
            "framework": framework,
            "scenario": scenario_from,
            "steps": result.steps,
            **result.fragment(),
            "fit": result.fit_report(),
        }
        click.echo(json.dumps(payload, indent=2))
        return
    for line in summary_lines(result):
        click.echo(f"# {line}")
    if out_file is not None:
        click.echo(f"wrote {out_file}")
    else:
        click.echo(text, nl=False)


def _q(fit: dict | None) -> str:
    if not fit:
        return "no fit"
    r2 = fit["r2"]
    r2_text = "n/a (one value)" if r2 != r2 else f"{r2:.3f}"
    rows = f"{fit['rows']} step" + ("s" if fit["rows"] != 1 else "")
    return f"{rows}, R² {r2_text}, relative RMS {fit['relative_rms']:.1%}"


def summary_lines(result) -> list[str]:
    """What was fitted, from what, and how well: the lines printed above the fragment."""
    report = result.fit_report()
    w, lf, g = report["workload"], report["learner"], report["generation"]
    lines = [
        f"calibrated from {result.source} ({result.framework}, {result.steps} logged "
        f"step{'s' if result.steps != 1 else ''}) for "
        f"scenario {result.scenario_name!r}: {result.scenario_from}"
    ]
    if w["response_mean"] is not None:
        lines.append(
            f"responses: lognormal mean {w['response_mean']:,.0f} tokens at the first step, "
            f"sigma {w['sigma']:.3f} (from {w['sigma_from']}), growth "
            f"{w['response_growth_per_step']:+.4%} per step; {_q(w['fit'])}"
        )
    if w["prompt_tokens"] is not None:
        lines.append(f"prompts: {w['prompt_tokens']} tokens (logged mean)")
    lines.append(
        f"learner on {lf['gpus']} GPU{'s' if lf['gpus'] != 1 else ''} "
        f"({lf['effective_gpus']:.1f} effective), tokens "
        f"{lf['tokens_from']}: train {lf['train_gpu_s_per_token']:.4g} GPU-s/token, "
        f"overhead {lf['step_overhead_s']:.3g} s per optimizer step; update {_q(lf['fit'].get('update'))}"
    )
    if "forward_gpu_s_per_token" in lf:
        lines.append(
            f"forward-only {lf['forward_gpu_s_per_token']:.4g} GPU-s/token from "
            f"{lf['forward_from']}; {_q(lf['fit'].get('forward'))}"
        )
    else:
        lines.append(f"forward-only: {lf['forward_from']}")
    if g["scale"] is not None:
        lines.append(
            f"generation: {g['scale']:.3f} x the scenario's decode time model (simulated "
            f"{g['simulated_steps']} steps: {g['simulated_mean_s']:.4g} s against "
            f"{g['measured_mean_s']:.4g} s logged); {_q(g['fit'])}"
        )
    if report["publish_s"] is not None:
        lines.append(
            f"weight publication: {report['publish_s']:.4g} s of the learner's per version "
            "(logged weight-update time less the simulated transfer)"
        )
    if report["unmodelled_s_per_step"] is not None:
        lines.append(
            f"step time not in the logged phases: {report['unmodelled_s_per_step']:.1f} s per "
            "step (reward, advantages, checkpoints, ...; not in the fragment)"
        )
    lines += [f"warning: {text}" for text in report["warnings"]]
    return lines
