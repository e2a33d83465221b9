"""The replay page: a real pipeline run and its simulator replay, overlaid.

Rendered from files only: the run's ``samples/steps/busy.parquet``, and the replay folder's
simulated ``samples/steps/busy.parquet`` and ``replay.json`` (errors and targets). Three
overlays: the staleness histograms (share of consumed samples at each lag), throughput over
time (samples consumed, cumulative, against seconds since the run began) and the learner's
phases (mean seconds per learner step spent waiting, in overhead, training and publishing).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import altair as alt
import polars as pl
from stalesim.reports.page import Metric, Page

SOURCES = ["real", "sim"]
COLORS = alt.Scale(domain=SOURCES, range=["#1f77b4", "#ff7f0e"])


def _read(folder: Path, name: str) -> pl.DataFrame:
    path = folder / f"{name}.parquet"
    if not path.exists():
        raise ValueError(f"{path}: missing; run `stalesim validate replay` on the run first")
    return pl.read_parquet(path)


def staleness_frame(real: pl.DataFrame, sim: pl.DataFrame) -> pl.DataFrame:
    parts = []
    for source, samples in (("real", real), ("sim", sim)):
        used = samples.filter(pl.col("consumed_step").is_not_null())
        parts.append(
            used.group_by(pl.col("staleness_max").alias("staleness"))
            .agg(pl.len().alias("samples"))
            .with_columns(
                (pl.col("samples") / pl.col("samples").sum()).alias("share"),
                pl.lit(source).alias("source"),
            )
        )
    return pl.concat(parts).sort("source", "staleness")


def throughput_frame(real: pl.DataFrame, sim: pl.DataFrame, group_count: int) -> pl.DataFrame:
    parts = []
    for source, steps in (("real", real), ("sim", sim)):
        parts.append(
            steps.sort("step").select(
                pl.col("end_s").alias("time_s"),
                ((pl.col("step") + 1) * group_count).alias("samples_consumed"),
                pl.lit(source).alias("source"),
            )
        )
    return pl.concat(parts)


def phases_frame(real: pl.DataFrame, sim: pl.DataFrame, steps: int) -> pl.DataFrame:
    """Mean seconds per learner step in each learner phase, real and simulated."""
    parts = []
    for source, busy in (("real", real), ("sim", sim)):
        parts.append(
            busy.filter(pl.col("pool") == "learner")
            .group_by("kind")
            .agg(((pl.col("end_s") - pl.col("start_s")).sum() / steps).alias("seconds_per_step"))
            .with_columns(pl.lit(source).alias("source"))
        )
    return pl.concat(parts).rename({"kind": "phase"}).sort("source", "phase")


STAGE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("cadence_s", "ms", "learner step cadence"),
    ("learner_work_s", "ms", "learner work per step"),
    ("learner_idle_s", "ms", "learner wait per step"),
    ("step_s_cv", "", "learner step CV"),
    ("step_s_lag1", "", "learner step lag-1 autocorrelation"),
    ("batch_generation_s", "ms", "batch generation (launch to last group)"),
    ("batch_generation_cv", "", "batch generation CV"),
    ("rollout_decode_per_step_s", "ms", "engine decode per step"),
)


def stage_rows(real: dict[str, Any], sim: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The stage figures as (label, real, sim) strings, milliseconds where timed."""

    def show(key: str, value: float | None, unit: str) -> str:
        if value is None:
            return "-"
        if unit == "ms":
            return f"{value * 1e3:.1f}"
        return f"{value:+.2f}" if key.endswith("lag1") else f"{value:.2f}"

    return [
        (
            f"{label}{' (ms)' if unit else ''}",
            show(key, real.get(key), unit),
            show(key, sim.get(key), unit),
        )
        for key, unit, label in STAGE_ROWS
    ]


def targets_frame(result: dict) -> pl.DataFrame:
    """One row per target: the errors it holds, its limit and whether it was met."""
    err, targets, met = result["errors"], result["targets"], result["met"]

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:+.1%}"

    rows = [
        (
            "throughput",
            f"samples/s {pct(err['samples_per_s_rel'])}, steps/s {pct(err['steps_per_s_rel'])}",
            f"within {targets['throughput_rel']:.0%}",
            met["throughput"],
        ),
        (
            "staleness_mean",
            f"samples {err['staleness_mean_abs']:.3f}, tokens {err['staleness_token_mean_abs']:.3f}",
            f"within {targets['staleness_mean_abs']} version",
            met["staleness_mean"],
        ),
        (
            "ks",
            f"samples {err['ks_samples']:.3f}, tokens {err['ks_tokens']:.3f}",
            f"<= {targets['ks']}",
            met["ks"],
        ),
    ]
    return pl.DataFrame(
        [(name, figures, limit, "met" if ok else "MISSED") for name, figures, limit, ok in rows],
        schema=["target", "errors", "limit", "result"],
        orient="row",
    )


