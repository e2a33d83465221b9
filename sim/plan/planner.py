"""``stalesim plan``: which setup reaches the target reward soonest (or cheapest), at what learning
rate, and how sure that is.

A plan (:mod:`stalesim.sim.plan.config`) names a space of candidate setups
(:mod:`stalesim.sim.plan.space`). Infeasible ones keep their reason. The feasible ones are
screened in closed form (:mod:`stalesim.sim.plan.screen`); the ones that can still win are
simulated (:mod:`stalesim.sim.plan.selection`, :mod:`stalesim.sim.plan.evaluate`), in rounds that
are saved as they finish (:mod:`stalesim.sim.plan.output`). The law, under each of its readings, turns each simulated
setup's step time and staleness into multipliers of the user's on-policy run: the learning
rate, the steps and the time and cost to target (:mod:`stalesim.sim.law.apply`); with the base
scenario's ``target`` baseline they become the user's learning rate, steps, hours and dollars.
The candidates are ranked, and the decision is checked under every reading
(:mod:`stalesim.sim.plan.rank`).
Last, the staleness bound of the recommended setup is simulated across its range, for the
trade-off behind the choice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from stalesim.common.config_file import ConfigError, validate_config
from stalesim.common.output_dir import locked, remove_stale_temporaries
from stalesim.sim.law.apply import learner_steps_per_baseline_step, read_law, to_target
from stalesim.sim.law.model import Law
from stalesim.sim.law.readings import Reading, readings
from stalesim.sim.modes import MODES, ON_POLICY_REFERENCE
from stalesim.sim.plan.config import PlanConfig
from stalesim.sim.plan.evaluate import FAILURE, SIM_COLUMNS, Backend, SerialBackend, split
from stalesim.sim.plan.output import SimulationStore, check_out_dir, write_results
from stalesim.sim.plan.rank import add_rankings, decision, recommendation
from stalesim.sim.plan.screen import screen
from stalesim.sim.plan.selection import Objectives, next_round
from stalesim.sim.plan.space import Candidate, base_mapping, resolve

#: The scenario key whose range the trade-off chart follows.
BOUND_KEY = "algorithm.max_staleness"

#: progress(simulations done, simulations chosen so far)
Progress = Callable[[int, int], None]


@dataclass
class PlanResult:
    """The ranked table of every candidate and the summary written to ``plan.json``."""

    table: pl.DataFrame
    summary: dict[str, Any]


def _setup_columns(c: Candidate) -> dict[str, Any]:
    data = c.data
    cluster, algo, work = data["cluster"], data["algorithm"], data["workload"]
    colocated = MODES[algo["mode"]].colocated
    rollout = cluster["rollout_engines"] * cluster["rollout_tp"]
    learner = rollout if colocated else cluster["learner_gpus"]
    price = data["hardware"].get("price_per_gpu_hour")
    if c.derived is not None:
        price = c.derived.gpu.price_per_gpu_hour
    return {
        "candidate_id": c.candidate_id,
        "index": c.index,
        "setup": c.label(),
        "gpu": data["hardware"]["gpu"],
        "total_gpus": rollout if colocated else rollout + learner,
        "rollout_engines": cluster["rollout_engines"],
        "rollout_tp": cluster["rollout_tp"],
        "rollout_gpus": rollout,
        "learner_gpus": learner,
        "mode": algo["mode"],
        # the bound only means something in a mode that enforces it
        "max_staleness": algo["max_staleness"] if MODES[algo["mode"]].own_publication else None,
        "inflight_updates": algo["inflight_updates"],
        "streaming": algo["streaming"],
        "prompts_per_step": work["prompts_per_step"],
        "group_size": work["group_size"],
        "minibatches_per_step": algo["minibatches_per_step"],
        "price_per_gpu_hour": price,
        "assignment": json.dumps(c.assignment, sort_keys=False),
        "feasible": c.feasible,
        "reason": c.reason,
    }


class _Context:
    """Per-feasible-candidate arrays the law and the ranking need."""

    def __init__(
        self,
        plan: PlanConfig,
        laws: list[Reading],
        feasible: list[Candidate],
        reference: float,
        base: dict[str, Any],
        baseline_staleness: float,
    ):
        self.plan, self.readings, self.law = plan, laws, laws[0].law
        self.baseline_staleness = baseline_staleness
        setups = [_setup_columns(c) for c in feasible]

        def column(name: str) -> np.ndarray:
            return np.array([np.nan if r[name] is None else r[name] for r in setups], dtype=float)

        target = base.get("target") or {}
        self.baseline_lr = target.get("baseline_lr")
        self.baseline_steps = target.get("baseline_steps")
        self.samples_per_step = column("prompts_per_step") * column("group_size")
        self.per_baseline_step = learner_steps_per_baseline_step(
            self.samples_per_step,
            column("minibatches_per_step"),
            reference,
            base["algorithm"]["minibatches_per_step"],
            plan.target.batch_scaling,
        )
        self.gpus = column("total_gpus")
        self.price = column("price_per_gpu_hour")
        # the setups the screen models alike: its calibration is kept per group
        self.groups = np.array(
            [f"{r['mode']}|{r['gpu']}|{r['inflight_updates']}|{r['streaming']}" for r in setups],
            dtype=object,
        )

    def columns(self, step_time_s: np.ndarray, staleness: np.ndarray) -> dict[str, np.ndarray]:
        law_cols = read_law(self.readings, staleness, self.baseline_staleness)
        target = to_target(
            law_cols,
            step_time_s,
            self.per_baseline_step,
            self.gpus,
            self.price,
            self.baseline_lr,
            self.baseline_steps,
        )
        return {"staleness": np.asarray(staleness, dtype=float), **law_cols, **target}

    def objectives(self, step_time_s: np.ndarray, staleness: np.ndarray) -> Objectives:
        cols = self.columns(step_time_s, staleness)
        return Objectives(
            cols["time_per_baseline_step_s"],
            cols["cost_per_baseline_step_usd"],
            [cols[f"time_per_baseline_step_s_{r.name}"] for r in self.readings[1:]],
        )


def _baseline_staleness(law: Law, base: dict[str, Any], steps: int, seed: int) -> float:
    """The staleness summary the law reads of the user's baseline, the base scenario run
    on-policy (its mini-batch schedule's); the schedule's own bound when that setup cannot run
    (a batch too big to simulate on-policy here)."""
    from stalesim.sim.baseline import on_policy_summary
    from stalesim.sim.law.apply import staleness_of
    from stalesim.sim.scenario import Scenario

    scenario = validate_config(Scenario, base, "base scenario")
    summary = on_policy_summary(scenario, steps, seed)
    value = None if summary is None else staleness_of(law, summary.staleness)
    if value is None:
        # the on-policy schedule: mini-batch m of a step is m versions stale, equally many
        # samples each
        schedule = MODES[ON_POLICY_REFERENCE].schedule_staleness
        bound = float(schedule(scenario.algorithm.minibatches_per_step))
        value = bound if law.staleness_summary in ("max", "p99") else bound / 2
    return value


def _check_simulation_size(feasible: list[Candidate], steps: int) -> None:
    """Refuse, before any simulation, an ``evaluation.steps`` whose largest candidate's trace
    cannot fit in this machine's memory (else every candidate would fail alike)."""
    from stalesim.common.memory import refuse_if_too_big
    from stalesim.sim.run import BYTES_PER_SAMPLE, planned_samples

    if not feasible:
        return
    largest = max(planned_samples(c.scenario, steps) for c in feasible)
    refuse_if_too_big(
        largest * BYTES_PER_SAMPLE,
        f"evaluation.steps={steps}: the largest candidate's {largest:,} samples",
        "lower evaluation.steps",
    )


def _law_staleness(law: Law, metrics: dict[str, Any]) -> float:
    key = {
        "max": "staleness_max",
        "p99": "staleness_p99",
        "mean": "staleness_mean",
        "token_mean": "token_staleness_mean",
    }[law.staleness_summary]
    value = metrics.get(key)
    return np.nan if value is None else float(value)


def run_plan(
    plan: PlanConfig,
    law: Law | list[Reading],
    out_dir: Path,
    *,
    folder: Path | None = None,
    backend: Backend | None = None,
    progress: Progress | None = None,
    render: Callable[[Path], Any] | None = None,
) -> PlanResult:
    """Evaluate the plan, publish ``candidates.parquet``, ``plan.json`` (and the page that
    ``render(folder)`` writes from them) in ``out_dir`` as one result, keep the simulation cache
    there as it grows, and return the ranked table and the summary. The folder stays locked
    while the plan runs. ``law`` is the list of readings to weigh the decision under (the
    primary first), or one law, read beside its paper reading."""
    started = time.perf_counter()
    laws = readings(law) if isinstance(law, Law) else law
    if laws[0].law.steps_to_target is None:
        raise ConfigError(
            "the law has no steps_to_target model (its sweep never reached the target); "
            "a plan needs one: pass --law with a law that has it"
        )
    # the whole space is resolved and checked before the folder is touched
    candidates = resolve(plan, folder)
    _check_simulation_size([c for c in candidates if c.feasible], plan.evaluation.steps)
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    with locked(out_dir, wait=False, what=" (another plan?)"):
        remove_stale_temporaries(out_dir)
        return _run_plan(
            plan, laws, candidates, out_dir, folder, backend, progress, render, started
        )


def _run_plan(
    plan: PlanConfig,
    laws: list[Reading],
    candidates: list[Candidate],
    out_dir: Path,
    folder: Path | None,
    backend: Backend | None,
    progress: Progress | None,
    render: Callable[[Path], Any] | None,
    started: float,
) -> PlanResult:
    backend = backend or SerialBackend()
    law = laws[0].law
    others = [r.name for r in laws[1:]]
    evaluation = plan.evaluation
    base = base_mapping(plan, folder)
    feasible = [c for c in candidates if c.feasible]
    reference = plan.target.samples_per_update or (
        base["workload"]["prompts_per_step"]
        * base["workload"]["group_size"]
        / base["algorithm"]["minibatches_per_step"]
    )
    baseline_staleness = _baseline_staleness(law, base, evaluation.steps, evaluation.seed)
    ctx = _Context(plan, laws, feasible, reference, base, baseline_staleness)
    estimates = [screen(c) for c in feasible]
    screen_step = np.array([e.step_time_s for e in estimates], dtype=float)
    screen_s = np.array([e.staleness(law.staleness_summary) for e in estimates], dtype=float)
    screened = ctx.objectives(screen_step, screen_s)
    objective = plan.target.objective
    key = screened.time_s if objective == "time" else screened.cost_usd
    order = np.lexsort((np.arange(len(feasible)), np.where(np.isfinite(key), key, np.inf)))

    store = SimulationStore(out_dir, evaluation.steps, evaluation.seed)
    n = len(feasible)
    done = np.zeros(n, dtype=bool)
    sim_step = np.full(n, np.nan)
    sim_s = np.full(n, np.nan)
    simulated_now = 0

    def simulate(indices: list[int]) -> None:
        nonlocal simulated_now
        todo = [
            (feasible[i].candidate_id, feasible[i].scenario.model_dump_json())
            for i in indices
            if feasible[i].candidate_id not in store
        ]
        if todo:
            batches = split(todo, backend.workers)
            for results in backend.run(batches, evaluation.steps, evaluation.seed):
                for cid, metrics in results:
                    store.add(cid, metrics)
                # saved as each batch comes back: a killed plan keeps every finished simulation
                store.flush()
            simulated_now += len(todo)
        for i in indices:
            metrics = store.results[feasible[i].candidate_id]
            done[i] = True
            sim_step[i] = np.nan if metrics["step_time_s"] is None else metrics["step_time_s"]
            sim_s[i] = _law_staleness(law, metrics)
        if progress is not None:
            progress(int(done.sum()), int(done.sum()))

    rounds = 0
    while True:
        simulated = ctx.objectives(sim_step, sim_s)
        chosen = next_round(
            screened,
            simulated,
            done,
            order,
            ctx.groups,
            use_screen=evaluation.screen,
            keep_top=evaluation.keep_top,
            probe=evaluation.probe,
            safety=evaluation.safety,
            round_size=evaluation.round_size,
        )
        if not chosen:
            break
        rounds += 1
        simulate(chosen)

    table = _table(candidates, feasible, ctx, estimates, done, store, sim_step, sim_s, screened)
    table = add_rankings(table, objective, others)
    family = _trade_off_family(table, feasible)
    extra = [i for i in family if not done[i]]
    if extra:
        simulate(extra)
        table = _table(candidates, feasible, ctx, estimates, done, store, sim_step, sim_s, screened)
        table = add_rankings(table, objective, others)
    table = table.sort(
        pl.col("rank") == 0,
        "rank",
        pl.col("evaluated").replace_strict(
            {"simulated": 0, "screened out": 1, "infeasible": 2}, return_dtype=pl.Int64
        ),
        "index",
    )
    wall_s = time.perf_counter() - started
    summary = _summary(
        plan,
        laws,
        baseline_staleness,
        base,
        table,
        reference,
        family_ids=[feasible[i].candidate_id for i in family],
        scenarios={c.candidate_id: c.scenario for c in feasible},
        counts={
            "candidates": len(candidates),
            "feasible": int(table["feasible"].sum()),
            "infeasible": int((~table["feasible"]).sum()),
            "failed_in_simulation": int(n - table["feasible"].sum()),
            "simulated": int((table["evaluated"] == "simulated").sum()),
            "screened_out": int((table["evaluated"] == "screened out").sum()),
            "simulated_this_run": simulated_now,
            "resumed": int(done.sum()) - simulated_now,
            "rounds": rounds,
        },
        wall_s=wall_s,
        workers=backend.workers,
        backend=type(backend).__name__,
    )
    write_results(out_dir, table, summary, render)
    return PlanResult(table, summary)


def _table(
    candidates: list[Candidate],
    feasible: list[Candidate],
    ctx: _Context,
    estimates: list,
    done: np.ndarray,
    store: SimulationStore,
    sim_step: np.ndarray,
    sim_s: np.ndarray,
    screened: Objectives,
) -> pl.DataFrame:
    step = np.where(done, sim_step, [e.step_time_s for e in estimates] if estimates else [])
    s = np.where(
        done,
        sim_s,
        [e.staleness(ctx.law.staleness_summary) for e in estimates] if estimates else [],
    )
    cols = ctx.columns(np.asarray(step, dtype=float), np.asarray(s, dtype=float))
    rows = []
    position = {c.candidate_id: i for i, c in enumerate(feasible)}
    for c in candidates:
        row = _setup_columns(c)
        i = position.get(c.candidate_id)
        metrics: dict[str, Any] = dict.fromkeys(SIM_COLUMNS)
        if i is None:
            row["evaluated"] = "infeasible"
        elif done[i] and store.results[c.candidate_id].get(FAILURE):
            row["evaluated"] = "infeasible"
            row["feasible"] = False
            row["reason"] = store.results[c.candidate_id][FAILURE]
            i = None
        elif done[i]:
            row["evaluated"] = "simulated"
            metrics |= {k: store.results[c.candidate_id][k] for k in SIM_COLUMNS}
        else:
            row["evaluated"] = "screened out"
            e = estimates[i]
            metrics |= {
                "samples_per_s": e.samples_per_s,
                "step_time_s": e.step_time_s,
                "staleness_mean": e.staleness_mean,
                "staleness_p99": e.staleness_p99,
                "staleness_max": e.staleness_max,
                "token_staleness_mean": e.staleness_token_mean,
            }
        row |= metrics
        for name, values in cols.items():
            row[name] = None if i is None or not np.isfinite(values[i]) else float(values[i])
        row["screen_time_per_baseline_step_s"] = (
            None if i is None or not np.isfinite(screened.time_s[i]) else float(screened.time_s[i])
        )
        row["idle_gpu_hours_to_target"] = _idle_gpu_hours(row)
        rows.append(row)
    schema_overrides = {
        name: pl.Float64
        for name in (
            *SIM_COLUMNS,
            *cols,
            "price_per_gpu_hour",
            "screen_time_per_baseline_step_s",
            "idle_gpu_hours_to_target",
        )
    }
    schema_overrides["reason"] = pl.String
    return pl.DataFrame(rows, schema_overrides=schema_overrides, infer_schema_length=None)


def _idle_gpu_hours(row: dict[str, Any]) -> float | None:
    time_s, ur, ul = (
        row.get("time_to_target_s"),
        row.get("utilisation_rollout"),
        row.get("utilisation_learner"),
    )
    if row["evaluated"] != "simulated" or time_s is None or ur is None or ul is None:
        return None
    if MODES[row["mode"]].colocated:
        idle = row["total_gpus"] * max(0.0, 1.0 - ur - ul)
    else:
        idle = row["rollout_gpus"] * (1.0 - ur) + row["learner_gpus"] * (1.0 - ul)
    return time_s / 3600.0 * idle


def _trade_off_family(table: pl.DataFrame, feasible: list[Candidate]) -> list[int]:
    """Indices of the candidates that differ from the best one that varies the staleness bound
    only in that bound (the best overall when it varies it)."""
    ranked = table.filter(pl.col("rank") > 0).sort("rank")
    anchor = None
    for row in ranked.iter_rows(named=True):
        # only a mode that enforces the bound has a trade-off along it
        if row["max_staleness"] is not None and BOUND_KEY in json.loads(row["assignment"]):
            anchor = json.loads(row["assignment"])
            break
    if anchor is None:
        return []
    rest = {k: v for k, v in anchor.items() if k != BOUND_KEY}
    return [
        i
        for i, c in enumerate(feasible)
        if BOUND_KEY in c.assignment
        and MODES[c.scenario.algorithm.mode].own_publication
        and {k: v for k, v in c.assignment.items() if k != BOUND_KEY} == rest
    ]


def _summary(
    plan: PlanConfig,
    laws: list[Reading],
    baseline_staleness: float,
    base: dict[str, Any],
    table: pl.DataFrame,
    reference: float,
    *,
    family_ids: list[str],
    scenarios: dict[str, Any],
    counts: dict[str, int],
    wall_s: float,
    workers: int,
    backend: str,
) -> dict[str, Any]:
    objective = plan.target.objective
    law = laws[0].law
    rec = recommendation(table, objective, [r.name for r in laws[1:]])
    frontier = table.filter(pl.col("on_frontier")).sort("time_per_baseline_step_s")
    best = rec["best"]
    warnings: list[str] = []
    distance = None
    if best is not None:
        warnings = law.regime_warnings(scenarios[best["candidate_id"]])
        distance = law.regime_distance(scenarios[best["candidate_id"]])
    reference_rows = table.filter(pl.col("reference"))
    target = base.get("target") or {}
    return {
        "name": plan.name,
        "objective": objective,
        "decision": decision(table, rec, laws[0].name),
        "recommendation": rec,
        "relative_to": reference_rows["candidate_id"][0] if reference_rows.height else None,
        "frontier": frontier["candidate_id"].to_list(),
        "trade_off": {"key": BOUND_KEY, "candidates": family_ids},
        "counts": counts,
        "law": {
            "reading": laws[0].name,
            "readings": {r.name: r.provenance for r in laws},
            "labels": {r.name: r.label for r in laws},
            "staleness_summary": law.staleness_summary,
            "eta_opt": {
                "s_c": law.eta_opt.s_c,
                "k": law.eta_opt.k,
                "alpha": law.eta_opt.alpha,
                "alpha_interval": law.eta_opt.intervals.get("alpha"),
            },
            "steps_to_target": law.steps_to_target.describe() if law.steps_to_target else None,
            "source": law.source,
            "baseline_lr": target.get("baseline_lr"),
            "baseline_steps": target.get("baseline_steps"),
            "baseline_staleness": baseline_staleness,
            "baseline_batch": f"{base['workload']['prompts_per_step']}x"
            f"{base['workload']['group_size']}/{base['algorithm']['minibatches_per_step']}",
            "reference_samples_per_update": reference,
            "batch_scaling": plan.target.batch_scaling,
            "regime_distance": distance,
            "warnings": warnings,
        },
        "plan": plan.model_dump(mode="json"),
        "base_scenario": base,
        "recommended_scenario": (
            scenarios[best["candidate_id"]].model_dump(mode="json") if best is not None else None
        ),
        "evaluation": {"wall_s": wall_s, "workers": workers, "backend": backend},
    }
