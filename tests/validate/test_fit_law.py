"""The law fit against sweeps whose truth is known: synthetic runs drawn from given law
parameters with noise, and analytic cases for each per-S estimator."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from stalesim.sim.law.fit import fit_curve
from stalesim.sim.law.model import law_curve
from stalesim.validate.law.fit import FitSettings, fit_sweep
from stalesim.validate.law.group_estimates import (
    Cells,
    build_cells,
    estimate_eta_max,
    estimate_optimum,
    estimate_steps_at,
)

OPT = {"eta0": 2e-3, "s_c": 4.0, "k": 2.0, "alpha": 1.0}
MAX = {"eta0": 8e-3, "s_c": 4.0, "k": 2.0, "alpha": 1.0}
STALENESS = (0, 1, 2, 4, 8, 16, 32)
LRS = np.geomspace(1e-4, 2e-2, 12)
STEPS0 = 100.0


def synthetic_runs(
    rng: np.random.Generator,
    *,
    seeds: int = 3,
    noise: float = 0.01,
    distributions: dict[str, tuple[float, float]] | None = None,
    truth_summary: str = "mean",
    opt: dict[str, float] = OPT,
    steps_growth: float = 0.0,
) -> pl.DataFrame:
    """Runs whose mean AUC is ``0.8 - 0.05 ln(lr/eta_opt(S))²`` plus Gaussian noise, that
    collapse with probability ``sigmoid(4 ln(lr/eta_max(S)))``, and reach the target in
    ``STEPS0 / (eta_opt(S)/eta_opt(0))`` steps at the optimum. ``distributions`` maps a spec
    to its (mean, max) staleness; its truth is the law at ``truth_summary``. ``steps_growth``
    multiplies steps to target by a further ``(1 + S) ** steps_growth``."""
    groups = [(f"fixed:{s}", "fixed", float(s), float(s)) for s in STALENESS]
    for spec, (mean, top) in (distributions or {}).items():
        groups.append((spec, "distribution", mean, top))
    rows = []
    for spec, kind, mean, top in groups:
        s_truth = mean if (kind == "fixed" or truth_summary == "mean") else top
        eta_opt = float(law_curve(s_truth, **opt))
        eta_max = float(law_curve(s_truth, **MAX))
        for lr in LRS:
            distance = np.log(lr / eta_opt)
            p_fail = 1 / (1 + np.exp(-4 * np.log(lr / eta_max)))
            for seed in range(seeds):
                collapsed = bool(rng.random() < p_fail)
                steps = STEPS0 * opt["eta0"] / eta_opt * np.exp(0.3 * distance**2)
                steps *= (1 + mean) ** steps_growth
                steps *= np.exp(rng.normal(0, 0.03))
                rows.append(
                    {
                        "run_id": f"{spec}-{lr:.3g}-{seed}",
                        "lr": float(lr),
                        "staleness": int(top),
                        "staleness_kind": kind,
                        "staleness_spec": spec,
                        "staleness_mean": mean,
                        "staleness_max": top,
                        "staleness_token_mean": mean,
                        "seed": seed,
                        "reward_auc": 0.8 - 0.05 * distance**2 + rng.normal(0, noise),
                        "collapsed": collapsed,
                        "steps_to_target": None if collapsed else float(steps),
                        "preset": "synthetic",
                    }
                )
    return pl.DataFrame(rows)


def cells_from(lrs, values, failed=None, steps=None) -> Cells:
    n = len(lrs)
    return Cells(
        lrs=np.asarray(lrs, dtype=float),
        values=tuple(np.atleast_1d(np.asarray(v, dtype=float)) for v in values),
        failed=tuple(np.atleast_1d(np.asarray(f, dtype=bool)) for f in (failed or [[False]] * n)),
        steps=tuple(np.atleast_1d(np.asarray(s, dtype=float)) for s in (steps or [[np.inf]] * n)),
    )


# ------------------------------------------------------------------ eta_opt per S


@pytest.mark.parametrize("window", [1, 2])
@pytest.mark.parametrize("true_opt", [1.3e-3, 2.0e-3, 3.7e-3])
def test_optimum_recovers_vertex_of_noisy_quadratic_in_log_lr(true_opt, window):
    rng = np.random.default_rng(7)
    lrs = np.geomspace(3e-4, 1e-2, 8)  # grid points never coincide with the optima above
    values = [0.7 - 0.08 * np.log(lr / true_opt) ** 2 + rng.normal(0, 0.005, 4) for lr in lrs]
    optimum = estimate_optimum(cells_from(lrs, values), window)
    assert optimum.flag == "ok"
    # grid spacing is ln(1e-2/3e-4)/7 = 0.50 in ln(lr): the estimate must be far finer
    assert abs(np.log(optimum.eta / true_opt)) < 0.08


def test_three_point_vertex_is_less_biased_than_a_wide_quadratic_on_a_skewed_objective():
    # gentle below the optimum, three times steeper above: the shape the cpu-tiny runs have
    lrs = np.array([2e-4, 4e-4, 7e-4, 1.2e-3, 2.2e-3, 4e-3, 8e-3])
    true_opt = 1.0e-3
    distance = np.log(lrs / true_opt)
    values = [[v] for v in 0.9 - np.where(distance < 0, 0.03, 0.09) * distance**2]
    narrow = estimate_optimum(cells_from(lrs, values), window=1)
    wide = estimate_optimum(cells_from(lrs, values), window=3)
    assert 7e-4 < narrow.eta < 1.2e-3  # stays between the best LR's neighbours
    assert abs(np.log(narrow.eta / true_opt)) < 0.5 * abs(np.log(wide.eta / true_opt))
    assert wide.eta < true_opt  # the wide quadratic is dragged toward the gentle side


def test_noise_free_quadratic_gives_the_exact_vertex():
    lrs = np.geomspace(1e-4, 1e-2, 9)
    values = [[0.5 - 0.1 * np.log(lr / 7.7e-4) ** 2] * 2 for lr in lrs]
    optimum = estimate_optimum(cells_from(lrs, values))
    assert optimum.eta == pytest.approx(7.7e-4, rel=1e-9)


def test_optimum_at_grid_edge_is_flagged_not_extrapolated():
    lrs = np.geomspace(1e-3, 1e-2, 5)
    values = [[0.5 - 0.1 * np.log(lr / 1e-4) ** 2] * 2 for lr in lrs]
    optimum = estimate_optimum(cells_from(lrs, values))
    assert optimum.flag == "edge_low"
    assert optimum.eta == pytest.approx(1e-3)
    rising = estimate_optimum(cells_from(lrs, [[v] for v in np.linspace(0.1, 0.5, 5)]))
    assert rising.flag == "edge_high" and rising.eta == pytest.approx(1e-2)


# ------------------------------------------------------------------ eta_max per S


def test_eta_max_interpolates_where_half_the_seeds_fail():
    lrs = [1.0, 2.0, 4.0, 8.0]
    failed = [[0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]]  # f = 0, 0, 1/4, 1
    edge = estimate_eta_max(cells_from(lrs, [[0.0] * 4] * 4, failed))
    assert edge.flag == "ok"
    # f crosses 1/2 one third of the way from lr 4 (f=1/4) to lr 8 (f=1) in ln(lr)
    assert edge.eta == pytest.approx(4.0 * 2.0 ** (1 / 3), rel=1e-12)


def test_eta_max_bounds_are_flagged():
    lrs = [1.0, 2.0, 4.0]
    stable = estimate_eta_max(cells_from(lrs, [[0.0]] * 3, [[0], [0], [0]]))
    assert (stable.flag, stable.eta) == ("above_grid", 4.0)
    broken = estimate_eta_max(cells_from(lrs, [[0.0]] * 3, [[1], [1], [1]]))
    assert (broken.flag, broken.eta) == ("below_grid", 1.0)


def test_steps_at_interpolates_log_steps_in_log_lr():
    lrs = [1e-3, 4e-3]
    cells = cells_from(lrs, [[0.0, 0.0]] * 2, steps=[[100.0, 100.0], [25.0, 25.0]])
    # halfway in ln(lr) between 100 and 25 steps is their geometric mean
    assert estimate_steps_at(cells, 2e-3) == pytest.approx(50.0)
    assert estimate_steps_at(cells, 8e-3) is None  # outside the measured LRs
    never = cells_from(lrs, [[0.0]] * 2, steps=[[np.inf], [np.inf]])
    assert estimate_steps_at(never, 2e-3) is None


def test_build_cells_counts_nulls_as_never_reached():
    runs = pl.DataFrame(
        {
            "lr": [1e-3, 1e-3, 2e-3],
            "reward_auc": [0.5, 0.6, 0.4],
            "collapsed": [False, True, False],
            "steps_to_target": [10.0, None, 30.0],
        }
    )
    cells = build_cells(runs, "reward_auc")
    assert cells.lrs.tolist() == [1e-3, 2e-3]
    assert cells.failed[0].tolist() == [False, True]
    assert cells.steps[0].tolist() == [10.0, np.inf]


# ------------------------------------------------------------------ the law family


def test_curve_fit_recovers_parameters_from_noisy_points():
    rng = np.random.default_rng(3)
    s = np.array([0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64], dtype=float)
    eta = law_curve(s, **OPT) * np.exp(rng.normal(0, 0.03, s.size))
    curve = fit_curve(s, eta, np.full(s.size, 0.03))
    assert curve.eta0 == pytest.approx(OPT["eta0"], rel=0.05)
    assert curve.alpha == pytest.approx(OPT["alpha"], abs=0.15)
    assert curve.s_c == pytest.approx(OPT["s_c"], rel=0.35)
    # and the curve itself is right to within the noise everywhere on the measured range
    grid = np.linspace(0, 64, 50)
    assert np.max(np.abs(np.log(curve(grid) / law_curve(grid, **OPT)))) < 0.06


def test_sweep_fit_recovers_the_law_and_its_intervals_cover_the_truth():
    runs = synthetic_runs(np.random.default_rng(11))
    # the synthetic objective is a symmetric quadratic, so the least-squares quadratic over
    # ±2 LRs is the efficient estimator here
    law = fit_sweep(runs, FitSettings(bootstrap=150, seed=1, window=2)).law
    for name, truth, tolerance in (("eta0", OPT["eta0"], 0.1), ("alpha", OPT["alpha"], 0.3)):
        value = getattr(law.eta_opt, name)
        assert abs(np.log(value / truth)) < tolerance, (name, value)
        lo, hi = law.eta_opt.intervals[name]
        assert lo <= truth <= hi, (name, lo, hi)
    assert law.eta_opt.quality.r2_log > 0.95
    # eta_max: where half the seeds collapse is exactly the MAX law at every S
    assert law.eta_max is not None
    assert abs(np.log(law.eta_max.eta0 / MAX["eta0"])) < 0.25
    lo, hi = law.eta_max.intervals["alpha"]
    assert lo <= MAX["alpha"] <= hi
    # steps to target scale as 1/eta_opt in the synthetic truth
    # steps to target are STEPS0 * eta_opt(0) / eta_opt(S): both model forms can express
    # that, so whichever AIC picks must predict it, and the 1/eta_opt form must find p ≈ 1
    steps = law.steps_to_target
    assert steps is not None
    s = np.array([0.0, 4.0, 16.0, 32.0])
    truth = STEPS0 * OPT["eta0"] / law_curve(s, **OPT)
    assert law.steps_to_target_at(s) == pytest.approx(truth, rel=0.15)
    p = steps.p if steps.form == "eta_ratio" else steps.alternative["p"]
    assert p == pytest.approx(1.0, abs=0.25)
    # the band is a band: it contains the point estimate of the curve everywhere
    band = law.eta_opt.band
    centre = law.eta_opt(np.array(band.staleness))
    assert np.all(np.array(band.lo) <= centre * 1.0001)
    assert np.all(centre <= np.array(band.hi) * 1.0001)


def test_point_estimates_per_staleness_track_the_truth():
    runs = synthetic_runs(np.random.default_rng(5))
    truth = law_curve(np.array(STALENESS), **OPT)
    # grid spacing is 0.48 in ln(lr); the noise moves the three-point vertex more than the
    # five-point least-squares one
    for window, tolerance in ((1, 0.3), (2, 0.15)):
        points = fit_sweep(runs, FitSettings(bootstrap=60, window=window)).points
        error = np.abs(np.log(points["eta_opt"].to_numpy() / truth))
        assert error.max() < tolerance, (window, error)
    assert points["eta_opt_flag"].to_list() == ["ok"] * len(STALENESS)
    assert (points["eta_opt_lo"] <= points["eta_opt_hi"]).all()


def test_summary_comparison_finds_the_summary_the_truth_uses():
    distributions = {"uniform:0-16": (8.0, 16.0), "uniform:0-32": (16.0, 32.0), "geo": (3.0, 32.0)}
    for truth_summary, other in (("mean", "max"), ("max", "mean")):
        runs = synthetic_runs(
            np.random.default_rng(2),
            distributions=distributions,
            truth_summary=truth_summary,
            noise=0.005,
        )
        comparison = fit_sweep(runs, FitSettings(bootstrap=40)).law.summary_comparison
        assert comparison["status"] == "compared"
        assert comparison["n_distributions"] == 3
        # the synthetic runs have equal-length responses: token-weighted mean is the mean
        assert comparison["identical"] == {"token_mean": "mean"}
        assert comparison["ranking"] == [truth_summary, other]
        assert comparison["rmse_log"][truth_summary] < comparison["rmse_log"][other] / 10
        assert comparison["distinguishable"] and comparison["best"] == truth_summary
        assert "p99" in comparison["not_available"]


def test_summary_comparison_says_when_summaries_cannot_be_told_apart():
    # a narrow distribution: mean and max predict learning rates ~4% apart, while two noisy
    # seeds per learning rate leave the measured optimum uncertain by far more than that
    runs = synthetic_runs(
        np.random.default_rng(4), seeds=2, distributions={"narrow": (6.0, 6.5)}, noise=0.03
    )
    comparison = fit_sweep(runs, FitSettings(bootstrap=40)).law.summary_comparison
    assert comparison["identical"] == {"token_mean": "mean"}
    assert not comparison["distinguishable"]
    assert comparison["verdict"].startswith("not distinguishable")


def test_too_few_staleness_values_is_an_error():
    runs = synthetic_runs(np.random.default_rng(0)).filter(pl.col("staleness").is_in([1, 2]))
    with pytest.raises(ValueError, match="3 or more staleness values"):
        fit_sweep(runs, FitSettings(bootstrap=5))


def test_two_staleness_values_give_the_two_point_law():
    runs = synthetic_runs(np.random.default_rng(0)).filter(pl.col("staleness").is_in([0, 16]))
    law = fit_sweep(runs, FitSettings(bootstrap=20)).law
    points = {p["staleness"]: p["eta_opt"] for p in law.points}
    # eta0 / (1 + S)^alpha through both points exactly, s_c and k held at 1
    assert law.eta_opt.fixed == ["k", "s_c"]
    assert law.eta_opt_at(np.array([0.0, 16.0])) == pytest.approx([points[0], points[16]])
    assert any("two-point" in note for note in law.notes)


def test_unknown_objective_is_an_error():
    runs = synthetic_runs(np.random.default_rng(0))
    with pytest.raises(ValueError, match="objective 'auc'"):
        fit_sweep(runs, FitSettings(objective="auc", bootstrap=5))


def test_same_seed_same_fit_and_other_seed_other_intervals():
    runs = synthetic_runs(np.random.default_rng(9), seeds=2)
    settings = {"bootstrap": 30, "coverage_sims": 20}
    first = fit_sweep(runs, FitSettings(seed=4, **settings)).law
    again = fit_sweep(runs, FitSettings(seed=4, **settings)).law
    other = fit_sweep(runs, FitSettings(seed=5, **settings)).law
    assert first.to_json_dict() == again.to_json_dict()
    # leaving out each seed in turn is deterministic: eta_opt and its intervals do not depend
    # on the seed; eta_max's do, through the draws of its grid resolution
    assert [p["eta_opt"] for p in first.points] == [p["eta_opt"] for p in other.points]
    assert first.eta_opt.intervals == other.eta_opt.intervals
    assert [p["eta_max_lo"] for p in first.points] != [p["eta_max_lo"] for p in other.points]
    # the percentile bootstrap's intervals do depend on the seed
    boot = {**settings, "interval_method": "percentile"}
    first = fit_sweep(runs, FitSettings(seed=4, **boot)).law
    other = fit_sweep(runs, FitSettings(seed=5, **boot)).law
    assert first.eta_opt.intervals != other.eta_opt.intervals
    assert other.eta_opt.alpha == pytest.approx(first.eta_opt.alpha, rel=0.1)


def test_zero_replicates_give_estimates_without_intervals():
    runs = synthetic_runs(np.random.default_rng(1), seeds=2, distributions={"u": (4.0, 8.0)})
    law = fit_sweep(runs, FitSettings(bootstrap=0, interval_method="percentile")).law
    assert law.eta_opt.intervals == {} and law.eta_opt.band is None
    assert abs(np.log(law.eta_opt.eta0 / OPT["eta0"])) < 0.15
    assert all(p["eta_opt_lo"] is None for p in law.points)
    assert law.summary_comparison["verdict"].startswith("undecided")
    assert not law.summary_comparison["distinguishable"]


def test_steps_model_follows_staleness_when_eta_opt_does_not_move():
    flat = {**OPT, "alpha": 0.0}  # the best learning rate is the same at every S
    runs = synthetic_runs(np.random.default_rng(6), opt=flat, steps_growth=0.5)
    # seeds here are independent draws per cell (no warm-start effect): resample runs
    law = fit_sweep(runs, FitSettings(bootstrap=40, bootstrap_unit="run")).law
    steps = law.steps_to_target
    assert steps.form == "staleness"
    assert steps.alternative["form"] == "eta_ratio" and steps.alternative["p_fixed"]
    # truth: STEPS0 * (1 + S) ** 0.5, so 100 steps at S=0 and ~574 at S=32
    predicted = law.steps_to_target_at(np.array([0.0, 32.0]))
    assert predicted == pytest.approx([STEPS0, STEPS0 * 33**0.5], rel=0.15)
