"""The replicates every interval of a law fit is read from, and the settings that choose them.

A sweep's per-S estimates (:mod:`stalesim.validate.law.group_estimates`) are redone leaving one
seed out (the jackknife) or on bootstrap draws; the ratios ``eta(S_1)/eta(0)`` and
``eta(S_max)/eta(0)`` are read from those replicates. Both the fit of a sweep
(:mod:`stalesim.validate.law.fit`) and the check of its intervals' coverage on synthetic sweeps
(:mod:`stalesim.validate.law.coverage`) use them, so the two measure one estimator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from stalesim.sim.law.intervals import Spread
from stalesim.validate.law.group_estimates import (
    Cells,
    GroupEstimate,
    Optimum,
    estimate_eta_max,
    estimate_group,
    estimate_optimum,
)

Progress = Callable[[int], None]

#: Horizons (steps) at which :func:`scores_block` also judges the runs, where they are that long.
SCORE_HORIZONS = (60, 160, 300)


@dataclass
class FitSettings:
    """Knobs of :func:`fit_sweep`, recorded in ``law.json``."""

    objective: str = "reward_auc"
    window: int = 1
    bootstrap: int = 500
    seed: int = 0
    confidence: float = 0.95
    fail_threshold: float = 0.5
    min_final_reward: float | None = None
    reach_fraction: float = 0.5
    bootstrap_unit: str = "seed"
    lag_axis: str = "realised"
    horizon: int | None = None
    max_staleness: int | None = None
    #: the S ranges of the "below the knee" and "above the knee" slopes
    early_range: tuple[float, float] = (0.5, 6.0)
    late_range: tuple[float, float] = (6.0, 1e9)
    #: "jackknife" (leave one seed out, t on n-1 df) or "percentile" (seed bootstrap)
    interval_method: str = "jackknife"
    #: also locate eta_opt by other scores and horizons (see :func:`scores_block`)
    by_score: bool = True
    #: synthetic sweeps of this fit's design used to measure its intervals' coverage (0: none)
    coverage_sims: int = 200

    def __post_init__(self) -> None:
        # a NaN compares false with every bound, so it would pass a range check and then
        # silently count no run as failed
        finite = {
            "min_final_reward": self.min_final_reward,
            "reach_fraction": self.reach_fraction,
            "fail_threshold": self.fail_threshold,
            "confidence": self.confidence,
        }
        for name, value in finite.items():
            if value is not None and not math.isfinite(value):
                option = "--" + name.replace("_", "-")
                raise ValueError(f"{option} {value}: must be a finite number")
        if self.seed < 0:
            raise ValueError(f"--seed {self.seed}: must be >= 0")
        if self.max_staleness is not None and self.max_staleness < 0:
            raise ValueError(f"--max-staleness {self.max_staleness}: must be >= 0")

    def as_dict(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "objective_direction": "higher is better",
            "optimum_rule": (
                f"vertex of the quadratic in ln(lr) through the per-LR mean objective at the "
                f"best grid LR ±{self.window}"
                + ("" if self.window == 1 else " (weights n_seeds/variance; fallback ±1)")
            ),
            "window": self.window,
            "eta_max_rule": (
                f"ln(lr) interpolation where the unstable fraction crosses {self.fail_threshold} "
                "(runs that made no progress are not counted); its interval adds the grid's "
                "resolution (the edge drawn uniformly in ln(lr) between the two grid LRs around "
                "the crossing)"
            ),
            "failure": (
                "unstable (eta_max reads these alone): collapsed, or final reward below the "
                "run's own warm-start reward; no progress (reported apart): best "
                f"smoothed reward short of warm + {self.reach_fraction:g} x (best S=0 reward - "
                "warm)"
                + (
                    f" (sweeps without warm_reward: final_reward < {self.min_final_reward})"
                    if self.min_final_reward is not None
                    else ""
                )
            ),
            "fail_threshold": self.fail_threshold,
            "min_final_reward": self.min_final_reward,
            "reach_fraction": self.reach_fraction,
            "bootstrap": self.bootstrap,
            "bootstrap_unit": (
                "the seed (a seed carries its own warm start and its runs at every S and LR): "
                + (
                    "each seed left out in turn (jackknife); the interval is estimate ± "
                    "t(n_seeds - 1) × jackknife standard error"
                    if self.interval_method == "jackknife"
                    else "seeds resampled with replacement, objective deviations scaled by "
                    "sqrt(n/(n-1)); with 3 seeds a percentile interval covers far less than its "
                    "nominal level"
                )
                if self.bootstrap_unit == "seed"
                else "runs resampled with replacement inside each (S, lr) cell"
            ),
            "interval_method": self.interval_method,
            "by_score": self.by_score,
            "score_horizons": list(SCORE_HORIZONS),
            "coverage_sims": self.coverage_sims,
            "lag_axis": self.lag_axis,
            "horizon": self.horizon,
            "max_staleness": self.max_staleness,
            "early_range": list(self.early_range),
            "late_range": list(self.late_range),
            "seed": self.seed,
            "confidence": self.confidence,
            "law_fit": "least_squares on ln(eta), weights 1/max(replicate sd of ln eta, 0.05)",
        }


@dataclass
class Replicates:
    """The point estimates of every group and their replicates.

    ``loo`` holds one estimate set per replicate: with the jackknife, one per left-out seed;
    with the percentile bootstrap, one per bootstrap draw. ``resolution`` (jackknife only)
    holds ``eta_max`` of the full data with each stability edge drawn uniformly inside its
    grid bracket: the grid's resolution, which leaving out a seed cannot show.
    """

    point: dict[int, GroupEstimate]
    loo: list[dict[int, GroupEstimate]]
    resolution: list[dict[int, GroupEstimate]]
    spread: Spread
    unit: str
    spec_point: dict[str, Optimum]
    spec_loo: list[dict[str, Optimum]]

    def series(
        self,
        staleness: np.ndarray,
        pick: Callable[[GroupEstimate], float | None],
        with_resolution: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The estimates at each S and their replicate rows (replicates x S)."""
        rows = self.loo + (self.resolution if with_resolution else [])
        estimate = np.array([nan_if_none(pick(self.point[int(s)])) for s in staleness])
        boot = np.array([[nan_if_none(pick(r[int(s)])) for s in staleness] for r in rows])
        return estimate, boot.reshape(len(rows), len(staleness))


