"""Ranking the simulated candidates: by time or cost to target under the primary reading of the
law and under each other reading, the time–cost Pareto frontier, time and cost relative to the
best on-policy setup, the recommendation with its runner-up, and the decision summary that says
how much of the recommendation survives a change of reading.

Time and cost are per learner step of the user's baseline run (the law's steps multiplier times
the setup's learner steps per baseline step times its step time), so ranks never depend on the
baseline's step count. Only simulated candidates are ranked: the screen's estimates decide what
to simulate, never the answer. Candidates without a price have no cost; they rank after every
priced one by cost.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from stalesim.sim.modes import MODES

OBJECTIVE_COLUMNS = {"time": "time_per_baseline_step_s", "cost": "cost_per_baseline_step_usd"}


def rank_column(values: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` (ties by position) among ``eligible``; 0 elsewhere. Missing
    values rank after every finite one."""
    ranks = np.zeros(values.shape, dtype=np.int64)
    index = np.flatnonzero(eligible)
    if index.size == 0:
        return ranks
    key = np.where(np.isfinite(values[index]), values[index], np.inf)
    order = index[np.lexsort((index, key))]
    ranks[order] = np.arange(1, order.size + 1)
    return ranks


def pareto_front(time_s: np.ndarray, cost: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Whether each eligible point with finite time and cost is on the time–cost frontier: no
    other point is at least as fast and as cheap and better on one of them."""
    ok = eligible & np.isfinite(time_s) & np.isfinite(cost)
    front = np.zeros(time_s.shape, dtype=bool)
    index = np.flatnonzero(ok)
    order = index[np.lexsort((cost[index], time_s[index]))]
    best_cost = np.inf
    for i in order:
        if cost[i] < best_cost:
            front[i] = True
            best_cost = cost[i]
    return front


def _column(table: pl.DataFrame, name: str) -> np.ndarray:
    return table[name].cast(pl.Float64).fill_null(np.nan).to_numpy()


def on_policy(mode: str) -> bool:
    """Whether a mode trains every batch on the weights that generated it."""
    return MODES[mode].on_policy


def reference_index(table: pl.DataFrame) -> int | None:
    """The row every relative time and cost is measured against: the fastest simulated
    on-policy setup (the first in table order on a tie), else the fastest simulated setup."""
    simulated = (table["evaluated"] == "simulated").to_numpy()
    time_s = _column(table, OBJECTIVE_COLUMNS["time"])
    for pool in (
        simulated & np.array([on_policy(m) for m in table["mode"]], dtype=bool),
        simulated,
    ):
        ok = pool & np.isfinite(time_s)
        if ok.any():
            index = np.flatnonzero(ok)
            return int(index[np.argmin(time_s[index])])
    return None


def add_rankings(table: pl.DataFrame, objective: str, others: list[str]) -> pl.DataFrame:
    """Rank (primary reading), ``rank_<reading>`` for each of ``others``, frontier, and time and
    cost relative to the :func:`reference_index` row (``time_to_target_rel``,
    ``cost_to_target_rel``, and ``time_to_target_rel_<reading>``)."""
    simulated = (table["evaluated"] == "simulated").to_numpy()
    column = OBJECTIVE_COLUMNS[objective]
    time_s = _column(table, OBJECTIVE_COLUMNS["time"])
    cost = _column(table, OBJECTIVE_COLUMNS["cost"])
    reference = reference_index(table)

    def relative(values: np.ndarray) -> np.ndarray:
        if reference is None or not np.isfinite(values[reference]) or values[reference] <= 0:
            return np.full(values.shape, np.nan)
        return values / values[reference]

    columns = [
        pl.Series("rank", rank_column(_column(table, column), simulated)),
        pl.Series("on_frontier", pareto_front(time_s, cost, simulated)),
        pl.Series("time_to_target_rel", relative(time_s)),
        pl.Series("cost_to_target_rel", relative(cost)),
        pl.Series("reference", np.arange(table.height) == (-1 if reference is None else reference)),
    ]
    for name in others:
        columns.append(
            pl.Series(f"rank_{name}", rank_column(_column(table, f"{column}_{name}"), simulated))
        )
        columns.append(
            pl.Series(
                f"time_to_target_rel_{name}",
                relative(_column(table, f"{OBJECTIVE_COLUMNS['time']}_{name}")),
            )
        )
    out = table.with_columns(columns)
    nan_to_null = [c.name for c in columns if c.dtype == pl.Float64]
    return out.with_columns(pl.col(nan_to_null).fill_nan(None))


def recommendation(table: pl.DataFrame, objective: str, others: list[str]) -> dict[str, Any]:
    """The best simulated candidate, the runner-up, how much worse the runner-up is, and the
    best candidate under each other reading with the recommendation's rank there."""
    column = OBJECTIVE_COLUMNS[objective]
    ranked = table.filter(pl.col("rank") > 0).sort("rank")
    if ranked.is_empty():
        return {"best": None, "runner_up": None, "runner_up_worse_by": None}
    best = ranked.row(0, named=True)
    runner = ranked.row(1, named=True) if ranked.height > 1 else None
    worse = None
    if runner is not None and best[column] and runner[column] is not None:
        worse = runner[column] / best[column] - 1.0
    under = {}
    for name in others:
        top = table.filter(pl.col(f"rank_{name}") == 1)
        under[name] = {
            "best": top.row(0, named=True) if top.height else None,
            "recommendation_rank": best[f"rank_{name}"],
        }
    return {
        "objective": objective,
        "best": best,
        "runner_up": runner,
        "runner_up_worse_by": worse,
        "under_readings": under,
    }


def _split(row: dict[str, Any]) -> str:
    if MODES[row["mode"]].colocated:
        return f"{row['rollout_gpus']} GPUs shared by engines and learner"
    return f"{row['rollout_gpus']} rollout + {row['learner_gpus']} learner GPUs"


def _schedule(row: dict[str, Any]) -> str:
    return "synchronous" if on_policy(row["mode"]) else "asynchronous"


def _bound(row: dict[str, Any]) -> str:
    if on_policy(row["mode"]):
        return "none (on-policy)"
    if row["max_staleness"] is None:
        return f"the {row['mode']} schedule's"
    return f"max_staleness {row['max_staleness']}"


def decision(table: pl.DataFrame, rec: dict[str, Any], primary: str) -> dict[str, Any]:
    """The decision in four parts (sync or async, the staleness bound, the split, the
    learning-rate multiplier), each with the value under the primary reading, whether every
    other reading agrees, what a disagreeing reading picks instead, and why."""
    best = rec.get("best")
    if best is None:
        return {"verdict": "no feasible candidate", "robust": False, "items": []}
    under = rec.get("under_readings", {})
    column = OBJECTIVE_COLUMNS[rec["objective"]]
    ranked = table.filter(pl.col("rank") > 0)
    items = []
    for name, describe in (("schedule", _schedule), ("bound", _bound), ("split", _split)):
        value = describe(best)
        differ = {
            reading: describe(u["best"])
            for reading, u in under.items()
            if u["best"] is not None and describe(u["best"]) != value
        }
        items.append({"name": name, "value": value, "same_under_all": not differ, "differ": differ})
    # why sync or async: the best setup of the other kind and how much worse it is
    other = ranked.filter(
        pl.col("mode").map_elements(on_policy, return_dtype=pl.Boolean) != on_policy(best["mode"])
    ).sort(column)
    if other.height and best[column]:
        margin = other.row(0, named=True)[column] / best[column]
        items[0]["why"] = (
            f"the best {_schedule(other.row(0, named=True))} setup needs {margin:.3g}x the "
            f"{rec['objective']} to target"
        )
    else:
        items[0]["why"] = "the plan has no setup of the other kind to compare"
    # each reading's multiplier for the setup that reading recommends: what a user following
    # that reading would set
    multipliers = {primary: best.get("lr_multiplier")} | {
        r: (u["best"] or best).get(f"lr_multiplier_{r}") for r, u in under.items()
    }
    known = [v for v in multipliers.values() if v is not None]
    spread = max(known) / min(known) if known and min(known) > 0 else None
    items.append(
        {
            "name": "learning-rate multiplier",
            "value": best.get("lr_multiplier"),
            "under_readings": multipliers,
            "same_under_all": spread is not None and spread <= 1.25,
            "why": (
                "each reading's multiplier for the setup it recommends; they agree within 25%"
                if spread is not None and spread <= 1.25
                else f"each reading's multiplier for the setup it recommends; they differ "
                f"{spread:.3g}x: it depends on whether your task saturates; measure your own "
                "with a short probe (`stalesim fit`)"
                if spread is not None
                else "no multiplier"
            ),
        }
    )
    changed = {r: u for r, u in under.items() if u["best"] is not None}
    changed = {
        r: u for r, u in changed.items() if u["best"]["candidate_id"] != best["candidate_id"]
    }
    return {
        "robust": not changed,
        "verdict": "robust: the same setup wins under every reading"
        if not changed
        else "depends on the reading: "
        + "; ".join(
            f"under {r} the best is {describe_setup(u['best'])} (the recommendation ranks "
            f"#{u['recommendation_rank']})"
            for r, u in changed.items()
        ),
        "items": items,
    }


def describe_setup(row: dict[str, Any]) -> str:
    """One setup in words: GPUs, split, mode, bound, batch."""
    parts = [f"{row['total_gpus']} × {row['gpu']}:"]
    if MODES[row["mode"]].colocated:
        parts.append(
            f"{row['rollout_engines']} engines × TP{row['rollout_tp']}, learner shares them,"
        )
    else:
        parts.append(
            f"{row['rollout_engines']} engines × TP{row['rollout_tp']} + {row['learner_gpus']} "
            "learner GPUs,"
        )
    parts.append(row["mode"])
    if MODES[row["mode"]].own_publication:
        parts.append(f"max_staleness {row['max_staleness']}")
        if row["inflight_updates"]:
            parts.append("with in-flight updates")
        if row.get("streaming"):
            parts.append("streaming")
    parts.append(
        f"(B={row['prompts_per_step']}, G={row['group_size']}, "
        f"{row['minibatches_per_step']} mini-batch{'es' if row['minibatches_per_step'] > 1 else ''})"
    )
    return " ".join(parts)
