"""Fitting the law family (``stalesim.sim.law.model``) to per-S estimates, with intervals.

``eta(S)`` curves are fitted by ``least_squares`` on ``ln(eta)``, each point weighted by the
inverse of its replicate standard error (floored at 5%), leaving out points that are bounds
(edge or censored flags); replicates of the points (leave-one-seed-out rows, or bootstrap
replicates) give replicate curves, from which :class:`~stalesim.sim.law.intervals.Spread`
makes the parameter intervals and the band.
Steps to target are fitted in both forms of :class:`~stalesim.sim.law.model.StepsModel` and the
form with the lower AIC is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import least_squares
from stalesim.sim.law.intervals import Spread
from stalesim.sim.law.model import CURVE_PARAMS, Band, FitQuality, LawCurve, StepsModel, law_curve

#: Smallest relative standard deviation a per-S point is trusted with in the law fit.
MIN_LOG_SD = 0.05

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
    sc_fixed: bool = False

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


def two_point_curve(staleness: np.ndarray, eta: np.ndarray) -> CurveFit:
    """The curve through exactly two points (S = 0 and one S > 0) with ``s_c = k = 1`` held:
    ``eta0 / (1 + S) ** alpha``; ``alpha`` is floored at 0 (the family cannot rise)."""
    order = np.argsort(staleness)
    s0, s1 = np.asarray(staleness, dtype=float)[order]
    e0, e1 = np.asarray(eta, dtype=float)[order]
    if s0 != 0 or s1 <= 0:
        raise ValueError("a two-point law needs S = 0 and one S > 0")
    alpha = max(0.0, float(np.log(e0 / e1) / np.log1p(s1)))
    return CurveFit(float(e0), 1.0, 1.0, alpha, True, True)


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


def bound_notes(label: str, curve: CurveFit) -> list[str]:
    """Parameters the fit pushed onto a bound: the data do not determine them."""
    bounds = {
        "s_c": (np.exp(_LOG_SC_BOUNDS[0]), np.exp(_LOG_SC_BOUNDS[1])),
        "k": (np.exp(_LOG_K_BOUNDS[0]), np.exp(_LOG_K_BOUNDS[1])),
        "alpha": _ALPHA_BOUNDS,
    }
    notes = []
    for name, (low, high) in bounds.items():
        if (name == "k" and curve.k_fixed) or (name == "s_c" and curve.sc_fixed):
            continue
        value = getattr(curve, name)
        for edge in (low, high):
            if np.isclose(value, edge, rtol=1e-3, atol=1e-6):
                notes.append(
                    f"{label}: {name} = {value:.3g} sits on its bound: the points do not pin it "
                    "down, so read the curve, not this parameter"
                )
    return notes


def fit_with_bootstrap(
    staleness: np.ndarray,
    eta: np.ndarray,
    boot: np.ndarray,
    usable: np.ndarray,
    spread: Spread | None = None,
) -> tuple[CurveFit, list[CurveFit | None]]:
    """The curve through the usable points, and one refit per replicate row (None for a row
    with a missing point, so replicate curves stay aligned with the rows)."""
    s, y = staleness[usable], eta[usable]
    if usable.sum() == 2:
        curve = two_point_curve(s, y)
        replicas = [
            two_point_curve(s, row) if np.all(np.isfinite(row)) else None for row in boot[:, usable]
        ]
        return curve, replicas
    log_sd = (spread.column_sd(boot, log=True) if spread else bootstrap_log_sd(boot))[usable]
    fixed_k = 1.0 if usable.sum() < 5 else None  # 4 parameters need more than 4 points
    curve = fit_curve(s, y, log_sd, fixed_k=fixed_k)
    replicas = []
    for row in boot[:, usable]:
        finite = bool(np.all(np.isfinite(row)))
        replicas.append(fit_curve(s, row, log_sd, fixed_k=fixed_k, start=curve) if finite else None)
    return curve, replicas


def curve_record(
    curve: CurveFit,
    replicas: list[CurveFit | None],
    staleness: np.ndarray,
    eta: np.ndarray,
    grid: np.ndarray,
    spread: Spread,
) -> dict[str, Any]:
    """A fitted curve as law.json's ``LawCurve``: intervals, band on ``grid``, quality."""
    nan4 = np.full(4, np.nan)
    params = np.array([r.vector() if r is not None else nan4 for r in replicas]).reshape(-1, 4)
    intervals = spread_intervals(
        spread,
        {
            name: (curve.vector()[i], params[:, i], name != "alpha")
            for i, name in enumerate(CURVE_PARAMS)
            if not (name == "k" and curve.k_fixed) and not (name == "s_c" and curve.sc_fixed)
        },
    )
    band = None
    if any(r is not None for r in replicas):
        nan_grid = np.full(len(grid), np.nan)
        curves = np.array([r(grid) if r is not None else nan_grid for r in replicas])
        lo, hi = spread.columns(curve(grid), curves.reshape(-1, len(grid)), log=True)
        if np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)):
            band = Band(
                staleness=[float(g) for g in grid],
                lo=[float(v) for v in lo],
                hi=[float(v) for v in hi],
            )
    return LawCurve(
        eta0=curve.eta0,
        s_c=curve.s_c,
        k=curve.k,
        alpha=curve.alpha,
        intervals=intervals,
        fixed=(["k"] if curve.k_fixed else []) + (["s_c"] if curve.sc_fixed else []),
        quality=fit_quality(staleness, eta, curve),
        band=band,
    ).model_dump(mode="json")


