"""Which candidates a plan simulates: all of them, or, with the screen on, only those that can
still win.

Candidates are taken in rounds, in the order of their screened objective (best first). Before
each round the screen is calibrated against what was simulated so far, separately for every
*screen group* (mode, GPU, in-flight updates: the setups the closed form models alike): the
lowest ratio ``simulated / screened`` seen in the group, shrunk by the plan's ``safety``
factor (and never above 1), turns a screened time into a lower estimate. A candidate is
simulated when

* its group has fewer than ``probe`` simulated candidates (the screen is not trusted there yet);
* its lower time (or cost, or time under another reading of the law) beats the
  ``keep_top``-th best simulated one, so the top of every ranking is simulated; or
* its lower (time, cost) point is not dominated by a simulated one, so the whole time–cost
  frontier is simulated.

The rounds are a fixed size and chosen from results alone, so the set simulated never depends on
how many workers ran them or in what order they finished.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Objectives:
    """Time and cost to target under the primary law reading, and time under each other
    reading, one entry per feasible candidate (all per learner step of the baseline run)."""

    time_s: np.ndarray
    cost_usd: np.ndarray
    time_alternatives: list[np.ndarray]


def kth_best(values: np.ndarray, k: int) -> float:
    finite = np.sort(values[np.isfinite(values)])
    return float(finite[k - 1]) if finite.size >= k else np.inf


def calibration(
    screened: np.ndarray, simulated: np.ndarray, done: np.ndarray, groups: np.ndarray, safety: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate: the factor that turns its screened value into a lower estimate, and how
    many candidates of its group were simulated."""
    factor = np.ones(screened.shape)
    counts = np.zeros(screened.shape, dtype=np.int64)
    for group in np.unique(groups):
        members = groups == group
        seen = members & done & np.isfinite(simulated) & np.isfinite(screened) & (screened > 0)
        counts[members] = int((members & done).sum())
        if seen.any():
            ratio = float(np.min(simulated[seen] / screened[seen]))
            factor[members] = min(1.0, safety * ratio)
    return factor, counts


def dominated(t: np.ndarray, c: np.ndarray, by_t: np.ndarray, by_c: np.ndarray) -> np.ndarray:
    """Whether each point ``(t, c)`` is matched or beaten on both axes by one of ``by``."""
    ok = np.isfinite(by_t) & np.isfinite(by_c)
    if not ok.any():
        return np.zeros(t.shape, dtype=bool)
    bt, bc = by_t[ok], by_c[ok]
    order = np.argsort(bt, kind="stable")
    bt, best_c = bt[order], np.minimum.accumulate(bc[order])
    # the cheapest simulated point among those at most as slow as t
    pos = np.searchsorted(bt, t, side="right") - 1
    cheapest = np.where(pos >= 0, best_c[np.clip(pos, 0, None)], np.inf)
    return np.isfinite(t) & np.isfinite(c) & (cheapest <= c)


def next_round(
    screened: Objectives,
    simulated: Objectives,
    done: np.ndarray,
    order: np.ndarray,
    groups: np.ndarray,
    *,
    use_screen: bool,
    keep_top: int,
    probe: int,
    safety: float,
    round_size: int,
) -> list[int]:
    """Indices (into the feasible candidates) to simulate next; empty when finished."""
    if not use_screen:
        todo = [int(i) for i in order if not done[i]]
        return todo[:round_size]
    f_time, counts = calibration(screened.time_s, simulated.time_s, done, groups, safety)
    low_t = screened.time_s * f_time
    low_c = screened.cost_usd * f_time
    sim_t = np.where(done, simulated.time_s, np.nan)
    sim_c = np.where(done, simulated.cost_usd, np.nan)
    keep = (
        (low_t < kth_best(sim_t, keep_top))
        | (low_c < kth_best(sim_c, keep_top))
        | (np.isfinite(low_t) & np.isfinite(low_c) & ~dominated(low_t, low_c, sim_t, sim_c))
    )
    for screened_alt, simulated_alt in zip(
        screened.time_alternatives, simulated.time_alternatives, strict=True
    ):
        f_alt, _ = calibration(screened_alt, simulated_alt, done, groups, safety)
        keep |= screened_alt * f_alt < kth_best(np.where(done, simulated_alt, np.nan), keep_top)
    chosen: list[int] = []
    probing: dict[object, int] = {}
    for i in order:
        i = int(i)
        if done[i]:
            continue
        group = groups[i]
        if counts[i] + probing.get(group, 0) < probe:
            probing[group] = probing.get(group, 0) + 1
            chosen.append(i)
        elif keep[i]:
            chosen.append(i)
        if len(chosen) >= round_size:
            break
    return chosen
