"""Per-group estimates from one group's runs (one fixed ``S``, or one staleness distribution).

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
  were unstable (the table's ``unstable`` column, see :mod:`stalesim.validate.law.failure`: a run
  that only learned too little is not counted), scan the grid
  upward; at the first LR with ``f >= 0.5`` interpolate linearly in ``ln(lr)`` between it and
  the LR below for the point where ``f`` crosses 0.5. No failing LR: the largest LR, flagged
  ``above_grid`` (a lower bound); the smallest LR already fails: flagged ``below_grid``.
  When every seed agrees (``f`` jumps from 0 to 1 between two grid LRs) resampling seeds cannot
  move the estimate, yet the edge may lie anywhere between the two LRs; so in bootstrap
  replicates (``edge_jitter``) the edge is drawn uniformly in ``ln(lr)`` inside that bracket,
  and the grid's resolution becomes part of the interval.
* ``steps_to_target(S)`` at ``eta_opt(S)``: per LR the median of the runs' steps to target
  (a run that never reached it counts as infinite), interpolated linearly in
  ``ln(steps)`` vs ``ln(lr)`` over the LRs whose median is finite; ``None`` if ``eta_opt``
  lies outside them.

Intervals come from replicates that respect the seed as the unit: a seed carries its own warm
start and data stream, so runs of one seed are correlated across learning rates and staleness
values. :meth:`Cells.without_seed` gives the leave-one-seed-out (jackknife) replicates that
:mod:`stalesim.sim.law.intervals` turns into t intervals; :meth:`Cells.for_seeds` (a seed
bootstrap draw) and :meth:`Cells.resampled` (runs resampled inside each cell, which treats them
as independent) remain for the percentile method. With 3 seeds a percentile bootstrap covers
about 80% for a nominal 95% (``python -m stalesim.validate.law.coverage``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

#: Optimum flags that make ``eta_opt`` a bound (or a guess), so the law fit leaves it out.
EDGE_FLAGS = frozenset({"edge_low", "edge_high", "few_lrs"})
#: Stability-edge flags that make ``eta_max`` a bound, so the law fit leaves it out.
CENSORED_FLAGS = frozenset({"above_grid", "below_grid"})


@dataclass(frozen=True)
class Cells:
    """The runs of one group (one S, or one staleness distribution), split by learning rate."""

    lrs: np.ndarray  # sorted unique learning rates
    values: tuple[np.ndarray, ...]  # objective per run, one array per LR
    failed: tuple[np.ndarray, ...]  # bool per run
    steps: tuple[np.ndarray, ...]  # steps to target per run, inf when never reached
    seeds: tuple[np.ndarray, ...] | None = None  # seed per run

    def for_seeds(self, draw: np.ndarray) -> Cells:
        """The cells of a seed-bootstrap replicate: in each LR, the runs of every drawn seed
        (a seed drawn twice counts twice). Objective values are inflated about the cell mean by
        ``sqrt(n/(n-1))`` as in :meth:`resampled`. A cell that holds none of the drawn seeds
        keeps its runs (it cannot be left empty).
        """
        if self.seeds is None:
            raise ValueError("these cells carry no seeds: build them from a table with a seed")
        picks = []
        for cell_seeds in self.seeds:
            chosen = np.concatenate([np.flatnonzero(cell_seeds == s) for s in draw])
            picks.append(chosen if chosen.size else np.arange(len(cell_seeds)))
        return Cells(
            self.lrs,
            tuple(_inflated(v, i) for v, i in zip(self.values, picks, strict=True)),
            tuple(f[i] for f, i in zip(self.failed, picks, strict=True)),
            tuple(s[i] for s, i in zip(self.steps, picks, strict=True)),
            tuple(s[i] for s, i in zip(self.seeds, picks, strict=True)),
        )

    def without_seed(self, seed: int) -> Cells:
        """The cells with every run of ``seed`` left out (a jackknife replicate); values are
        not rescaled. A cell that holds only that seed keeps its runs (it cannot be empty)."""
        if self.seeds is None:
            raise ValueError("these cells carry no seeds: build them from a table with a seed")
        picks = []
        for cell_seeds in self.seeds:
            kept = np.flatnonzero(cell_seeds != seed)
            picks.append(kept if kept.size else np.arange(len(cell_seeds)))
        return Cells(
            self.lrs,
            tuple(v[i] for v, i in zip(self.values, picks, strict=True)),
            tuple(f[i] for f, i in zip(self.failed, picks, strict=True)),
            tuple(s[i] for s, i in zip(self.steps, picks, strict=True)),
            tuple(s[i] for s, i in zip(self.seeds, picks, strict=True)),
        )

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
            None
            if self.seeds is None
            else tuple(s[i] for s, i in zip(self.seeds, picks, strict=True)),
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
    """Split one group's runs into per-LR arrays. The failure each cell records is the
    ``unstable`` column of :func:`stalesim.validate.law.failure.mark_failures` when the table has
    one (``eta_max`` is a stability edge: a run that merely learned too little did not fail
    it), else its ``failed`` column, else ``collapsed``."""
    if "unstable" in group.columns:
        failed = pl.col("unstable").fill_null(False).cast(pl.Boolean)
    elif "failed" in group.columns:
        failed = pl.col("failed").fill_null(False).cast(pl.Boolean)
    else:
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
            (pl.col("seed") if "seed" in group.columns else pl.lit(0)).cast(pl.Int64).alias("seed"),
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
        seeds=tuple(p["seed"].to_numpy() for p in parts),
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
    bracket: tuple[float, float] | None = None  # the grid LRs around the crossing


def estimate_eta_max(
    cells: Cells, threshold: float = 0.5, jitter: np.random.Generator | None = None
) -> StabilityEdge:
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
    t = (threshold - f0) / (f1 - f0) if jitter is None else jitter.uniform()
    bracket = (float(np.exp(x0)), float(np.exp(x1)))
    return StabilityEdge(float(np.exp(x0 + t * (x1 - x0))), "ok", bracket)


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


def estimate_group(
    cells: Cells, window: int = 1, edge_jitter: np.random.Generator | None = None
) -> GroupEstimate:
    """``eta_opt``, ``eta_max`` and steps to target at ``eta_opt`` for one group;
    ``edge_jitter`` (bootstrap replicates) draws ``eta_max`` inside its grid bracket."""
    optimum = estimate_optimum(cells, window)
    return GroupEstimate(
        optimum,
        estimate_eta_max(cells, jitter=edge_jitter),
        estimate_steps_at(cells, optimum.eta),
    )
