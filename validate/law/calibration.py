"""Intervals whose stated level is their measured coverage: widening factors found on synthetic
sweeps of a fit's own design, then checked on fresh ones.

The leave-one-seed-out t interval (:class:`~stalesim.sim.law.intervals.Spread`) covers close to
its level where the estimate is a smooth function of the seeds and the reward is symmetric in
``ln lr`` around its optimum, and less where it is not: the vertex of a three-point parabola on a
reward that falls faster above its optimum than below is biased, and a jackknife does not see a
bias. :mod:`stalesim.validate.law.coverage` measures by how much. This module closes the gap, per
kind of interval (``eta_opt`` per S, ``slope`` between two S, ``ratio`` to S = 0; the same three
of ``eta_max``, where the sweep has stability edges to simulate):

1. **Calibrate.** Simulate the design (its lag axis, grid per S, seeds, curvature and noise;
   the truth at its own ``eta_opt``) under a reward symmetric in ``ln lr`` and under one falling
   :data:`~stalesim.validate.law.coverage.SKEW` times faster above the optimum. The factor is the
   smallest widening of the half-widths under which at least the stated level of intervals
   holds the truth under *both* models, and never below 1.
2. **Check.** Simulate fresh sweeps (the next generator seed) with the widened intervals and
   count again. That count, not the calibration's own, is the coverage ``law.json`` and the
   findings page state.

What it does not promise: coverage under a model other than the two simulated (a seed-level
shift of the optimum shared across S; noise that grows near the cliff where training breaks),
or at a truth far from the fitted one: the factor is found at the estimate, as a parametric
bootstrap is.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from stalesim.validate.law.coverage import ALL_KINDS, SKEW, Design, simulate_coverage


def calibration_factors(
    symmetric: dict[str, Any], skewed: dict[str, Any]
) -> dict[str, float | None]:
    """Per kind, the larger of the two simulations' needed widenings, at least 1; None where
    neither judged an interval of that kind or no finite widening reaches the level."""
    out: dict[str, float | None] = {}
    # each kind of interval the simulation judges is calibrated on its own: eta_opt's points,
    # slopes and ratios, and eta_max's where the design has stability edges
    for kind in ALL_KINDS:
        needs = [r["needed_scale"].get(kind) for r in (symmetric, skewed)]
        needs = [n for n in needs if n is not None]
        out[kind] = max(1.0, *needs) if needs and all(np.isfinite(needs)) else None
    return out


def interval_coverage(
    design: Design,
    *,
    sims: int,
    method: str,
    seed: int,
    confidence: float,
    window: int,
    replicates: int,
) -> dict[str, Any]:
    """The ``slopes.interval_coverage`` block of ``law.json``: the plain intervals' coverage
    under both models (as before calibration), and for a jackknife its ``calibration``: the
    factors and the coverage of the widened intervals on fresh sweeps."""

    def check(skew: float, run_seed: int, scales: dict[str, float] | None = None) -> dict:
        return simulate_coverage(
            replace(design, skew=skew),
            sims,
            method=method,
            seed=run_seed,
            confidence=confidence,
            window=window,
            replicates=replicates,
            scales=scales,
        )

    plain, plain_skewed = check(1.0, seed), check(SKEW, seed)
    block = dict(plain)
    block["skewed"] = {
        "skew": SKEW,
        "coverage": plain_skewed["coverage"],
        "n_intervals": plain_skewed["n_intervals"],
        "needed_scale": plain_skewed["needed_scale"],
        "model": "the same, with the objective falling SKEW times faster above eta*",
    }
    if method != "jackknife":
        return block
    factors = calibration_factors(plain, plain_skewed)
    usable = {k: v for k, v in factors.items() if v is not None}
    fresh, fresh_skewed = check(1.0, seed + 1, usable), check(SKEW, seed + 1, usable)
    block["calibration"] = {
        "factors": factors,
        "held_out_seed": seed + 1,
        "coverage": fresh["coverage"],
        "skewed_coverage": fresh_skewed["coverage"],
        "n_intervals": fresh["n_intervals"],
        "rule": (
            "each kind's half-widths widened by the smallest factor (at least 1) under which "
            f"{confidence:.0%} of {sims} synthetic sweeps' intervals held the truth, under a "
            f"symmetric reward and one falling {SKEW:g}x faster above eta*; the coverage is "
            f"then counted on {sims} fresh sweeps of each (generator seed {seed + 1})"
        ),
    }
    return block
