"""Local slopes ``d ln eta / d ln S`` with intervals, and what they say about the paper's two
regimes, read as equivalence tests.

The four-parameter law can sit on its bounds when the points do not pin the knee down; slopes
between staleness values need no model. Per pair of usable points ``S_i < S_j`` (both > 0) the
slope is ``(ln eta_j - ln eta_i) / (ln S_j - ln S_i)``; over a range of S the slope is the
least-squares slope of ``ln eta`` on ``ln S``. Each is recomputed on every replicate (the
leave-one-seed-out rows, see :mod:`stalesim.sim.law.intervals`), and the interval comes from
them.

The paper predicts a slope of 0 (horizon-limited, ``eta`` flat in S) below the knee and -1
(stale-limited, ``eta ∝ 1/S``) above it. An interval that merely *contains* -1 does not show a
slope of -1 (a wider interval would then confirm more easily), so :func:`regime_verdict` is an
equivalence test: "∝ 1/S" only when the whole interval lies inside :data:`ONE_OVER_S_BAND`,
"flat" only inside :data:`FLAT_BAND`, a direction only when the whole interval is beyond a
band, and "inconclusive" otherwise.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import numpy as np
from stalesim.sim.law.intervals import Spread
from stalesim.sim.law.model import ratio_verdict as law_ratio_verdict
from stalesim.sim.law.model import slope_verdict

#: Slopes ``d ln eta / d ln S`` that count as "∝ 1/S": within 0.3 of -1. A slope of -0.7
#: halves eta over a 2.7-fold rise in S where 1/S would cut it by 2.7; beyond that the
#: difference is one a user of the law would act on.
ONE_OVER_S_BAND = (-1.3, -0.7)
#: Slopes that count as "flat": within 0.3 of 0 (eta changes by less than 23% when S doubles).
FLAT_BAND = (-0.3, 0.3)
#: Ratios ``eta(S_1) / eta(0)`` that count as "flat" from S = 0 (where ln S has no slope):
#: within 20% of 1, the change a FLAT_BAND slope makes over a 2-fold rise of S.
FLAT_RATIO_BAND = (0.8, 1.25)


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    return float(_slopes(x, np.asarray(y, dtype=float)[None, :])[0])


def _slopes(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The least-squares slope of each row of ``rows`` on ``x`` (NaN for a row with a
    non-finite value, or when ``x`` has fewer than 2 distinct values)."""
    rows = np.atleast_2d(rows)
    if len(x) < 2 or np.ptp(x) == 0:
        return np.full(rows.shape[0], np.nan)
    centred = x - x.mean()
    with np.errstate(invalid="ignore"):
        out = ((rows - rows.mean(axis=1, keepdims=True)) * centred).sum(axis=1) / (centred**2).sum()
    out[~np.all(np.isfinite(rows), axis=1)] = np.nan
    return out


def range_slope(
    staleness: np.ndarray,
    eta: np.ndarray,
    boot: np.ndarray,
    usable: np.ndarray,
    low: float,
    high: float,
    spread: Spread,
) -> dict[str, Any] | None:
    """Least-squares slope of ``ln eta`` on ``ln S`` over the usable points with ``low <= S <=
    high`` (S > 0), its interval and verdict; None with fewer than 2 points."""
    pick = usable & (staleness > 0) & (staleness >= low) & (staleness <= high)
    if pick.sum() < 2:
        return None
    x = np.log(staleness[pick])
    slope = _slope(x, np.log(eta[pick]))
    with np.errstate(divide="ignore", invalid="ignore"):
        reps = _slopes(x, np.log(boot[:, pick]))
    lo, hi = spread.interval(slope, reps)
    lo = float("nan") if lo is None else lo
    hi = float("nan") if hi is None else hi
    return {
        "from": float(staleness[pick].min()),
        "to": float(staleness[pick].max()),
        "n_points": int(pick.sum()),
        "slope": slope,
        "lo": lo,
        "hi": hi,
        "n_replicates": int(np.isfinite(reps).sum()),
        "verdict": regime_verdict(lo, hi),
    }


def local_slopes(
    staleness: np.ndarray,
    eta: np.ndarray,
    boot: np.ndarray,
    usable: np.ndarray,
    spread: Spread,
) -> list[dict[str, Any]]:
    """The slope between each pair of neighbouring usable points with S > 0."""
    idx = [i for i in np.argsort(staleness) if usable[i] and staleness[i] > 0]
    out = []
    for a, b in pairwise(idx):
        pair = np.zeros_like(usable)
        pair[[a, b]] = True
        record = range_slope(staleness, eta, boot, pair, staleness[a], staleness[b], spread)
        if record is not None:
            out.append(record)
    return out


def pair_slopes(
    staleness: np.ndarray,
    eta: np.ndarray,
    boot: np.ndarray,
    usable: np.ndarray,
    spread: Spread,
) -> list[dict[str, Any]]:
    """The slope between every pair of usable points with S > 0 (not only neighbours), so a
    reader can ask for e.g. S 2 -> 8 and get an interval computed from the replicates."""
    idx = [i for i in np.argsort(staleness) if usable[i] and staleness[i] > 0]
    out = []
    for k, a in enumerate(idx):
        for b in idx[k + 1 :]:
            pair = np.zeros_like(usable)
            pair[[a, b]] = True
            record = range_slope(staleness, eta, boot, pair, staleness[a], staleness[b], spread)
            if record is not None:
                out.append(record)
    return out


def regime_verdict(lo: float, hi: float) -> str:
    """What a slope interval ``[lo, hi]`` shows, as an equivalence test against the bands:

    * ``one_over_s`` — the whole interval inside :data:`ONE_OVER_S_BAND`;
    * ``flat`` — the whole interval inside :data:`FLAT_BAND`;
    * ``steeper`` — the whole interval below the 1/S band (falls faster than 1/S);
    * ``falls_slower`` — the whole interval between the two bands (falls, more slowly than 1/S);
    * ``falls`` — the whole interval below the flat band, but not settled against 1/S;
    * ``rises`` — the whole interval above the flat band;
    * ``inconclusive`` — anything else (e.g. an interval reaching into both bands);
    * ``degenerate`` — no spread at all (every replicate gave the same slope).
    """
    return slope_verdict(lo, hi, ONE_OVER_S_BAND, FLAT_BAND)


def ratio_verdict(lo: float | None, hi: float | None) -> str:
    """A ratio ``eta(S_1)/eta(0)`` interval read against :data:`FLAT_RATIO_BAND` (the rule is
    :func:`stalesim.sim.law.model.ratio_verdict`)."""
    return law_ratio_verdict(lo, hi, FLAT_RATIO_BAND)


def _band(band: tuple[float, float]) -> str:
    return f"[{band[0]:g}, {band[1]:g}]"


VERDICT_TEXT = {
    "flat": f"flat (the interval inside {_band(FLAT_BAND)}): horizon-limited",
    "one_over_s": f"∝ 1/S (the interval inside {_band(ONE_OVER_S_BAND)}): stale-limited",
    "falls_slower": "falls, but more slowly than 1/S (the interval between the two bands)",
    "falls": "falls (the interval below the flat band), not settled against 1/S",
    "steeper": "falls faster than 1/S (the interval below the 1/S band)",
    "rises": "rises with S (the interval above the flat band)",
    "inconclusive": "inconclusive (the interval is inside neither band and beyond neither)",
    "degenerate": "no interval (every replicate gave the same value: grid-quantised)",
    # verdicts of law files written before the equivalence test
    "undecided": "undecided (the interval holds both 0 and -1)",
}
