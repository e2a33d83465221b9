"""How much a prediction rests on each coefficient: step time and speed-up under ±20% moves.

For a scenario, every built-in (or measured) coefficient that its time models use is moved down
and up by a relative step (20% by default), one at a time, and the scenario is simulated again
for a few steps with the same seed, so the runs share their random draws and differ only by
the coefficient. Each run is paired with its synchronous reference (the same cluster in mode
``sync``; for a scenario that is itself synchronous, in mode ``async``), which gives the
speed-up of going asynchronous: ``step time of the synchronous run / step time of the
asynchronous one``. (A ``sync_colocated`` scenario's ``async`` reference runs on the separate
pools its cluster section states, ``rollout_engines`` and ``learner_gpus``.) A coefficient
bounded above (an efficiency cannot pass 1) is clipped there, and the row says which value ran.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stalesim.common.config_file import ConfigError, validate_config
from stalesim.sim.derived import derive
from stalesim.sim.metrics import measure
from stalesim.sim.modes import MODES, OFF_POLICY_REFERENCE, ON_POLICY_REFERENCE
from stalesim.sim.run import simulate
from stalesim.sim.scenario import Scenario

RELATIVE_STEP = 0.2
MAX_STEPS = 20

#: Coefficients of the roofline decode model, of the roofline learner, and of both.
DECODE_ROOFLINE = (
    "cluster.rollout_memory_efficiency",
    "cluster.rollout_compute_efficiency",
    "cluster.decode_overhead_s",
)
DECODE_MEASURED = (
    "cluster.decode_coefficients.a_s",
    "cluster.decode_coefficients.beta_s_per_token",
    "cluster.decode_coefficients.gamma_s_per_seq",
    "cluster.decode_coefficients.prefill_s_per_token",
)
LEARNER_ROOFLINE = ("cluster.learner_mfu", "cluster.learner_forward_mfu")
LEARNER_MEASURED = (
    "cluster.learner_coefficients.train_gpu_s_per_token",
    "cluster.learner_coefficients.forward_gpu_s_per_token",
    "cluster.learner_coefficients.step_overhead_s",
)
COLOCATED = ("cluster.colocated_switch_latency_s", "cluster.host_link_efficiency")

Progress = Callable[[int, int], None]


def coefficients(scenario: Scenario) -> list[str]:
    """The dotted keys of the coefficients this scenario's time models use."""
    cluster = scenario.cluster
    derived = derive(scenario)
    keys: list[str] = []
    if cluster.decode_coefficients is None:
        keys += DECODE_ROOFLINE
        if cluster.rollout_tp > 1:
            keys.append("cluster.tp_allreduce_latency_s")
    else:
        keys += DECODE_MEASURED
    measured = cluster.learner_coefficients
    if measured is None:
        keys += LEARNER_ROOFLINE
    else:
        keys += [
            k for k in LEARNER_MEASURED if _get(scenario.model_dump(mode="json"), k) is not None
        ]
    if (cluster.decode_coefficients is None and cluster.rollout_tp > 1) or measured is None:
        keys.append("cluster.allreduce_efficiency")
    if derived.learner_gpus > cluster.learner_dp_linear_gpus:
        keys.append("cluster.learner_dp_scaling")
    if derived.colocated:
        keys += COLOCATED
    keys.append("weight_sync.latency_s")
    return keys


def reference_mode(scenario: Scenario) -> str:
    """The mode the scenario's speed-up is measured against (or with, for a sync scenario)."""
    if MODES[scenario.algorithm.mode].on_policy:
        return OFF_POLICY_REFERENCE
    return ON_POLICY_REFERENCE


def with_mode(scenario: Scenario, mode: str) -> Scenario:
    """The same cluster and workload in another mode, with the settings that mode does not
    take reset to their defaults."""
    data = scenario.model_dump(mode="json")
    algorithm = data["algorithm"]
    spec = MODES[mode]
    algorithm["mode"] = mode
    if not spec.inflight_updates:
        algorithm["inflight_updates"] = False
    if not spec.preempts:
        algorithm["round_token_budget"] = None
    if not spec.own_publication:
        algorithm["publish_interval"] = None
        algorithm["max_stale_fraction"] = None
        algorithm["consumption_order"] = "completion"
    if spec.colocated:
        algorithm["streaming"] = False
    if spec.on_policy:
        algorithm["staleness_filter"] = None
    if not (spec.preempts or algorithm["inflight_updates"]):
        algorithm["kv_cache_on_update"] = None
    return validate_config(Scenario, data, f"algorithm.mode={mode}")


