"""Which runs failed: the rule ``eta_max`` is measured with.

A run failed when any of these holds:

* **collapsed** — the trainer stopped it (non-finite numbers, a reward fall to half its best, or
  a per-step policy drift above the limit; see :mod:`stalesim.validate.train.collapse`);
* **below warm start** — its final reward (mean of the last ``smoothing_window`` steps) ended
  below the reward of its own warm start (``warm_reward``, scored before training): training
  made the policy worse;
* **never reached** — its best smoothed reward never got ``reach_fraction`` of the way from its
  warm start to the best S = 0 reward of the sweep (the highest mean final reward over the
  learning rates of the S = 0 runs): the run hardly learned.

Old sweeps without ``warm_reward`` fall back to ``collapsed`` (or ``final_reward <
min_final_reward`` when that is given).

The rules are two different things, kept apart in ``failure_kind``: a run that collapsed or ended
below its warm start (or below ``min_final_reward``) is **unstable**, the learning rate broke
training; a run that never reached the bar is **no progress**, the learning rate was too slow
(or the task too hard at this staleness) for the horizon. ``eta_max`` is read from the unstable
runs alone (:func:`stalesim.validate.law.group_estimates.build_cells` uses the ``unstable``
column); "no rate reaches the target" is reported on its own.
"""

from __future__ import annotations

import numpy as np
import polars as pl

FAILURE_COLUMNS = ("failed", "failure", "failure_kind", "unstable", "no_progress")

#: The two kinds of failure: the rate broke training, or it learned too little.
UNSTABLE, NO_PROGRESS = "unstable", "no progress"


def best_on_policy_reward(runs: pl.DataFrame) -> float | None:
    """The highest per-LR mean final reward of the fixed S = 0 runs (None without them)."""
    if "staleness_kind" in runs.columns:
        zero = runs.filter((pl.col("staleness") == 0) & (pl.col("staleness_kind") == "fixed"))
    else:
        zero = runs.filter(pl.col("staleness") == 0)
    if zero.height == 0 or "final_reward" not in zero.columns:
        return None
    means = zero.group_by("lr").agg(pl.col("final_reward").mean())["final_reward"]
    return float(means.max())


def mark_failures(
    runs: pl.DataFrame,
    *,
    reach_fraction: float = 0.5,
    min_final_reward: float | None = None,
    best_reward: float | None = None,
) -> pl.DataFrame:
    """``runs`` with a bool ``failed`` and a text ``failure`` (the first rule that applies),
    the rule's kind ``failure_kind`` (``unstable`` or ``no progress``) and the bools
    ``unstable`` and ``no_progress``.

    ``best_reward`` overrides the S = 0 best (e.g. when the S = 0 runs live in another sweep).
    """
    n = runs.height
    collapsed = runs["collapsed"].fill_null(False).cast(pl.Boolean).to_numpy()
    reasons = np.array(["" for _ in range(n)], dtype=object)
    reasons[collapsed] = "collapsed"
    final = _column(runs, "final_reward") if "final_reward" in runs.columns else np.full(n, np.nan)
    if "warm_reward" in runs.columns and runs["warm_reward"].null_count() < n:
        warm = _column(runs, "warm_reward")
        below = ~collapsed & (final < warm)
        reasons[below & (reasons == "")] = "below warm start"
        best = best_reward if best_reward is not None else best_on_policy_reward(runs)
        if best is not None and "best_smoothed_reward" in runs.columns:
            peak = _column(runs, "best_smoothed_reward")
            bar = warm + reach_fraction * (best - warm)
            never = peak < bar
            reasons[never & (reasons == "")] = f"never reached {reach_fraction:g} of the gain"
    elif min_final_reward is not None:
        low = final < min_final_reward
        reasons[low & (reasons == "")] = f"final reward < {min_final_reward:g}"
    no_progress = np.array([r.startswith("never reached") for r in reasons], dtype=bool)
    unstable = (reasons != "") & ~no_progress
    kinds = np.where(unstable, UNSTABLE, np.where(no_progress, NO_PROGRESS, ""))
    return runs.with_columns(
        pl.Series("failed", reasons != "", dtype=pl.Boolean),
        pl.Series("failure", [r or None for r in reasons], dtype=pl.String),
        pl.Series("failure_kind", [k or None for k in kinds], dtype=pl.String),
        pl.Series("unstable", unstable, dtype=pl.Boolean),
        pl.Series("no_progress", no_progress, dtype=pl.Boolean),
    )


def _column(runs: pl.DataFrame, name: str) -> np.ndarray:
    return runs[name].cast(pl.Float64).fill_null(np.nan).to_numpy()


def backfill_from_steps(runs: pl.DataFrame, steps: pl.DataFrame | None) -> pl.DataFrame:
    """Give a sweep made before runs scored their warm start (no ``warm_reward`` column) the
    columns the failure rule reads, from its ``steps.parquet``.

    Such sweeps shared one warm start across all runs, so its reward is estimated by the mean
    step-0 learner reward over every run (each one a fresh sample of the same policy);
    ``best_smoothed_reward`` is the best trailing ``window``-step mean of each run's curve. Runs
    without steps keep nulls (and are judged by ``collapsed`` alone).
    """
    if "warm_reward" in runs.columns or steps is None or "reward_mean" not in steps.columns:
        return runs
    first = steps.filter(pl.col("step") == 0)
    if first.height == 0:
        return runs
    warm = float(first["reward_mean"].mean())
    window = 10
    best = (
        steps.sort("run_id", "step")
        .with_columns(
            pl.col("reward_mean")
            .fill_nan(0.0)
            .rolling_mean(window_size=window)
            .over("run_id")
            .alias("smooth")
        )
        .group_by("run_id")
        .agg(pl.col("smooth").max().alias("best_smoothed_reward"))
    )
    out = (
        runs.join(best, on="run_id", how="left")
        if "best_smoothed_reward" not in runs.columns
        else runs
    )
    return out.with_columns(pl.lit(warm).alias("warm_reward"))
