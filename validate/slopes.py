"""Local slopes ``d ln eta / d ln S`` with bootstrap intervals, and what they say about the
paper's two regimes.

The four-parameter law can sit on its bounds when the points do not pin the knee down; slopes
between neighbouring staleness values need no model. Per pair of neighbouring points ``S_i <
S_j`` (both > 0, both usable) the slope is ``(ln eta_j - ln eta_i) / (ln S_j - ln S_i)``; over a
range of S the slope is the least-squares slope of ``ln eta`` on ``ln S``. Each is recomputed on
every bootstrap replicate (the same seed draws as the points), and the interval is the
replicates' percentile interval.

The paper's prediction is a slope of 0 (horizon-limited, ``eta`` flat in S) below the knee and
-1 (stale-limited, ``eta ∝ 1/S``) above it; :func:`regime_verdict` reads an interval against
those two values.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import numpy as np


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.ptp(x) == 0 or not np.all(np.isfinite(y)):
        return float("nan")
    return float(np.polyfit(x, y, 1)[0])


def range_slope(
    staleness: np.ndarray,
    eta: np.ndarray,
    boot: np.ndarray,
    usable: np.ndarray,
    low: float,
    high: float,
    tail: tuple[float, float],
) -> dict[str, Any] | None:
    """Least-squares slope of ``ln eta`` on ``ln S`` over the usable points with ``low <= S <=
    high`` (S > 0), its bootstrap interval and verdict; None with fewer than 2 points."""
    pick = usable & (staleness > 0) & (staleness >= low) & (staleness <= high)
    if pick.sum() < 2:
        return None
    x = np.log(staleness[pick])
    slope = _slope(x, np.log(eta[pick]))
    with np.errstate(divide="ignore", invalid="ignore"):
        reps = np.array([_slope(x, np.log(row[pick])) for row in boot])
    reps = reps[np.isfinite(reps)]
    lo, hi = (
        (float(np.percentile(reps, tail[0])), float(np.percentile(reps, tail[1])))
        if reps.size
        else (float("nan"), float("nan"))
    )
    return {
        "from": float(staleness[pick].min()),
        "to": float(staleness[pick].max()),
        "n_points": int(pick.sum()),
        "slope": slope,
        "lo": lo,
        "hi": hi,
        "n_replicates": int(reps.size),
        "verdict": regime_verdict(lo, hi),
    }


def local_slopes(
    staleness: np.ndarray,
    eta: np.ndarray,
    boot: np.ndarray,
    usable: np.ndarray,
    tail: tuple[float, float],
) -> list[dict[str, Any]]:
    """The slope between each pair of neighbouring usable points with S > 0."""
    idx = [i for i in np.argsort(staleness) if usable[i] and staleness[i] > 0]
    out = []
    for a, b in pairwise(idx):
        pair = np.zeros_like(usable)
        pair[[a, b]] = True
        record = range_slope(staleness, eta, boot, pair, staleness[a], staleness[b], tail)
        if record is not None:
            out.append(record)
    return out


def regime_verdict(lo: float, hi: float) -> str:
    """What a slope interval ``[lo, hi]`` says: ``flat`` (contains 0, excludes -1),
    ``one_over_s`` (contains -1, excludes 0), ``falls`` (excludes both, between them),
    ``steeper`` (below -1), ``rises`` (above 0), ``undecided`` (contains both), ``degenerate``
    (every replicate gave the same slope, e.g. a stability edge pinned to grid points)."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "undecided"
    if hi - lo < 1e-6:
        # every replicate gave the same slope: the grid quantised it, the seeds did not vary it
        return "degenerate"
    tol = 1e-9  # a bound that is 0 up to rounding contains 0
    has_zero = lo <= tol and hi >= -tol
    has_minus_one = lo <= -1 + tol and hi >= -1 - tol
    if has_zero and has_minus_one:
        return "undecided"
    if has_zero:
        return "flat"
    if has_minus_one:
        return "one_over_s"
    if hi < -1:
        return "steeper"
    if lo > 0:
        return "rises"
    return "falls"


VERDICT_TEXT = {
    "flat": "flat (slope 0 inside the interval, -1 outside): horizon-limited",
    "one_over_s": "∝ 1/S (slope -1 inside the interval, 0 outside): stale-limited",
    "falls": "falls, but more slowly than 1/S (slope between -1 and 0, both outside)",
    "steeper": "falls faster than 1/S",
    "rises": "rises with S",
    "undecided": "undecided (the interval holds both 0 and -1)",
    "degenerate": "no interval (every bootstrap replicate gave the same value: grid-quantised)",
}
