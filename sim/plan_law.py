"""The staleness–learning-rate law applied to a setup: the learning rate to use, the optimizer
steps it needs, and from the setup's step time, the wall-clock time and cost to the target.

The law (``stalesim.sim.law``) is read at the setup's staleness summary ``S`` (the one the law
names: max, p99, mean or token-weighted mean of the consumed samples' lag):

* ``eta_opt(S)`` with the law's pointwise bootstrap band (interpolated on its staleness grid);
* optimizer steps to target ``n(S)``; its interval is the box over the steps model's parameter
  intervals (every corner evaluated): conservative, since the parameters' joint interval is
  smaller than their box;
* the *paper* reading: the same law with its exponent at the paper's ``alpha = 1`` and steps
  that grow as ``1 / eta_opt`` (``n(S) = n(0) * eta_opt(0) / eta_opt(S)``, the paper's "same
  distance at a slower pace"), to show how much a decision rests on the fitted exponent.

The law counts optimizer steps at a reference batch of ``samples_per_update`` samples. A setup
with another batch needs ``n * reference / (B * G / M)`` optimizer steps when the same samples
reach the target (``batch_scaling="samples"``) or ``n`` when the same number of updates does
(``"updates"``); a learner step makes ``M`` optimizer steps. Everything here works on arrays,
one entry per setup, so a screen can read the law for thousands of setups at once.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from stalesim.sim.law import Law, law_curve

#: Where each summary the law may name is found in a simulate summary's staleness section.
SUMMARY_FIELDS = {
    "max": ("sample_quantiles", "max"),
    "p99": ("sample_quantiles", "p99"),
    "mean": ("sample_quantiles", "mean"),
    "token_mean": ("token_quantiles", "mean"),
}


def staleness_of(law: Law, staleness: dict[str, Any]) -> float | None:
    """The summary of a simulate summary's ``staleness`` section that the law reads."""
    section, key = SUMMARY_FIELDS[law.staleness_summary]
    value = (staleness.get(section) or {}).get(key)
    return None if value is None else float(value)


