"""Confidence intervals from replicate estimates: leave-one-seed-out (jackknife) with Student-t
quantiles, or the percentile interval of bootstrap replicates.

A sweep has few seeds (2 or 3), and each seed carries its own warm start, so the seed is the
unit of replication. A percentile bootstrap over 3 seeds has only 10 distinct draws and its
"95%" interval covers far less than 95% (:mod:`stalesim.validate.law.coverage` measures it). The
jackknife recomputes every estimate with one seed left out; its spread gives a standard error

    se² = (n - 1) / n · Σ_i (θ_{-i} - mean θ_{-·})²

(for a mean over seeds this is exactly s / √n), and the interval is ``θ ± t_{n-1} · se`` with the
Student-t quantile on ``n - 1`` degrees of freedom, so 3 seeds pay for their 2 degrees of
freedom with t = 4.30 instead of 1.96. Positive quantities (learning rates, their ratios, steps)
are handled on the log scale and the interval is exponentiated back.

A stability edge (``eta_max``) on which every seed agrees does not move when a seed is left out,
yet it may lie anywhere between two grid rates. Its replicate array therefore carries, after the
``n_loo`` leave-one-out rows, draws of the point estimate with each edge placed uniformly inside
its grid bracket; their variance (the grid's resolution) is added to the jackknife variance and
the t degrees of freedom follow Welch–Satterthwaite (the resolution term is exactly known, so it
adds no uncertainty of its own).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

#: The interval methods :class:`Spread` knows.
METHODS = ("jackknife", "percentile")


@dataclass(frozen=True)
class Spread:
    """How a replicate array becomes an interval.

    ``method`` is ``"jackknife"`` (the first ``n_loo`` rows are leave-one-seed-out estimates;
    any further rows are grid-resolution draws) or ``"percentile"`` (every row is a bootstrap
    replicate). ``confidence`` is the nominal two-sided level. ``scale`` widens a jackknife
    interval's half-width by a factor found by simulation so that its coverage meets the level
    (:mod:`stalesim.validate.law.calibration`); 1 is the plain t interval.
    """

    method: str = "jackknife"
    confidence: float = 0.95
    n_loo: int = 0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"interval method {self.method!r}: not one of {', '.join(METHODS)}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence {self.confidence}: must lie strictly between 0 and 1")
        if not self.scale >= 1:
            raise ValueError(f"scale {self.scale}: an interval is only ever widened (>= 1)")
        if self.scale != 1 and self.method != "jackknife":
            raise ValueError("only a jackknife interval is widened by a calibration factor")

    def widened(self, scale: float) -> Spread:
        """The same interval with its half-width multiplied by ``scale``."""
        return replace(self, scale=float(scale))

    @property
    def tail(self) -> tuple[float, float]:
        """The percentiles of a percentile interval at this confidence."""
        return (1 - self.confidence) / 2 * 100, (1 + self.confidence) / 2 * 100

    def describe(self) -> str:
        """One line for law.json and the pages."""
        if self.method == "percentile":
            return f"{self.confidence:.0%} percentile interval of bootstrap replicates"
        return (
            f"{self.confidence:.0%} leave-one-seed-out jackknife interval: estimate ± "
            f"t(n_seeds - 1) × jackknife standard error ({self.n_loo} seeds), on the log scale "
            "for learning rates, ratios and steps; the grid's resolution added to eta_max"
        )

    def _parts(self, reps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        reps = np.asarray(reps, dtype=float)
        loo, extra = reps[: self.n_loo], reps[self.n_loo :]
        return loo[np.isfinite(loo)], extra[np.isfinite(extra)]

    def _se_df(self, reps: np.ndarray) -> tuple[float, float]:
        """Jackknife standard error (with the resolution term) and its degrees of freedom."""
        loo, extra = self._parts(reps)
        m = loo.size
        if m < 2:
            return float("nan"), float("nan")
        var_j = (m - 1) / m * float(((loo - loo.mean()) ** 2).sum())
        var_g = float(extra.var(ddof=1)) if extra.size > 1 else 0.0
        total = var_j + var_g
        if total <= 0:
            return 0.0, float(m - 1)
        df = float("inf") if var_j == 0 else total**2 * (m - 1) / var_j**2
        return float(np.sqrt(total)), df

    def sd(self, reps: np.ndarray, log: bool = False) -> float:
        """The standard error one column of replicates implies (NaN when it cannot say)."""
        reps = _log(reps) if log else np.asarray(reps, dtype=float)
        if self.method == "percentile":
            finite = reps[np.isfinite(reps)]
            return float(np.std(finite)) if finite.size > 1 else float("nan")
        return self._se_df(reps)[0]

    def interval(
        self, estimate: float | None, reps: np.ndarray, log: bool = False
    ) -> tuple[float | None, float | None]:
        """The interval of one quantity from its estimate and replicates; ``log``: a positive
        quantity handled on the log scale. ``(None, None)`` when the replicates cannot say."""
        if estimate is None or not np.isfinite(estimate) or (log and estimate <= 0):
            return None, None
        values = _log(reps) if log else np.asarray(reps, dtype=float)
        centre = float(np.log(estimate)) if log else float(estimate)
        if self.method == "percentile":
            finite = values[np.isfinite(values)]
            if not finite.size:
                return None, None
            lo, hi = (float(np.percentile(finite, q)) for q in self.tail)
        else:
            se, df = self._se_df(values)
            if not np.isfinite(se):
                return None, None
            t = float(stats.t.ppf((1 + self.confidence) / 2, df))
            half = self.scale * se * t if se > 0 else 0.0
            lo, hi = centre - half, centre + half
        return (float(np.exp(lo)), float(np.exp(hi))) if log else (lo, hi)

    def columns(
        self, estimates: np.ndarray, boot: np.ndarray, log: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per column of ``boot`` (one quantity each): the interval around ``estimates``."""
        pairs = [
            self.interval(float(e), boot[:, i], log) for i, e in enumerate(np.asarray(estimates))
        ]
        return (
            np.array([np.nan if lo is None else lo for lo, _ in pairs]),
            np.array([np.nan if hi is None else hi for _, hi in pairs]),
        )

    def column_sd(self, boot: np.ndarray, log: bool = False) -> np.ndarray:
        """Per column of ``boot``, :meth:`sd`."""
        return np.array([self.sd(boot[:, i], log) for i in range(boot.shape[1])])


def _log(values: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(np.asarray(values, dtype=float))


__all__ = ["METHODS", "Spread"]
