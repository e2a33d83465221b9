"""The re-analysis of the law's statistics: failure split into unstable and no progress,
jackknife intervals whose coverage is measured on synthetic sweeps with a known truth."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from stalesim.validate.coverage import Design, simulate_coverage, synthetic_groups
from stalesim.validate.failure import mark_failures
from stalesim.validate.group_estimates import build_cells, estimate_eta_max

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