def eta_band(law: Law, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The law's pointwise band of ``eta_opt`` at ``s`` (NaN where the law has none)."""
    band = law.eta_opt.band
    if band is None or not band.staleness:
        nan = np.full(s.shape, np.nan)
        return nan, nan.copy()
    grid = np.asarray(band.staleness, dtype=float)
    return np.interp(s, grid, band.lo), np.interp(s, grid, band.hi)


def steps_box(law: Law, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest optimizer steps to target over the corners of the steps model's
    parameter intervals (the point estimate included)."""
    model = law.steps_to_target
    assert model is not None
    names = ("steps0", "p") if model.form == "eta_ratio" else ("steps0", "s_c", "k", "beta")
    choices = []
    for name in names:
        value = getattr(model, name)
        lo_hi = model.intervals.get(name)
        choices.append([value, *lo_hi] if lo_hi else [value])
    ratio = law.eta_opt(s) / law.eta_opt(0.0)
    lo = np.full(s.shape, np.inf)
    hi = np.full(s.shape, -np.inf)
    for corner in itertools.product(*choices):
        params = dict(zip(names, corner, strict=True))
        if model.form == "eta_ratio":
            steps = params["steps0"] * ratio ** (-params["p"])
        else:
            base = 1.0 + (np.maximum(s, 0.0) / params["s_c"]) ** params["k"]
            steps = params["steps0"] * base ** (params["beta"] / params["k"])
        lo, hi = np.minimum(lo, steps), np.maximum(hi, steps)
    return lo, hi


def paper_reading(law: Law, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``eta_opt`` and optimizer steps to target with the exponent at the paper's value."""
    curve = law.eta_opt
    eta = law_curve(s, curve.eta0, curve.s_c, curve.k, law.alpha_paper)
    model = law.steps_to_target
    assert model is not None
    p = model.p if model.form == "eta_ratio" and model.p is not None else 1.0
    steps0 = float(law.steps_to_target_at(0.0))
    return eta, steps0 * (eta / curve.eta0) ** (-p)


def read_law(law: Law, staleness: np.ndarray) -> dict[str, np.ndarray]:
    """Every law column for setups at staleness summaries ``staleness`` (NaN stays NaN)."""
    s = np.asarray(staleness, dtype=float)
    safe = np.where(np.isfinite(s), s, 0.0)
    lo, hi = eta_band(law, safe)
    out = {"eta_opt": law.eta_opt_at(safe), "eta_opt_lo": lo, "eta_opt_hi": hi}
    if law.eta_max is not None:
        out["eta_max"] = law.eta_max_at(safe)
    if law.steps_to_target is not None:
        steps_lo, steps_hi = steps_box(law, safe)
        eta1, steps1 = paper_reading(law, safe)
        out |= {
            "updates_to_target": law.steps_to_target_at(safe),
            "updates_to_target_lo": steps_lo,
            "updates_to_target_hi": steps_hi,
            "eta_opt_alpha1": eta1,
            "updates_to_target_alpha1": steps1,
        }
    bad = ~np.isfinite(s)
    return {k: np.where(bad, np.nan, np.asarray(v, dtype=float)) for k, v in out.items()}


def learner_steps_per_update(
    samples_per_step: np.ndarray,
    minibatches: np.ndarray,
    reference_samples_per_update: float,
    batch_scaling: str,
) -> np.ndarray:
    """Learner steps a setup needs per optimizer step the law counts."""
    if batch_scaling == "samples":
        return reference_samples_per_update / np.asarray(samples_per_step, dtype=float)
    return 1.0 / np.asarray(minibatches, dtype=float)


def to_target(
    law_columns: dict[str, np.ndarray],
    step_time_s: np.ndarray,
    steps_per_update: np.ndarray,
    gpus: np.ndarray,
    price_per_gpu_hour: np.ndarray,
) -> dict[str, np.ndarray]:
    """Learner steps, seconds, GPU-hours and dollars to the target, with their intervals and
    the paper reading (``_alpha1``)."""
    out: dict[str, np.ndarray] = {}
    if "updates_to_target" not in law_columns:
        return out
    step_time_s = np.asarray(step_time_s, dtype=float)
    gpus = np.asarray(gpus, dtype=float)
    price = np.asarray(price_per_gpu_hour, dtype=float)
    for suffix in ("", "_lo", "_hi", "_alpha1"):
        steps = law_columns[f"updates_to_target{suffix}"] * steps_per_update
        seconds = steps * step_time_s
        out[f"learner_steps_to_target{suffix}"] = steps
        out[f"time_to_target_s{suffix}"] = seconds
        out[f"cost_to_target_usd{suffix}"] = seconds / 3600.0 * gpus * price
    out["gpu_hours_to_target"] = out["time_to_target_s"] / 3600.0 * gpus
    return out


def law_summary(law: Law, summary: dict[str, Any], scenario: Any = None) -> dict[str, Any]:
    """The law's columns for one simulated setup (a ``stalesim simulate`` summary), with the
    reference batch taken as the setup's own (its learner steps are the law's steps / M)."""
    work = summary["scenario"]["workload"]
    minibatches = summary["scenario"]["algorithm"]["minibatches_per_step"]
    s = staleness_of(law, summary["staleness"])
    steps_per_h = (summary.get("throughput") or {}).get("steps_per_h")
    out: dict[str, Any] = {
        "staleness_summary": law.staleness_summary,
        "staleness": s,
        "source": law.source.get("note") or law.source.get("runs_dir") or "",
    }
    if s is None or not steps_per_h:
        return out
    columns = read_law(law, np.array([s]))
    samples_per_step = work["prompts_per_step"] * work["group_size"]
    target = to_target(
        columns,
        np.array([3600.0 / steps_per_h]),
        learner_steps_per_update(
            np.array([samples_per_step]),
            np.array([minibatches]),
            samples_per_step / minibatches,
            "samples",
        ),
        np.array([summary["derived"]["total_gpus"]]),
        np.array([_price(summary)]),
    )
    out |= {k: _scalar(v[0]) for k, v in (columns | target).items()}
    warnings = getattr(law, "regime_warnings", None)
    if callable(warnings) and scenario is not None:
        out["warnings"] = list(warnings(scenario))
    return out


def _price(summary: dict[str, Any]) -> float:
    price = summary["derived"]["gpu"].get("price_per_gpu_hour")
    return float("nan") if price is None else float(price)


def _scalar(value: float) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None
