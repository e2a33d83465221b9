"""``stalesim validate knee-probe``: predict the staleness knee from a short on-policy probe."""

from __future__ import annotations

import datetime as dt
import json
import math
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
from stalesim.cli.options import out_folder_option, overrides_option, quiet_option

#: The fitted law whose on-policy optimum is the probe's default eta_opt(0): the non-saturating
#: task's 300-step sweep, the task and horizon the default preset trains.
DEFAULT_LAW = "reports/results/law-horizon/non-saturating/law.json"

#: The equivalence test the prediction is judged by, written into the prediction before any
#: confirmation run: the measured knee must lie within this factor of the predicted one, the
#: measured stale-limited slope within this distance of the predicted slope.
KNEE_BAND_FACTOR = 2.0
SLOPE_HALFWIDTH = 0.3


def _numbers(text: str, option: str, kind: type) -> list:
    try:
        values = [kind(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise ValueError(f"{option} {text!r}: expected numbers separated by commas") from None
    if not values:
        raise ValueError(f"{option} {text!r}: expected at least one number")
    return values


def _eta0_from_law(path: str) -> tuple[float, tuple[float, float]]:
    """eta_opt at S = 0 and its interval from a fitted law file."""
    from stalesim.sim.law.model import load_law

    if not Path(path).is_file():
        raise ValueError(f"--law {path}: no such file (give --eta0, or a fitted law.json)")
    law = load_law(path)
    zero = next((p for p in law.points if p.get("staleness") == 0), None)
    if zero is None or zero.get("eta_opt_flag") != "ok":
        raise ValueError(f"--law {path}: holds no located eta_opt at S = 0 (give --eta0)")
    lo, hi = zero.get("eta_opt_lo"), zero.get("eta_opt_hi")
    eta0 = float(zero["eta_opt"])
    return eta0, (float(lo) if lo else eta0, float(hi) if hi else eta0)


def _commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return None
    return done.stdout.strip() or None


def prediction_record(
    probe: dict[str, Any], settings: Any, eta0_source: str, command: str
) -> dict[str, Any]:
    """The prediction file: when, at which commit, by which command, the probe's raw tables,
    the predicted knee and slope, and the equivalence test they will be judged by."""
    return {
        "schema": "stalesim.knee-prediction/1",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": _commit(),
        "command": command,
        "eta0_source": eta0_source,
        "settings": {k: v for k, v in settings.__dict__.items()},
        "prediction": probe["prediction"],
        "test": {
            "knee_band_factor": KNEE_BAND_FACTOR,
            "slope_halfwidth": SLOPE_HALFWIDTH,
            "rule": (
                "knee: confirms when the measured knee's interval lies inside [S_c / f, f S_c], "
                "refutes when it lies wholly outside, else inconclusive; slope: the same with "
                "the band predicted slope ± h, read on S pairs at or beyond the predicted knee; "
                "where the predicted knee lies beyond the grid, the prediction is a flat "
                "eta_opt over the grid, read on eta_opt(S_max)/eta_opt(0) against the fit's "
                "flat band"
            ),
        },
        "alignment": probe["alignment"],
        "drift": probe["drift"],
    }


@click.command("knee-probe")
@click.option(
    "--preset",
    default="law-horizon-ns",
    show_default=True,
    help="the sweep preset whose train config the probe's on-policy runs use",
)
@overrides_option("override a train config field, e.g. train.steps=50", scenario=False)
@click.option(
    "--eta0",
    type=float,
    default=None,
    help="the on-policy optimum eta_opt(0) the probe runs at (default: read from --law)",
)
@click.option(
    "--law",
    "law_file",
    default=DEFAULT_LAW,
    show_default=True,
    help="a fitted law.json whose eta_opt at S = 0 (and its interval) is eta_opt(0)",
)
@click.option("--seeds", default="0,1", show_default=True, help="probe run seeds, comma-separated")
@click.option(
    "--checkpoints",
    default="20,100,200",
    show_default=True,
    help="versions at which stale gradients are measured (each > --max-lag)",
)
@click.option("--max-lag", default=16, show_default=True, type=int, help="largest lag k probed")
@click.option(
    "--batches",
    default=8,
    show_default=True,
    type=int,
    help="gradient batches per lag (even: two independent halves)",
)
@click.option(
    "--batch-prompts",
    default=32,
    show_default=True,
    type=int,
    help="prompts per gradient batch (x the preset's samples per prompt)",
)
@click.option(
    "--drift-factors",
    default="0.5,1,2",
    show_default=True,
    help="multiples of eta0 at which the per-step drift is measured",
)
@click.option(
    "--drift-steps",
    default=60,
    show_default=True,
    type=int,
    help="on-policy steps over which the drift is measured (warm-up excluded)",
)
@out_folder_option("stalesim-runs/knee-probe", "prediction.json (raw tables and prediction)")
@quiet_option("print only the prediction")
def knee_probe(
    preset, overrides, eta0, law_file, seeds, checkpoints, max_lag, batches, batch_prompts,
    drift_factors, drift_steps, out_dir, quiet,
) -> None:  # fmt: skip
    """Predict the staleness knee S_c and the stale-limited slope from on-policy runs.

    Measures how far the weights may drift before a stale batch's GRPO gradient stops pointing
    the fresh gradient's way (R_batch) and the drift per step per unit learning rate (G_upd),
    and reads the knee off the bound eta << min{R_batch / (S G_upd), R_crit / (T G_upd)}.
    Writes OUT/prediction.json. The derivation and its assumptions are in the docstring of
    stalesim.validate.law.knee_probe.
    """
    from stalesim.common.config_file import apply_overrides, validate_config
    from stalesim.validate.law.knee_probe import ProbeSettings, run_probe
    from stalesim.validate.train.presets import SweepConfig, preset_sweep
    from stalesim.validate.train.trainer import resolve_device

    base = preset_sweep(preset)
    if overrides:
        data = apply_overrides(base.model_dump(mode="json"), overrides)
        base = validate_config(SweepConfig, data, source="--set")
    resolve_device(base.train.device)
    if eta0 is not None:
        if not (math.isfinite(eta0) and 0 < eta0 <= 10):
            raise ValueError(f"--eta0 {eta0!r}: must be in (0, 10]")
        eta0_interval, source = (eta0, eta0), "--eta0"
    else:
        eta0, eta0_interval = _eta0_from_law(law_file)
        source = f"eta_opt(0) of {law_file}"
    settings = ProbeSettings(
        eta0=eta0,
        seeds=_numbers(seeds, "--seeds", int),
        checkpoints=_numbers(checkpoints, "--checkpoints", int),
        max_lag=max_lag,
        batches=batches,
        batch_prompts=batch_prompts,
        drift_factors=_numbers(drift_factors, "--drift-factors", float),
        drift_steps=drift_steps,
        warmup_steps=base.train.warmup_steps,
    )
    settings.check()
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    probe = run_probe(
        base.train,
        settings,
        eta0_interval=eta0_interval,
        on_run=None if quiet else lambda seed: click.echo(f"seed {seed} probed", err=True),
    )
    command = "stalesim " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    record = prediction_record(probe, settings, source, command)
    record["wall_s"] = round(time.perf_counter() - started, 1)
    path = out_dir / "prediction.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    click.echo(describe(record))
    click.echo(f"-> {path}")


def describe(record: dict[str, Any]) -> str:
    """The prediction and the probe's readings as plain-text lines."""
    p = record["prediction"]

    def iv(pair: list, f: str = ".3g") -> str:
        return "[" + ", ".join("∞" if v is None else f"{v:{f}}" for v in pair) + "]"

    extrapolated = p["s_c_extrapolated"]
    lines = [
        f"eta_opt(0) = {p['eta0']:.3g} {iv(p['eta0_interval'])}",
        f"G_upd(eta0) = {p['g_upd']:.3g} per unit LR; drift per step ∝ eta^{p['a']:.2f}; "
        f"drift over k lags ∝ k^{p['gamma']:.2f}",
        f"R_batch (cosine 1/2) = {p['r_batch']:.3g}"
        + (" (a lower bound: the cosine stayed above 1/2 at some checkpoint)"
           if p["any_r_batch_bound"] else ""),
        f"predicted knee S_c {'>=' if p['s_c_is_lower_bound'] else '='} {p['s_c']:.3g} "
        f"{iv(p['s_c_interval'])} (the bound's reading)",
        f"predicted stale-limited slope = {p['slope']:.2f} {iv(p['slope_interval'], '.2f')}",
        f"drift reading: S_c = {p['s_c_drift']:.3g} {iv(p['s_c_drift_interval'])}, slope "
        f"{p['slope_drift']:.2f} {iv(p['slope_drift_interval'], '.2f')}",
        f"secondary: S_c from relative error 1 = {p['s_c_err']:.3g} {iv(p['s_c_err_interval'])}"
        + (" (a lower bound somewhere)" if p["any_r_err_bound"] else "")
        + "; from the extrapolated cosine decay = "
        + ("∞ (no decay seen)" if extrapolated is None else f"{extrapolated:.3g}"),
        "readings (seed, version: R_batch, k_1/2, gamma, G_upd, a, S_c):",
    ]  # fmt: skip
    for r in p["readings"]:
        lines.append(
            f"  {r['seed']}, {r['version']}: {r['r_batch']:.3g}"
            f"{'+' if r['r_batch_is_bound'] else ''}, {r['k_half']:.3g}, {r['gamma']:.2f}, "
            f"{r['g_upd']:.3g}, {r['a']:.2f}, {r['s_c_bound']:.3g}"
        )
    return "\n".join(lines)
