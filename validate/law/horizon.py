"""Reading a sweep at a shorter horizon: the run metrics of the first ``H`` steps of each run.

With a constant learning rate after the warm-up, the first ``H`` steps of a longer run are an
``H``-step run, so one sweep measures the law at several horizons. The metrics are recomputed
from ``steps.parquet`` exactly as the trainer computes them
(:func:`stalesim.validate.train.trainer.summarise`): a run that collapsed before ``H`` keeps its last
smoothed reward for the rest of the ``H`` steps; one that collapsed later did not collapse within
``H`` steps.
"""

from __future__ import annotations

import numpy as np
import polars as pl


def run_summary(
    curve: np.ndarray, horizon: int, window: int, collapse: int | None, target: float
) -> dict[str, float | None]:
    """The run metrics of a reward curve planned for ``horizon`` steps (see
    :func:`stalesim.validate.train.trainer.summarise`, which computes them with this function)."""
    if collapse is not None:
        held = curve[-window:]
        value = float(np.mean(held)) if np.all(np.isfinite(held)) else 0.0
        curve = np.concatenate([curve, np.full(horizon - len(curve), value)])
    curve = np.where(np.isfinite(curve), curve, 0.0)
    w = min(window, len(curve))
    csum = np.cumsum(np.insert(curve, 0, 0.0))
    smooth = np.full(len(curve), np.nan)
    smooth[w - 1 :] = (csum[w:] - csum[:-w]) / w
    lived = smooth if collapse is None else smooth[: collapse + 1]
    reached = np.flatnonzero(smooth >= target)
    if collapse is not None:
        reached = reached[reached <= collapse]
    finite = lived[np.isfinite(lived)]
    return {
        "final_reward": float(np.mean(curve[-window:])),
        "reward_auc": float(np.mean(curve)),
        "steps_to_target": float(reached[0]) if len(reached) else None,
        "best_smoothed_reward": float(finite.max()) if finite.size else float(np.mean(curve)),
    }


def truncate_runs(
    runs: pl.DataFrame,
    steps: pl.DataFrame,
    horizon: int,
    *,
    window: int = 10,
    target_reward: float | None = None,
) -> pl.DataFrame:
    """``runs`` with ``final_reward``, ``reward_auc``, ``steps_to_target``,
    ``best_smoothed_reward``, ``collapsed`` and ``steps`` as if every run had ``horizon`` steps."""
    if horizon < window:
        raise ValueError(f"horizon {horizon}: must be at least the smoothing window ({window})")
    too_short = runs.filter(pl.col("steps") < horizon)
    if too_short.height:
        raise ValueError(
            f"horizon {horizon}: longer than the runs ({too_short['steps'].min()} steps)"
        )
    frames = {
        rid: f.sort("step") for (rid,), f in steps.partition_by("run_id", as_dict=True).items()
    }
    curves = {rid: f["reward_mean"].to_numpy() for rid, f in frames.items()}
    lags = {rid: f["staleness_mean"].to_numpy() for rid, f in frames.items()}
    rows = []
    for row in runs.iter_rows(named=True):
        curve = curves.get(row["run_id"])
        if curve is None:
            raise ValueError(f"run {row['run_id']}: no steps in steps.parquet")
        collapse = row.get("collapse_step")
        collapsed_here = bool(row["collapsed"]) and collapse is not None and collapse < horizon
        target = target_reward if target_reward is not None else row.get("target_reward", 0.9)
        summary = run_summary(
            curve[:horizon], horizon, window, collapse if collapsed_here else None, target
        )
        rows.append(
            {
                **row,
                **summary,
                "collapsed": collapsed_here,
                "steps": horizon,
                "staleness_mean": float(np.mean(lags[row["run_id"]][:horizon])),
                "collapse_step": collapse if collapsed_here else None,
            }
        )
    return pl.DataFrame(rows, schema=runs.schema, orient="row")
