"""The independent check: simulate published setups of real asynchronous RL trainers and set the
predicted speed-up of going asynchronous beside the one their authors measured.

Each published setup is a pair of scenario files in ``sim/data/published/`` (the synchronous
baseline and the asynchronous run, every setup figure cited in the file's comments) and an entry
of ``sim/data/published/measurements.yaml`` (what was measured, where). The measurements are read
here only: no time model sees them, so nothing is fitted to them. The predicted speed-up is the
synchronous scenario's mean step time over the asynchronous one's (steps after the warm-up, as
``stalesim simulate`` reports ``step_time_s.mean``), from traces of the same length and seed.

Mechanism rows rerun a pair with one switch flipped (streaming off, in-flight updates off, the
old-logprob pass on, dynamic sampling off, a drop filter on) to show which mechanisms move the
prediction; a switch a scenario's mode does not allow is reported as not applicable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from pydantic import Field
from stalesim.common.config_file import (
    ConfigError,
    StrictModel,
    read_yaml_mapping,
    validate_config,
)
from stalesim.sim.calibrate.logs import LogCalibration, calibrate_log, with_fragment
from stalesim.sim.calibrate.trainer_logs import log_from_rows
from stalesim.sim.metrics import measure
from stalesim.sim.presets import load_scenario
from stalesim.sim.run import simulate
from stalesim.sim.scenario import Scenario
from stalesim.sim.trace import Trace

DEFAULT_STEPS = 8
MEASUREMENTS_FILE = "measurements.yaml"
BREAKDOWNS_FILE = "sync-breakdowns.yaml"
#: files of the folder that are not scenarios
NOT_SCENARIOS = (MEASUREMENTS_FILE, BREAKDOWNS_FILE)


class Measurement(StrictModel):
    """One published end-to-end comparison: a synchronous and an asynchronous step time."""

    id: str
    system: str
    source: str = Field(description="paper or page, section and table/row the figures come from")
    url: str
    measured: str = Field(description="what the figures are, in the source's words")
    sync_scenario: str
    async_scenario: str
    sync_step_s: float = Field(gt=0)
    async_step_s: float = Field(gt=0)
    reported_speedup: float | None = Field(
        default=None, gt=0, description="the speed-up as the source states it, if it does"
    )
    note: str = ""

    @property
    def speedup(self) -> float:
        """The measured speed-up: synchronous step time over asynchronous step time."""
        return self.sync_step_s / self.async_step_s


class Measurements(StrictModel):
    measurements: list[Measurement]


class Breakdown(StrictModel):
    """A published synchronous run's per-phase seconds, in verl's metric names."""

    scenario: str
    source: str
    url: str
    metrics: dict[str, float]


class Breakdowns(StrictModel):
    breakdowns: list[Breakdown]


def load_breakdowns() -> dict[str, Breakdown]:
    """The synchronous runs' breakdowns by scenario name; each names a shipped scenario."""
    path = published_folder() / BREAKDOWNS_FILE
    data = validate_config(Breakdowns, read_yaml_mapping(str(path)), BREAKDOWNS_FILE)
    names = set(scenario_names())
    out: dict[str, Breakdown] = {}
    for b in data.breakdowns:
        if b.scenario not in names:
            raise ConfigError(
                f"{BREAKDOWNS_FILE}: scenario {b.scenario!r} is not in sim/data/published"
            )
        out[b.scenario] = b
    return out


def calibrate_from_breakdown(breakdown: Breakdown, seed: int = 0) -> LogCalibration:
    """``stalesim calibrate --from verl`` on the breakdown, read as a one-row verl log, for
    its synchronous scenario."""
    log = log_from_rows(
        [{"step": 1, "data": breakdown.metrics}],
        "verl",
        f"{BREAKDOWNS_FILE}:{breakdown.scenario}",
    )
    return calibrate_log(
        log,
        load_published(breakdown.scenario),
        scenario_from=f"sim/data/published/{breakdown.scenario}.yaml",
        seed=seed,
    )


@dataclass(frozen=True)
class Mechanism:
    """A switch flipped on both scenarios of a pair (each side only where its mode has it)."""

    name: str
    sync: tuple[str, ...]
    asynchronous: tuple[str, ...]


MECHANISMS: tuple[Mechanism, ...] = (
    Mechanism("streaming off", (), ("algorithm.streaming=false",)),
    Mechanism(
        "in-flight updates off",
        (),
        ("algorithm.inflight_updates=false", "algorithm.kv_cache_on_update=null"),
    ),
    # verl's synchronous recipes recompute the old log-probs already: only the async side changes
    Mechanism("old-logprob pass on", (), ("algorithm.old_logprob_pass=true",)),
    Mechanism(
        "dynamic sampling off",
        ("algorithm.dynamic_sampling=false",),
        ("algorithm.dynamic_sampling=false",),
    ),
    Mechanism(
        "drop filter at one publication period (S=16)", (), ("algorithm.staleness_filter=16",)
    ),
)


