"""What a pipeline run achieved, read off its own trace: the figures ``validate pipeline`` prints
at the end of a run and writes into ``summary.json`` (``figures``).

Over the steady-state window (the learner steps after
:func:`stalesim.sim.metrics.warmup_steps`, the window ``validate replay`` compares):

* ``throughput``: samples consumed per second (``B*G`` per learner step) and learner steps per
  second;
* ``staleness``: the lag of each sample consumed in the window (the versions between its oldest
  token's policy and the policy it trained), its mean, median (p50), 90th percentile (p90) and
  maximum; the percentiles are lags the samples had (the smallest lag with at least that share
  of samples at or below it);
* ``overlap``: the fraction of the learner's training time (its ``train`` intervals: not the
  wait for a batch, the call overhead or the weight publish, whose tail an engine that already
  holds the new weights may decode beside) during which at least one rollout engine was
  decoding: 0 for a strictly alternating synchronous loop, near 1 when generation always runs
  beside training.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from stalesim.sim.metrics import warmup_steps


def _union(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint, sorted intervals covering the same time as ``[starts, ends)``."""
    if starts.size == 0:
        return starts, ends
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    out_s, out_e = [float(starts[0])], [float(ends[0])]
    for s, e in zip(starts[1:].tolist(), ends[1:].tolist(), strict=True):
        if s <= out_e[-1]:
            out_e[-1] = max(out_e[-1], e)
        else:
            out_s.append(s)
            out_e.append(e)
    return np.array(out_s), np.array(out_e)


def covered_s(starts: np.ndarray, ends: np.ndarray, a: float, b: float) -> float:
    """Seconds of ``[a, b)`` inside the disjoint sorted intervals ``[starts, ends)``."""
    if b <= a or starts.size == 0:
        return 0.0
    inside = np.clip(np.minimum(ends, b) - np.maximum(starts, a), 0.0, None)
    return float(inside.sum())


def overlap_fraction(busy: pl.DataFrame, start: float, end: float) -> float | None:
    """Share of the learner's training time in ``[start, end)`` during which an engine decoded;
    ``None`` when the learner did not train there."""
    learner = busy.filter((pl.col("pool") == "learner") & (pl.col("kind") == "train"))
    rollout = busy.filter((pl.col("pool") == "rollout") & (pl.col("kind") == "decode"))
    work_s, work_e = _union(learner["start_s"].to_numpy(), learner["end_s"].to_numpy())
    roll_s, roll_e = _union(rollout["start_s"].to_numpy(), rollout["end_s"].to_numpy())
    total = both = 0.0
    for s, e in zip(work_s.tolist(), work_e.tolist(), strict=True):
        a, b = max(s, start), min(e, end)
        if b <= a:
            continue
        total += b - a
        both += covered_s(roll_s, roll_e, a, b)
    return both / total if total > 0 else None


def run_figures(
    samples: pl.DataFrame, steps: pl.DataFrame, busy: pl.DataFrame, group_count: int
) -> dict[str, Any]:
    """The run's throughput, staleness and overlap over its steady-state window (see the module
    docstring); ``None`` for a figure with no data (a run that finished no step)."""
    steps = steps.sort("step")
    ends = steps["end_s"].to_numpy()
    w = warmup_steps(len(ends))
    start = float(ends[w - 1]) if w else 0.0
    end = float(ends[-1]) if len(ends) else 0.0
    span = end - start
    measured = steps.filter(pl.col("step") >= w).height
    lags = (
        samples.filter(pl.col("consumed_step") >= w)["staleness_max"]
        .drop_nulls()
        .to_numpy()
        .astype(np.float64)
    )

    def pct(q: float) -> float | None:
        return float(np.quantile(lags, q, method="inverted_cdf")) if lags.size else None

    return {
        "window": {"warmup_steps": w, "steps": measured, "seconds": span},
        "throughput": {
            "samples_per_s": measured * group_count / span if span > 0 else None,
            "steps_per_s": measured / span if span > 0 else None,
        },
        "staleness": {
            "mean": float(lags.mean()) if lags.size else None,
            "p50": pct(0.5),
            "p90": pct(0.9),
            "max": float(lags.max()) if lags.size else None,
        },
        "overlap": overlap_fraction(busy, start, end) if span > 0 else None,
    }


def figure_rows(figures: dict[str, Any]) -> list[tuple[str, str]]:
    """The figures as (name, value) strings for a terminal table."""

    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    t, s = figures["throughput"], figures["staleness"]
    window = figures["window"]
    return [
        ("samples/s", num(t["samples_per_s"], ".1f")),
        ("learner steps/s", num(t["steps_per_s"], ".3f")),
        ("staleness mean", num(s["mean"], ".3f")),
        ("staleness p50 / p90 / max", " / ".join(num(s[k], "g") for k in ("p50", "p90", "max"))),
        ("overlap (training time with rollouts running)", num(figures["overlap"], ".1%")),
        ("window", f"steps {window['warmup_steps']}+ ({window['steps']} steps, "
         f"{window['seconds']:.1f} s)"),
    ]  # fmt: skip
