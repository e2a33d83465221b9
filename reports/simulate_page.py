"""The page ``stalesim simulate`` writes: what a simulated cluster achieved, read from its files.

It reads the simulator's output folder as data (``summary.json``, ``busy.parquet``,
``queue.parquet``, ``steps.parquet``) and never imports the simulator, so a page can be
re-rendered from any finished run. Long traces are binned in time (see
:mod:`stalesim.reports.timeline`), so the page stays small however long the run was.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import altair as alt
import polars as pl
from stalesim.reports.inputs import read_parquet_columns
from stalesim.reports.page import Metric, Page, format_number
from stalesim.reports.timeline import bin_intervals, step_signal_intervals
from stalesim.sim.metrics import RunSummary, read_summary

#: Time bins for utilisation and (long) queue traces: fine enough to see a learner step's
#: rhythm in a run of a few dozen steps, coarse enough to keep the page small.
UTILISATION_BINS = 300
QUEUE_BINS = 1000
#: Traces up to this many rows are drawn as they are; longer ones are binned or thinned.
RAW_ROWS_LIMIT = 4000

CHART_WIDTH = 820
POOL_ORDER = ["rollout", "learner"]


#: The files of a simulate output folder the page is rendered from.
SIMULATE_FILES = ("summary.json", "busy.parquet", "queue.parquet", "steps.parquet")


def write_simulate_report(out_dir: Path) -> Path:
    """Render ``out_dir/report.html`` from the simulator's files in ``out_dir``; returns its path."""
    out_dir = Path(out_dir)
    return build_simulate_page(out_dir).write(out_dir / "report.html")


def build_simulate_page(out_dir: Path) -> Page:
    """The simulate page for the run in ``out_dir``, not yet written."""
    out_dir = Path(out_dir)
    summary = read_summary(out_dir / "summary.json")
    busy = read_parquet_columns(
        out_dir / "busy.parquet", ["pool", "unit", "kind", "start_s", "end_s"]
    )
    queue = read_parquet_columns(out_dir / "queue.parquet", ["time_s", "groups_waiting"])
    steps = read_parquet_columns(
        out_dir / "steps.parquet", ["step", "start_s", "end_s", "idle_before_s"]
    )

    t_end = _trace_end(busy, queue, steps)
    warmup_s = summary.warmup_s
    scenario = summary.scenario or {}

    page = Page("Simulated cluster", subtitle=_subtitle(scenario, summary))
    for heading, metrics in headline_metrics(summary):
        page.metrics(heading, metrics)
    add_law_section(page, summary)
    page.chart(
        staleness_chart(summary),
        heading="Staleness",
        caption="Share of samples and of tokens at each lag (versions between the weights that "
        "generated a sample and the weights it trained), measured window only. For sequences "
        "generated under several weight versions a sample counts at its largest lag; the token "
        "share weights each token by its own lag.",
    )
    if t_end <= 0:
        page.prose("The trace is empty: no simulated time passed.", heading="Over time")
    else:
        if busy.height:
            page.chart(
                utilisation_chart(busy, t_end=t_end, warmup_s=warmup_s, units=pool_sizes(scenario)),
                heading="Utilisation over time",
                caption=f"Busy fraction of each pool in {UTILISATION_BINS} equal time bins, split "
                "by what the units were doing; 100% means every unit of the pool was busy for the "
                "whole bin. The grey band is the warm-up, excluded from the headline numbers.",
            )
        else:
            page.prose("No unit was ever busy.", heading="Utilisation over time")
        page.chart(
            queue_chart(queue, t_end=t_end, warmup_s=warmup_s, summary=summary),
            heading="Queue occupancy",
            caption=_queue_caption(queue),
        )
        page.chart(
            step_time_chart(steps),
            heading="Learner steps",
            caption="Duration of each learner step and the idle time before it "
            "(the learner waiting for data).",
        )
        phases = learner_phases(busy, steps)
        if phases.height:
            page.chart(
                learner_phase_chart(phases),
                heading="Learner phases per step",
                caption="What each learner step spent its time on, as trainers' step-time "
                "breakdowns report it: waiting for data before the step, the colocated role "
                "switch (engine sleep/wake, training state back from host memory), the "
                "old-policy and reference forward passes, the update (forward and backward, "
                "gradient all-reduce, optimizer) and the weight sync after it. Compare with "
                "your trainer's timing logs.",
            )
            page.table(
                phase_means(phases, first_step=summary.warmup_steps),
                heading="Mean learner phase per step",
                caption="Seconds per learner step in each phase, measured window only.",
            )
    result = summary.sensitivity
    if result and result.get("rows"):
        page.chart(
            sensitivity_chart(result),
            heading="Sensitivity to the coefficients",
            caption=_sensitivity_caption(result),
        )
        page.table(
            sensitivity_frame(result),
            heading="Sensitivity table",
            caption="Each coefficient moved down and up, one at a time: the value that ran, "
            "the step time and the speed-up, and their change from the unmoved scenario.",
            collapsed=True,
        )
    derived = summary.derived
    if derived:
        page.table(
            scenario_table(derived, round_numbers=True),
            heading="Derived quantities",
            caption="What the simulator computed from the scenario before running "
            "(memory budget, time-model coefficients, GPU counts).",
            collapsed=True,
            max_rows=10_000,
        )
    page.table(
        scenario_table(scenario),
        heading="Scenario",
        caption="Every setting the simulation ran with.",
        collapsed=True,
        max_rows=10_000,
    )
    return page


