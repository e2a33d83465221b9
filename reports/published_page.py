"""The page ``stalesim check published`` writes: predicted vs measured speed-up of going
asynchronous on published setups, read from the check's ``published_check.json``, so a page can
be re-rendered from any finished run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import altair as alt
import polars as pl
from stalesim.common.tables import Column, records_frame, require_finished
from stalesim.reports.inputs import read_json_object
from stalesim.reports.page import Metric, Page

#: the completion marker's kind of a `check published` folder
PUBLISHED_KIND = "check published"
PAIR_COLUMNS = (
    "id",
    "gpus_sync",
    "gpus_async",
    "sync_mode",
    "async_mode",
    "measured_sync_step_s",
    "measured_async_step_s",
    "predicted_sync_step_s",
    "predicted_async_step_s",
    "measured_speedup",
    "predicted_speedup",
    "speedup_rel_error",
    "predicted_async_learner_busy",
    "source",
)
#: The "calibrated from the sync run" prediction (absent from results of older checks).
CALIBRATED_COLUMNS = (
    "calibrated_sync_step_s",
    "calibrated_async_step_s",
    "calibrated_speedup",
    "calibrated_speedup_rel_error",
    "calibrated_async_step_rel_error",
)


#: What each column of a pair must hold (a string in a number's place, NaN or infinity is a
#: damaged file, not a figure to plot).
_STEP = Column("float", above=0.0)
PAIR_SCHEMA: dict[str, Column] = {
    "id": Column("str"),
    "gpus_sync": Column("int", min=1),
    "gpus_async": Column("int", min=1),
    "sync_mode": Column("str"),
    "async_mode": Column("str"),
    "measured_sync_step_s": _STEP,
    "measured_async_step_s": _STEP,
    "predicted_sync_step_s": _STEP,
    "predicted_async_step_s": _STEP,
    "measured_speedup": _STEP,
    "predicted_speedup": _STEP,
    "speedup_rel_error": Column("float", min=-1.0),
    "predicted_async_learner_busy": Column("float", min=0.0, max=1.0),
    "source": Column("str"),
}
CALIBRATED_SCHEMA: dict[str, Column] = {
    "calibrated_sync_step_s": Column("float", above=0.0, nullable=True),
    "calibrated_async_step_s": Column("float", above=0.0, nullable=True),
    "calibrated_speedup": Column("float", above=0.0, nullable=True),
    "calibrated_speedup_rel_error": Column("float", min=-1.0, nullable=True),
    "calibrated_async_step_rel_error": Column("float", min=-1.0, nullable=True),
}


def _pairs(result: dict[str, Any], path: Path) -> pl.DataFrame:
    frame = records_frame(
        result.get("pairs"),
        {**PAIR_SCHEMA, **CALIBRATED_SCHEMA},
        f"{path}: pairs",
        optional=CALIBRATED_SCHEMA,
    )
    optional = [c for c in CALIBRATED_COLUMNS if c in frame.columns]
    return frame.select(*PAIR_COLUMNS, *optional)


def write_published_report(out_dir: Path) -> Path:
    """Render ``out_dir/report.html`` from ``out_dir/published_check.json``."""
    path = out_dir / "published_check.json"
    # a folder killed while publishing, or holding files of two runs, is refused; one written
    # before completion markers is read as it is
    require_finished(out_dir, PUBLISHED_KIND, ["published_check.json"], legacy_ok=True)
    result = read_json_object(path)
    pairs = _pairs(result, path)
    errors = pairs["speedup_rel_error"].abs()
    page = Page(
        "Published setups: predicted vs measured async speed-up",
        f"{pairs.height} setups, {result.get('steps')} learner steps per simulation, "
        f"seed {result.get('seed')}; measurements from {result.get('measurements_file')} "
        "(read by this check only, never by the time models)",
    )
    page.metrics(
        "Summary",
        [
            Metric("setups", pairs.height),
            Metric("median |speed-up error|", float(errors.median()), kind="percent"),
            Metric("largest |speed-up error|", float(errors.max()), kind="percent"),
            Metric(
                "predictions below the measured speed-up",
                int((pairs["speedup_rel_error"] < 0).sum()),
                note="a negative error: the simulator predicts less gain than was measured",
            ),
            *_calibrated_metrics(pairs),
        ],
    )
    top = float(max(pairs["measured_speedup"].max(), pairs["predicted_speedup"].max())) * 1.1
    diagonal = (
        alt.Chart(pl.DataFrame({"x": [1.0, top], "y": [1.0, top]}))
        .mark_line(strokeDash=[4, 4], color="gray")
        .encode(x="x:Q", y="y:Q")
    )
    points = (
        alt.Chart(pairs.select("id", "measured_speedup", "predicted_speedup"))
        .mark_circle(size=80)
        .encode(
            x=alt.X("measured_speedup:Q", title="measured speed-up", scale=alt.Scale(zero=False)),
            y=alt.Y("predicted_speedup:Q", title="predicted speed-up", scale=alt.Scale(zero=False)),
            color=alt.Color("id:N", title="setup"),
            tooltip=["id", "measured_speedup", "predicted_speedup"],
        )
    )
    page.chart(
        (diagonal + points).properties(width=420, height=320),
        "Predicted vs measured",
        "On the dashed line the prediction equals the measurement; below it the simulator "
        "predicts less gain from going asynchronous than the real system measured.",
    )
    page.table(
        pairs,
        "Every setup",
        "Step times in seconds; error = predicted / measured - 1. predicted_*: from datasheet "
        "figures and the simulator's defaults; calibrated_*: from the synchronous run's "
        "per-phase breakdown alone (stalesim calibrate --from verl on the sync side, then both "
        "sides simulated with that fragment).",
    )
    mechanisms = result.get("mechanisms") or []
    if mechanisms:
        mech = pl.DataFrame(mechanisms, infer_schema_length=None)
        keep = [
            c
            for c in (
                "id",
                "mechanism",
                "applies",
                "baseline_speedup",
                "predicted_speedup",
                "change",
            )
            if c in mech.columns
        ]
        page.table(
            mech.select(keep),
            "What moves the prediction",
            "Each pair rerun with one switch flipped on both sides (where the mode has it); "
            "change = speed-up with the switch / baseline speed-up - 1; applies=false: neither "
            "side's mode has the switch, or it is already in that state.",
        )
    return page.write(out_dir / "report.html")


def _calibrated_metrics(pairs: pl.DataFrame) -> list[Metric]:
    if "calibrated_speedup_rel_error" not in pairs.columns:
        return []
    errors = pairs["calibrated_speedup_rel_error"].drop_nulls().abs()
    steps = pairs["calibrated_async_step_rel_error"].drop_nulls().abs()
    if errors.is_empty():
        return []
    return [
        Metric(
            "median |speed-up error|, calibrated from the sync run",
            float(errors.median()),
            kind="percent",
            note=f"{errors.len()} setups with a published synchronous breakdown",
        ),
        Metric(
            "median |async step error|, calibrated from the sync run",
            float(steps.median()),
            kind="percent",
        ),
    ]