def published_folder() -> Traversable:
    """The shipped folder of published scenarios and measurements."""
    return resources.files("stalesim.sim") / "data" / "published"


def scenario_names() -> list[str]:
    """Names of the shipped published scenarios (file names without ``.yaml``)."""
    return sorted(
        p.name.removesuffix(".yaml")
        for p in published_folder().iterdir()
        if p.name.endswith(".yaml") and p.name not in NOT_SCENARIOS
    )


def load_measurements() -> list[Measurement]:
    """The measured figures; each names two shipped scenarios (checked)."""
    path = published_folder() / MEASUREMENTS_FILE
    data = validate_config(Measurements, read_yaml_mapping(str(path)), MEASUREMENTS_FILE)
    names = set(scenario_names())
    ids: set[str] = set()
    for m in data.measurements:
        if m.id in ids:
            raise ConfigError(f"{MEASUREMENTS_FILE}: id {m.id!r} appears twice")
        ids.add(m.id)
        for side in (m.sync_scenario, m.async_scenario):
            if side not in names:
                raise ConfigError(
                    f"{MEASUREMENTS_FILE}: {m.id}: scenario {side!r} is not in sim/data/published; "
                    f"allowed: {', '.join(sorted(names))}"
                )
    return data.measurements


def load_published(name: str, overrides: tuple[str, ...] = ()) -> Scenario:
    """A published scenario laid over the default, with ``--set``-style overrides."""
    path = published_folder() / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"published scenario {name!r} not found; allowed: {', '.join(scenario_names())}"
        )
    return load_scenario(str(path), overrides=overrides)


@dataclass
class Prediction:
    """The simulated pair: step times, speed-up, and what the simulator saw."""

    sync_step_s: float
    async_step_s: float
    sync_utilisation: dict[str, float] = field(default_factory=dict)
    async_utilisation: dict[str, float] = field(default_factory=dict)

    @property
    def speedup(self) -> float:
        return self.sync_step_s / self.async_step_s


def _step_and_utilisation(trace: Trace) -> Side:
    """The run summary's mean step time and its busy fractions (those it has)."""
    summary = measure(trace)
    busy = {"rollout": summary.utilisation.rollout, "learner": summary.utilisation.learner}
    return summary.step_time_s.mean, {k: float(v) for k, v in busy.items() if v is not None}


Side = tuple[float, dict[str, float]]


def _side(scenario: Scenario, steps: int, seed: int, cache: dict[str, Side] | None) -> Side:
    # pairs share baselines (one colocated run serves four 128-GPU rows): simulate each once
    key = scenario.model_dump_json()
    if cache is not None and key in cache:
        return cache[key]
    trace = simulate(scenario, steps, seed)
    result = _step_and_utilisation(trace)
    if cache is not None:
        cache[key] = result
    return result


def predict_pair(
    sync: Scenario,
    asynchronous: Scenario,
    steps: int,
    seed: int,
    cache: dict[str, Side] | None = None,
) -> Prediction:
    """Simulate both sides with the same steps and seed."""
    s_step, s_util = _side(sync, steps, seed, cache)
    a_step, a_util = _side(asynchronous, steps, seed, cache)
    return Prediction(s_step, a_step, s_util, a_util)


def _with(name: str, overrides: tuple[str, ...]) -> Scenario | None:
    try:
        return load_published(name, overrides)
    except ConfigError:
        return None


