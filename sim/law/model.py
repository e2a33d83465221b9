"""The staleness–learning-rate law: how far the best and the largest stable learning rate fall
as rollouts get staler, and how many steps the best learning rate needs to reach the target.

The family (DESIGN.md, "The staleness–learning-rate law") is the smooth form of the paper's
``min{horizon limit, stale limit / S}``::

    eta(S) = eta0 / (1 + (S / s_c) ** k) ** (alpha / k)

flat at ``eta0`` while ``S << s_c`` (horizon-limited), falling as ``S ** -alpha`` once
``S >> s_c`` (stale-limited; the paper predicts ``alpha ≈ 1``), with ``k`` setting how sharp
the knee is. ``steps_to_target`` is modelled as ``steps0 * (eta_opt(S) / eta_opt(0)) ** -p`` (``p = 1`` is
"the same distance travelled at a slower pace"), or directly in ``S`` when the data say
otherwise (see :class:`StepsModel`).

A fitted law is a JSON file (``law.json``) holding the parameters, their bootstrap intervals,
the per-S points they came from, the fit quality, model-free local slopes, where it came from,
and the **regime** it was measured in (objective, optimizer, batch, horizon, staleness range,
model size): a law measured in one regime says little about another (the paper's knee moves with
batch size and horizon), so :func:`regime_warnings` tells a caller when a scenario lies outside
it. This module reads and evaluates it; ``stalesim.validate.law.fit`` produces it. No torch, no
scipy.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

#: What the paper (arXiv 2607.01083) predicts for ``alpha`` in the stale-limited regime.
PAPER_ALPHA = 1.0

LAW_SCHEMA = "stalesim.law/2"
#: Law files this module reads: /1 has no regime, slopes or lag axis.
LAW_SCHEMAS = ("stalesim.law/1", "stalesim.law/2")

CURVE_PARAMS = ("eta0", "s_c", "k", "alpha")
STEPS_PARAMS = ("steps0", "p")


def law_curve(
    staleness: float | np.ndarray, eta0: float, s_c: float, k: float, alpha: float
) -> np.ndarray:
    """``eta0 / (1 + (S / s_c) ** k) ** (alpha / k)`` evaluated elementwise (``S >= 0``)."""
    s = np.asarray(staleness, dtype=float)
    return eta0 / (1.0 + (np.maximum(s, 0.0) / s_c) ** k) ** (alpha / k)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FitQuality(_Frozen):
    """How well a curve matches the points it was fitted to; residuals are natural-log ratios
    ``ln(point / curve)``, so 0.1 means the point sits about 10% above the curve."""

    n_points: int
    r2_log: float | None = None
    rmse_log: float | None = None
    residuals_log: list[float] = Field(default_factory=list)


class Band(_Frozen):
    """Pointwise bootstrap band of a curve on a staleness grid (lower and upper percentile)."""

    staleness: list[float]
    lo: list[float]
    hi: list[float]


class LawCurve(_Frozen):
    """One fitted ``eta(S)`` curve of the family, with bootstrap percentile intervals."""

    eta0: float = Field(gt=0)
    s_c: float = Field(gt=0)
    k: float = Field(gt=0)
    alpha: float = Field(ge=0)
    intervals: dict[str, tuple[float, float]] = Field(default_factory=dict)
    fixed: list[str] = Field(default_factory=list)
    quality: FitQuality | None = None
    band: Band | None = None

    def __call__(self, staleness: float | np.ndarray) -> np.ndarray:
        return law_curve(staleness, self.eta0, self.s_c, self.k, self.alpha)


class StepsModel(_Frozen):
    """Learner steps to the target reward when training at ``eta_opt(S)``, in one of two forms:

    * ``eta_ratio``: ``steps0 * (eta_opt(S) / eta_opt(0)) ** -p`` — the paper's picture, the
      same distance travelled at the pace the best learning rate allows (``p = 1``);
    * ``staleness``: ``steps0 * (1 + (S / s_c) ** k) ** (beta / k)`` — the law family read
      upside down, for when steps keep growing with S while ``eta_opt`` does not move.

    The fit picks the form with the lower AIC on ``ln(steps)`` and records the other form's
    quality in ``alternative``.
    """

    form: Literal["eta_ratio", "staleness"] = "eta_ratio"
    steps0: float = Field(gt=0)
    p: float | None = None
    p_fixed: bool = False
    s_c: float | None = Field(None, gt=0)
    k: float | None = Field(None, gt=0)
    beta: float | None = None
    intervals: dict[str, tuple[float, float]] = Field(default_factory=dict)
    quality: FitQuality | None = None
    alternative: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _has_its_parameters(self) -> StepsModel:
        needed = ("p",) if self.form == "eta_ratio" else ("s_c", "k", "beta")
        missing = [name for name in needed if getattr(self, name) is None]
        if missing:
            raise ValueError(f"form {self.form!r} needs {', '.join(missing)}")
        return self

    def describe(self) -> str:
        """The fitted formula in one line, with 95% intervals where the fit has them."""

        def with_interval(name: str) -> str:
            value = getattr(self, name)
            lo_hi = self.intervals.get(name)
            text = f"{name} = {value:.3g}"
            return text + (f" [{lo_hi[0]:.3g}, {lo_hi[1]:.3g}]" if lo_hi else "")

        if self.form == "eta_ratio":
            p = with_interval("p") + (" (held at 1: eta_opt hardly moves)" if self.p_fixed else "")
            return (
                f"steps_to_target(S) = steps0 · (eta_opt(S)/eta_opt(0))^-p, "
                f"{with_interval('steps0')}, {p}"
            )
        return "steps_to_target(S) = steps0 · (1 + (S/s_c)^k)^(beta/k), " + ", ".join(
            with_interval(n) for n in ("steps0", "s_c", "k", "beta")
        )

    def at(self, staleness: float | np.ndarray, eta_ratio: float | np.ndarray) -> np.ndarray:
        """Steps at staleness ``S`` whose best learning rate is ``eta_ratio * eta_opt(0)``."""
        if self.form == "eta_ratio":
            return self.steps0 * np.asarray(eta_ratio, dtype=float) ** (-self.p)
        s = np.maximum(np.asarray(staleness, dtype=float), 0.0)
        return self.steps0 * (1.0 + (s / self.s_c) ** self.k) ** (self.beta / self.k)


class Regime(_Frozen):
    """What a law was measured on; every field optional (old files have none)."""

    objective: str | None = None
    optimizer: str | None = None
    prompts_per_step: int | None = None
    samples_per_prompt: int | None = None
    minibatches_per_step: int | None = None
    steps: int | None = Field(None, description="the training horizon of the runs")
    staleness_range: tuple[int, int] | None = None
    realised_lag_range: tuple[float, float] | None = None
    model: str | None = None
    model_params: int | None = None
    task: str | None = None
    saturated: bool | None = Field(
        None,
        description="whether the task's reward flattened out within the horizon, measured on "
        "the sweep's on-policy runs (None: not measured)",
    )
    saturation: str | None = Field(None, description="that measurement in words")

    def saturation_words(self) -> str:
        """``saturated within its horizon``, ``did not saturate ...`` or ``... not measured``."""
        if self.saturated is None:
            return "saturation not measured"
        if self.saturated:
            return "saturated within its horizon"
        return "did not saturate within its horizon"

    def label(self) -> str:
        """What a reading must be labelled with, in one line: task, model size, batch, horizon
        and whether the task saturated."""
        batch = (
            f"{self.prompts_per_step} x {self.samples_per_prompt} samples per step"
            if self.prompts_per_step and self.samples_per_prompt
            else "batch not recorded"
        )
        if (self.minibatches_per_step or 1) > 1:
            batch += f" in {self.minibatches_per_step} mini-batches"
        return "; ".join(
            [
                self.task or "task not recorded",
                f"{self.model_params:,}-parameter policy"
                if self.model_params
                else "model size not recorded",
                batch,
                f"{self.steps}-step horizon" if self.steps else "horizon not recorded",
                self.saturation_words(),
            ]
        )

    def describe(self) -> str:
        """The regime in one line: :meth:`label` first, then objective, optimizer, staleness
        range and architecture."""
        if not any(getattr(self, name) is not None for name in type(self).model_fields):
            return "unknown regime"
        parts = [self.label()]
        if self.objective:
            parts.append(self.objective)
        if self.optimizer:
            parts.append(self.optimizer)
        if self.staleness_range:
            parts.append(f"S {self.staleness_range[0]}..{self.staleness_range[1]}")
        if self.model:
            parts.append(self.model)
        return "; ".join(parts)


class Law(_Frozen):
    """A fitted staleness–learning-rate law, as stored in ``law.json``.

    ``staleness_summary`` says which summary of a staleness distribution ``S`` stands for when
    the law is applied to a setup whose staleness varies (``max``, ``p99``, ``mean`` or
    ``token_mean``); the validator picks it from held-out error where the data allow.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Literal["stalesim.law/1", "stalesim.law/2"] = Field(LAW_SCHEMA, alias="schema")
    staleness_summary: Literal["max", "p99", "mean", "token_mean"] = "max"
    lag_axis: Literal["nominal", "realised"] = Field(
        "nominal",
        description="what S the curves take: the nominal fixed staleness, or the realised mean "
        "lag of the runs (lower than S while the pipeline fills)",
    )
    regime: Regime | None = None
    slopes: dict[str, Any] | None = None
    failures: list[dict[str, Any]] = Field(
        default_factory=list, description="the failed runs: run_id and the rule that failed it"
    )
    eta_opt: LawCurve
    eta_max: LawCurve | None = None
    steps_to_target: StepsModel | None = None
    alpha_paper: float = PAPER_ALPHA
    points: list[dict[str, Any]] = Field(default_factory=list)
    summary_comparison: dict[str, Any] | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    source: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)

    def eta_opt_at(self, staleness: float | np.ndarray) -> np.ndarray:
        """The best learning rate at staleness ``S``."""
        return self.eta_opt(staleness)

    def eta_max_at(self, staleness: float | np.ndarray) -> np.ndarray:
        """The largest stable learning rate at ``S`` (needs a fitted ``eta_max``)."""
        if self.eta_max is None:
            raise ValueError("this law has no eta_max fit (no run collapsed in its sweep)")
        return self.eta_max(staleness)

    def steps_to_target_at(self, staleness: float | np.ndarray) -> np.ndarray:
        """Learner steps to the target reward when training at ``eta_opt(S)``."""
        if self.steps_to_target is None:
            raise ValueError("this law has no steps_to_target model (target never reached)")
        ratio = self.eta_opt(staleness) / self.eta_opt(0.0)
        return self.steps_to_target.at(staleness, ratio)

    def regime_warnings(self, scenario: Any) -> list[str]:
        """Where ``scenario`` lies outside what this law was measured on (see
        :func:`regime_warnings`)."""
        return regime_warnings(scenario, self)

    def regime_distance(self, scenario: Any) -> str | None:
        """How far ``scenario`` is from what this law was measured on (see
        :func:`regime_distance`)."""
        return regime_distance(scenario, self)

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON form written to ``law.json``."""
        return self.model_dump(mode="json", by_alias=True)


def _scenario_staleness(scenario: Any) -> tuple[int, int]:
    """(optimizer steps per learner step, the largest staleness in versions it can reach)."""
    from stalesim.sim.modes import MODES

    algorithm = getattr(scenario, "algorithm", None)
    minibatches = int(getattr(algorithm, "minibatches_per_step", 1) or 1)
    mode = getattr(algorithm, "mode", "async")
    on_policy = MODES[mode].on_policy if mode in MODES else False
    staleness = 0 if on_policy else int(getattr(algorithm, "max_staleness", 0))
    # staleness counts optimizer steps (versions): mini-batch m of a step is m versions staler
    return minibatches, staleness * minibatches + (minibatches - 1)


def _model_params(scenario: Any) -> float | None:
    """The scenario's parameter count, from its explicit ``model.params`` or its preset."""
    model = getattr(scenario, "model", None)
    spec = getattr(model, "spec", None)
    if callable(spec):
        try:
            return float(spec().params)
        except (ValueError, KeyError):
            return None
    params = getattr(model, "params", None)
    return None if params is None else float(params)


