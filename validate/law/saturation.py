"""Whether a sweep's task saturated within its horizon, measured on its on-policy runs.

A law measured where the reward has flattened out by the end of the runs reads differently from
one measured where it is still climbing (the best learning rate then trades speed for stability
in another way), so every fitted law is labelled with this measurement.

The rule: take the S = 0 runs at the learning rate with the best mean reward over the horizon
(runs that stopped before it count as worst); for each, the
mean reward over the last tenth of each half of the horizon (at least ``window`` steps: a
binary reward on 128 samples a step is too noisy to read over fewer).
The task *saturated* when the second half of the horizon gained less than
:data:`SATURATION_RATIO` of what the first half gained (median over seeds; the first half's
gain counts from the run's warm-start reward). For a reward that approaches its plateau as
``1 - exp(-t / tau)``, the ratio is ``exp(-T / (2 tau))``, so a ratio under 1/3 means the runs
closed more than 8/9 of their way to the plateau within the horizon ``T``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

#: Below this late/early gain ratio a task counts as saturated within the horizon.
SATURATION_RATIO = 1.0 / 3.0


@dataclass(frozen=True)
class Saturation:
    """The measurement behind a ``saturated`` label."""

    saturated: bool
    ratio: float  # median over seeds of (second half's gain) / (first half's gain)
    final_reward: float  # median mean reward over the horizon's last tenth
    lr: float
    seeds: int
    horizon: int

    def describe(self) -> str:
        verdict = "saturated" if self.saturated else "did not saturate"
        return (
            f"{verdict} within {self.horizon} steps: at S = 0 and lr {self.lr:.3g}, the second "
            f"half of the horizon gained {self.ratio:.2f}x what the first half did (median of "
            f"{self.seeds} seeds; saturated below {SATURATION_RATIO:.2f}); final reward "
            f"{self.final_reward:.3f}"
        )


def measure_saturation(
    runs: pl.DataFrame, steps: pl.DataFrame | None, horizon: int | None, window: int = 10
) -> Saturation | None:
    """The saturation of the sweep's task, or None where its tables cannot say (no step
    table, no on-policy runs, a horizon shorter than two smoothing windows, no gain)."""
    needed_runs = {"run_id", "lr", "staleness", "warm_reward"}
    if steps is None or not needed_runs <= set(runs.columns):
        return None
    if not {"run_id", "step", "reward_mean"} <= set(steps.columns):
        return None
    on_policy = runs.filter(pl.col("staleness") == 0)
    if "staleness_kind" in on_policy.columns:
        on_policy = on_policy.filter(pl.col("staleness_kind") == "fixed")
    if on_policy.height == 0:
        return None
    horizon = int(horizon or steps["step"].max() + 1)
    window = max(window, horizon // 10)
    if horizon < 2 * window:
        return None
    # each run's mean reward over the horizon (a horizon shorter than the runs cuts them)
    scores = (
        steps.filter(
            pl.col("run_id").is_in(on_policy["run_id"].implode()) & (pl.col("step") < horizon)
        )
        .group_by("run_id")
        .agg(pl.col("reward_mean").mean().alias("score"), pl.len().alias("n"))
        .with_columns(pl.when(pl.col("n") >= horizon).then(pl.col("score")).otherwise(-1.0))
    )
    best = (
        on_policy.join(scores, on="run_id")
        .group_by("lr")
        .agg(pl.col("score").mean())
        .sort(["score", "lr"])
    )
    if best.height == 0:
        return None
    lr = float(best["lr"][-1])
    ratios, finals = [], []
    for run_id, warm in on_policy.filter(pl.col("lr") == lr).select("run_id", "warm_reward").rows():
        curve = steps.filter(pl.col("run_id") == run_id).sort("step")["reward_mean"].to_numpy()
        if curve.size < horizon or warm is None or not math.isfinite(warm):
            continue  # a run that stopped early (collapsed) has no second half to read
        smoothed = np.convolve(curve[:horizon], np.ones(window) / window, mode="valid")
        middle, end = smoothed[horizon // 2 - window], smoothed[-1]
        early = middle - warm
        if early <= 0:
            continue
        ratios.append((end - middle) / early)
        finals.append(end)
    if not ratios:
        return None
    ratio = float(np.median(ratios))
    return Saturation(
        saturated=ratio < SATURATION_RATIO,
        ratio=ratio,
        final_reward=float(np.median(finals)),
        lr=lr,
        seeds=len(ratios),
        horizon=horizon,
    )
