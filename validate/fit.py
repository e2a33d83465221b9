"""From a learning-rate × staleness × seed sweep to a fitted staleness–learning-rate law.

Per staleness ``S`` (fixed-S runs), three estimates:

* ``eta_opt(S)``, the best learning rate: the vertex of a quadratic in ``ln(lr)`` through the
  per-LR mean of the objective (``reward_auc`` by default: higher is better) at the grid's
  best LR and ``window`` neighbours on each side. The default ``window=1`` is the classic
  three-point parabola: the objective is skewed (a gentle slope below the optimum, a cliff
  above it), and a wider quadratic drags the vertex toward low LRs; on the first cpu-tiny
  runs ±3 LRs put the S=0 optimum below a grid LR that scored worse than its neighbour. With
  ``window >= 2`` the quadratic is a weighted least-squares fit, each LR weighted by
  ``n_seeds / seed variance`` (variance floored at a tenth of the pooled one, so two seeds
  that happen to agree do not get infinite weight); if it is not concave or its vertex leaves
  the window, the three points around the best LR are used instead. Seed noise reaches the
  estimate's interval through the bootstrap. If the best LR is the first or last of the grid
  the estimate is that LR, flagged ``edge_low``/``edge_high`` (a bound, not an optimum), and
  if three points give no interior vertex it is the grid argmax flagged ``grid_argmax``.
* ``eta_max(S)``, the largest stable learning rate: with ``f(lr)`` the fraction of seeds that
  failed (collapsed, or ended below ``min_final_reward`` when given), scan the grid upward; at
  the first LR with ``f >= 0.5`` interpolate linearly in ``ln(lr)`` between it and the LR
  below for the point where ``f`` crosses 0.5. No failing LR: the largest LR, flagged
  ``above_grid`` (a lower bound); the smallest LR already fails: flagged ``below_grid``.
* ``steps_to_target(S)`` at ``eta_opt(S)``: per LR the median of the runs' steps to target
  (a run that never reached it counts as infinite), interpolated linearly in
  ``ln(steps)`` vs ``ln(lr)`` over the LRs whose median is finite; ``None`` if ``eta_opt``
  lies outside them.

Uncertainty: bootstrap replicates resample the runs (seeds) with replacement inside every
(S, LR) cell, redo the three estimates, and refit the law; intervals are percentiles of the
replicates. The law family (``stalesim.sim.law``) is fitted by ``least_squares`` on
``ln(eta)``, each point weighted by the inverse of its bootstrap standard deviation
(floored at 5%), leaving out points that are bounds (edge or censored flags).

Which staleness summary predicts best is answered with the distribution runs: their
``eta_opt`` is estimated the same way (grouped by ``staleness_spec``) and compared with the
fixed-S law evaluated at each summary of their measured staleness (max, p99 where the runs
have it, mean, token-weighted mean). The error is the RMS of ``ln(measured / predicted)``;
paired bootstrap replicates say how often one summary beats another.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy.optimize import least_squares
from stalesim.sim.files import write_json
from stalesim.sim.law import (
    CURVE_PARAMS,
    LAW_SCHEMA,
    PAPER_ALPHA,
    Band,
    FitQuality,
    Law,
    LawCurve,
    StepsModel,
    law_curve,
)

REQUIRED_RUN_COLUMNS = ("run_id", "lr", "staleness", "seed", "collapsed")
#: Staleness summaries compared on the distribution runs: law name -> runs.parquet column.
SUMMARY_COLUMNS = {
    "max": "staleness_max",
    "p99": "staleness_p99",
    "mean": "staleness_mean",
    "token_mean": "staleness_token_mean",
}
EDGE_FLAGS = frozenset({"edge_low", "edge_high", "few_lrs"})
CENSORED_FLAGS = frozenset({"above_grid", "below_grid"})
#: Smallest relative standard deviation a per-S point is trusted with in the law fit.
MIN_LOG_SD = 0.05
#: A "summary A predicts better than B" verdict needs at least this many bootstrap replicates.
MIN_REPLICAS_TO_DECIDE = 20

Progress = Callable[[int], None]


# --------------------------------------------------------------------------- reading the sweep


def read_sweep(runs_dir: str | Path) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """``runs.parquet`` (required) and ``steps.parquet`` (optional) of a sweep directory."""
    runs_dir = Path(runs_dir)
    if not runs_dir.exists():
        raise ValueError(f"{runs_dir}: no such runs directory")
    if not runs_dir.is_dir():
        raise ValueError(f"{runs_dir}: not a directory (expected a sweep folder with runs.parquet)")
    runs_path = runs_dir / "runs.parquet"
    if not runs_path.exists():
        raise ValueError(f"{runs_dir}: no runs.parquet (run `stalesim validate sweep` first)")
    runs = _read_parquet(runs_path)
    missing = [c for c in REQUIRED_RUN_COLUMNS if c not in runs.columns]
    if missing:
        raise ValueError(f"{runs_path}: missing columns {', '.join(missing)}")
    if runs.height == 0:
        raise ValueError(f"{runs_path}: no runs in it")
    steps_path = runs_dir / "steps.parquet"
    steps = _read_parquet(steps_path) if steps_path.exists() else None
    return runs, steps


def _read_parquet(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except Exception as exc:  # polars raises several unrelated types for a bad file
        raise ValueError(f"{path}: not a readable Parquet file ({type(exc).__name__})") from None


def fixed_runs(runs: pl.DataFrame) -> pl.DataFrame:
    """Runs at one fixed staleness (all runs when the sweep does not say)."""
    if "staleness_kind" not in runs.columns:
        return runs
    return runs.filter(pl.col("staleness_kind") == "fixed")


def distribution_runs(runs: pl.DataFrame) -> pl.DataFrame:
    """Runs whose staleness was drawn from a distribution."""
    if "staleness_kind" not in runs.columns:
        return runs.clear()
    return runs.filter(pl.col("staleness_kind") == "distribution")


# --------------------------------------------------------------------------- per-group estimates


@dataclass(frozen=True)
class Cells:
    """The runs of one group (one S, or one staleness distribution), split by learning rate."""

    lrs: np.ndarray  # sorted unique learning rates
    values: tuple[np.ndarray, ...]  # objective per run, one array per LR
    failed: tuple[np.ndarray, ...]  # bool per run
    steps: tuple[np.ndarray, ...]  # steps to target per run, inf when never reached

    def resampled(self, rng: np.random.Generator) -> Cells:
        """The same cells with runs drawn with replacement inside each LR.

        Objective values are redrawn as ``mean + sqrt(n/(n-1)) * (x* - mean)``: plain
        resampling of n runs gives a mean whose variance is (n-1)/n of the right one, which
        with two seeds would halve it.
        """
        picks = [rng.integers(0, len(v), len(v)) for v in self.values]
        return Cells(
            self.lrs,
            tuple(_inflated(v, i) for v, i in zip(self.values, picks, strict=True)),
            tuple(f[i] for f, i in zip(self.failed, picks, strict=True)),
            tuple(s[i] for s, i in zip(self.steps, picks, strict=True)),
        )


def _inflated(values: np.ndarray, picks: np.ndarray) -> np.ndarray:
    n = len(values)
    if n < 2:
        return values[picks]
    centre = values.mean()
    return centre + np.sqrt(n / (n - 1)) * (values[picks] - centre)


def build_cells(
    group: pl.DataFrame, objective: str, min_final_reward: float | None = None
) -> Cells:
    """Split one group's runs into per-LR arrays."""
    failed = pl.col("collapsed").fill_null(False).cast(pl.Boolean)
    if min_final_reward is not None and "final_reward" in group.columns:
        failed = failed | (pl.col("final_reward").fill_null(-np.inf) < min_final_reward)
    steps = (
        pl.col("steps_to_target").cast(pl.Float64).fill_null(np.inf)
        if "steps_to_target" in group.columns
        else pl.lit(np.inf)
    )
    table = (
        group.select(
            pl.col("lr").cast(pl.Float64),
            pl.col(objective).cast(pl.Float64).alias("value"),
            failed.alias("failed"),
            steps.alias("steps"),
        )
        .filter(pl.col("value").is_not_null() & pl.col("value").is_not_nan())
        .sort("lr")
    )
    parts = table.partition_by("lr", maintain_order=True)
    return Cells(
        lrs=np.array([p["lr"][0] for p in parts]),
        values=tuple(p["value"].to_numpy() for p in parts),
        failed=tuple(p["failed"].to_numpy() for p in parts),
        steps=tuple(p["steps"].to_numpy() for p in parts),
    )