def regime_distance(scenario: Any, law: Law) -> str | None:
    """One line on how far ``scenario`` is from what ``law`` was measured on: model size,
    samples per step and training horizon (the baseline's steps where the scenario's ``target``
    gives them), each as a factor. None when the law carries no regime."""
    regime = law.regime
    if regime is None:
        return None
    parts = []
    params = _model_params(scenario)
    if params and regime.model_params:
        parts.append(
            f"model {params:.3g} parameters ({params / regime.model_params:,.0f}x the measured "
            f"{regime.model_params:.3g})"
        )
    workload = getattr(scenario, "workload", None)
    if workload is not None and regime.prompts_per_step and regime.samples_per_prompt:
        measured = regime.prompts_per_step * regime.samples_per_prompt
        samples = int(workload.prompts_per_step) * int(workload.group_size)
        parts.append(
            f"{samples:,} samples per step ({samples / measured:.3g}x the measured {measured})"
        )
    steps = getattr(getattr(scenario, "target", None), "baseline_steps", None)
    if regime.steps:
        parts.append(
            f"a {steps:,.0f}-step baseline ({steps / regime.steps:.3g}x the measured "
            f"{regime.steps}-step runs)"
            if steps
            else f"measured over {regime.steps}-step runs (your horizon: set target.baseline_steps)"
        )
    if not parts:
        return None
    return (
        f"the law was measured on {regime.task or 'a small task'} with "
        f"{regime.model or 'a small model'}; this scenario: " + "; ".join(parts) + ". Only its "
        "ratios eta(S)/eta(0) and steps(S)/steps(0) are applied to your run."
    )


