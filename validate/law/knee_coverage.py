"""How often the fitted knee's "95%" interval holds the true knee: the fit run on synthetic
sweeps whose knee is known.

A synthetic sweep copies a committed sweep's design as :mod:`stalesim.validate.law.coverage`
does (its lag axis, learning-rate grid per S, number of seeds, the objective's curvature and
noise), but its truth ``eta*(S)`` is the sweep's own *fitted curve* at each S, so the curve's
``s_c`` is the true knee. Each synthetic sweep goes through the same estimator as ``stalesim
fit`` (per-S optima, leave-one-seed-out replicates, the four-parameter curve fitted to the point
estimates and to every replicate, :func:`~stalesim.sim.law.fit.curve_record`), and the
coverage is the share of the reported ``s_c`` intervals that hold the fitted ``s_c``; the share
of sweeps that report one at all is given beside it.

The pre-registered knee tests (``reports/law_knee.py``) read the ``s_c`` interval; this is
the check of its stated level. Where it falls short, the interval is **calibrated** as
:mod:`stalesim.validate.law.calibration` calibrates the per-S intervals: the factor is the
smallest widening of the interval's half-width on the log scale under which the stated level of
the synthetic sweeps' intervals hold the true knee (at least 1), and the coverage of the widened
interval is counted again on ``n_sim`` fresh sweeps (the next generator seed). The knee tests
read the fitted interval widened by that factor.

Run ``python -m stalesim.validate.law.knee_coverage SWEEP`` to write
``SWEEP/knee_coverage.json``.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np


def knee_coverage(runs_dir: Path, n_sim: int = 200, seed: int = 0, skew: float = 1.0) -> dict:
    """Coverage of the ``s_c`` interval on ``n_sim`` synthetic sweeps of the sweep in
    ``runs_dir`` (its ``law.json`` gives the true curve); deterministic for a given ``seed``."""
    from stalesim.sim.law.fit import curve_record, fit_with_bootstrap
    from stalesim.sim.law.model import load_law
    from stalesim.validate.law.coverage import (
        needed_scale,
        relative_error,
        sweep_design,
        synthetic_estimates,
    )
    from stalesim.validate.law.replicates import FitSettings

    if n_sim < 1:
        raise ValueError(f"n_sim {n_sim}: must be at least 1")
    law = load_law(runs_dir / "law.json")
    design = sweep_design(runs_dir)
    if design is None:
        raise ValueError(f"{runs_dir}: fewer than two staleness values; no knee to fit")
    curve = law.eta_opt
    truth = tuple(float(curve(a)) for a in design.axis)
    design = replace(design, truth=truth, skew=float(skew))
    settings = FitSettings(bootstrap=0, by_score=False, coverage_sims=0)
    axis = np.array(design.axis)
    truth_log = float(np.log(curve.s_c))

    def simulate(run_seed: int) -> tuple[list[float], list[float]]:
        """Per synthetic sweep that reports an s_c interval: its error in half-widths; and
        every fitted s_c."""
        rng = np.random.default_rng(run_seed)
        errors, fitted = [], []
        for _ in range(n_sim):
            reps, eta, boot, usable = synthetic_estimates(design, settings, rng)
            if usable.sum() < 3:
                continue
            fit, replicas = fit_with_bootstrap(axis, eta, boot, usable, reps.spread)
            if fit.sc_fixed:
                continue
            fitted.append(fit.s_c)
            # the s_c interval exactly as the fit writes it into law.json
            record = curve_record(fit, replicas, axis[usable], eta[usable], axis, reps.spread)
            if "s_c" in record["intervals"]:
                lo, hi = record["intervals"]["s_c"]
                errors.append(relative_error(np.log(fit.s_c), np.log(lo), np.log(hi), truth_log))
        return errors, fitted

    errors, fitted = simulate(seed)
    hits = [e <= 1 for e in errors]
    factor = needed_scale(errors, settings.confidence)
    factor = None if factor is None or not np.isfinite(factor) else max(1.0, factor)
    calibration = None
    if factor is not None:
        fresh, _ = simulate(seed + 1)
        calibration = {
            "factor": factor,
            "held_out_seed": seed + 1,
            "coverage": float(np.mean([e <= factor for e in fresh])) if fresh else None,
            "n_intervals": len(fresh),
            "rule": (
                "the s_c interval's half-width on the log scale widened by the smallest factor "
                f"(at least 1) under which {settings.confidence:.0%} of the synthetic sweeps' "
                f"intervals held the true knee; coverage counted on {n_sim} fresh sweeps"
            ),
        }
    return {
        "sweep": str(runs_dir),
        "true_curve": {"eta0": curve.eta0, "s_c": curve.s_c, "k": curve.k, "alpha": curve.alpha},
        "n_sim": n_sim,
        "seed": seed,
        "skew": float(skew),
        "nominal": settings.confidence,
        "coverage": float(np.mean(hits)) if hits else None,
        "reported_share": len(hits) / n_sim,
        "median_fitted_s_c": float(np.median(fitted)) if fitted else None,
        "calibration": calibration,
        "method": "leave-one-seed-out jackknife, as stalesim fit",
        "model": (
            "objective = peak - a (ln lr - ln eta*)^2 + N(0, sigma^2) per run; eta*(S) = the "
            "sweep's fitted eta_opt curve; a and sigma measured on the sweep"
        ),
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m stalesim.validate.law.knee_coverage``: write ``SWEEP/knee_coverage.json``."""
    from stalesim.common.files import write_json

    parser = argparse.ArgumentParser(
        prog="python -m stalesim.validate.law.knee_coverage",
        description="Measure the coverage of a fitted sweep's knee (s_c) interval on synthetic "
        "sweeps of its design whose true curve is its fitted one.",
    )
    parser.add_argument("sweep", type=Path, help="a fitted sweep folder (runs.parquet, law.json)")
    parser.add_argument("--sims", type=int, default=200, help="synthetic sweeps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not (args.sweep / "law.json").is_file() or not (args.sweep / "runs.parquet").is_file():
        parser.error(f"{args.sweep}: not a fitted sweep folder (runs.parquet and law.json)")
    if args.sims < 1:
        parser.error("--sims must be >= 1")
    out: dict[str, Any] = knee_coverage(args.sweep, args.sims, args.seed)
    write_json(args.sweep / "knee_coverage.json", out)
    calibration = out["calibration"] or {}
    print(
        f"s_c coverage {out['coverage']} of {out['reported_share']:.0%} reported; calibrated "
        f"x{calibration.get('factor')}: {calibration.get('coverage')} on fresh sweeps "
        f"-> {args.sweep / 'knee_coverage.json'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