def step_time_s(scenario: Scenario, steps: int, seed: int) -> float:
    """Mean learner step time after the warm-up: the run summary's ``step_time_s.mean``."""
    return measure(simulate(scenario, steps, seed)).step_time_s.mean


def _get(data: dict[str, Any], key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _set(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[last] = value


def _upper_bound(key: str) -> float | None:
    *_, field = key.split(".")
    model: Any = Scenario
    for part in key.split(".")[:-1]:
        annotation = model.model_fields[part].annotation
        model = next(
            (
                a
                for a in getattr(annotation, "__args__", (annotation,))
                if hasattr(a, "model_fields")
            ),
            annotation,
        )
    for meta in model.model_fields[field].metadata:
        for name in ("le", "lt"):
            bound = getattr(meta, name, None)
            if bound is not None:
                return float(bound)
    return None


def _resolved(scenario: Scenario, key: str) -> float:
    """The value an unset coefficient takes: the learner's MFUs default to the GPU's own."""
    from stalesim.sim.derived import learner_mfus

    names = {"cluster.learner_mfu": 0, "cluster.learner_forward_mfu": 1}
    if key not in names:
        raise ConfigError(f"{key}: no value to perturb")
    return learner_mfus(scenario, scenario.hardware.spec())[names[key]]


def perturbed(scenario: Scenario, key: str, factor: float) -> tuple[Scenario, float]:
    """The scenario with ``key`` multiplied by ``factor`` (clipped to its upper bound)."""
    data = scenario.model_dump(mode="json")
    value = _get(data, key)
    if value is None:  # unset: the value the scenario runs with
        value = _resolved(scenario, key)
    new = float(value) * factor
    bound = _upper_bound(key)
    if bound is not None:
        new = min(new, bound)
    _set(data, key, new)
    return validate_config(Scenario, data, key), new


def sensitivity(
    scenario: Scenario,
    steps: int = MAX_STEPS,
    seed: int = 0,
    relative_step: float = RELATIVE_STEP,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Step time and asynchronous speed-up at the scenario's coefficients and at each one moved
    by ``-relative_step`` and ``+relative_step``; runs ``min(steps, MAX_STEPS)`` steps each."""
    steps = max(2, min(steps, MAX_STEPS))
    keys = coefficients(scenario)
    other = reference_mode(scenario)
    total = 2 + 4 * len(keys)
    done = 0

    def pair(s: Scenario) -> tuple[float, float | None]:
        nonlocal done
        own = step_time_s(s, steps, seed)
        done += 1
        if progress is not None:
            progress(done, total)
        try:
            ref = step_time_s(with_mode(s, other), steps, seed)
        except ConfigError:  # the cluster cannot run the reference mode (its memory checks)
            ref = None
        done += 1
        if progress is not None:
            progress(done, total)
        if ref is None:
            return own, None
        sync_s, async_s = (ref, own) if MODES[other].on_policy else (own, ref)
        return own, sync_s / async_s

    base_step, base_speedup = pair(scenario)
    rows = []
    for key in keys:
        value = float(_get(scenario.model_dump(mode="json"), key))
        for direction, factor in (("low", 1.0 - relative_step), ("high", 1.0 + relative_step)):
            moved, used = perturbed(scenario, key, factor)
            step, speedup = pair(moved)
            rows.append(
                {
                    "key": key,
                    "direction": direction,
                    "value": value,
                    "moved_to": used,
                    "step_time_s": step,
                    "step_time_change": step / base_step - 1.0,
                    "speedup": speedup,
                    "speedup_change": None
                    if speedup is None or base_speedup is None
                    else speedup / base_speedup - 1.0,
                }
            )
    return {
        "relative_step": relative_step,
        "steps": steps,
        "seed": seed,
        "mode": scenario.algorithm.mode,
        "reference_mode": other,
        "step_time_s": base_step,
        "speedup": base_speedup,
        "rows": rows,
    }