def headline_metrics(summary: RunSummary) -> list[tuple[str, list[Metric]]]:
    """The headline numbers, in groups, exactly as the summary states them."""
    throughput, step_time = summary.throughput, summary.step_time_s
    utilisation = summary.utilisation
    by_sample = summary.staleness.sample_quantiles
    by_token = summary.staleness.token_quantiles
    dropped = summary.dropped
    unconsumed = summary.unconsumed_at_end
    dropped_metrics = [
        Metric(f"dropped: {reason}", count, "samples") for reason, count in dropped.items()
    ] or [Metric("dropped", 0, "samples", note="no sample was dropped")]
    dropped_metrics += [
        Metric(f"left {reason} at end", count, "samples", note="generated but not consumed")
        for reason, count in unconsumed.items()
    ]
    return [
        (
            "Throughput (measured window)",
            [
                Metric("samples/s", throughput.samples_per_s, "samples/s"),
                Metric("tokens/s", throughput.tokens_per_s, "tokens/s"),
                Metric("learner steps/h", throughput.steps_per_h, "steps/h"),
            ],
        ),
        (
            "Learner step time",
            [
                Metric("step time mean", step_time.mean, "s"),
                Metric("step time p50", step_time.p50, "s"),
                Metric("step time p99", step_time.p99, "s"),
            ],
        ),
        (
            "Utilisation",
            [
                Metric("rollout utilisation", utilisation.rollout, kind="percent"),
                Metric("learner utilisation", utilisation.learner, kind="percent"),
                Metric("mean queue", summary.mean_queue_groups, "groups"),
            ],
        ),
        (
            "Staleness (versions)",
            [
                Metric("sample mean", by_sample.mean, "versions"),
                Metric("sample p99", by_sample.p99, "versions"),
                Metric("sample max", by_sample.max, "versions"),
                Metric("token-weighted mean", by_token.mean, "versions"),
                Metric("token-weighted p99", by_token.p99, "versions"),
                Metric("token-weighted max", by_token.max, "versions"),
            ],
        ),
        ("Dropped and unconsumed", dropped_metrics),
        (
            "Run",
            [
                Metric("learner steps", summary.steps),
                Metric("samples generated", summary.samples_generated, "samples"),
                Metric("simulated time", summary.simulated_s, "s"),
                Metric("GPU-hours", summary.gpu_hours, "GPU·h"),
                Metric("cost", summary.cost_usd, "USD", note="null when no price is set"),
                Metric("measured window", summary.measured_window_s, "s"),
                Metric("warm-up", summary.warmup_s, "s"),
                Metric("simulation wall time", summary.wall_s, "s"),
                Metric("seed", summary.seed),
            ],
        ),
    ]


def _x(value: Any) -> str:
    return "—" if _number(value) is None else f"{value:.3g}×"


def _g(value: Any) -> str:
    return "—" if _number(value) is None else f"{value:.3g}"


