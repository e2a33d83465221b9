"""The staleness–learning-rate law applied to a setup, in the user's own units.

A law is measured on a small model, so only its shape is applied: at the setup's staleness
summary ``S`` (the one the law names: max, p99, mean or token-weighted mean of the consumed
samples' lag) against the baseline's own ``S0`` (the user's on-policy run: 0, or its mini-batch
schedule's staleness when it makes several optimizer steps per batch),

* the learning-rate multiplier ``eta_opt(S) / eta_opt(S0)``, with the box over the curve's
  parameter intervals (every corner evaluated; ``eta0`` cancels; exactly 1 at ``S0``);
* the steps multiplier ``steps(S) / steps(S0)``, with the box over the steps model's parameter
  intervals (``steps0`` cancels);
* the same two under every other reading of the law (:mod:`stalesim.sim.law.readings`), as
  columns suffixed ``_<reading>``.

They are multiplied into the user's run (``target.baseline_lr`` and ``target.baseline_steps``,
the learning rate and learner steps to target of their on-policy run) when it is given. A setup
whose batch differs from the baseline's needs ``baseline_batch / batch`` as many learner steps
when the same samples reach the target (``batch_scaling="samples"``), or ``M_base / M`` when the
same number of optimizer steps does (``"updates"``): :func:`learner_steps_per_baseline_step`.
Without ``baseline_steps``, time is only relative: ``time_per_baseline_step_s``, the wall-clock
seconds the setup needs per learner step of the baseline run, which a plan divides by the best
on-policy setup's. Everything here works on arrays, one entry per setup.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import numpy as np
from stalesim.sim.law.model import Law, law_curve
from stalesim.sim.law.readings import Reading

if TYPE_CHECKING:
    from stalesim.sim.metrics import RunSummary, Staleness

#: Where each summary the law may name is found in a simulate summary's staleness section.
SUMMARY_FIELDS = {
    "max": ("sample_quantiles", "max"),
    "p99": ("sample_quantiles", "p99"),
    "mean": ("sample_quantiles", "mean"),
    "token_mean": ("token_quantiles", "mean"),
}
#: The quantities each reading contributes, suffixed by ``_<reading>`` for the other readings.
MULTIPLIERS = ("lr_multiplier", "steps_multiplier")
#: The suffixes of the primary reading's interval columns.
INTERVAL = ("_lo", "_hi")


def staleness_of(law: Law, staleness: Staleness) -> float | None:
    """The summary of a run summary's ``staleness`` section that the law reads."""
    section, key = SUMMARY_FIELDS[law.staleness_summary]
    value = getattr(getattr(staleness, section), key)
    return None if value is None else float(value)


def _corners(model: Any, names: tuple[str, ...]) -> list[dict[str, float]]:
    """Every corner of the box over ``model``'s parameter intervals (the point included)."""
    choices = []
    for name in names:
        value = getattr(model, name)
        lo_hi = model.intervals.get(name)
        choices.append([value, *lo_hi] if lo_hi else [value])
    return [dict(zip(names, c, strict=True)) for c in itertools.product(*choices)]


