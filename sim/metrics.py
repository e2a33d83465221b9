"""Headline numbers from a trace alone: throughput, step time, utilisation, queue, staleness.

Steady state excludes a warm-up: the first ``max(1, steps // 10)`` learner steps (none when a
run has a single step). The measured window runs from the end of the last warm-up step to the
end of the last step. Step time is the cadence between consecutive step ends.

Staleness: the histogram and sample quantiles use each consumed sample's max lag (the lag of
its oldest token); token quantiles weight each sample by its response tokens and use its
token-weighted mean lag, so their mean is the mean lag of a consumed token. Without in-flight
weight updates every token of a sample has the same lag and the two readings agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from stalesim.sim.learner import PHASES as LEARNER_PHASES
from stalesim.sim.scenario import Scenario
from stalesim.sim.trace import Trace

QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}


def warmup_steps(steps: int) -> int:
    return 0 if steps < 2 else max(1, steps // 10)


def _window(trace: Trace) -> tuple[float, float, int]:
    ends = trace.steps["end_s"].to_numpy()
    w = warmup_steps(len(ends))
    start = float(ends[w - 1]) if w else 0.0
    return start, float(ends[-1]), w


def _overlap_s(frame: pl.DataFrame, start: float, end: float) -> float:
    if frame.is_empty():
        return 0.0
    clipped = frame.select(
        (
            pl.min_horizontal(pl.col("end_s"), pl.lit(end))
            - pl.max_horizontal(pl.col("start_s"), pl.lit(start))
        )
        .clip(lower_bound=0.0)
        .sum()
    )
    return float(clipped.item())


def time_average(times: np.ndarray, values: np.ndarray, start: float, end: float) -> float:
    """Mean of a step function (``values[i]`` from ``times[i]`` on) over ``[start, end]``."""
    if end <= start or times.size == 0:
        return float("nan")
    # the value in force at ``start`` is the last one set at or before it
    edges = np.clip(np.append(times, end), start, end)
    durations = np.diff(edges)
    return float(np.sum(durations * values) / (end - start))


def _quantiles(values: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float | None]:
    if values.size == 0:
        return {"mean": None, **dict.fromkeys(QUANTILES), "max": None}
    if weights is None:
        weights = np.ones_like(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order].astype(np.float64)
    cdf = np.cumsum(w) / w.sum()
    out: dict[str, float | None] = {"mean": float(np.sum(v * w) / w.sum())}
    for name, q in QUANTILES.items():
        out[name] = float(v[min(np.searchsorted(cdf, q - 1e-12), v.size - 1)])
    out["max"] = float(v[-1])
    return out


def summarize(trace: Trace, scenario: Scenario, steps: int, seed: int) -> dict[str, Any]:
    """The summary JSON of the output contract."""
    derived = trace.info["derived"]
    work = scenario.workload
    start, end, w = _window(trace)
    span = end - start
    measured = trace.steps.filter(pl.col("step") >= w)
    consumed_steps = measured.height
    ends = trace.steps["end_s"].to_numpy()
    cadence = np.diff(np.concatenate([[0.0], ends]))[w:]
    samples = trace.samples
    used = samples.filter(pl.col("consumed_step").is_not_null())
    staleness = used["staleness_max"].to_numpy().astype(np.int64)
    tokens = used["response_tokens"].to_numpy()
    token_lag = used["staleness_mean_tokens"].to_numpy()
    histogram = (
        used.group_by(pl.col("staleness_max").alias("staleness"))
        .agg(pl.len().alias("samples"), pl.col("response_tokens").sum().alias("tokens"))
        .sort("staleness")
        .with_columns(pl.col("staleness").cast(pl.Int64), pl.col("samples").cast(pl.Int64))
    )
    busy = trace.busy
    rollout_busy = _overlap_s(
        busy.filter((pl.col("pool") == "rollout") & (pl.col("kind") == "decode")), start, end
    )
    learner_busy = _overlap_s(
        busy.filter((pl.col("pool") == "learner") & pl.col("kind").is_in(list(LEARNER_PHASES))),
        start,
        end,
    )
    engines = scenario.cluster.rollout_engines
    queue = trace.queue
    price = derived["gpu"]["price_per_gpu_hour"]
    gpu_hours = derived["total_gpus"] * trace.end_s / 3600.0
    dropped = (
        samples.filter(pl.col("dropped_reason").is_not_null())
        .group_by("dropped_reason")
        .len()
        .sort("dropped_reason")
    )
    dropped_counts = dict(
        zip(dropped["dropped_reason"].to_list(), dropped["len"].to_list(), strict=True)
    )
    return {
        "scenario": scenario.model_dump(mode="json"),
        "derived": derived,
        "steps": steps,
        "seed": seed,
        "warmup_steps": w,
        "warmup_s": start,
        "measured_window_s": span,
        "simulated_s": trace.end_s,
        "throughput": {
            "samples_per_s": consumed_steps * work.prompts_per_step * work.group_size / span
            if span > 0
            else None,
            "tokens_per_s": float(measured["tokens"].sum()) / span if span > 0 else None,
            "steps_per_h": consumed_steps * 3600.0 / span if span > 0 else None,
        },
        "step_time_s": {
            "mean": float(cadence.mean()),
            "p50": float(np.quantile(cadence, 0.5)),
            "p99": float(np.quantile(cadence, 0.99)),
        },
        "utilisation": {
            "rollout": rollout_busy / (engines * span) if span > 0 else None,
            "learner": learner_busy / span if span > 0 else None,
        },
        "mean_queue_groups": time_average(
            queue["time_s"].to_numpy(), queue["groups_waiting"].to_numpy(), start, end
        ),
        "staleness": {
            "histogram": histogram.to_dicts(),
            "sample_quantiles": _quantiles(staleness),
            "token_quantiles": _quantiles(token_lag, tokens),
        },
        "dropped": {k: v for k, v in dropped_counts.items() if k not in ("in_flight", "in_buffer")},
        "unconsumed_at_end": {
            k: v for k, v in dropped_counts.items() if k in ("in_flight", "in_buffer")
        },
        "samples_generated": int(trace.info["samples_finished"]),
        "prefill_s": trace.info["prefill_s"],
        "kv_recompute_s": trace.info.get("kv_recompute_s", 0.0),
        "gpu_hours": gpu_hours,
        "cost_usd": gpu_hours * price if price is not None else None,
        "wall_s": trace.wall_s,
    }


def add_law(
    summary: dict[str, Any],
    readings: Any,
    scenario: Scenario | None = None,
    on_policy: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The summary with the law read at this setup's staleness (``summary["law"]``): the
    learning-rate and steps multipliers under every reading against the same cluster run
    on-policy (``on_policy``, its summary), time to target relative to that run, and with the
    scenario's ``target`` baseline the user's learning rate, steps and time (see
    :func:`stalesim.sim.law.apply.law_summary`)."""
    from stalesim.sim.law.apply import law_summary

    return {**summary, "law": law_summary(readings, summary, scenario, on_policy)}
