"""The run summary: one typed result, measured from a trace by one function, :func:`measure`.

The simulator's run and the pipeline's real run write the same trace frames, and both are
reduced here, so the replay compares two runs measured by one definition.

Steady state excludes a warm-up: the first ``max(1, steps // 10)`` learner steps (none when a
run has a single step). The measured window runs from the end of the last warm-up step to the
end of the last step. Step time is the cadence between consecutive step ends. Throughput counts
the samples and tokens the learner consumed in the window's steps.

Staleness: the histogram and sample quantiles use each consumed sample's max lag (the lag of
its oldest token); token quantiles weight each sample by its response tokens and use its
token-weighted mean lag, so their mean is the mean lag of a consumed token. Without in-flight
weight updates every token of a sample has the same lag and the two readings agree.

What the frames cannot say (the cluster's engine and GPU counts, the GPU price, the time spent
on prefill) comes from the trace's ``info``, which the simulator fills; a trace without it
(a pipeline run read back from its tables) measures those as None.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict
from stalesim.common.config_file import validate_config
from stalesim.common.tables import read_json_object
from stalesim.sim.learner import PHASES as LEARNER_PHASES
from stalesim.sim.scenario import Scenario
from stalesim.sim.trace import Trace

QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}
#: the reasons a sample is left over at the end of a run rather than dropped by a rule
UNCONSUMED = ("in_flight", "in_buffer")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Throughput(_Section):
    """Consumption rates over the measured window (None when the window is empty)."""

    samples_per_s: float | None
    tokens_per_s: float | None
    steps_per_h: float | None


class StepTime(_Section):
    """The cadence between consecutive learner step ends after the warm-up, in seconds."""

    mean: float
    p50: float
    p99: float


class Utilisation(_Section):
    """Busy fraction over the window: rollout is decode time per engine, learner its phases."""

    rollout: float | None
    learner: float | None


class Quantiles(_Section):
    """A weighted distribution's mean, quantiles and max (None when nothing was consumed)."""

    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None


class HistogramBin(_Section):
    """Consumed samples whose max lag is ``staleness`` versions, and their response tokens."""

    staleness: int
    samples: int
    tokens: int


class Staleness(_Section):
    """The lag of every consumed sample, by sample (max lag) and by token (token-mean lag)."""

    histogram: list[HistogramBin]
    sample_quantiles: Quantiles
    token_quantiles: Quantiles


class RunSummary(_Section):
    """The headline numbers of one run, as ``summary.json`` holds them.

    :func:`measure` fills every field from a trace; ``scenario`` and ``seed`` (the run's
    inputs) and ``law`` and ``sensitivity`` (readings made after the run) are added by their
    owners and are left out of the JSON while unset. ``derived`` is the simulator's resolved
    setup, None for a trace the simulator did not make.
    """

    scenario: dict[str, Any] | None = None
    derived: dict[str, Any] | None = None
    steps: int
    seed: int | None = None
    warmup_steps: int
    warmup_s: float
    measured_window_s: float
    simulated_s: float
    throughput: Throughput
    step_time_s: StepTime
    utilisation: Utilisation
    mean_queue_groups: float | None
    staleness: Staleness
    dropped: dict[str, int]
    unconsumed_at_end: dict[str, int]
    samples_generated: int
    prefill_s: float | None
    kv_recompute_s: float | None
    gpu_hours: float | None
    cost_usd: float | None
    wall_s: float | None
    law: dict[str, Any] | None = None
    sensitivity: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``summary.json`` object: every measured field, and the optional sections that
        are set."""
        unset = {
            k
            for k in ("scenario", "derived", "seed", "law", "sensitivity")
            if getattr(self, k) is None
        }
        return self.model_dump(mode="json", exclude=unset)

    @property
    def step_time_from_rate_s(self) -> float | None:
        """Seconds per learner step implied by the window's step rate (None without one)."""
        rate = self.throughput.steps_per_h
        return 3600.0 / rate if rate else None

    @property
    def dropped_samples(self) -> int:
        """Samples a rule dropped (those left over at the end are not counted)."""
        return sum(self.dropped.values())

    def row(self) -> dict[str, float | int | None]:
        """The summary flat, one column per headline number: the plan's candidate columns and
        the variants' table both select from this one row."""
        tp, ut = self.throughput, self.utilisation
        sq, tq = self.staleness.sample_quantiles, self.staleness.token_quantiles
        return {
            "gpus": None if self.derived is None else self.derived["total_gpus"],
            "samples_per_s": tp.samples_per_s,
            "tokens_per_s": tp.tokens_per_s,
            "step_time_s": self.step_time_from_rate_s,
            "step_time_mean_s": self.step_time_s.mean,
            "staleness_mean": sq.mean,
            "staleness_p50": sq.p50,
            "staleness_p90": sq.p90,
            "staleness_p99": sq.p99,
            "staleness_max": sq.max,
            "token_staleness_mean": tq.mean,
            "token_staleness_p99": tq.p99,
            "utilisation_rollout": ut.rollout,
            "utilisation_learner": ut.learner,
            "mean_queue_groups": self.mean_queue_groups,
            "dropped_samples": float(self.dropped_samples),
            "simulated_s": self.simulated_s,
            "sim_wall_s": self.wall_s,
        }