def _band(law: dict[str, Any], key: str) -> str:
    lo, hi = law.get(f"{key}_lo"), law.get(f"{key}_hi")
    return "" if _number(lo) is None or _number(hi) is None else f" [{_g(lo)}, {_g(hi)}]"


def law_metrics(summary: RunSummary) -> list[tuple[str, list[Metric]]]:
    """The staleness–learning-rate law read at this run's staleness under its primary reading,
    as multipliers of the user's on-policy run and time relative to the same cluster run
    synchronously; the user's learning rate, steps, hours and dollars only where the
    scenario's ``target`` gives their baseline. Never an absolute learning rate or time of the
    small model the law was measured on."""
    law = summary.law or {}
    if _number(law.get("lr_multiplier")) is None:
        return []
    others = _other_readings(law)
    cards = [
        Metric(
            "LR multiplier",
            law["lr_multiplier"],
            "× your LR",
            note=f"box{_band(law, 'lr_multiplier')}; "
            + ", ".join(f"{r} {_x(law.get(f'lr_multiplier_{r}'))}" for r in others),
        ),
        Metric(
            "steps multiplier",
            law.get("steps_multiplier"),
            "× your steps",
            note=f"interval{_band(law, 'steps_multiplier')}",
        ),
    ]
    if _number(law.get("time_to_target_rel")) is not None:
        cards.append(
            Metric(
                "time to target vs sync",
                law["time_to_target_rel"],
                "× sync",
                note="relative to the same cluster run synchronously; interval"
                + _band(law, "time_to_target_rel"),
            )
        )
    if _number(law.get("baseline_lr")) is not None:
        cards.append(
            Metric(
                "learning rate",
                law.get("learning_rate"),
                note=f"{law['lr_multiplier']:.3g} × your {law['baseline_lr']:.3g}; box"
                + _band(law, "learning_rate"),
            )
        )
    if _number(law.get("baseline_steps")) is not None:
        time_s = _number(law.get("time_to_target_s"))
        cards += [
            Metric("learner steps to target", _whole(law.get("learner_steps_to_target"))),
            Metric("time to target", None if time_s is None else time_s / 3600, "h"),
            Metric("cost to target", law.get("cost_to_target_usd"), "USD"),
        ]
    heading = (
        f"Law ({law.get('reading')} reading) at staleness {law.get('staleness_summary')} = "
        f"{format_number(_number(law.get('staleness')))}"
    )
    return [(heading, cards)]


def _other_readings(law: dict[str, Any]) -> list[str]:
    return [r for r in (law.get("readings") or {}) if r != law.get("reading")]


def law_readings_table(law: dict[str, Any]) -> pl.DataFrame:
    """The law's answers under every reading, the primary first: the multipliers, time
    relative to the same cluster run synchronously and, with the user's baseline, their
    learning rate and hours."""
    readings = [law.get("reading"), *_other_readings(law)]
    suffix = {r: "" if i == 0 else f"_{r}" for i, r in enumerate(readings)}
    columns: dict[str, list[Any]] = {
        "reading": [f"{r} (primary)" if i == 0 else r for i, r in enumerate(readings)],
        "LR ×": [_number(law.get(f"lr_multiplier{suffix[r]}")) for r in readings],
        "steps ×": [_number(law.get(f"steps_multiplier{suffix[r]}")) for r in readings],
        "time (× sync)": [_number(law.get(f"time_to_target_rel{suffix[r]}")) for r in readings],
    }
    if _number(law.get("baseline_lr")) is not None:
        columns["learning rate"] = [_number(law.get(f"learning_rate{suffix[r]}")) for r in readings]
    if _number(law.get("baseline_steps")) is not None:
        columns["time to target (h)"] = [
            None if (t := _number(law.get(f"time_to_target_s{suffix[r]}"))) is None else t / 3600
            for r in readings
        ]
    columns["measured on"] = [(law.get("readings") or {}).get(r, "") for r in readings]
    schema = {k: pl.String if k in ("reading", "measured on") else pl.Float64 for k in columns}
    return pl.DataFrame(columns, schema=schema)


