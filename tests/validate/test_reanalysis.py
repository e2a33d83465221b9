"""The re-analysis of the law's statistics: failure split into unstable and no progress,
jackknife intervals whose coverage is measured on synthetic sweeps with a known truth."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from stalesim.validate.law.coverage import Design, simulate_coverage, synthetic_groups
from stalesim.validate.law.failure import mark_failures
from stalesim.validate.law.group_estimates import build_cells, estimate_eta_max

#: A small design like the committed sweeps: learning rates a factor 2 apart, 3 seeds, and
#: seed noise about 0.4 of the curvature (the non-saturating sweep measures 0.40).
DESIGN = Design(
    staleness=(0, 2, 8),
    axis=(0.0, 2.0, 8.0),
    lrs=tuple(tuple(1e-4 * 2.0**k for k in range(6)) for _ in range(3)),
    truth=(6e-4, 5e-4, 2.2e-4),
    n_seeds=3,
    curvature=0.034,
    sigma=0.0135,
)


def test_jackknife_t_intervals_hold_their_level_where_the_seed_bootstrap_does_not() -> None:
    jack = simulate_coverage(DESIGN, 150, method="jackknife", seed=1)
    # 150 sweeps x 3 points: the binomial sd of a 95% coverage is about 1%
    assert 0.90 <= jack["coverage"]["eta_opt"] <= 0.995, jack["coverage"]
    assert 0.88 <= jack["coverage"]["slope"] <= 1.0, jack["coverage"]
    assert 0.88 <= jack["coverage"]["ratio"] <= 1.0, jack["coverage"]
    boot = simulate_coverage(DESIGN, 40, method="percentile", seed=1)
    # three seeds give 10 distinct bootstrap draws: the percentile interval is far too narrow
    assert boot["coverage"]["eta_opt"] < 0.85, boot["coverage"]
    assert boot["coverage"]["eta_opt"] < jack["coverage"]["eta_opt"] - 0.08


def test_synthetic_sweep_has_its_truth_at_the_optimum() -> None:
    noiseless = Design(**{**DESIGN.__dict__, "sigma": 1e-12})
    groups = synthetic_groups(noiseless, np.random.default_rng(0))
    simulated = simulate_coverage(noiseless, 1, method="jackknife")
    # without noise the three-point vertex of a quadratic is exact, and so is every interval
    assert simulated["coverage"]["eta_opt"] == pytest.approx(1.0)
    for s, truth in zip(DESIGN.staleness, DESIGN.truth, strict=True):
        means = np.array([v.mean() for v in groups[s].values])
        assert groups[s].lrs[np.argmax(means)] == pytest.approx(
            min(groups[s].lrs, key=lambda lr: abs(np.log(lr / truth)))
        )


def test_no_progress_is_not_instability() -> None:
    # warm 0.5, best S=0 final reward 0.9: the bar is 0.7
    rows = []
    for seed in range(2):
        for lr, final, peak, collapsed in (
            (1e-4, 0.55, 0.6, False),  # too slow: never reaches the bar
            (2e-4, 0.9, 0.92, False),
            (4e-4, 0.3, 0.8, True),  # breaks
        ):
            rows.append(
                dict(run_id=f"{lr}-{seed}", staleness=0, staleness_kind="fixed", lr=lr,
                     seed=seed, collapsed=collapsed, final_reward=final,
                     best_smoothed_reward=peak, warm_reward=0.5, reward_auc=final)
            )  # fmt: skip
    marked = mark_failures(pl.DataFrame(rows))
    kinds = dict(zip(marked["lr"].to_list(), marked["failure_kind"].to_list(), strict=False))
    assert kinds == {1e-4: "no progress", 2e-4: None, 4e-4: "unstable"}
    assert marked["failed"].sum() == 4 and marked["unstable"].sum() == 2
    # the stability edge reads the unstable runs only: between 2e-4 and 4e-4, not below 1e-4
    edge = estimate_eta_max(build_cells(marked, "reward_auc"))
    assert edge.flag == "ok" and edge.bracket == pytest.approx((2e-4, 4e-4))


def _curve_sweep(rng: np.random.Generator, steps: int = 80) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Runs whose reward climbs as ``0.2 + 0.7 (1 - exp(-r t))`` with a rate ``r`` that peaks
    at ``eta*(S) = 1e-3 / (1 + S/4)`` (Gaussian in ln lr): every score — AUC, speed, best
    reward — is best at ``eta*(S)`` at every horizon."""
    from stalesim.validate.law.horizon import run_summary

    runs, frames = [], []
    for s in (0, 2, 4, 8):
        best = 1e-3 / (1 + s / 4)
        for lr in 1e-3 * 2.0 ** np.arange(-4, 3, dtype=float):
            rate = 0.06 * np.exp(-(np.log(lr / best) ** 2) / 2)
            for seed in range(3):
                t = np.arange(steps)
                curve = 0.2 + 0.7 * (1 - np.exp(-rate * t)) + rng.normal(0, 0.01, steps)
                rid = f"{s}-{lr:.3g}-{seed}"
                summary = run_summary(curve, steps, 10, None, 0.6)
                runs.append(
                    dict(run_id=rid, lr=lr, staleness=s, staleness_kind="fixed", seed=seed,
                         staleness_mean=float(s), warm_reward=0.2, collapsed=False,
                         collapse_step=None, steps=steps, target_reward=0.6, **summary)
                )  # fmt: skip
                frames.append(
                    pl.DataFrame(
                        {
                            "run_id": rid,
                            "step": t,
                            "reward_mean": curve,
                            "staleness_mean": np.full(steps, float(s)),
                        }
                    )
                )
    return pl.DataFrame(runs), pl.concat(frames)


def test_eta_opt_by_every_score_and_horizon_finds_the_common_optimum() -> None:
    from stalesim.validate.law.fit import FitSettings, fit_sweep

    runs, steps = _curve_sweep(np.random.default_rng(3))
    law = fit_sweep(runs, FitSettings(coverage_sims=0), steps=steps).law
    by_score = law.slopes["by_score"]
    # horizons 60 (S <= 12 there) and the runs' own 80 steps, three scores each
    assert sorted(by_score) == sorted(
        f"{score}@{h}"
        for score in ("reward_auc", "speed", "best_smoothed_reward")
        for h in (60, 80)
    )
    for key, entry in by_score.items():
        for point in entry["points"]:
            if point["flag"] != "ok":
                continue
            truth = 1e-3 / (1 + point["staleness"] / 4)
            assert abs(np.log(point["eta_opt"] / truth)) < 0.35, (key, point)
    # the AUC at the full horizon is the fit's own objective
    auc = {p["staleness"]: p["eta_opt"] for p in by_score["reward_auc@80"]["points"]}
    assert auc == {p["staleness"]: pytest.approx(p["eta_opt"]) for p in law.points}


def test_a_distribution_only_sweep_is_refused_with_its_name(tmp_path) -> None:
    from stalesim.validate.law.fit import fit_runs_dir

    rows = [
        dict(run_id=f"r{i}", lr=1e-3 * 2**i, staleness=32, staleness_kind="distribution",
             staleness_spec="uniform:0-32", seed=0, reward_auc=0.5, collapsed=False)
        for i in range(3)
    ]  # fmt: skip
    pl.DataFrame(rows).write_parquet(tmp_path / "runs.parquet")
    with pytest.raises(ValueError, match=f"{tmp_path}: no fixed-staleness runs"):
        fit_runs_dir(tmp_path, tmp_path / "law.json")
    assert not (tmp_path / "law.json").exists()