@dataclass(frozen=True)
class Optimum:
    """Best learning rate of one group and how it was found."""

    eta: float
    flag: str  # ok | edge_low | edge_high | grid_argmax | few_lrs
    grid_best_lr: float


def estimate_optimum(cells: Cells, window: int = 1) -> Optimum:
    """``eta_opt`` of one group; see the module docstring for the exact rule."""
    x = np.log(cells.lrs)
    means = np.array([v.mean() for v in cells.values])
    best = int(np.argmax(means))
    grid_best = float(cells.lrs[best])
    if len(x) < 3:
        return Optimum(grid_best, "few_lrs", grid_best)
    if best == 0:
        return Optimum(grid_best, "edge_low", grid_best)
    if best == len(x) - 1:
        return Optimum(grid_best, "edge_high", grid_best)
    weights = _cell_weights(cells.values)
    for half in dict.fromkeys((window, 1)):
        lo, hi = max(0, best - half), min(len(x), best + half + 1)
        vertex = _quadratic_vertex(x[lo:hi], means[lo:hi], weights[lo:hi])
        if vertex is not None and x[lo] <= vertex <= x[hi - 1]:
            return Optimum(float(np.exp(vertex)), "ok", grid_best)
    return Optimum(grid_best, "grid_argmax", grid_best)


def _cell_weights(values: tuple[np.ndarray, ...]) -> np.ndarray:
    counts = np.array([len(v) for v in values], dtype=float)
    variances = np.array([v.var(ddof=1) if len(v) > 1 else np.nan for v in values])
    finite = variances[np.isfinite(variances)]
    pooled = float(finite.mean()) if finite.size else 0.0
    floor = max(0.1 * pooled, 1e-12)
    variances = np.where(np.isfinite(variances), variances, max(pooled, floor))
    return counts / np.maximum(variances, floor)