def law_text(law: dict[str, Any]) -> str:
    """The primary reading's answer in words, with the user's numbers where given, and how far
    the scenario is from what the law was measured on."""
    lines = [
        f"Under the {law.get('reading')} reading the learning rate is "
        + (
            f"{law['lr_multiplier']:.3g} × your {law['baseline_lr']:.3g} = "
            f"{_g(law.get('learning_rate'))}{_band(law, 'learning_rate')}"
            if _number(law.get("baseline_lr")) is not None
            else f"{_x(law['lr_multiplier'])} your on-policy run's{_band(law, 'lr_multiplier')}"
        )
        + f", and the learner steps to target {_x(law.get('steps_multiplier'))} its"
        + f"{_band(law, 'steps_multiplier')}."
    ]
    time_s = _number(law.get("time_to_target_s"))
    if _number(law.get("baseline_steps")) is not None and time_s is not None:
        step_s = law["time_per_baseline_step_s"] / law["learner_steps_multiplier"]
        lo, hi = _number(law.get("time_to_target_s_lo")), _number(law.get("time_to_target_s_hi"))
        interval = "" if lo is None or hi is None else f" [{lo / 3600:.3g} h, {hi / 3600:.3g} h]"
        lines[0] += (
            f" Time to target: {law['baseline_steps']:,.0f} × "
            f"{law['learner_steps_multiplier']:.3g} = {law['learner_steps_to_target']:,.0f} "
            f"learner steps × {format_number(step_s)} s = {time_s / 3600:.3g} h{interval}."
        )
    if _number(law.get("time_to_target_rel")) is not None:
        lines[0] += (
            f" That is {_x(law['time_to_target_rel'])}{_band(law, 'time_to_target_rel')} the "
            "time to target of the same cluster run synchronously (step "
            f"{format_number(_number(law.get('sync_step_time_s')))} s)."
        )
    missing = [
        f"`target.{key}`" for key in ("baseline_lr", "baseline_steps") if law.get(key) is None
    ]
    if missing:
        lines.append(
            f"Set {' and '.join(missing)} in the scenario (your on-policy run's learning rate "
            "and learner steps to the target reward) to see your own learning rate and hours. "
            "The law is applied as ratios to your run, never as the learning rates or hours of "
            "the small model it was measured on."
        )
    if law.get("regime_distance"):
        lines.append(f"How far this run is from the law's: {law['regime_distance']}")
    lines += [f"Law warning: {w}" for w in law.get("warnings") or []]
    return "\n\n".join(lines)


def add_law_section(page: Page, summary: RunSummary) -> None:
    """The law's section of the page: the primary reading's cards, every reading side by side,
    and the answer in words with how far the run is from what the law was measured on."""
    groups = law_metrics(summary)
    if not groups:
        return
    law = summary.law or {}
    for heading, metrics in groups:
        page.metrics(heading, metrics)
    page.prose(law_text(law))
    page.table(
        law_readings_table(law),
        caption="The same answers under every reading of the law (LR ×, steps ×: multipliers "
        "of your on-policy run's learning rate and learner steps; time relative to the same "
        "cluster run synchronously).",
    )


def staleness_chart(summary: RunSummary) -> alt.TopLevelMixin:
    """Grouped bars: share of samples and of tokens per staleness value."""
    rows = [row.model_dump() for row in summary.staleness.histogram]
    histogram = pl.DataFrame(
        rows, schema={"staleness": pl.Int64, "samples": pl.Float64, "tokens": pl.Float64}
    )
    long = (
        histogram.unpivot(index="staleness", on=["samples", "tokens"], variable_name="weighting")
        .rename({"value": "count"})
        .with_columns(share=pl.col("count") / pl.col("count").sum().over("weighting"))
        .with_columns(pl.col("share").fill_nan(0.0))
    )
    return (
        alt.Chart(long)
        .mark_bar()
        .encode(
            x=alt.X("staleness:O", title="staleness (versions)", axis=alt.Axis(labelAngle=0)),
            xOffset=alt.XOffset("weighting:N"),
            y=alt.Y("share:Q", title="share", axis=alt.Axis(format="%")),
            color=alt.Color("weighting:N", title="weighted by"),
            tooltip=[
                alt.Tooltip("staleness:O"),
                alt.Tooltip("weighting:N"),
                alt.Tooltip("count:Q", format=",.0f"),
                alt.Tooltip("share:Q", format=".2%"),
            ],
        )
        .properties(width=CHART_WIDTH, height=220)
    )