def read_summary(path: str | Path) -> RunSummary:
    """A ``summary.json`` read back and checked; one-line errors name the file."""
    return validate_config(RunSummary, read_json_object(path), source=str(path))


def warmup_steps(steps: int) -> int:
    """Learner steps the steady-state window leaves out at the start of a run."""
    return 0 if steps < 2 else max(1, steps // 10)


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


def _quantiles(values: np.ndarray, weights: np.ndarray | None = None) -> Quantiles:
    if values.size == 0:
        return Quantiles(mean=None, p50=None, p90=None, p99=None, max=None)
    if weights is None:
        weights = np.ones_like(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order].astype(np.float64)
    cdf = np.cumsum(w) / w.sum()
    at = {
        name: float(v[min(np.searchsorted(cdf, q - 1e-12), v.size - 1)])
        for name, q in QUANTILES.items()
    }
    return Quantiles(mean=float(np.sum(v * w) / w.sum()), **at, max=float(v[-1]))


def _finite_or_none(value: float) -> float | None:
    return value if np.isfinite(value) else None


def consumed_samples(trace: Trace) -> pl.DataFrame:
    """The samples the learner consumed, warm-up included: the rows the staleness section
    reduces (``staleness_max``, ``staleness_mean_tokens``, ``response_tokens``, ...)."""
    return trace.samples.filter(pl.col("consumed_step").is_not_null())


def staleness_section(used: pl.DataFrame) -> Staleness:
    """The staleness of the consumed samples ``used``: each sample's max lag (histogram and
    sample quantiles) and its token-mean lag weighted by its response tokens (token quantiles).
    The summary reads every consumed sample; the replay reads those of its steady-state window."""
    histogram = (
        used.group_by(pl.col("staleness_max").alias("staleness"))
        .agg(pl.len().alias("samples"), pl.col("response_tokens").sum().alias("tokens"))
        .sort("staleness")
    )
    return Staleness(
        histogram=[HistogramBin(**row) for row in histogram.to_dicts()],
        sample_quantiles=_quantiles(used["staleness_max"].to_numpy().astype(np.int64)),
        token_quantiles=_quantiles(
            used["staleness_mean_tokens"].to_numpy(), used["response_tokens"].to_numpy()
        ),
    )


def measure(trace: Trace) -> RunSummary:
    """The run summary of one trace (the simulator's or a pipeline run's): every number is
    reduced from the trace's frames, and the cluster's counts and price from its ``info``."""
    info = trace.info or {}
    derived = info.get("derived")
    ends = trace.steps["end_s"].to_numpy()
    if ends.size == 0:
        raise ValueError("the trace has no learner steps; nothing to measure")
    w = warmup_steps(len(ends))
    start, end = (float(ends[w - 1]) if w else 0.0), float(ends[-1])
    span = end - start
    measured = trace.steps.filter(pl.col("step") >= w)
    cadence = np.diff(np.concatenate([[0.0], ends]))[w:]
    samples = trace.samples
    used = consumed_samples(trace)
    in_window = used.filter(pl.col("consumed_step") >= w).height
    busy = trace.busy
    rollout_busy = _overlap_s(
        busy.filter((pl.col("pool") == "rollout") & (pl.col("kind") == "decode")), start, end
    )
    learner_busy = _overlap_s(
        busy.filter((pl.col("pool") == "learner") & pl.col("kind").is_in(list(LEARNER_PHASES))),
        start,
        end,
    )
    engines = info.get("rollout_engines")
    queue = trace.queue
    gpu_hours = None if derived is None else derived["total_gpus"] * trace.end_s / 3600.0
    price = None if derived is None else derived["gpu"]["price_per_gpu_hour"]
    dropped = (
        samples.filter(pl.col("dropped_reason").is_not_null())
        .group_by("dropped_reason")
        .len()
        .sort("dropped_reason")
    )
    reasons = dict(zip(dropped["dropped_reason"].to_list(), dropped["len"].to_list(), strict=True))
    finished = info.get("samples_finished")
    return RunSummary(
        derived=derived,
        steps=len(ends),
        warmup_steps=w,
        warmup_s=start,
        measured_window_s=span,
        simulated_s=trace.end_s,
        throughput=Throughput(
            samples_per_s=in_window / span if span > 0 else None,
            tokens_per_s=float(measured["tokens"].sum()) / span if span > 0 else None,
            steps_per_h=measured.height * 3600.0 / span if span > 0 else None,
        ),
        step_time_s=StepTime(
            mean=float(cadence.mean()),
            p50=float(np.quantile(cadence, 0.5)),
            p99=float(np.quantile(cadence, 0.99)),
        ),
        utilisation=Utilisation(
            rollout=rollout_busy / (engines * span) if span > 0 and engines else None,
            learner=learner_busy / span if span > 0 else None,
        ),
        mean_queue_groups=_finite_or_none(
            time_average(queue["time_s"].to_numpy(), queue["groups_waiting"].to_numpy(), start, end)
        ),
        staleness=staleness_section(used),
        dropped={k: v for k, v in reasons.items() if k not in UNCONSUMED},
        unconsumed_at_end={k: v for k, v in reasons.items() if k in UNCONSUMED},
        samples_generated=int(finished)
        if finished is not None
        else samples.filter(pl.col("finish_s").is_not_null()).height,
        prefill_s=info.get("prefill_s"),
        kv_recompute_s=info.get("kv_recompute_s", 0.0 if derived is not None else None),
        gpu_hours=gpu_hours,
        cost_usd=gpu_hours * price if gpu_hours is not None and price is not None else None,
        wall_s=trace.wall_s,
    )


def summarize(trace: Trace, scenario: Scenario, steps: int, seed: int) -> RunSummary:
    """The summary of a simulated run of ``scenario``: :func:`measure` of its trace, with the
    scenario and seed it ran with (``steps`` is checked against the trace's)."""
    summary = measure(trace)
    if summary.steps != steps:
        raise ValueError(f"the trace has {summary.steps} learner steps, not the {steps} asked for")
    return summary.model_copy(update={"scenario": scenario.model_dump(mode="json"), "seed": seed})


def add_law(
    summary: RunSummary,
    readings: Any,
    scenario: Scenario | None = None,
    on_policy: RunSummary | None = None,
) -> RunSummary:
    """The summary with the law read at this setup's staleness (``summary.law``): the
    learning-rate and steps multipliers under every reading against the same cluster run
    on-policy (``on_policy``, its summary), time to target relative to that run, and with the
    scenario's ``target`` baseline the user's learning rate, steps and time (see
    :func:`stalesim.sim.law.apply.law_summary`)."""
    from stalesim.sim.law.apply import law_summary

    return summary.model_copy(update={"law": law_summary(readings, summary, scenario, on_policy)})