def lr_ratio_box(law: Law, s: np.ndarray, s0: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest ``eta_opt(S) / eta_opt(s0)`` over the corners of the curve's
    parameter intervals (``s_c``, ``k``, ``alpha``; ``eta0`` cancels). Exactly 1 at ``s0``:
    the baseline's own rate is the user's, not an estimate. A box, not a calibrated interval."""
    curve = law.eta_opt
    lo = np.full(s.shape, np.inf)
    hi = np.full(s.shape, -np.inf)
    for c in _corners(curve, ("s_c", "k", "alpha")):
        ratio = law_curve(s, 1.0, c["s_c"], c["k"], c["alpha"]) / law_curve(
            s0, 1.0, c["s_c"], c["k"], c["alpha"]
        )
        lo, hi = np.minimum(lo, ratio), np.maximum(hi, ratio)
    return lo, hi


def steps_ratio_box(law: Law, s: np.ndarray, s0: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest ``steps(S) / steps(s0)`` over the corners of the steps model's
    parameter intervals; in the ``eta_ratio`` form also over the ends of
    :func:`lr_ratio_box`, which the steps follow. Exactly 1 at ``s0``."""
    model = law.steps_to_target
    assert model is not None
    lo = np.full(s.shape, np.inf)
    hi = np.full(s.shape, -np.inf)
    if model.form == "eta_ratio":
        ratios = [law.eta_opt(s) / law.eta_opt(s0), *lr_ratio_box(law, s, s0)]
        for ratio in ratios:
            for c in _corners(model, ("p",)):
                steps = ratio ** (-c["p"])
                lo, hi = np.minimum(lo, steps), np.maximum(hi, steps)
        return lo, hi
    for c in _corners(model, ("s_c", "k", "beta")):
        base = 1.0 + (np.maximum(s, 0.0) / c["s_c"]) ** c["k"]
        base0 = 1.0 + (max(s0, 0.0) / c["s_c"]) ** c["k"]
        steps = (base / base0) ** (c["beta"] / c["k"])
        lo, hi = np.minimum(lo, steps), np.maximum(hi, steps)
    return lo, hi


def multipliers(law: Law, s: np.ndarray, s0: float = 0.0) -> dict[str, np.ndarray]:
    """The learning-rate and steps multipliers of one law at staleness ``s`` against the
    baseline's ``s0``."""
    out = {"lr_multiplier": law.eta_opt_at(s) / law.eta_opt_at(s0)}
    if law.steps_to_target is not None:
        out["steps_multiplier"] = law.steps_to_target_at(s) / law.steps_to_target_at(s0)
    return out


def read_law(
    readings: list[Reading], staleness: np.ndarray, baseline_staleness: float = 0.0
) -> dict[str, np.ndarray]:
    """Every multiplier column for setups at staleness summaries ``staleness``, against the
    baseline's ``baseline_staleness`` (the primary reading's with its intervals, the others'
    suffixed by their name; NaN stays NaN)."""
    s = np.asarray(staleness, dtype=float)
    safe = np.where(np.isfinite(s), s, 0.0)
    s0 = float(baseline_staleness)
    primary = readings[0].law
    out = multipliers(primary, safe, s0)
    out["lr_multiplier_lo"], out["lr_multiplier_hi"] = lr_ratio_box(primary, safe, s0)
    if primary.steps_to_target is not None:
        out["steps_multiplier_lo"], out["steps_multiplier_hi"] = steps_ratio_box(primary, safe, s0)
    for reading in readings[1:]:
        out |= {f"{k}_{reading.name}": v for k, v in multipliers(reading.law, safe, s0).items()}
    bad = ~np.isfinite(s)
    return {k: np.where(bad, np.nan, np.asarray(v, dtype=float)) for k, v in out.items()}


def learner_steps_per_baseline_step(
    samples_per_step: np.ndarray,
    minibatches: np.ndarray,
    baseline_samples_per_update: float,
    baseline_minibatches: float,
    batch_scaling: str,
) -> np.ndarray:
    """Learner steps a setup needs per learner step of the baseline run (whose optimizer steps
    take ``baseline_samples_per_update`` samples, ``baseline_minibatches`` per learner step)."""
    if batch_scaling == "samples":
        baseline = baseline_samples_per_update * baseline_minibatches
        return baseline / np.asarray(samples_per_step, dtype=float)
    return baseline_minibatches / np.asarray(minibatches, dtype=float)


def suffixes(law_columns: dict[str, np.ndarray]) -> list[str]:
    """The column suffixes present: the primary reading's ``""``, its interval ends, and the
    other readings' ``_<name>``."""
    found = [
        k.removeprefix("steps_multiplier") for k in law_columns if k.startswith("steps_multiplier")
    ]
    return sorted(found, key=lambda x: (x != "", x not in INTERVAL, x))


def to_target(
    law_columns: dict[str, np.ndarray],
    step_time_s: np.ndarray,
    per_baseline_step: np.ndarray,
    gpus: np.ndarray,
    price_per_gpu_hour: np.ndarray,
    baseline_lr: float | None = None,
    baseline_steps: float | None = None,
) -> dict[str, np.ndarray]:
    """Time and cost per baseline learner step under every reading (and the primary reading's
    interval), and with a baseline the user's learning rate, learner steps, seconds, GPU-hours
    and dollars to the target."""
    out: dict[str, np.ndarray] = {}
    step_time_s = np.asarray(step_time_s, dtype=float)
    gpus = np.asarray(gpus, dtype=float)
    price = np.asarray(price_per_gpu_hour, dtype=float)
    per_step = np.asarray(per_baseline_step, dtype=float)
    if baseline_lr is not None:
        for key in [k for k in law_columns if k.startswith("lr_multiplier")]:
            out[key.replace("lr_multiplier", "learning_rate")] = law_columns[key] * baseline_lr
    for suffix in suffixes(law_columns):
        learner_steps = law_columns[f"steps_multiplier{suffix}"] * per_step
        seconds = learner_steps * step_time_s
        out[f"learner_steps_multiplier{suffix}"] = learner_steps
        out[f"time_per_baseline_step_s{suffix}"] = seconds
        out[f"cost_per_baseline_step_usd{suffix}"] = seconds / 3600.0 * gpus * price
        if baseline_steps is not None:
            out[f"learner_steps_to_target{suffix}"] = learner_steps * baseline_steps
            out[f"time_to_target_s{suffix}"] = seconds * baseline_steps
            out[f"cost_to_target_usd{suffix}"] = seconds * baseline_steps / 3600.0 * gpus * price
    if baseline_steps is not None and "time_to_target_s" in out:
        out["gpu_hours_to_target"] = out["time_to_target_s"] / 3600.0 * gpus
    return out


def law_summary(
    readings: list[Reading],
    summary: RunSummary,
    scenario: Any = None,
    on_policy: RunSummary | None = None,
) -> dict[str, Any]:
    """The law's reading of one simulated setup (a ``stalesim simulate`` summary), with the
    baseline run taken as the setup's own batch run on-policy. ``on_policy`` is the summary of
    that run (the setup's own when it is on-policy): its staleness is the baseline's ``S0``
    and time to target is relative to its step time."""
    law = readings[0].law
    s = staleness_of(law, summary.staleness)
    s0 = staleness_of(law, on_policy.staleness) if on_policy else None
    sync_step_time_s = on_policy.step_time_from_rate_s if on_policy else None
    steps_per_h = summary.throughput.steps_per_h
    target = (summary.scenario or {}).get("target") or {}
    baseline_lr, baseline_steps = target.get("baseline_lr"), target.get("baseline_steps")
    out: dict[str, Any] = {
        "reading": readings[0].name,
        "readings": {r.name: r.provenance for r in readings},
        "labels": {r.name: r.label for r in readings},
        "staleness_summary": law.staleness_summary,
        "staleness": s,
        "baseline_staleness": s0,
        "baseline_lr": baseline_lr,
        "baseline_steps": baseline_steps,
        "source": law.source.get("note") or law.source.get("runs_dir") or "",
    }
    if scenario is not None:
        out["regime_distance"] = law.regime_distance(scenario)
        out["warnings"] = law.regime_warnings(scenario)
    if s is None or not steps_per_h:
        return out
    columns = read_law(readings, np.array([s]), s0 or 0.0)
    step_time = 3600.0 / steps_per_h
    values = columns | to_target(
        columns,
        np.array([step_time]),
        np.ones(1),
        np.array([_derived(summary)["total_gpus"]]),
        np.array([_price(summary)]),
        baseline_lr,
        baseline_steps,
    )
    out |= {k: _scalar(v[0]) for k, v in values.items()}
    if sync_step_time_s is not None and sync_step_time_s > 0:
        out["sync_step_time_s"] = sync_step_time_s
        for suffix in suffixes(columns):
            time = out.get(f"time_per_baseline_step_s{suffix}")
            out[f"time_to_target_rel{suffix}"] = None if time is None else time / sync_step_time_s
    return out


def _derived(summary: RunSummary) -> dict[str, Any]:
    if summary.derived is None:
        raise ValueError("the law's time and cost to target need a simulated run's summary")
    return summary.derived


def _price(summary: RunSummary) -> float:
    price = _derived(summary)["gpu"].get("price_per_gpu_hour")
    return float("nan") if price is None else float(price)


def _scalar(value: float) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None