def regime_warnings(scenario: Any, law: Law) -> list[str]:
    """One line per way in which ``scenario`` (a ``stalesim.sim.scenario.Scenario``) lies outside
    the regime ``law`` was measured in, beyond the distance every scenario has (which
    :func:`regime_distance` states once): staleness beyond the measured range, a different
    number of mini-batches per step. Empty when none applies.
    """
    regime = law.regime
    if regime is None:
        return [
            "the law carries no regime description (an old law file): nothing says which "
            "objective, optimizer or batch size it holds for"
        ]
    warnings = []
    minibatches, versions = _scenario_staleness(scenario)
    if regime.staleness_range is not None and versions > regime.staleness_range[1]:
        warnings.append(
            f"staleness up to {versions} versions is beyond the measured range "
            f"(S <= {regime.staleness_range[1]}): the law is extrapolated there"
        )
    if regime.minibatches_per_step is not None and minibatches != regime.minibatches_per_step:
        warnings.append(
            f"{minibatches} optimizer steps per learner step; the law was measured with "
            f"{regime.minibatches_per_step}"
        )
    return warnings


def slope_verdict(lo: float, hi: float, one_over_s: Sequence[float], flat: Sequence[float]) -> str:
    """What a slope interval ``[lo, hi]`` of ``d ln eta / d ln S`` shows, as an equivalence
    test against the bands ``one_over_s`` and ``flat`` (``(low, high)`` each): ``one_over_s`` or
    ``flat`` when the whole interval lies inside that band; ``steeper`` (below the 1/S band),
    ``falls_slower`` (between the bands), ``falls`` (below the flat band, not settled against
    1/S) or ``rises`` (above the flat band) when it lies wholly on one side; ``degenerate``
    when it has no spread; ``inconclusive`` otherwise. The fit writes these verdicts and the
    bands into ``law.json``; a page re-reads them with the same rule."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "inconclusive"
    if hi - lo < 1e-6:
        # every replicate gave the same slope: the grid quantised it, the seeds did not vary it
        return "degenerate"
    if one_over_s[0] <= lo and hi <= one_over_s[1]:
        return "one_over_s"
    if flat[0] <= lo and hi <= flat[1]:
        return "flat"
    if hi < one_over_s[0]:
        return "steeper"
    if lo > one_over_s[1] and hi < flat[0]:
        return "falls_slower"
    if hi < flat[0]:
        return "falls"
    if lo > flat[1]:
        return "rises"
    return "inconclusive"


def ratio_verdict(lo: float | None, hi: float | None, flat: Sequence[float] | None) -> str:
    """What a ratio interval ``[lo, hi]`` such as ``eta(S_1)/eta(0)`` shows against the flat band
    ``flat`` (``(low, high)``): ``flat`` inside it, ``falls`` wholly below it, ``rises`` wholly
    above, else (or without a band) ``inconclusive``. The fit and the pages read it alike."""
    if lo is None or hi is None or not flat or not (np.isfinite(lo) and np.isfinite(hi)):
        return "inconclusive"
    if flat[0] <= lo and hi <= flat[1]:
        return "flat"
    if hi < flat[0]:
        return "falls"
    if lo > flat[1]:
        return "rises"
    return "inconclusive"


def law_from_dict(data: Any, where: str = "law") -> Law:
    """Validate a parsed ``law.json``; a malformed one is a one-line ValueError."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
    try:
        return Law.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(top)"
        raise ValueError(
            f"{where}: malformed law at {key!r} (value {first.get('input')!r}): {first['msg']}"
        ) from None


def load_law(path: str | Path) -> Law:
    """Read a ``law.json`` written by ``stalesim fit``."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such law file") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON (line {exc.lineno}: {exc.msg})") from None
    return law_from_dict(data, where=str(path))


__all__ = [
    "CURVE_PARAMS",
    "LAW_SCHEMA",
    "LAW_SCHEMAS",
    "PAPER_ALPHA",
    "STEPS_PARAMS",
    "Band",
    "FitQuality",
    "Law",
    "LawCurve",
    "Regime",
    "StepsModel",
    "law_curve",
    "law_from_dict",
    "load_law",
    "ratio_verdict",
    "regime_distance",
    "regime_warnings",
    "slope_verdict",
]