def pool_utilisation(
    busy: pl.DataFrame, *, t_end: float, bins: int, units: dict[str, int] | None = None
) -> pl.DataFrame:
    """Busy fraction per pool, kind and time bin: busy unit-seconds / (units × bin width).

    ``units`` gives a pool's size where it is known (the scenario's engine count); otherwise
    it is the largest ``unit`` index in the trace plus one (units are numbered from 0).
    """
    known = units or {}
    seen = busy.group_by("pool").agg(seen=pl.col("unit").max() + 1)
    sizes = seen.with_columns(
        units=pl.col("pool")
        .replace_strict(known, default=None, return_dtype=pl.Int64)
        .fill_null(pl.col("seen"))
    ).select("pool", "units")
    return (
        bin_intervals(busy, t_end=t_end, bins=bins, by=["pool", "kind"])
        .join(sizes, on="pool")
        .with_columns(utilisation=pl.col("value") / pl.col("units"))
        .select("pool", "kind", "bin", "bin_start_s", "bin_end_s", "units", "utilisation")
    )


def utilisation_chart(
    busy: pl.DataFrame, *, t_end: float, warmup_s: float, units: dict[str, int] | None = None
) -> alt.TopLevelMixin:
    """Stacked busy fraction over time, one panel per pool."""
    binned = pool_utilisation(busy, t_end=t_end, bins=UTILISATION_BINS, units=units).with_columns(
        time_s=(pl.col("bin_start_s") + pl.col("bin_end_s")) / 2,
        pool_label=pl.format("{} ({} units)", "pool", "units"),
    )
    pools = sorted(
        binned["pool"].unique().to_list(),
        key=lambda p: (POOL_ORDER.index(p) if p in POOL_ORDER else len(POOL_ORDER), p),
    )
    x = alt.X(
        "time_s:Q", title="simulated time (s)", scale=alt.Scale(domain=[0, t_end], nice=False)
    )
    panels = []
    for pool in pools:
        frame = binned.filter(pl.col("pool") == pool)
        area = (
            alt.Chart(frame)
            .mark_area(interpolate="step")
            .encode(
                x=x,
                y=alt.Y(
                    "utilisation:Q",
                    stack="zero",
                    title=f"{frame['pool_label'][0]} busy",
                    axis=alt.Axis(format="%"),
                    scale=alt.Scale(domain=[0, 1]),
                ),
                color=alt.Color("kind:N", title="activity"),
                tooltip=[
                    alt.Tooltip("bin_start_s:Q", title="from (s)", format=",.1f"),
                    alt.Tooltip("bin_end_s:Q", title="to (s)", format=",.1f"),
                    alt.Tooltip("kind:N"),
                    alt.Tooltip("utilisation:Q", format=".1%"),
                ],
            )
        )
        panels.append(
            alt.layer(_warmup_band(warmup_s), area).properties(width=CHART_WIDTH, height=150)
        )
    return alt.vconcat(*panels).resolve_scale(color="shared")


