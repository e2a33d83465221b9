"""Calibrated intervals: a factor found on synthetic sweeps with a known truth widens each kind
of interval until it holds its level, and the level is then counted on fresh sweeps."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from stalesim.sim.law.intervals import Spread
from stalesim.validate.law.calibration import calibration_factors, interval_coverage
from stalesim.validate.law.coverage import (
    Design,
    needed_scale,
    relative_error,
    simulate_coverage,
)

#: The knee confirmation's shape: six S, four rates a factor sqrt(2) apart around each optimum,
#: six seeds, seed noise 0.3 of the curvature; on a reward falling 3x faster above its optimum
#: the plain t interval of the parabola vertex is biased and undercovers.
_TRUTH = (5.6e-4, 5.4e-4, 4.5e-4, 3.8e-4, 2.7e-4, 1.7e-4)
SKEWED = Design(
    staleness=(0, 2, 3, 4, 6, 8),
    axis=(0.0, 2.0, 3.0, 4.0, 6.0, 8.0),
    lrs=tuple(tuple(t * 2.0 ** (k / 2 - 0.75) for k in range(4)) for t in _TRUTH),
    truth=_TRUTH,
    n_seeds=6,
    curvature=0.05,
    sigma=0.015,
    skew=3.0,
)


def test_a_widened_interval_is_the_plain_one_scaled_about_its_estimate() -> None:
    reps = np.array([1.0, 1.2, 0.9, 1.1, 1.05])
    plain = Spread("jackknife", 0.95, n_loo=5)
    lo, hi = plain.interval(1.0, reps)
    wlo, whi = plain.widened(2.5).interval(1.0, reps)
    assert (whi - wlo) == pytest.approx(2.5 * (hi - lo))
    assert (wlo + whi) / 2 == pytest.approx(1.0)
    llo, lhi = plain.widened(2.0).interval(3.0, reps, log=True)
    plo, phi = plain.interval(3.0, reps, log=True)
    assert np.log(lhi / llo) == pytest.approx(2 * np.log(phi / plo))
    assert np.sqrt(llo * lhi) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="widened"):
        Spread("jackknife", 0.95, n_loo=5, scale=0.5)
    with pytest.raises(ValueError, match="jackknife"):
        Spread("percentile", 0.95, scale=2.0)


def test_needed_scale_is_the_error_quantile_in_half_widths() -> None:
    assert relative_error(0.0, -1.0, 1.0, 0.5) == 0.5
    assert relative_error(1.0, 0.0, 2.0, 3.0) == 2.0
    assert relative_error(1.0, 1.0, 1.0, 1.0) == 0.0
    assert relative_error(1.0, 1.0, 1.0, 2.0) == float("inf")
    errors = [i / 100 for i in range(1, 101)]  # 0.01 .. 1.00
    # the smallest c with at least 95% of the errors at or below it
    assert needed_scale(errors, 0.95) == pytest.approx(0.95)
    assert needed_scale([], 0.95) is None
    factors = calibration_factors(
        {"needed_scale": {"eta_opt": 1.4, "slope": 0.8, "ratio": None}},
        {"needed_scale": {"eta_opt": 1.9, "slope": 0.9, "ratio": float("inf")}},
    )
    # the larger of the two models, never below 1; none where no finite widening reaches it
    assert factors == {"eta_opt": 1.9, "slope": 1.0, "ratio": None}


def test_scales_widen_what_the_simulation_judges() -> None:
    plain = simulate_coverage(SKEWED, 40, seed=3)
    wide = simulate_coverage(SKEWED, 40, seed=3, scales={"eta_opt": 3.0})
    # the same sweeps (same seed): widening can only add hits, and only to eta_opt
    assert wide["coverage"]["eta_opt"] >= plain["coverage"]["eta_opt"]
    assert wide["coverage"]["slope"] == plain["coverage"]["slope"]
    assert wide["needed_scale"]["eta_opt"] == pytest.approx(plain["needed_scale"]["eta_opt"] / 3)


def test_calibrated_intervals_hold_their_level_on_fresh_sweeps() -> None:
    block = interval_coverage(
        replace(SKEWED, skew=1.0),
        sims=150,
        method="jackknife",
        seed=0,
        confidence=0.95,
        window=1,
        replicates=0,
    )
    # the plain per-S interval undercovers on the skewed model (the bias of the vertex)
    assert block["skewed"]["coverage"]["eta_opt"] < 0.9, block["skewed"]["coverage"]
    calibration = block["calibration"]
    assert calibration["factors"]["eta_opt"] > 1.2
    assert all(f is not None and f >= 1 for f in calibration["factors"].values())
    # counted on 150 fresh sweeps of each model: at its level within Monte Carlo error
    for counted in (calibration["coverage"], calibration["skewed_coverage"]):
        for kind, value in counted.items():
            assert value >= 0.92, (kind, counted)
