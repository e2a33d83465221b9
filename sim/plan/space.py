"""The candidate space of a plan: every setup it names, resolved to a scenario or to the reason
it cannot run.

Each assignment of the space (the product of ``space``, times the union of ``variants``) is
laid over the base scenario. A GPU budget fixes the rollout engine count: the GPUs the learner
does not take, divided by the tensor-parallel size (all of them in ``sync_colocated`` mode,
where the learner shares the rollout GPUs). The result is validated like a scenario and run
through :func:`stalesim.sim.derived.derive`, the simulator's own feasibility checks, so an
infeasible candidate carries the same one-line reason ``stalesim simulate`` would print.
Candidates whose resolved scenarios are identical are one candidate (the first assignment
names it), so a key that does not matter in some mode adds no duplicates. Without a budget, a
colocated candidate derived from a base with separate pools shares all of that setup's GPUs
(its engines plus its learner GPUs), so that it is compared with the same GPU count.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stalesim.common.config_file import ConfigError, validate_config
from stalesim.sim.derived import Derived, derive
from stalesim.sim.modes import MODES
from stalesim.sim.plan.config import (
    BUDGET_KEY,
    MAX_CANDIDATES,
    PlanConfig,
    dotted,
    expand_values,
)
from stalesim.sim.presets import load_scenario
from stalesim.sim.scenario import Scenario


@dataclass
class Candidate:
    """One setup of the space."""

    index: int
    assignment: dict[str, Any]
    candidate_id: str = ""
    scenario: Scenario | None = None
    derived: Derived | None = None
    reason: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def feasible(self) -> bool:
        return self.reason is None

    def label(self) -> str:
        """The assignment in one line, e.g. ``gpu=H100 tp=1 mode=async max_staleness=2``."""
        return " ".join(f"{short_name(k)}={_show(v)}" for k, v in self.assignment.items())


def short_name(path: str) -> str:
    from stalesim.sim.plan.config import SHORTHANDS

    for short, full in SHORTHANDS.items():
        if full == path:
            return short
    return path


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def base_mapping(plan: PlanConfig, folder: Path | None) -> dict[str, Any]:
    """The base scenario as a full mapping (every key present)."""
    file = plan.base.file
    if file is not None and folder is not None and not file.is_absolute():
        file = folder / file
    overrides = tuple(f"{k}={json.dumps(v)}" for k, v in plan.base.set.items())
    scenario = load_scenario(str(file) if file is not None else None, plan.base.preset, overrides)
    return scenario.model_dump(mode="json")


def dimensions(plan: PlanConfig) -> list[dict[str, list[Any]]]:
    """The space as a union of products: one list of ``{path: values}`` per variant."""
    common = {dotted(k): expand_values(f"space.{k}", v) for k, v in plan.space.items()}
    budgets = plan.budgets()
    if budgets is not None and len(budgets) > 1:
        common = {BUDGET_KEY: budgets, **common}
    variants = plan.variants or [{}]
    out = []
    for i, variant in enumerate(variants):
        extra = {dotted(k): expand_values(f"variants[{i}].{k}", v) for k, v in variant.items()}
        out.append({**common, **extra})
    return out


def count_assignments(plan: PlanConfig) -> int:
    """How many assignments the space names (before duplicates collapse), without making them."""
    total = 0
    for dims in dimensions(plan):
        product = 1
        for values in dims.values():
            product *= len(values)
        total += product
    return total


def assignments(plan: PlanConfig) -> list[dict[str, Any]]:
    """Every assignment of the space, in the plan's order; a space of more than
    ``MAX_CANDIDATES`` is refused before any is made."""
    count = count_assignments(plan)
    if count > MAX_CANDIDATES:
        sizes = [
            " x ".join(f"{short_name(k)} {len(v)}" for k, v in dims.items())
            for dims in dimensions(plan)
        ]
        raise ConfigError(
            f"the plan's space names {count:,} candidates ({' + '.join(sizes)}); at most "
            f"{MAX_CANDIDATES:,}: narrow a range or split the plan"
        )
    found = []
    for dims in dimensions(plan):
        keys = list(dims)
        for values in itertools.product(*(dims[k] for k in keys)):
            found.append(dict(zip(keys, values, strict=True)))
    return found


def check_paths(plan: PlanConfig, base: dict[str, Any]) -> None:
    """Every space key is a scenario key and every value is valid on its own (a type error or
    an unknown key is the plan's mistake, not an infeasible candidate)."""
    if plan.budgets() is not None:
        for dims in dimensions(plan):
            if "cluster.rollout_engines" in dims:
                raise ConfigError(
                    "space: cluster.rollout_engines and budget_gpus both set the engine count; "
                    "give one of them"
                )
    sources = [("space", plan.space)] + [
        (f"variants[{i}]", variant) for i, variant in enumerate(plan.variants)
    ]
    for where, entries in sources:
        for key, spec in entries.items():
            path = dotted(key)
            for value in expand_values(f"{where}.{key}", spec):
                data = dict(base)
                _set(data, path, value, where=f"{where}.{key}")
                validate_config(Scenario, data, f"plan {where} {path}={_show(value)}")


def _set(data: dict[str, Any], path: str, value: Any, where: str) -> None:
    """Set ``path`` in ``data``, copying each section on the way (the others stay shared)."""
    keys = path.split(".")
    node = data
    for depth, key in enumerate(keys[:-1]):
        if key not in node:
            raise ConfigError(f"{where}: unknown key {'.'.join(keys[: depth + 1])}")
        child = node[key]
        if child is None:
            child = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: {'.'.join(keys[: depth + 1])} is a value, not a section")
        node[key] = child = dict(child)
        node = child
    if keys[-1] not in node:
        raise ConfigError(f"{where}: unknown key {path}")
    node[keys[-1]] = copy.deepcopy(value) if isinstance(value, dict | list) else value


def _get(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for key in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


#: Keys the budget and the prices may change besides the space's own.
_DERIVED_PATHS = ("cluster.rollout_engines", "cluster.learner_gpus", "hardware.price_per_gpu_hour")


def resolve(plan: PlanConfig, folder: Path | None = None) -> list[Candidate]:
    """Every distinct candidate of the plan, feasible ones with their scenario and derived
    quantities, infeasible ones with their reason."""
    base = base_mapping(plan, folder)
    check_paths(plan, base)
    budgets = plan.budgets()
    seen: dict[str, Candidate] = {}
    # an id names one resolved scenario: the same id in another plan is the same simulation
    base_values: dict[str, Any] = {}
    base_id = hashlib.sha1(json.dumps(base, sort_keys=True).encode()).hexdigest()
    out: list[Candidate] = []
    for assignment in assignments(plan):
        data = dict(base)
        budget = budgets[0] if budgets is not None and len(budgets) == 1 else None
        for path, value in assignment.items():
            if path == BUDGET_KEY:
                budget = value
            else:
                _set(data, path, value, where=f"space.{path}")
        candidate = Candidate(index=len(out), assignment=assignment)
        if budget is None and _colocated(data) and not _colocated(base):
            # like with like: the shared pool is every GPU the separate setup had
            cluster = data["cluster"]
            budget = cluster["rollout_engines"] * cluster["rollout_tp"] + cluster["learner_gpus"]
        reason = _apply_budget(data, budget)
        gpu = data["hardware"]["gpu"]
        if data["hardware"].get("price_per_gpu_hour") is None and gpu in plan.prices:
            _set(data, "hardware.price_per_gpu_hour", plan.prices[gpu], where="prices")
        # the resolved scenario is the base plus the touched keys that differ from it
        touched = sorted({*assignment, *_DERIVED_PATHS} - {BUDGET_KEY})
        values = [(p, _get(data, p)) for p in touched]
        changes = [(p, v) for p, v in values if v != base_values.setdefault(p, _get(base, p))]
        canonical = json.dumps({"base": base_id, "changes": changes}, sort_keys=True)
        candidate.candidate_id = hashlib.sha1(canonical.encode()).hexdigest()[:12]
        if candidate.candidate_id in seen:
            continue
        candidate.data = data
        if reason is None:
            try:
                candidate.scenario = validate_config(Scenario, data, "candidate")
                candidate.derived = derive(candidate.scenario)
            except ConfigError as exc:
                reason = str(exc).removeprefix("candidate: ")
        candidate.reason = reason
        if reason is not None:
            candidate.scenario = candidate.derived = None
        seen[candidate.candidate_id] = candidate
        out.append(candidate)
    return out


def _colocated(data: dict[str, Any]) -> bool:
    mode = data["algorithm"]["mode"]
    return mode in MODES and MODES[mode].colocated


def _apply_budget(data: dict[str, Any], budget: int | None) -> str | None:
    """Set the engine count the budget leaves; the reason when it leaves none that fits."""
    if budget is None:
        return None
    data["cluster"] = cluster = dict(data["cluster"])
    tp = cluster["rollout_tp"]
    colocated = _colocated(data)
    rollout = budget if colocated else budget - cluster["learner_gpus"]
    if rollout < tp:
        taken = "" if colocated else f" minus cluster.learner_gpus={cluster['learner_gpus']}"
        return (
            f"budget_gpus={budget}{taken} leaves {rollout} rollout GPUs, fewer than one engine "
            f"of cluster.rollout_tp={tp}"
        )
    if rollout % tp:
        taken = "" if colocated else f" minus cluster.learner_gpus={cluster['learner_gpus']}"
        return (
            f"budget_gpus={budget}{taken} leaves {rollout} rollout GPUs, not a multiple of "
            f"cluster.rollout_tp={tp}"
        )
    cluster["rollout_engines"] = rollout // tp
    if colocated:
        # the learner trains on the rollout GPUs; its own count plays no part
        cluster["learner_gpus"] = rollout
    return None