def queue_chart(
    queue: pl.DataFrame, *, t_end: float, warmup_s: float, summary: RunSummary
) -> alt.TopLevelMixin:
    """Groups waiting in the buffer over time: the exact step trace, or its binned mean."""
    x = alt.X(
        "time_s:Q", title="simulated time (s)", scale=alt.Scale(domain=[0, t_end], nice=False)
    )
    y_title = "groups waiting"
    if queue.height <= RAW_ROWS_LIMIT:
        frame = queue.select(pl.col("time_s").cast(pl.Float64), "groups_waiting").sort("time_s")
        # Extend the last level to the end of the run, so the step line covers the whole axis.
        if frame.height:
            frame = pl.concat(
                [frame, frame.tail(1).with_columns(time_s=pl.lit(t_end))], how="vertical_relaxed"
            )
        signal = (
            alt.Chart(frame)
            .mark_line(interpolate="step-after")
            .encode(
                x=x,
                y=alt.Y("groups_waiting:Q", title=y_title),
                tooltip=["time_s:Q", "groups_waiting:Q"],
            )
        )
    else:
        intervals = step_signal_intervals(queue, time="time_s", value="groups_waiting", t_end=t_end)
        frame = bin_intervals(intervals, t_end=t_end, bins=QUEUE_BINS, weight="groups_waiting")
        frame = frame.with_columns(time_s=pl.col("bin_start_s"))
        base = alt.Chart(frame)
        signal = alt.layer(
            base.mark_area(interpolate="step-after", opacity=0.25).encode(
                x=x, y=alt.Y("low:Q", title=y_title), y2="high:Q"
            ),
            base.mark_line(interpolate="step-after").encode(
                x=x,
                y=alt.Y("value:Q", title=y_title),
                tooltip=[
                    alt.Tooltip("bin_start_s:Q", title="from (s)", format=",.1f"),
                    alt.Tooltip("value:Q", title="mean waiting", format=",.2f"),
                    alt.Tooltip("low:Q", title="least"),
                    alt.Tooltip("high:Q", title="most"),
                ],
            ),
        )
    layers = [_warmup_band(warmup_s), signal]
    mean_queue = summary.mean_queue_groups
    if mean_queue is not None:
        mean_rule = (
            alt.Chart(pl.DataFrame({"mean": [mean_queue]}))
            .mark_rule(strokeDash=[5, 4], color="#e45756")
            .encode(
                y="mean:Q", tooltip=[alt.Tooltip("mean:Q", title="mean (summary)", format=",.2f")]
            )
        )
        layers.append(mean_rule)
    return alt.layer(*layers).properties(width=CHART_WIDTH, height=200)


