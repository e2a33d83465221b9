"""Ranking the simulated candidates: by time or cost to target, under the fitted law and under the
paper's exponent, the time–cost Pareto frontier, and the recommendation with its runner-up.

Only simulated candidates are ranked: the screen's estimates decide what to simulate, never the
answer. Candidates without a price have no cost; they rank after every priced one by cost.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

OBJECTIVE_COLUMNS = {"time": "time_to_target_s", "cost": "cost_to_target_usd"}


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


def add_rankings(table: pl.DataFrame, objective: str) -> pl.DataFrame:
    """Rank, paper-exponent rank and frontier columns for the simulated rows."""
    simulated = (table["evaluated"] == "simulated").to_numpy()
    column = OBJECTIVE_COLUMNS[objective]
    values = table[column].cast(pl.Float64).fill_null(np.nan).to_numpy()
    alpha1 = table[f"{column}_alpha1"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    time_s = table["time_to_target_s"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    cost = table["cost_to_target_usd"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    return table.with_columns(
        pl.Series("rank", rank_column(values, simulated)),
        pl.Series("rank_alpha1", rank_column(alpha1, simulated)),
        pl.Series("on_frontier", pareto_front(time_s, cost, simulated)),
    )


def recommendation(table: pl.DataFrame, objective: str) -> dict[str, Any]:
    """The best simulated candidate, the runner-up, and how much worse the runner-up is."""
    column = OBJECTIVE_COLUMNS[objective]
    ranked = table.filter(pl.col("rank") > 0).sort("rank")
    if ranked.is_empty():
        return {"best": None, "runner_up": None, "runner_up_worse_by": None}
    best = ranked.row(0, named=True)
    runner = ranked.row(1, named=True) if ranked.height > 1 else None
    worse = None
    if runner is not None and best[column] and runner[column] is not None:
        worse = runner[column] / best[column] - 1.0
    alpha1 = table.filter(pl.col("rank_alpha1") == 1)
    return {
        "objective": objective,
        "best": best,
        "runner_up": runner,
        "runner_up_worse_by": worse,
        "best_alpha1": alpha1.row(0, named=True) if alpha1.height else None,
        "best_rank_alpha1": best["rank_alpha1"],
    }


def describe_setup(row: dict[str, Any]) -> str:
    """One setup in words: GPUs, split, mode, bound, batch."""
    parts = [f"{row['total_gpus']} × {row['gpu']}:"]
    if row["mode"] == "sync_colocated":
        parts.append(
            f"{row['rollout_engines']} engines × TP{row['rollout_tp']}, learner shares them,"
        )
    else:
        parts.append(
            f"{row['rollout_engines']} engines × TP{row['rollout_tp']} + {row['learner_gpus']} "
            "learner GPUs,"
        )
    parts.append(row["mode"])
    if row["mode"] == "async":
        parts.append(f"max_staleness {row['max_staleness']}")
        if row["inflight_updates"]:
            parts.append("with in-flight updates")
    parts.append(
        f"(B={row['prompts_per_step']}, G={row['group_size']}, "
        f"{row['minibatches_per_step']} mini-batch{'es' if row['minibatches_per_step'] > 1 else ''})"
    )
    return " ".join(parts)