def fit_steps_model(
    staleness: np.ndarray,
    steps: np.ndarray,
    steps_boot: np.ndarray,
    curve: CurveFit,
    curve_boot: list[CurveFit | None],
    spread: Spread,
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
            if replica is not None and np.all(np.isfinite(row))
            else (np.nan, np.nan)
            for replica, row in zip(curve_boot, boot_rows, strict=False)
        ]
    ).reshape(-1, 2)
    ratio_intervals = spread_intervals(spread, {"steps0": (steps0, ratio_boot[:, 0], True)})
    if not p_fixed:
        ratio_intervals |= spread_intervals(spread, {"p": (p, ratio_boot[:, 1], False)})
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
        if np.all(np.isfinite(row))
        else None
        for row in boot_rows
    ]
    direct = np.array(
        [[1 / r.eta0, r.s_c, r.k, r.alpha] if r else [np.nan] * 4 for r in inverse_boot]
    ).reshape(-1, 4)
    direct_intervals = spread_intervals(
        spread,
        {
            "steps0": (1 / inverse.eta0, direct[:, 0], True),
            "s_c": (inverse.s_c, direct[:, 1], True),
            "beta": (inverse.alpha, direct[:, 3], False),
        }
        | ({} if fixed_k else {"k": (inverse.k, direct[:, 2], True)}),
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


def spread_intervals(
    spread: Spread, samples: dict[str, tuple[float, np.ndarray, bool]]
) -> dict[str, list]:
    """``{name: [lo, hi]}`` for each ``name: (estimate, replicates, log scale)`` whose
    replicates give an interval."""
    out = {}
    for name, (estimate, reps, log) in samples.items():
        lo, hi = spread.interval(float(estimate), np.asarray(reps, dtype=float), log)
        if lo is not None and hi is not None:
            out[name] = [lo, hi]
    return out


def percentiles(samples: dict[str, np.ndarray], tail: tuple[float, float]) -> dict[str, list]:
    """The ``tail`` percentiles of each non-empty sample: ``{name: [lo, hi]}``."""
    return {
        name: [float(np.percentile(v, q)) for q in tail] for name, v in samples.items() if len(v)
    }


def staleness_grid(max_staleness: float) -> np.ndarray:
    """Where a curve's band is drawn: 0, then log-spaced to twice the largest S."""
    top = max(2.0 * max_staleness, 2.0)
    return np.concatenate([[0.0], np.geomspace(0.25, top, 48)])


def bootstrap_log_sd(boot: np.ndarray) -> np.ndarray:
    """Per point (column), the standard deviation of ``ln`` over finite replicates."""
    with np.errstate(all="ignore"):
        logs = np.log(boot)
    return np.array([np.nanstd(c) if np.isfinite(c).sum() > 1 else np.nan for c in logs.T])


def nanpercentile(boot: np.ndarray, q: float) -> np.ndarray:
    """Per point (column), the ``q`` percentile over the finite replicates."""
    return np.array(
        [np.percentile(c[np.isfinite(c)], q) if np.isfinite(c).any() else np.nan for c in boot.T]
    )