def _quadratic_vertex(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float | None:
    """Vertex of the weighted least-squares parabola through (x, y), if it opens downward."""
    centre = x.mean()
    design = np.vander(x - centre, 3)  # columns: dx², dx, 1
    root_w = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(design * root_w[:, None], y * root_w, rcond=None)
    curvature, slope = coef[0], coef[1]
    if not curvature < 0:
        return None
    return float(centre - slope / (2 * curvature))


@dataclass(frozen=True)
class StabilityEdge:
    """Largest stable learning rate of one group and whether it is a bound."""

    eta: float
    flag: str  # ok | above_grid | below_grid


def estimate_eta_max(cells: Cells, threshold: float = 0.5) -> StabilityEdge:
    """``eta_max`` of one group; see the module docstring for the exact rule."""
    fail = np.array([f.mean() for f in cells.failed])
    failing = np.flatnonzero(fail >= threshold)
    if failing.size == 0:
        return StabilityEdge(float(cells.lrs[-1]), "above_grid")
    first = int(failing[0])
    if first == 0:
        return StabilityEdge(float(cells.lrs[0]), "below_grid")
    x0, x1 = np.log(cells.lrs[first - 1 : first + 1])
    f0, f1 = fail[first - 1], fail[first]
    t = (threshold - f0) / (f1 - f0)
    return StabilityEdge(float(np.exp(x0 + t * (x1 - x0))), "ok")


def estimate_steps_at(cells: Cells, eta: float) -> float | None:
    """Steps to target at learning rate ``eta``; see the module docstring."""
    medians = np.array([np.median(s) for s in cells.steps])
    finite = np.isfinite(medians) & (medians > 0)
    if not finite.any():
        return None
    x, y = np.log(cells.lrs[finite]), np.log(medians[finite])
    target = np.log(eta)
    if not x[0] - 1e-9 <= target <= x[-1] + 1e-9:
        return None
    return float(np.exp(np.interp(target, x, y)))


@dataclass(frozen=True)
class GroupEstimate:
    """The three per-group estimates of one (possibly resampled) sweep."""

    optimum: Optimum
    edge: StabilityEdge
    steps: float | None


def estimate_group(cells: Cells, window: int = 1) -> GroupEstimate:
    """``eta_opt``, ``eta_max`` and steps to target at ``eta_opt`` for one group."""
    optimum = estimate_optimum(cells, window)
    return GroupEstimate(optimum, estimate_eta_max(cells), estimate_steps_at(cells, optimum.eta))


# --------------------------------------------------------------------------- the law family fit

_LOG_SC_BOUNDS = (np.log(0.05), np.log(1e4))
_LOG_K_BOUNDS = (np.log(0.3), np.log(10.0))
_ALPHA_BOUNDS = (0.0, 5.0)


@dataclass(frozen=True)
class CurveFit:
    """Parameters of one fitted ``eta(S)`` curve; ``k`` is held fixed when ``k_fixed``."""

    eta0: float
    s_c: float
    k: float
    alpha: float
    k_fixed: bool

    def __call__(self, staleness: np.ndarray | float) -> np.ndarray:
        return law_curve(staleness, self.eta0, self.s_c, self.k, self.alpha)

    def vector(self) -> np.ndarray:
        return np.array([self.eta0, self.s_c, self.k, self.alpha])


def fit_curve(
    staleness: np.ndarray,
    eta: np.ndarray,
    log_sd: np.ndarray | None = None,
    *,
    fixed_k: float | None = None,
    start: CurveFit | None = None,
) -> CurveFit:
    """Least-squares fit of ``ln eta(S)`` to the law family; ``log_sd`` weights the points."""
    s = np.asarray(staleness, dtype=float)
    y = np.log(np.asarray(eta, dtype=float))
    sd = np.full_like(y, MIN_LOG_SD)
    if log_sd is not None:  # an unknown spread (NaN: too few replicates) gets the floor
        sd = np.where(np.isfinite(log_sd), np.maximum(log_sd, MIN_LOG_SD), MIN_LOG_SD)

    def unpack(theta: np.ndarray) -> tuple[float, float, float, float]:
        log_k = np.log(fixed_k) if fixed_k is not None else theta[2]
        return theta[0], theta[1], log_k, theta[-1]

    with np.errstate(divide="ignore"):
        log_s = np.log(s)  # -inf at S = 0, where every term below is 0

    def terms(theta: np.ndarray) -> tuple[np.ndarray, ...]:
        log_eta0, log_sc, log_k, alpha = unpack(theta)
        k = np.exp(log_k)
        distance = np.where(s > 0, log_s - log_sc, 0.0)
        u = np.where(s > 0, np.exp(np.minimum(k * distance, 700.0)), 0.0)  # (S / s_c) ** k
        return log_eta0, alpha, k, distance, u, np.log1p(u)

    def residuals(theta: np.ndarray) -> np.ndarray:
        log_eta0, alpha, k, _, _, log1p_u = terms(theta)
        return (y - (log_eta0 - (alpha / k) * log1p_u)) / sd

    def jacobian(theta: np.ndarray) -> np.ndarray:
        # analytic derivatives of the model ln eta(S) in (ln eta0, ln s_c, ln k, alpha); the
        # residual is (y - model) / sd, hence the minus sign
        _, alpha, k, distance, u, log1p_u = terms(theta)
        share = u / (1.0 + u)
        columns = [
            np.ones_like(s),
            alpha * share,
            (alpha / k) * log1p_u - alpha * share * distance,
            -log1p_u / k,
        ]
        if fixed_k is not None:
            del columns[2]
        return -np.stack(columns, axis=1) / sd[:, None]

    lower = [-np.inf, _LOG_SC_BOUNDS[0], _LOG_K_BOUNDS[0], _ALPHA_BOUNDS[0]]
    upper = [np.inf, _LOG_SC_BOUNDS[1], _LOG_K_BOUNDS[1], _ALPHA_BOUNDS[1]]
    if fixed_k is not None:
        del lower[2], upper[2]
    y0 = float(y[np.argmin(s)])
    positive = s[s > 0]
    middle = float(np.median(positive)) if positive.size else 1.0
    if start is not None:
        # a bootstrap replicate starts at the point estimate; a generic start is the fallback
        # when that does not converge
        starts = [
            (np.log(start.eta0), np.log(start.s_c), np.log(start.k), start.alpha),
            (y0, np.log(middle), np.log(2.0), 1.0),
        ]
    else:
        starts = [
            (y0, np.log(s_c), np.log(2.0), alpha)
            for s_c in (middle / 4, middle, 4 * middle)
            for alpha in (0.3, 1.0, 2.0)
        ]
    best = None
    for guess in starts:
        theta0 = np.array(guess if fixed_k is None else (guess[0], guess[1], guess[3]))
        theta0 = np.clip(theta0, np.array(lower) + 1e-9, np.array(upper) - 1e-9)
        result = least_squares(residuals, theta0, jac=jacobian, bounds=(lower, upper), method="trf")
        if best is None or result.cost < best.cost - 1e-12:
            best = result
        if start is not None and result.success:
            break
    log_eta0, log_sc, log_k, alpha = unpack(best.x)
    return CurveFit(
        float(np.exp(log_eta0)),
        float(np.exp(log_sc)),
        float(np.exp(log_k)),
        float(alpha),
        fixed_k is not None,
    )


def fit_quality(staleness: np.ndarray, eta: np.ndarray, curve: CurveFit) -> FitQuality:
    """Residuals ``ln(point / curve)``, their RMS, and R² of ``ln eta``."""
    return _log_quality(np.asarray(eta, dtype=float), curve(staleness))


def fit_steps(log_ratio: np.ndarray, steps: np.ndarray) -> tuple[float, float, bool]:
    """``ln steps = ln steps0 - p ln(eta_opt(S)/eta_opt(0))``: (steps0, p, p_fixed_at_1).

    ``p`` is only free when the learning-rate ratios span at least 5%; otherwise it cannot be
    told from noise and is held at 1, the "same distance at a slower pace" model.
    """
    x = np.asarray(log_ratio, dtype=float)
    y = np.log(np.asarray(steps, dtype=float))
    if len(x) >= 3 and np.ptp(x) >= 0.05:
        slope, intercept = np.polyfit(x, y, 1)
        return float(np.exp(intercept)), float(-slope), False
    return float(np.exp(np.mean(y + x))), 1.0, True


# --------------------------------------------------------------------------- the whole fit


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
                f"ln(lr) interpolation where the failed fraction crosses {self.fail_threshold}"
            ),
            "failure": "collapsed"
            + (
                f" or final_reward < {self.min_final_reward}"
                if self.min_final_reward is not None
                else ""
            ),
            "fail_threshold": self.fail_threshold,
            "min_final_reward": self.min_final_reward,
            "bootstrap": self.bootstrap,
            "bootstrap_unit": (
                "runs (seeds) resampled with replacement inside each (S, lr) cell, objective "
                "deviations scaled by sqrt(n/(n-1))"
            ),
            "seed": self.seed,
            "confidence": self.confidence,
            "law_fit": "least_squares on ln(eta), weights 1/max(bootstrap sd of ln eta, 0.05)",
        }