def run_check(
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    mechanisms: bool = True,
    advance: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Simulate every measured pair (and its mechanism variants); rows as plain dicts."""
    if steps < 2:
        raise ConfigError(f"--steps={steps}: need at least 2 learner steps")
    cache: dict[str, Side] = {}
    rows: list[dict[str, Any]] = []
    mechanism_rows: list[dict[str, Any]] = []
    breakdowns = load_breakdowns()
    calibrations: dict[str, LogCalibration] = {}
    for m in load_measurements():
        sync, asyn = load_published(m.sync_scenario), load_published(m.async_scenario)
        p = predict_pair(sync, asyn, steps, seed, cache)
        calibrated = _calibrated_columns(
            m, sync, asyn, breakdowns, calibrations, steps, seed, cache
        )
        rows.append(
            {
                "id": m.id,
                "system": m.system,
                "sync_scenario": m.sync_scenario,
                "async_scenario": m.async_scenario,
                "sync_mode": sync.algorithm.mode,
                "async_mode": asyn.algorithm.mode,
                "gpus_sync": _gpus(sync),
                "gpus_async": _gpus(asyn),
                "measured_sync_step_s": m.sync_step_s,
                "measured_async_step_s": m.async_step_s,
                "measured_speedup": m.speedup,
                "reported_speedup": m.reported_speedup,
                "predicted_sync_step_s": p.sync_step_s,
                "predicted_async_step_s": p.async_step_s,
                "predicted_speedup": p.speedup,
                "speedup_rel_error": p.speedup / m.speedup - 1.0,
                "sync_step_rel_error": p.sync_step_s / m.sync_step_s - 1.0,
                "async_step_rel_error": p.async_step_s / m.async_step_s - 1.0,
                "predicted_sync_learner_busy": p.sync_utilisation.get("learner"),
                "predicted_async_learner_busy": p.async_utilisation.get("learner"),
                "predicted_async_rollout_busy": p.async_utilisation.get("rollout"),
                **calibrated,
                "source": m.source,
                "url": m.url,
            }
        )
        if advance is not None:
            advance()
        if not mechanisms:
            continue
        for mech in MECHANISMS:
            row: dict[str, Any] = {
                "id": m.id,
                "mechanism": mech.name,
                "baseline_speedup": p.speedup,
                "predicted_speedup": None,
                "change": None,
                "applies": False,
            }
            s2 = _with(m.sync_scenario, mech.sync) if mech.sync else sync
            a2 = _with(m.async_scenario, mech.asynchronous) if mech.asynchronous else asyn
            changed = (s2 is not None and s2 != sync) or (a2 is not None and a2 != asyn)
            if s2 is not None and a2 is not None and changed:
                q = predict_pair(s2, a2, steps, seed, cache)
                row.update(
                    predicted_speedup=q.speedup,
                    change=q.speedup / p.speedup - 1.0,
                    applies=True,
                    predicted_sync_step_s=q.sync_step_s,
                    predicted_async_step_s=q.async_step_s,
                )
            mechanism_rows.append(row)
            if advance is not None:
                advance()
    return {
        "steps": steps,
        "seed": seed,
        "measurements_file": f"sim/data/published/{MEASUREMENTS_FILE}",
        "breakdowns_file": f"sim/data/published/{BREAKDOWNS_FILE}",
        "calibrations": {
            name: {"source": breakdowns[name].source, **cal.fit_report(), **cal.fragment()}
            for name, cal in calibrations.items()
        },
        "pairs": rows,
        "mechanisms": mechanism_rows,
    }


def work_units(mechanisms: bool = True) -> int:
    """How many progress ticks :func:`run_check` makes."""
    n = len(load_measurements())
    return n * (1 + (len(MECHANISMS) if mechanisms else 0))


def _gpus(s: Scenario) -> int:
    from stalesim.sim.derived import derive

    return int(derive(s).total_gpus)


#: Columns of the "calibrated from the sync run" prediction (None where no breakdown exists).
CALIBRATED_COLUMNS = (
    "calibrated_sync_step_s",
    "calibrated_async_step_s",
    "calibrated_speedup",
    "calibrated_speedup_rel_error",
    "calibrated_sync_step_rel_error",
    "calibrated_async_step_rel_error",
    "calibrated_async_learner_busy",
    "calibrated_from",
)


def _calibrated_columns(
    m: Measurement,
    sync: Scenario,
    asyn: Scenario,
    breakdowns: dict[str, Breakdown],
    calibrations: dict[str, LogCalibration],
    steps: int,
    seed: int,
    cache: dict[str, Side],
) -> dict[str, Any]:
    """Predict the pair from its synchronous run's breakdown alone: calibrate on the sync
    side, lay the fragment over both scenarios, simulate both."""
    out: dict[str, Any] = dict.fromkeys(CALIBRATED_COLUMNS)
    breakdown = breakdowns.get(m.sync_scenario)
    if breakdown is None:
        return out
    if m.sync_scenario not in calibrations:
        calibrations[m.sync_scenario] = calibrate_from_breakdown(breakdown, seed)
    fragment = calibrations[m.sync_scenario].fragment()
    q = predict_pair(
        with_fragment(sync, fragment), with_fragment(asyn, fragment), steps, seed, cache
    )
    out.update(
        calibrated_sync_step_s=q.sync_step_s,
        calibrated_async_step_s=q.async_step_s,
        calibrated_speedup=q.speedup,
        calibrated_speedup_rel_error=q.speedup / m.speedup - 1.0,
        calibrated_sync_step_rel_error=q.sync_step_s / m.sync_step_s - 1.0,
        calibrated_async_step_rel_error=q.async_step_s / m.async_step_s - 1.0,
        calibrated_async_learner_busy=q.async_utilisation.get("learner"),
        calibrated_from=breakdown.source,
    )
    return out
