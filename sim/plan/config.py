"""The plan file: a base scenario, a search space over scenario keys, and how to judge a setup.

A plan is YAML, validated like a scenario (unknown keys are errors, every error one line)::

    base: {preset: default, file: null, set: {model.preset: qwen2.5-7b}}
    budget_gpus: 16                    # or a list; null: GPU counts come from the space
    prices: {H200: 3.79}               # $/GPU-hour for GPUs the catalog has no price for
    space:                             # dotted scenario paths (or shorthands) -> values
      gpu: [H100, A100-80GB]
      learner_gpus: {from: 4, to: 12, step: 2}
      tp: [1, 2]
    variants:                          # a union of sub-spaces, each multiplied with `space`
      - {mode: [sync]}
      - {mode: [async], max_staleness: {from: 1, to: 8, times: 2}}
    target: {objective: time, batch_scaling: samples}
    evaluation: {steps: 30, seed: 0, screen: true, keep_top: 5}

A value list is a YAML list, a single value, or a range: ``{from, to, step}`` (arithmetic,
both ends included) or ``{from, to, times}`` (geometric). Keys are dotted scenario paths, so
a key the simulator gains tomorrow is searchable without plan code; the shorthands below only
save typing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from stalesim.common.config_file import (
    ConfigError,
    StrictModel,
    apply_overrides,
    deep_merge,
    read_yaml_mapping,
    validate_config,
)

#: Short names for the keys a capacity plan varies most; any dotted scenario path works too.
SHORTHANDS: dict[str, str] = {
    "gpu": "hardware.gpu",
    "model": "model.preset",
    "engines": "cluster.rollout_engines",
    "tp": "cluster.rollout_tp",
    "learner_gpus": "cluster.learner_gpus",
    "mode": "algorithm.mode",
    "max_staleness": "algorithm.max_staleness",
    "inflight_updates": "algorithm.inflight_updates",
    "minibatches": "algorithm.minibatches_per_step",
    "streaming": "algorithm.streaming",
    "prompts_per_step": "workload.prompts_per_step",
    "group_size": "workload.group_size",
}

#: The pseudo-key of the GPU budget when it takes several values.
BUDGET_KEY = "budget_gpus"

#: A range may not expand to more values than this (a typo like ``step: 0.001`` would).
MAX_RANGE_VALUES = 10_000
#: A plan may not name more candidates than this: each range may be under its cap while their
#: product still runs out of memory.
MAX_CANDIDATES = 200_000


class BaseScenario(StrictModel):
    """The scenario every candidate starts from: a preset, then a file, then dotted keys."""

    preset: str | None = None
    # YAML gives a string; the strict models take no string for a Path without this
    file: Path | None = Field(default=None, strict=False)
    set: dict[str, Any] = Field(default_factory=dict)


class Target(StrictModel):
    """How a candidate's setup turns into time and cost to the target reward.

    The law counts optimizer steps at a reference batch: ``samples_per_update`` samples per
    optimizer step (default: the base scenario's ``B * G / minibatches``). ``batch_scaling``
    says how a candidate with another batch needs more or fewer steps: ``samples`` (the same
    samples to target: linear scaling below the critical batch) or ``updates`` (the same
    number of optimizer steps whatever the batch).
    """

    objective: Literal["time", "cost"] = "time"
    batch_scaling: Literal["samples", "updates"] = "samples"
    samples_per_update: float | None = Field(default=None, gt=0)


class Evaluation(StrictModel):
    """How candidates are simulated and which ones the screen may skip."""

    steps: int = Field(default=30, ge=2, description="learner steps per simulation")
    seed: int = Field(default=0, ge=0)
    screen: bool = Field(
        default=True, description="skip the simulation of candidates that cannot win"
    )
    keep_top: int = Field(
        default=5, ge=2, description="the best this many are always simulated, per objective"
    )
    probe: int = Field(
        default=3, ge=1, description="candidates simulated per mode before the screen trusts it"
    )
    safety: float = Field(
        default=0.85,
        gt=0,
        le=1,
        description="the screen's calibration is shrunk by this factor before it discards",
    )
    round_size: int = Field(
        default=32,
        ge=1,
        description="candidates chosen per round (fixed: results never "
        "depend on the number of workers)",
    )


class PlanConfig(StrictModel):
    """A whole plan."""

    name: str = "plan"
    base: BaseScenario = BaseScenario()
    budget_gpus: int | list[int] | None = None
    prices: dict[str, float] = Field(default_factory=dict)
    space: dict[str, Any] = Field(default_factory=dict)
    variants: list[dict[str, Any]] = Field(default_factory=list)
    target: Target = Target()
    evaluation: Evaluation = Evaluation()
    notes: list[str] = Field(
        default_factory=list,
        description="what the command line changed in the space (written by load_plan)",
    )

    @field_validator("budget_gpus")
    @classmethod
    def _positive(cls, value: int | list[int] | None) -> int | list[int] | None:
        values = value if isinstance(value, list) else [value]
        if any(v is not None and v < 1 for v in values) or values == []:
            raise ValueError("must be a positive GPU count or a non-empty list of them")
        return value

    @field_validator("prices")
    @classmethod
    def _non_negative(cls, prices: dict[str, float]) -> dict[str, float]:
        for gpu, price in prices.items():
            if price < 0:
                raise ValueError(f"{gpu}: a price cannot be negative")
        return prices

    def budgets(self) -> list[int] | None:
        if self.budget_gpus is None:
            return None
        return self.budget_gpus if isinstance(self.budget_gpus, list) else [self.budget_gpus]


def dotted(key: str) -> str:
    """The scenario path a space key names (shorthands expanded)."""
    return SHORTHANDS.get(key, key)


def expand_values(where: str, spec: Any) -> list[Any]:
    """A space entry as its list of values: a list, a range mapping, or one value."""
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"{where}: an empty list of values")
        return list(spec)
    if isinstance(spec, Mapping) and "from" in spec:
        return _range(where, spec)
    return [spec]


def _range(where: str, spec: Mapping[str, Any]) -> list[Any]:
    unknown = set(spec) - {"from", "to", "step", "times"}
    if unknown:
        raise ConfigError(
            f"{where}: unknown range key {sorted(unknown)[0]!r}; allowed: from, to, step, times"
        )
    start, stop = spec.get("from"), spec.get("to")
    numbers = (start, stop, spec.get("step", 1), spec.get("times", 2))
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in numbers):
        raise ConfigError(f"{where}: a range needs numbers for from and to (and step or times)")
    if not all(math.isfinite(x) for x in numbers):
        raise ConfigError(f"{where}: a range needs finite numbers, got {dict(spec)}")
    if "step" in spec and "times" in spec:
        raise ConfigError(f"{where}: give step (arithmetic) or times (geometric), not both")
    if stop < start:
        raise ConfigError(f"{where}: to={stop} is below from={start}")
    integral = all(float(x).is_integer() for x in numbers if x is not None) and not any(
        isinstance(x, float) for x in (start, stop, spec.get("step", 1))
    )
    values: list[float] = []
    if "times" in spec:
        factor = spec["times"]
        if factor <= 1 or start <= 0:
            raise ConfigError(f"{where}: a geometric range needs from > 0 and times > 1")
        value = float(start)
        while value <= stop * (1 + 1e-9) and len(values) <= MAX_RANGE_VALUES:
            values.append(value)
            value *= factor
    else:
        step = spec.get("step", 1)
        if step <= 0:
            raise ConfigError(f"{where}: step={step} must be positive")
        count = math.floor((stop - start) / step + 1e-9) + 1
        if count > MAX_RANGE_VALUES:
            raise ConfigError(
                f"{where}: the range has {count:,} values; at most {MAX_RANGE_VALUES:,}"
            )
        values = [start + i * step for i in range(count)]
    if len(values) > MAX_RANGE_VALUES:
        raise ConfigError(f"{where}: the range has over {MAX_RANGE_VALUES:,} values")
    return [round(v) if integral else v for v in values]


def load_plan(
    path: str | Path | None = None,
    *,
    overrides: tuple[str, ...] = (),
    budget_gpus: int | None = None,
    gpus: tuple[str, ...] = (),
    objective: str | None = None,
) -> tuple[PlanConfig, Path | None]:
    """The plan (the built-in default when ``path`` is None) with the command line laid over:
    ``overrides`` set base-scenario keys, ``budget_gpus`` / ``gpus`` / ``objective`` replace
    the plan's. Returns the plan and the folder its relative paths are read from."""
    from importlib import resources

    if path is None:
        text = resources.files("stalesim.sim").joinpath("data", "default-plan.yaml").read_text()
        import yaml

        data = yaml.safe_load(text) or {}
        source, folder = "default plan", None
    else:
        data = read_yaml_mapping(path)
        source, folder = str(path), Path(path).parent
    if overrides:
        base = data.get("base") if isinstance(data.get("base"), dict) else {}
        sets = dict(base.get("set") or {}) if isinstance(base.get("set") or {}, dict) else {}
        notes = []
        for item in overrides:
            flat = _flatten(apply_overrides({}, [item]))
            sets.update(flat)
            # a fragment file (@FILE) is part of the base; only an explicit key fixes the space
            if not item.startswith("@"):
                for path, value in flat.items():
                    notes += _narrow(data, path, value)
        data = deep_merge(data, {"base": {**base, "set": sets}})
        data["notes"] = [*(data.get("notes") or []), *notes]
    if budget_gpus is not None:
        if budget_gpus < 1:
            raise ConfigError(f"--budget-gpus={budget_gpus}: must be at least 1")
        data["budget_gpus"] = budget_gpus
    if gpus:
        data["space"] = {**_without_gpu(data.get("space")), "hardware.gpu": list(gpus)}
        if isinstance(data.get("variants"), list):
            data["variants"] = [_without_gpu(variant) for variant in data["variants"]]
    if objective is not None:
        target = data.get("target") if isinstance(data.get("target"), dict) else {}
        data["target"] = {**target, "objective": objective}
    plan = validate_config(PlanConfig, data, source)
    return plan, folder


def _narrow(data: dict[str, Any], path: str, value: Any) -> list[str]:
    """A ``--set`` of a key the space varies fixes it there too (else the space's values would
    silently win over the command line); one note per place narrowed."""
    notes = []
    places = [("space", data.get("space"))]
    if isinstance(data.get("variants"), list):
        places += [(f"variants[{i}]", v) for i, v in enumerate(data["variants"])]
    for where, entries in places:
        if not isinstance(entries, dict):
            continue
        for key in list(entries):
            if dotted(str(key)) == path:
                before = entries[key]
                entries[key] = [value]
                notes.append(
                    f"--set {path}={value!r} fixes {where}.{key} (the plan varied it over "
                    f"{before!r})"
                )
    return notes


def _without_gpu(entries: Any) -> Any:
    if not isinstance(entries, dict):
        return entries if entries is not None else {}
    return {k: v for k, v in entries.items() if dotted(str(k)) != "hardware.gpu"}


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value and "kind" not in value:
            flat.update(_flatten(value, path))
        else:
            flat[path] = value
    return flat