@dataclass
class SweepFit:
    """Everything :func:`fit_sweep` found: the law plus tables for printing and reports."""

    law: Law
    points: pl.DataFrame  # one row per fixed S
    distribution_points: pl.DataFrame  # one row per staleness distribution


def fit_sweep(
    runs: pl.DataFrame,
    settings: FitSettings | None = None,
    *,
    source: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> SweepFit:
    """Per-S estimates, the law fits with bootstrap intervals, and the summary comparison."""
    settings = settings or FitSettings()
    if settings.objective not in runs.columns:
        raise ValueError(
            f"objective {settings.objective!r} is not a runs.parquet column "
            f"(have: {', '.join(runs.columns)})"
        )
    fixed = fixed_runs(runs)
    groups = {
        int(key[0]): build_cells(frame, settings.objective, settings.min_final_reward)
        for key, frame in sorted(fixed.partition_by("staleness", as_dict=True).items())
    }
    if len(groups) < 3:
        raise ValueError(
            f"need fixed-staleness runs at 3 or more staleness values to fit the law, "
            f"got {sorted(groups) or 'none'}"
        )
    spec_frames = _distribution_groups(runs)
    spec_cells = {
        spec: build_cells(frame, settings.objective, settings.min_final_reward)
        for spec, frame in spec_frames.items()
    }
    rng = np.random.default_rng(settings.seed)
    point = {s: estimate_group(c, settings.window) for s, c in groups.items()}
    spec_point = {spec: estimate_optimum(c, settings.window) for spec, c in spec_cells.items()}
    replicas: list[dict[int, GroupEstimate]] = []
    spec_replicas: list[dict[str, Optimum]] = []
    for _ in range(settings.bootstrap):
        replicas.append(
            {s: estimate_group(c.resampled(rng), settings.window) for s, c in groups.items()}
        )
        spec_replicas.append(
            {
                spec: estimate_optimum(c.resampled(rng), settings.window)
                for spec, c in spec_cells.items()
            }
        )
        if progress is not None:
            progress(1)
    staleness = np.array(sorted(groups), dtype=float)
    tail = (1 - settings.confidence) / 2 * 100, (1 + settings.confidence) / 2 * 100

    def series(pick: Callable[[GroupEstimate], float | None]) -> tuple[np.ndarray, np.ndarray]:
        estimate = np.array([_nan(pick(point[int(s)])) for s in staleness])
        boot = np.array([[_nan(pick(r[int(s)])) for s in staleness] for r in replicas])
        return estimate, boot.reshape(len(replicas), len(staleness))

    opt, opt_boot = series(lambda g: g.optimum.eta)
    emax, emax_boot = series(lambda g: g.edge.eta)
    steps, steps_boot = series(lambda g: g.steps)
    opt_flags = [point[int(s)].optimum.flag for s in staleness]
    max_flags = [point[int(s)].edge.flag for s in staleness]

    opt_usable = np.array([f not in EDGE_FLAGS for f in opt_flags])
    if opt_usable.sum() < 3:
        raise ValueError(
            "eta_opt is at the edge of the learning-rate grid for all but "
            f"{int(opt_usable.sum())} staleness values ({dict(zip(staleness.astype(int).tolist(), opt_flags, strict=True))}); "
            "widen the grid"
        )
    opt_curve, opt_curve_boot = _fit_with_bootstrap(staleness, opt, opt_boot, opt_usable)
    max_usable = np.array([f not in CENSORED_FLAGS for f in max_flags])
    max_curve, max_curve_boot = (None, None)
    if max_usable.sum() >= 3:
        max_curve, max_curve_boot = _fit_with_bootstrap(staleness, emax, emax_boot, max_usable)

    steps_model = _steps_model(staleness, steps, steps_boot, opt_curve, opt_curve_boot, tail)
    s_grid = _staleness_grid(float(staleness.max()))
    law_opt = _law_curve(
        opt_curve, opt_curve_boot, staleness[opt_usable], opt[opt_usable], s_grid, tail
    )
    law_max = (
        _law_curve(max_curve, max_curve_boot, staleness[max_usable], emax[max_usable], s_grid, tail)
        if max_curve is not None
        else None
    )

    points = pl.DataFrame(
        {
            "staleness": staleness.astype(int),
            "n_runs": [sum(len(v) for v in groups[int(s)].values) for s in staleness],
            "n_lrs": [len(groups[int(s)].lrs) for s in staleness],
            "grid_best_lr": [point[int(s)].optimum.grid_best_lr for s in staleness],
            "eta_opt": opt,
            "eta_opt_lo": _nanpercentile(opt_boot, tail[0]),
            "eta_opt_hi": _nanpercentile(opt_boot, tail[1]),
            "eta_opt_log_sd": _log_sd(opt_boot),
            "eta_opt_flag": opt_flags,
            "eta_opt_in_fit": opt_usable,
            "eta_max": emax,
            "eta_max_lo": _nanpercentile(emax_boot, tail[0]),
            "eta_max_hi": _nanpercentile(emax_boot, tail[1]),
            "eta_max_flag": max_flags,
            "eta_max_in_fit": max_usable if max_curve is not None else np.zeros_like(max_usable),
            "steps_to_target": steps,
            "steps_to_target_lo": _nanpercentile(steps_boot, tail[0]),
            "steps_to_target_hi": _nanpercentile(steps_boot, tail[1]),
        }
    )
    fixed_optima = _FixedOptima(
        frames={
            int(key[0]): frame
            for key, frame in fixed.partition_by("staleness", as_dict=True).items()
        },
        staleness=staleness[opt_usable],
        eta=opt[opt_usable],
        boot=opt_boot[:, opt_usable],
    )
    distribution_points, comparison = _compare_summaries(
        fixed_optima, spec_frames, spec_point, spec_replicas, tail
    )
    chosen = comparison.get("best") if comparison.get("distinguishable") else None
    notes = _notes(groups, staleness, opt_flags, max_flags, opt_usable, max_curve, steps_model)
    for label, curve in (("eta_opt", opt_curve), ("eta_max", max_curve)):
        if curve is not None:
            notes.extend(_bound_notes(label, curve))
    if chosen is None:
        notes.append(
            "staleness_summary is max (the bound an async mode enforces) by default: the "
            "distribution runs did not single out a summary"
        )
    law = Law.model_validate(
        {
            "schema": LAW_SCHEMA,
            "staleness_summary": chosen or "max",
            "eta_opt": law_opt,
            "eta_max": law_max,
            "steps_to_target": steps_model,
            "alpha_paper": PAPER_ALPHA,
            "points": _records(points),
            "summary_comparison": comparison,
            "settings": settings.as_dict(),
            "source": source or {},
            "notes": notes,
        }
    )
    return SweepFit(law, points, distribution_points)


def _bound_notes(label: str, curve: CurveFit) -> list[str]:
    """Parameters the fit pushed onto a bound: the data do not determine them."""
    bounds = {
        "s_c": (np.exp(_LOG_SC_BOUNDS[0]), np.exp(_LOG_SC_BOUNDS[1])),
        "k": (np.exp(_LOG_K_BOUNDS[0]), np.exp(_LOG_K_BOUNDS[1])),
        "alpha": _ALPHA_BOUNDS,
    }
    notes = []
    for name, (low, high) in bounds.items():
        if name == "k" and curve.k_fixed:
            continue
        value = getattr(curve, name)
        for edge in (low, high):
            if np.isclose(value, edge, rtol=1e-3, atol=1e-6):
                notes.append(
                    f"{label}: {name} = {value:.3g} sits on its bound: the points do not pin it "
                    "down, so read the curve, not this parameter"
                )
    return notes


def _notes(
    groups: dict[int, Cells],
    staleness: np.ndarray,
    opt_flags: list[str],
    max_flags: list[str],
    opt_usable: np.ndarray,
    max_curve: CurveFit | None,
    steps_model: dict[str, Any] | None,
) -> list[str]:
    """Plain warnings about what limits this fit, for the CLI and the page."""
    notes = []
    single = sorted(s for s, c in groups.items() if any(len(v) < 2 for v in c.values))
    if single:
        notes.append(
            f"only one run in some LR cells at S={single}: the bootstrap cannot see seed noise "
            "there, so intervals are too narrow"
        )
    for label, flags in (("eta_opt", opt_flags), ("eta_max", max_flags)):
        odd = {int(s): f for s, f in zip(staleness, flags, strict=True) if f != "ok"}
        if odd:
            notes.append(f"{label} is a bound, not an estimate, at {odd} (left out of the fit)")
    if opt_usable.sum() < 5:
        notes.append("fewer than 5 usable staleness values: k is held at 1 in the law fits")
    if max_curve is None:
        notes.append("eta_max(S) not fitted: fewer than 3 staleness values with a failing LR")
    if steps_model is None:
        notes.append("steps_to_target not modelled: the target was reached at fewer than 2 S")
    return notes


def _fit_with_bootstrap(
    staleness: np.ndarray, eta: np.ndarray, boot: np.ndarray, usable: np.ndarray
) -> tuple[CurveFit, list[CurveFit]]:
    s, y = staleness[usable], eta[usable]
    log_sd = _log_sd(boot)[usable]
    fixed_k = 1.0 if usable.sum() < 5 else None  # 4 parameters need more than 4 points
    curve = fit_curve(s, y, log_sd, fixed_k=fixed_k)
    replicas = []
    for row in boot[:, usable]:
        if np.all(np.isfinite(row)):
            replicas.append(fit_curve(s, row, log_sd, fixed_k=fixed_k, start=curve))
    return curve, replicas


def _law_curve(
    curve: CurveFit,
    replicas: list[CurveFit],
    staleness: np.ndarray,
    eta: np.ndarray,
    grid: np.ndarray,
    tail: tuple[float, float],
) -> dict[str, Any]:
    params = np.array([r.vector() for r in replicas]).reshape(-1, 4)
    intervals = _percentiles(
        {
            name: params[:, i]
            for i, name in enumerate(CURVE_PARAMS)
            if not (name == "k" and curve.k_fixed)
        },
        tail,
    )
    band = None
    if replicas:
        curves = np.array([r(grid) for r in replicas]).reshape(-1, len(grid))
        band = Band(
            staleness=[float(g) for g in grid],
            lo=[float(v) for v in np.percentile(curves, tail[0], axis=0)],
            hi=[float(v) for v in np.percentile(curves, tail[1], axis=0)],
        )
    return LawCurve(
        eta0=curve.eta0,
        s_c=curve.s_c,
        k=curve.k,
        alpha=curve.alpha,
        intervals=intervals,
        fixed=["k"] if curve.k_fixed else [],
        quality=fit_quality(staleness, eta, curve),
        band=band,
    ).model_dump(mode="json")


def _steps_model(
    staleness: np.ndarray,
    steps: np.ndarray,
    steps_boot: np.ndarray,
    curve: CurveFit,
    curve_boot: list[CurveFit],
    tail: tuple[float, float],
) -> dict[str, Any] | None:
    """Fit both steps-to-target forms (see ``StepsModel``) and keep the one with lower AIC."""
    reached = np.isfinite(steps)
    if reached.sum() < 2:
        return None
    s, y = staleness[reached], steps[reached]
    boot_rows = steps_boot[:, reached]

    # form "eta_ratio": steps0 * (eta_opt(S)/eta_opt(0)) ** -p, eta_opt from the fitted law
    log_ratio = np.log(curve(s) / curve(0.0))
    steps0, p, p_fixed = fit_steps(log_ratio, y)
    ratio_boot = np.array(
        [
            fit_steps(np.log(replica(s) / replica(0.0)), row)[:2]
            for replica, row in zip(curve_boot, boot_rows, strict=False)
            if np.all(np.isfinite(row))
        ]
    ).reshape(-1, 2)
    ratio_intervals = _percentiles({"steps0": ratio_boot[:, 0]}, tail)
    if not p_fixed:
        ratio_intervals |= _percentiles({"p": ratio_boot[:, 1]}, tail)
    ratio_quality = _log_quality(y, steps0 * np.exp(-p * log_ratio))
    ratio_model = {
        "form": "eta_ratio",
        "steps0": steps0,
        "p": p,
        "p_fixed": p_fixed,
        "intervals": ratio_intervals,
        "quality": ratio_quality,
    }
    ratio_aic = _aic(ratio_quality, 1 if p_fixed else 2)
    if reached.sum() < 3:
        return StepsModel.model_validate(ratio_model).model_dump(mode="json")

    # form "staleness": 1/steps follows the law family, so the same fit gives it
    fixed_k = 1.0 if reached.sum() < 5 else None
    inverse = fit_curve(s, 1.0 / y, fixed_k=fixed_k)
    inverse_boot = [
        fit_curve(s, 1.0 / row, fixed_k=fixed_k, start=inverse)
        for row in boot_rows
        if np.all(np.isfinite(row))
    ]
    direct = np.array([[1 / r.eta0, r.s_c, r.k, r.alpha] for r in inverse_boot]).reshape(-1, 4)
    direct_intervals = _percentiles(
        {"steps0": direct[:, 0], "s_c": direct[:, 1], "beta": direct[:, 3]}
        | ({} if fixed_k else {"k": direct[:, 2]}),
        tail,
    )
    direct_quality = _log_quality(y, 1.0 / inverse(s))
    direct_model = {
        "form": "staleness",
        "steps0": 1.0 / inverse.eta0,
        "s_c": inverse.s_c,
        "k": inverse.k,
        "beta": inverse.alpha,
        "intervals": direct_intervals,
        "quality": direct_quality,
    }
    direct_aic = _aic(direct_quality, 3 if fixed_k else 4)
    # ties go to the paper's form, which has fewer parameters
    if ratio_aic <= direct_aic:
        chosen, other, chosen_aic, other_aic = ratio_model, direct_model, ratio_aic, direct_aic
    else:
        chosen, other, chosen_aic, other_aic = direct_model, ratio_model, direct_aic, ratio_aic
    chosen["alternative"] = {
        **{k: v for k, v in other.items() if k not in ("quality", "intervals")},
        "rmse_log": other["quality"].rmse_log,
        "aic": other_aic,
        "aic_of_chosen": chosen_aic,
        "rule": "the form with the lower AIC = n ln(RSS/n) + 2 params on ln(steps)",
    }
    return StepsModel.model_validate(chosen).model_dump(mode="json")


def _log_quality(measured: np.ndarray, predicted: np.ndarray) -> FitQuality:
    """Residuals ``ln(measured / predicted)``, their RMS, and R² of ``ln(measured)``."""
    y = np.log(measured)
    residuals = y - np.log(predicted)
    total = float(((y - y.mean()) ** 2).sum())
    return FitQuality(
        n_points=len(y),
        r2_log=1 - float((residuals**2).sum()) / total if total > 0 else None,
        rmse_log=float(np.sqrt((residuals**2).mean())),
        residuals_log=[float(r) for r in residuals],
    )


def _aic(quality: FitQuality, n_params: int) -> float:
    rss = max(quality.rmse_log**2 * quality.n_points, 1e-300)
    return float(quality.n_points * np.log(rss / quality.n_points) + 2 * n_params)


def _percentiles(samples: dict[str, np.ndarray], tail: tuple[float, float]) -> dict[str, list]:
    return {
        name: [float(np.percentile(v, q)) for q in tail] for name, v in samples.items() if len(v)
    }


def _distribution_groups(runs: pl.DataFrame) -> dict[str, pl.DataFrame]:
    dist = distribution_runs(runs)
    if dist.height == 0:
        return {}
    key = "staleness_spec" if "staleness_spec" in dist.columns else "staleness"
    return {
        str(k[0]): frame
        for k, frame in sorted(
            dist.partition_by(key, as_dict=True).items(), key=lambda kv: str(kv[0])
        )
    }


@dataclass(frozen=True)
class _FixedOptima:
    """The fixed-S ``eta_opt`` points the law is fitted to, and their bootstrap replicates."""

    frames: dict[int, pl.DataFrame]  # fixed runs per nominal S
    staleness: np.ndarray  # nominal S of the usable points
    eta: np.ndarray
    boot: np.ndarray  # replicates x usable points

    def measured(self, column: str) -> np.ndarray | None:
        """The fixed runs' mean measured staleness summary per usable point."""
        if not all(column in self.frames[int(s)].columns for s in self.staleness):
            return None
        return np.array(
            [float(self.frames[int(s)][column].cast(pl.Float64).mean()) for s in self.staleness]
        )


def _compare_summaries(
    fixed: _FixedOptima,
    spec_frames: dict[str, pl.DataFrame],
    spec_point: dict[str, Optimum],
    spec_replicas: list[dict[str, Optimum]],
    tail: tuple[float, float],
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Which measured staleness summary, put into a law fitted on the fixed-S runs, predicts
    the distribution runs' ``eta_opt`` best.

    For each summary the law is refitted with the fixed runs' *measured* value of that summary
    as ``S`` (it is below the nominal S because the lag cannot reach before version 0), so both
    sides of the comparison use the same measurement.
    """
    if not spec_frames:
        return pl.DataFrame(), {
            "status": "no distribution runs in the sweep",
            "distinguishable": False,
        }
    summaries = {
        name: column
        for name, column in SUMMARY_COLUMNS.items()
        if all(column in f.columns for f in spec_frames.values())
        and fixed.measured(column) is not None
    }
    identical = _identical_summaries(fixed, spec_frames, summaries)
    summaries = {name: column for name, column in summaries.items() if name not in identical}
    rows = []
    for spec, frame in spec_frames.items():
        row: dict[str, Any] = {
            "staleness_spec": spec,
            "n_runs": frame.height,
            "n_lrs": frame["lr"].n_unique(),
            "eta_opt": spec_point[spec].eta,
            "eta_opt_flag": spec_point[spec].flag,
        }
        for name, column in summaries.items():
            row[f"S_{name}"] = float(frame[column].cast(pl.Float64).mean())
        rows.append(row)
    table = pl.DataFrame(rows)
    usable = [r["staleness_spec"] for r in rows if r["eta_opt_flag"] not in EDGE_FLAGS]
    if not summaries:
        return table, {
            "status": "runs carry no staleness summary columns",
            "distinguishable": False,
        }
    if not usable:
        return table, {
            "status": "eta_opt of every distribution is at a grid edge or has fewer than 3 LRs",
            "excluded": list(spec_frames),
            "distinguishable": False,
        }
    at = {
        name: np.array(
            [table.filter(pl.col("staleness_spec") == s)[f"S_{name}"][0] for s in usable]
        )
        for name in summaries
    }
    measured = np.log(np.array([spec_point[s].eta for s in usable]))
    replica_measured = np.log(
        np.array([[rep[s].eta for s in usable] for rep in spec_replicas])
    ).reshape(len(spec_replicas), len(usable))
    log_sd = _log_sd(fixed.boot)
    fixed_k = 1.0 if len(fixed.staleness) < 5 else None

    errors: dict[str, float] = {}
    boot: dict[str, np.ndarray] = {}
    predictions: dict[str, list[float]] = {}
    for name, column in summaries.items():
        x = fixed.measured(column)
        curve = fit_curve(x, fixed.eta, log_sd, fixed_k=fixed_k)
        predicted = np.log(curve(at[name]))
        errors[name] = float(np.sqrt(np.mean((measured - predicted) ** 2)))
        predictions[f"predicted_{name}"] = [float(v) for v in np.exp(predicted)]
        replica_errors = []
        for row, spec_row in zip(fixed.boot, replica_measured, strict=True):
            replica = fit_curve(x, row, log_sd, fixed_k=fixed_k, start=curve)
            replica_errors.append(np.sqrt(np.mean((spec_row - np.log(replica(at[name]))) ** 2)))
        boot[name] = np.array(replica_errors)
    table = table.join(
        pl.DataFrame({"staleness_spec": usable, **predictions}), on="staleness_spec", how="left"
    )
    ranking = sorted(errors, key=errors.get)
    best = ranking[0]
    replicas = len(next(iter(boot.values())))
    wins = {
        other: float(np.mean(boot[best] < boot[other])) if replicas else float("nan")
        for other in ranking[1:]
    }
    distinguishable = (
        replicas >= MIN_REPLICAS_TO_DECIDE and bool(wins) and all(w >= 0.95 for w in wins.values())
    )
    if wins and replicas < MIN_REPLICAS_TO_DECIDE:
        verdict = (
            f"undecided: {best} has the lowest error ({errors[best]:.3g}; "
            + ", ".join(f"{o} {errors[o]:.3g}" for o in wins)
            + f"), but {replicas} bootstrap replicates (fewer than {MIN_REPLICAS_TO_DECIDE}) "
            "cannot tell that from noise"
        )
    elif distinguishable:
        verdict = (
            f"{best} predicts best (lower error than every other summary in at least 95% of "
            "bootstrap replicates)"
        )
    elif wins:
        verdict = (
            f"not distinguishable: {best} has the lowest error ({errors[best]:.3g}; "
            + ", ".join(f"{o} {errors[o]:.3g}" for o in wins)
            + "), but it has the lower error in only "
            + ", ".join(f"{w:.0%} of replicates against {o}" for o, w in wins.items())
            + " (95% needed)"
        )
    else:
        verdict = f"only one summary available ({best})"
    missing = [name for name in SUMMARY_COLUMNS if name not in summaries and name not in identical]
    return table, {
        "status": "compared",
        "n_distributions": len(usable),
        "distributions": _records(table),
        "excluded": [s for s in spec_frames if s not in usable],
        "not_available": missing,
        "identical": identical,
        "metric": (
            "RMS over distribution runs of ln(measured eta_opt / predicted), the prediction "
            "being the law refitted on the fixed runs' measured value of the same summary"
        ),
        "rmse_log": errors,
        "rmse_log_intervals": _percentiles(boot, tail),
        "ranking": ranking,
        "best": best,
        "win_rate_of_best": wins,
        "distinguishable": distinguishable,
        "verdict": verdict,
    }


def _identical_summaries(
    fixed: _FixedOptima, spec_frames: dict[str, pl.DataFrame], summaries: dict[str, str]
) -> dict[str, str]:
    """Summaries equal to an earlier one on every run (e.g. mean and token-weighted mean when
    all responses have one length): they cannot be told apart, so they are compared once."""
    identical: dict[str, str] = {}
    names = list(summaries)
    for i, name in enumerate(names):
        for first in names[:i]:
            if first in identical:
                continue
            a, b = summaries[first], summaries[name]
            same = np.allclose(fixed.measured(a), fixed.measured(b), rtol=1e-9) and all(
                np.allclose(f[a].cast(pl.Float64).to_numpy(), f[b].cast(pl.Float64).to_numpy())
                for f in spec_frames.values()
            )
            if same:
                identical[name] = first
                break
    return identical


def _staleness_grid(max_staleness: float) -> np.ndarray:
    top = max(2.0 * max_staleness, 2.0)
    return np.concatenate([[0.0], np.geomspace(0.25, top, 48)])


def _log_sd(boot: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        logs = np.log(boot)
    return np.array([np.nanstd(c) if np.isfinite(c).sum() > 1 else np.nan for c in logs.T])


def _nanpercentile(boot: np.ndarray, q: float) -> np.ndarray:
    return np.array(
        [np.percentile(c[np.isfinite(c)], q) if np.isfinite(c).any() else np.nan for c in boot.T]
    )


def _nan(value: float | None) -> float:
    return np.nan if value is None else float(value)


def _records(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return [
        {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}
        for row in frame.to_dicts()
    ]


# --------------------------------------------------------------------------- files


def describe_source(runs_dir: Path, runs: pl.DataFrame, command: str) -> dict[str, Any]:
    """Where a fit came from: the sweep, its preset, the date, the machine and the command."""
    presets = (
        sorted(runs["preset"].drop_nulls().unique().to_list()) if "preset" in runs.columns else []
    )
    return {
        "runs_dir": str(runs_dir),
        "preset": ", ".join(map(str, presets)) or None,
        "n_runs": runs.height,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.system()} {platform.release()})",
        "command": command,
    }


def fit_runs_dir(
    runs_dir: str | Path,
    out: str | Path | None = None,
    settings: FitSettings | None = None,
    *,
    command: str = "stalesim fit",
    progress: Progress | None = None,
) -> tuple[SweepFit, Path]:
    """Fit the sweep in ``runs_dir`` and write ``law.json`` (default: inside ``runs_dir``)."""
    runs_dir = Path(runs_dir)
    runs, _ = read_sweep(runs_dir)
    result = fit_sweep(
        runs, settings, source=describe_source(runs_dir, runs, command), progress=progress
    )
    path = Path(out) if out is not None else runs_dir / "law.json"
    write_json(path, result.law.to_json_dict())
    return result, path


__all__ = [
    "Cells",
    "CurveFit",
    "FitSettings",
    "GroupEstimate",
    "Optimum",
    "StabilityEdge",
    "SweepFit",
    "build_cells",
    "describe_source",
    "estimate_eta_max",
    "estimate_group",
    "estimate_optimum",
    "estimate_steps_at",
    "fit_curve",
    "fit_quality",
    "fit_runs_dir",
    "fit_steps",
    "fit_sweep",
    "read_sweep",
]
