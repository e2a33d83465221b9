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
    # the larger of the two models, never below 1; none where no finite widening reaches it,
    # or where no interval of the kind was judged (eta_max's, on a design without edges)
    assert factors == {
        "eta_opt": 1.9,
        "slope": 1.0,
        "ratio": None,
        "eta_max": None,
        "eta_max_slope": None,
        "eta_max_ratio": None,
    }


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
    assert all(calibration["factors"][k] >= 1 for k in ("eta_opt", "slope", "ratio"))
    # counted on 150 fresh sweeps of each model: at its level within Monte Carlo error
    for counted in (calibration["coverage"], calibration["skewed_coverage"]):
        for kind, value in counted.items():
            assert value >= 0.92, (kind, counted)


#: The same design with stability edges: every S has one, a factor 2-3 above its optimum, and
#: runs go from stable to unstable over about 0.2 in ln(lr), as the clipped sweep measures
#: (0.29); the grid is widened upwards to hold them.
EDGED = replace(
    SKEWED,
    lrs=tuple(tuple(t * 2.0 ** (k / 2 - 0.75) for k in range(7)) for t in _TRUTH),
    edges=tuple(2.5 * t for t in _TRUTH),
    edge_width=0.2,
    skew=1.0,
)


def test_the_failure_width_is_recovered_from_runs_with_a_known_edge() -> None:
    from stalesim.validate.law.coverage import edge_width, synthetic_groups

    wide = replace(EDGED, n_seeds=200, edge_width=0.4)
    groups = synthetic_groups(wide, np.random.default_rng(5))
    cells = [groups[s] for s in wide.staleness]
    assert edge_width(cells, wide.edges) == pytest.approx(0.4, rel=0.15)
    # without an estimated edge there is nothing to fit
    assert edge_width(cells, (None,) * len(cells)) is None


def test_failures_do_not_change_the_objective_draws() -> None:
    from stalesim.validate.law.coverage import synthetic_groups

    plain = synthetic_groups(replace(EDGED, edges=None), np.random.default_rng(1))
    edged = synthetic_groups(EDGED, np.random.default_rng(1))
    for s in EDGED.staleness:
        assert all(
            np.array_equal(a, b) for a, b in zip(plain[s].values, edged[s].values, strict=True)
        )
        assert not any(f.any() for f in plain[s].failed)
    # the top rate sits 3.2 widths above the edge, the lowest 7 below: (almost) all fail / none
    assert np.mean([edged[s].failed[-1].mean() for s in EDGED.staleness]) > 0.9
    assert not any(edged[s].failed[0].any() for s in EDGED.staleness)


def test_eta_max_intervals_are_judged_and_calibrated_where_the_design_has_edges() -> None:
    block = interval_coverage(
        EDGED, sims=100, method="jackknife", seed=0, confidence=0.95, window=1, replicates=0
    )
    assert block["n_intervals"]["eta_max"] > 300
    calibration = block["calibration"]
    for kind in ("eta_max", "eta_max_slope", "eta_max_ratio"):
        assert calibration["factors"][kind] >= 1
        for counted in (calibration["coverage"], calibration["skewed_coverage"]):
            assert counted[kind] >= 0.9, (kind, counted)