def build_pipeline_page(run_dir: Path, replay_dir: Path) -> Page:
    run_dir, replay_dir = Path(run_dir), Path(replay_dir)
    result = json.loads((replay_dir / "replay.json").read_text())
    real_samples, sim_samples = _read(run_dir, "samples"), _read(replay_dir, "samples")
    real_steps, sim_steps = _read(run_dir, "steps"), _read(replay_dir, "steps")
    real_busy, sim_busy = _read(run_dir, "busy"), _read(replay_dir, "busy")
    scenario = result["scenario"]
    group_count = scenario["workload"]["prompts_per_step"] * scenario["workload"]["group_size"]
    real, sim, err = result["real"], result["sim"], result["errors"]
    page = Page(
        "Pipeline run and its simulator replay",
        subtitle=f"{run_dir.name}: mode {result['mode']}, {result['steps']} learner steps",
    )
    page.metrics(
        "Throughput (steady state)",
        [
            Metric("real samples/s", real["samples_per_s"]),
            Metric("sim samples/s", sim["samples_per_s"]),
            Metric("error", err["samples_per_s_rel"], kind="percent", note="target within 3%"),
        ],
    )
    page.metrics(
        "Staleness",
        [
            Metric("real mean", real["staleness_mean"], "versions"),
            Metric("sim mean", sim["staleness_mean"], "versions"),
            Metric("KS (samples)", err["ks_samples"], note="target <= 0.1"),
            Metric("KS (tokens)", err["ks_tokens"], note="target <= 0.1"),
        ],
    )
    page.metrics(
        "Learner and queue",
        [
            Metric("real idle", real["learner_idle_fraction"], kind="percent"),
            Metric("sim idle", sim["learner_idle_fraction"], kind="percent"),
            Metric("real groups waiting", real["queue_mean_groups"]),
            Metric("sim groups waiting", sim["queue_mean_groups"]),
        ],
    )
    page.table(targets_frame(result), heading="Targets", caption="Each target, met or missed.")
    stages = result.get("stages")
    if stages:
        page.table(
            pl.DataFrame(
                stage_rows(stages["real"], stages["sim"]),
                schema=["stage", "real", "sim"],
                orient="row",
            ),
            heading="Stages per learner step (steady state)",
            caption="Where an error comes from: each stage's mean (ms), the learner's step "
            "CV and lag-1 autocorrelation, the batches' generation time. The simulator's "
            f"figures are the mean over seeds {result.get('seeds')}.",
        )
    stale = staleness_frame(real_samples, sim_samples)
    page.chart(
        alt.Chart(stale)
        .mark_bar()
        .encode(
            x=alt.X("staleness:O", title="staleness (versions)"),
            xOffset="source:N",
            y=alt.Y("share:Q", title="share of consumed samples"),
            color=alt.Color("source:N", scale=COLORS),
            tooltip=["source", "staleness", "samples", alt.Tooltip("share:Q", format=".3f")],
        )
        .properties(width=520, height=240),
        heading="Staleness histograms",
        caption="Share of consumed samples at each lag (the lag of a sample's oldest token).",
    )
    page.chart(
        alt.Chart(throughput_frame(real_steps, sim_steps, group_count))
        .mark_line(point=False)
        .encode(
            x=alt.X("time_s:Q", title="seconds since the run began"),
            y=alt.Y("samples_consumed:Q", title="samples consumed"),
            color=alt.Color("source:N", scale=COLORS),
        )
        .properties(width=520, height=240),
        heading="Throughput over time",
        caption="Samples consumed by the learner, cumulative; the slope is the throughput.",
    )
    phases = phases_frame(real_busy, sim_busy, result["steps"])
    page.chart(
        alt.Chart(phases)
        .mark_bar()
        .encode(
            x=alt.X("phase:N", title="learner phase"),
            xOffset="source:N",
            y=alt.Y("seconds_per_step:Q", title="seconds per learner step"),
            color=alt.Color("source:N", scale=COLORS),
            tooltip=["source", "phase", alt.Tooltip("seconds_per_step:Q", format=".4f")],
        )
        .properties(width=520, height=240),
        heading="Learner phases",
        caption="Mean seconds per learner step in each phase. Real: wait (for a batch), overhead "
        "(building the batch), train, sync (publishing the weights). The simulator names its "
        "fixed per-step cost 'forward' and charges the weight sync after each step.",
    )
    rows = pl.DataFrame(
        {
            "figure": list(err),
            "error": [float(v) if v is not None else None for v in err.values()],
        }
    )
    page.table(rows, heading="Every error", caption=json.dumps(result["targets"]))
    return page


def write_pipeline_page(run_dir: str | Path, replay_dir: str | Path) -> Path:
    """Render ``replay_dir/replay.html``; returns its path."""
    return build_pipeline_page(Path(run_dir), Path(replay_dir)).write(
        Path(replay_dir) / "replay.html"
    )