def step_time_chart(steps: pl.DataFrame) -> alt.TopLevelMixin:
    """Per learner step: its duration and the idle time before it."""
    frame = steps.select(
        "step",
        pl.col("end_s").sub(pl.col("start_s")).alias("step duration"),
        pl.col("idle_before_s").alias("idle before the step"),
    ).sort("step")
    if frame.height > RAW_ROWS_LIMIT:
        frame = frame.gather_every(-(-frame.height // RAW_ROWS_LIMIT))
    long = frame.unpivot(index="step", variable_name="measure", value_name="seconds")
    # Steps are whole numbers: with few of them, tick each one rather than show "0.5".
    step_axis = (
        alt.Axis(values=frame["step"].to_list(), format="d")
        if frame.height <= 20
        else alt.Axis(format="d")
    )
    return (
        alt.Chart(long)
        .mark_line(point=frame.height <= 200)
        .encode(
            x=alt.X("step:Q", title="learner step", axis=step_axis),
            y=alt.Y("seconds:Q", title="seconds"),
            color=alt.Color("measure:N", title=None),
            tooltip=["step:Q", "measure:N", alt.Tooltip("seconds:Q", format=",.3f")],
        )
        .properties(width=CHART_WIDTH, height=200)
    )


#: Learner phases in the order a step runs them; "wait" comes from steps.parquet.
PHASE_ORDER = ["wait", "switch", "old_logprob", "reference", "update", "weight sync"]
PHASE_NAMES = {"sync": "weight sync", "weight_sync": "weight sync"}


def learner_phases(busy: pl.DataFrame, steps: pl.DataFrame) -> pl.DataFrame:
    """Seconds per learner step and phase (``step``, ``phase``, ``seconds``).

    A learner busy interval belongs to the step it starts in; a weight sync, which starts as
    its step ends, to that step. ``wait`` is the idle time before the step.
    """
    schema = {"step": pl.Int64, "phase": pl.String, "seconds": pl.Float64}
    if steps.is_empty():
        return pl.DataFrame(schema=schema)
    learner = busy.filter(pl.col("pool") == "learner").with_columns(
        phase=pl.col("kind").replace(PHASE_NAMES)
    )
    bounds = steps.select("step", "start_s", "end_s").sort("start_s")
    work = learner.filter(pl.col("phase") != "weight sync").sort("start_s")
    sync = learner.filter(pl.col("phase") == "weight sync").sort("start_s")
    by_start = work.join_asof(
        bounds.select("step", pl.col("start_s").alias("step_start_s")).sort("step_start_s"),
        left_on="start_s",
        right_on="step_start_s",
        strategy="backward",
    )
    by_end = sync.join_asof(
        bounds.select("step", pl.col("end_s").alias("step_end_s")).sort("step_end_s"),
        left_on="start_s",
        right_on="step_end_s",
        strategy="backward",
    )
    intervals = pl.concat(
        [
            frame.select("step", "phase", (pl.col("end_s") - pl.col("start_s")).alias("seconds"))
            for frame in (by_start, by_end)
        ]
    ).filter(pl.col("step").is_not_null())
    wait = steps.select(
        "step", pl.lit("wait").alias("phase"), pl.col("idle_before_s").alias("seconds")
    )
    return (
        pl.concat([wait.cast(schema), intervals.cast(schema)])
        .group_by("step", "phase")
        .agg(pl.col("seconds").sum())
        .sort("step", "phase")
    )


def phase_means(phases: pl.DataFrame, first_step: int = 0) -> pl.DataFrame:
    """Mean seconds per step of each phase from ``first_step`` on (steps without a phase count
    as zero), in the order a step runs them."""
    measured = phases.filter(pl.col("step") >= first_step)
    count = measured["step"].n_unique()
    order = {name: i for i, name in enumerate(PHASE_ORDER)}
    return (
        measured.group_by("phase")
        .agg((pl.col("seconds").sum() / max(count, 1)).alias("mean_s_per_step"))
        .with_columns(order=pl.col("phase").replace_strict(order, default=len(order)))
        .sort("order", "phase")
        .drop("order")
    )


def learner_phase_chart(phases: pl.DataFrame) -> alt.TopLevelMixin:
    """Stacked bars: each learner step's seconds by phase."""
    frame = phases
    steps_seen = frame["step"].n_unique()
    if steps_seen > RAW_ROWS_LIMIT // len(PHASE_ORDER):
        every = -(-steps_seen // (RAW_ROWS_LIMIT // len(PHASE_ORDER)))
        frame = frame.filter(pl.col("step") % every == 0)
    present = [p for p in PHASE_ORDER if p in set(frame["phase"].to_list())]
    others = sorted(set(frame["phase"].to_list()) - set(PHASE_ORDER))
    order = present + others
    frame = frame.with_columns(
        phase_order=pl.col("phase").replace_strict(
            {p: i for i, p in enumerate(order)}, return_dtype=pl.Int64
        )
    )
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("step:O", title="learner step", axis=alt.Axis(labelAngle=0)),
            y=alt.Y("seconds:Q", title="seconds", stack="zero"),
            color=alt.Color("phase:N", title="phase", sort=order),
            order=alt.Order("phase_order:Q"),
            tooltip=["step:O", "phase:N", alt.Tooltip("seconds:Q", format=",.3f")],
        )
        .properties(width=CHART_WIDTH, height=240)
    )


def sensitivity_frame(result: dict[str, Any]) -> pl.DataFrame:
    """One row per coefficient and direction, as the summary's ``sensitivity.rows``."""
    schema = {
        "key": pl.String,
        "direction": pl.String,
        "value": pl.Float64,
        "moved_to": pl.Float64,
        "step_time_s": pl.Float64,
        "step_time_change": pl.Float64,
        "speedup": pl.Float64,
        "speedup_change": pl.Float64,
    }
    rows = [{k: row.get(k) for k in schema} for row in result.get("rows") or []]
    return pl.DataFrame(rows, schema=schema, orient="row")


def sensitivity_chart(result: dict[str, Any]) -> alt.TopLevelMixin:
    """Tornado bars: relative change of step time and of speed-up per coefficient moved."""
    frame = sensitivity_frame(result)
    long = frame.unpivot(
        index=["key", "direction"],
        on=["step_time_change", "speedup_change"],
        variable_name="measure",
        value_name="change",
    ).with_columns(
        pl.col("measure").replace({"step_time_change": "step time", "speedup_change": "speed-up"}),
        pl.col("direction").replace(
            {
                "low": f"-{result.get('relative_step', 0.2):.0%}",
                "high": f"+{result.get('relative_step', 0.2):.0%}",
            }
        ),
    )
    keys = frame["key"].unique(maintain_order=True).to_list()
    return (
        alt.Chart(long)
        .mark_bar()
        .encode(
            y=alt.Y("key:N", title=None, sort=keys),
            yOffset=alt.YOffset("direction:N"),
            x=alt.X("change:Q", title="change", axis=alt.Axis(format="%")),
            color=alt.Color("direction:N", title="coefficient moved"),
            column=alt.Column("measure:N", title=None, sort=["step time", "speed-up"]),
            tooltip=["key:N", "direction:N", "measure:N", alt.Tooltip("change:Q", format="+.2%")],
        )
        .properties(width=CHART_WIDTH // 2 - 60, height=alt.Step(10))
    )


def _sensitivity_caption(result: dict[str, Any]) -> str:
    speedup = _number(result.get("speedup"))
    step_s = _number(result.get("step_time_s"))
    mode, reference = result.get("mode"), result.get("reference_mode")
    return (
        f"Each coefficient moved by ±{result.get('relative_step', 0.2):.0%}, one at a time, "
        f"{result.get('steps')} steps per run with the same seed. Unmoved: step time "
        f"{format_number(step_s)} s in mode {mode}, speed-up {format_number(speedup)}x "
        f"against mode {reference} (synchronous step time over asynchronous). A long bar is a "
        "coefficient worth measuring for this setup."
    )


def pool_sizes(scenario: dict[str, Any]) -> dict[str, int]:
    """Pool sizes the scenario states: the rollout pool has one unit per engine."""
    engines = (scenario.get("cluster") or {}).get("rollout_engines")
    return {"rollout": engines} if isinstance(engines, int) and engines > 0 else {}


def scenario_table(settings: dict[str, Any], round_numbers: bool = False) -> pl.DataFrame:
    """A nested mapping flattened to ``setting`` (dotted key path) and ``value`` rows.

    Values are shown exactly (as JSON) unless ``round_numbers``, which shows floats to four
    significant digits: right for computed quantities, wrong for settings a user typed.
    """
    rows = list(_flatten(settings, "", round_numbers))
    return pl.DataFrame(rows, schema={"setting": pl.String, "value": pl.String}, orient="row")


def _flatten(value: Any, prefix: str, round_numbers: bool):
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            yield from _flatten(inner, f"{prefix}.{key}" if prefix else str(key), round_numbers)
    elif isinstance(value, str):
        yield prefix, value
    elif round_numbers and isinstance(value, float):
        yield prefix, format_number(value)
    else:
        yield prefix, json.dumps(value)


def _warmup_band(warmup_s: float) -> alt.Chart:
    return (
        alt.Chart(pl.DataFrame({"start": [0.0], "end": [max(warmup_s, 0.0)], "label": ["warm-up"]}))
        .mark_rect(color="#9a9aa8", opacity=0.15)
        .encode(x="start:Q", x2="end:Q", tooltip=[alt.Tooltip("label:N", title="")])
    )


def _queue_caption(queue: pl.DataFrame) -> str:
    text = "Completed groups waiting in the buffer for the learner. The dashed line is the mean."
    if queue.height > RAW_ROWS_LIMIT:
        text += (
            f" The trace has {queue.height:,} changes, so it is shown as the time-weighted mean "
            f"in {QUEUE_BINS} bins, with the band spanning the least and most waiting in each bin."
        )
    return text


def _subtitle(scenario: dict[str, Any], summary: RunSummary) -> str:
    def get(*path: str) -> Any:
        node: Any = scenario
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node

    parts = [
        f"mode {get('algorithm', 'mode')}" if get("algorithm", "mode") else None,
        get("model", "preset"),
        get("hardware", "gpu"),
    ]
    engines, tp, learner = (
        get("cluster", "rollout_engines"),
        get("cluster", "rollout_tp"),
        get("cluster", "learner_gpus"),
    )
    if engines is not None:
        parts.append(f"{engines} rollout engines" + (f" × TP{tp}" if tp is not None else ""))
    if learner is not None:
        parts.append(f"{learner} learner GPUs")
    parts.append(f"{summary.steps} steps")
    return " · ".join(str(p) for p in parts if p)


def _trace_end(busy: pl.DataFrame, queue: pl.DataFrame, steps: pl.DataFrame) -> float:
    ends = [
        busy["end_s"].max() if busy.height else None,
        queue["time_s"].max() if queue.height else None,
        steps["end_s"].max() if steps.height else None,
    ]
    return float(max((e for e in ends if e is not None), default=0.0))


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _whole(steps: float | None) -> int | None:
    """Learner steps are whole: a run cannot take a fraction of one."""
    return None if steps is None else math.ceil(steps)