def replicate_groups(
    groups: dict[int, Cells],
    settings: FitSettings,
    seeds: np.ndarray | None,
    rng: np.random.Generator,
    spec_cells: dict[str, Cells] | None = None,
    progress: Progress | None = None,
) -> Replicates:
    """Point estimates per group and their replicates, by ``settings.interval_method``.

    The jackknife needs 2 or more seeds; without them (or with ``bootstrap_unit="run"``) runs
    are resampled inside each cell and read by percentiles.
    """
    spec_cells = spec_cells or {}
    point = {s: estimate_group(c, settings.window) for s, c in groups.items()}
    spec_point = {spec: estimate_optimum(c, settings.window) for spec, c in spec_cells.items()}
    n_seeds = 0 if seeds is None else len(seeds)
    jackknife = (
        settings.interval_method == "jackknife"
        and settings.bootstrap_unit == "seed"
        and n_seeds >= 2
    )
    if jackknife:
        loo = [
            {s: estimate_group(c.without_seed(seed), settings.window) for s, c in groups.items()}
            for seed in seeds  # type: ignore[union-attr]
        ]
        spec_loo = [
            {
                k: estimate_optimum(c.without_seed(seed), settings.window)
                for k, c in spec_cells.items()
            }
            for seed in seeds  # type: ignore[union-attr]
        ]
        resolution = []
        for _ in range(settings.bootstrap):
            resolution.append(
                {
                    s: GroupEstimate(
                        point[s].optimum, estimate_eta_max(c, jitter=rng), point[s].steps
                    )
                    for s, c in groups.items()
                }
            )
            if progress is not None:
                progress(1)
        spread = Spread("jackknife", settings.confidence, n_loo=n_seeds)
        return Replicates(
            point, loo, resolution, spread, "seed (leave one out)", spec_point, spec_loo
        )
    by_seed = settings.bootstrap_unit == "seed" and n_seeds >= 3
    loo, spec_loo = [], []
    for _ in range(settings.bootstrap):
        if by_seed:
            draw = rng.choice(seeds, size=n_seeds, replace=True)  # type: ignore[arg-type]

            def resample(c: Cells, draw: np.ndarray = draw) -> Cells:
                return c.for_seeds(draw)
        else:

            def resample(c: Cells) -> Cells:
                return c.resampled(rng)

        loo.append(
            {
                s: estimate_group(resample(c), settings.window, edge_jitter=rng)
                for s, c in groups.items()
            }
        )
        spec_loo.append(
            {k: estimate_optimum(resample(c), settings.window) for k, c in spec_cells.items()}
        )
        if progress is not None:
            progress(1)
    unit = "seed (bootstrap)" if by_seed else "run (fewer seeds than the method needs)"
    spread = Spread("percentile", settings.confidence)
    return Replicates(point, loo, [], spread, unit, spec_point, spec_loo)


def nan_if_none(value: float | None) -> float:
    return np.nan if value is None else float(value)


def realised_lag(frame: pl.DataFrame, nominal: int) -> float:
    """Mean realised lag of one fixed-S group: over its runs that ran to the end (a collapsed
    run stopped early, so more of it lies in the pipeline fill); ``nominal`` without the column."""
    if "staleness_mean" not in frame.columns:
        return float(nominal)
    full = frame.filter(~pl.col("collapsed").fill_null(False).cast(pl.Boolean))
    use = full if full.height else frame
    value = use["staleness_mean"].cast(pl.Float64).mean()
    return float(value) if value is not None else float(nominal)


def drop_from_zero(
    axis: np.ndarray, eta: np.ndarray, boot: np.ndarray, usable: np.ndarray, spread: Spread
) -> dict[str, Any] | None:
    """``eta(S_max) / eta(0)`` over usable points, with its interval."""
    idx = np.flatnonzero(usable)
    if idx.size < 2 or axis[idx[0]] != 0:
        return None
    first, last = idx[0], idx[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        reps = boot[:, last] / boot[:, first]
    ratio = float(eta[last] / eta[first])
    lo, hi = spread.interval(ratio, reps, log=True)
    return {"from": 0.0, "to": float(axis[last]), "ratio": ratio, "lo": lo, "hi": hi}


def first_step_ratio(
    axis: np.ndarray, eta: np.ndarray, boot: np.ndarray, usable: np.ndarray, spread: Spread
) -> dict[str, Any] | None:
    """``eta(S_1) / eta(0)`` for the smallest usable S > 0, with its interval and its verdict
    against :data:`~stalesim.validate.law.slopes.FLAT_RATIO_BAND`."""
    from stalesim.validate.law.slopes import ratio_verdict

    idx = np.flatnonzero(usable)
    if idx.size < 2 or axis[idx[0]] != 0:
        return None
    first, nxt = idx[0], idx[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        reps = boot[:, nxt] / boot[:, first]
    ratio = float(eta[nxt] / eta[first])
    lo, hi = spread.interval(ratio, reps, log=True)
    return {
        "from": 0.0,
        "to": float(axis[nxt]),
        "ratio": ratio,
        "lo": lo,
        "hi": hi,
        "verdict": ratio_verdict(lo, hi),
    }
