"""Per-stage figures of a pipeline trace, real or simulated: where a replay's error comes from.

Both traces have the same ``samples``, ``steps`` and ``busy`` columns, so one function reads
both. Over the steady-state window (the steps after :func:`stalesim.sim.metrics.warmup_steps`):

* ``cadence_s``: the time between consecutive learner step ends (mean, CV);
* ``learner_work_s``: the learner's time per step that is not waiting for a batch (cadence
  minus ``idle_before_s``), and ``learner_idle_s`` the wait;
* ``step_s_cv`` and ``step_s_lag1``: the CV of a learner step's own time (``end_s - start_s``)
  and its lag-1 autocorrelation: independent step times have 0, a machine whose load drifts
  slowly makes neighbouring steps alike;
* ``batch_generation_s``: for each consumed batch, from the launch of its first group to the
  completion of its last (mean, CV);
* ``rollout_decode_per_step_s`` and ``rollout_sync_per_step_s``: the engines' decode and
  weight-load busy time per learner step (the pipeline records the load itself; the replay's
  simulator also counts the report that brings new work, so only the decode row is shown).

:func:`throughput_standard_error` measures how precisely one run pins its own throughput: the
standard error of the steady-state cadence from a moving-block bootstrap (blocks long enough to
keep neighbouring steps' correlation), relative to the mean.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
from stalesim.sim.metrics import warmup_steps


def _mean_cv(values: np.ndarray) -> tuple[float | None, float | None]:
    if values.size == 0:
        return None, None
    mean = float(values.mean())
    return mean, (float(values.std() / mean) if mean > 0 and values.size > 1 else None)


def _lag1(values: np.ndarray) -> float | None:
    """Lag-1 autocorrelation; ``None`` for fewer than 3 values or (numerically) constant ones,
    which have none."""
    if values.size < 3:
        return None
    a, b = values[:-1], values[1:]
    scale = 1e-9 * max(float(np.abs(values).mean()), 1e-300)
    if float(a.std()) <= scale or float(b.std()) <= scale:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def stage_metrics(samples: pl.DataFrame, steps: pl.DataFrame, busy: pl.DataFrame) -> dict:
    """The stage figures of one trace (see the module docstring); ``None`` where a figure has
    no data (e.g. a run of fewer than 3 steps)."""
    steps = steps.sort("step")
    w = warmup_steps(steps.height)
    ends = steps["end_s"].to_numpy()
    window = steps.filter(pl.col("step") >= w)
    cadence = np.diff(ends[max(w - 1, 0) :])
    start, end = (float(ends[w - 1]) if w else 0.0), float(ends[-1])
    cad_mean, cad_cv = _mean_cv(cadence)
    idle = window["idle_before_s"].to_numpy()
    own = (window["end_s"] - window["start_s"]).to_numpy()
    step_mean, step_cv = _mean_cv(own)
    batches = (
        samples.filter(pl.col("consumed_step") >= w)
        .group_by("consumed_step")
        .agg(
            pl.col("group_launch_s").min().alias("launch"),
            pl.col("group_complete_s").max().alias("ready"),
        )
    )
    gen_mean, gen_cv = _mean_cv((batches["ready"] - batches["launch"]).to_numpy())
    n = max(window.height, 1)

    def per_step(kind: str) -> float:
        # busy intervals clipped to the window: an engine that never idles has one long span
        rows = busy.filter((pl.col("pool") == "rollout") & (pl.col("kind") == kind))
        overlap = pl.min_horizontal(pl.col("end_s"), pl.lit(end)) - pl.max_horizontal(
            pl.col("start_s"), pl.lit(start)
        )
        return float(rows.select(overlap.clip(lower_bound=0.0).sum()).item()) / n

    return {
        "cadence_s": cad_mean,
        "cadence_cv": cad_cv,
        "learner_work_s": cad_mean - float(idle.mean()) if cad_mean is not None else None,
        "learner_idle_s": float(idle.mean()) if idle.size else None,
        "step_s": step_mean,
        "step_s_cv": step_cv,
        "step_s_lag1": _lag1(own),
        "batch_generation_s": gen_mean,
        "batch_generation_cv": gen_cv,
        "rollout_decode_per_step_s": per_step("decode"),
        "rollout_sync_per_step_s": per_step("sync"),
    }


def throughput_standard_error(
    steps: pl.DataFrame, block: int = 10, draws: int = 2000, seed: int = 0
) -> float | None:
    """Relative standard error of the steady-state mean cadence (hence of the throughput)
    from a moving-block bootstrap with blocks of ``block`` steps; ``None`` for fewer than two
    blocks of steady-state steps."""
    ends = steps.sort("step")["end_s"].to_numpy()
    w = warmup_steps(len(ends))
    cadence = np.diff(ends[max(w - 1, 0) :])
    n = cadence.size
    if n < 2 * block:
        return None
    rng = np.random.default_rng(seed)
    starts = np.arange(n - block + 1)
    k = math.ceil(n / block)
    picks = rng.choice(starts, size=(draws, k))
    idx = (picks[:, :, None] + np.arange(block)[None, None, :]).reshape(draws, -1)[:, :n]
    means = cadence[idx].mean(axis=1)
    return float(means.std() / cadence.mean())
