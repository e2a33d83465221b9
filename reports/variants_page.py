"""The page of ``stalesim simulate --vary``: the variants of one scenario side by side.

It reads ``variants.json`` (what was varied, the law's readings) and ``variants.parquet`` (one
row per variant) and never runs the simulator. Sections: the law's distance from the scenario,
one chart per headline number against the variants, and the table.
"""

from __future__ import annotations

from pathlib import Path

import altair as alt
import polars as pl
from stalesim.reports.inputs import read_json_object, read_parquet_table
from stalesim.reports.page import Page

VARIANTS_FILES = ("variants.json", "variants.parquet")
REQUIRED_COLUMNS = ["variant", "gpus", "samples_per_s", "step_time_mean_s", "staleness_max"]
#: Column, axis title: the charts, each drawn where the variants have the column.
CHARTS = (
    ("samples_per_s", "throughput (samples/s)"),
    ("staleness_max", "staleness max (versions)"),
    ("law_lr_multiplier", "learning-rate multiplier (× your on-policy run's)"),
    ("law_time_to_target_rel", "time to target (× the synchronous run's)"),
    ("law_learning_rate", "learning rate (your baseline × multiplier)"),
    ("law_time_to_target_s", "time to target (s, your baseline steps)"),
)
TABLE_NAMES = {
    "variant": "variant",
    "gpus": "GPUs",
    "samples_per_s": "samples/s",
    "tokens_per_s": "tokens/s",
    "step_time_mean_s": "step time (s)",
    "staleness_mean": "staleness mean",
    "staleness_max": "staleness max",
    "utilisation_rollout": "rollout utilisation",
    "utilisation_learner": "learner utilisation",
    "law_lr_multiplier": "LR ×",
    "law_steps_multiplier": "steps ×",
    "law_time_to_target_rel": "time to target × sync",
    "law_learning_rate": "learning rate",
    "law_learner_steps_to_target": "learner steps to target",
    "law_time_to_target_s": "time to target (s)",
    "law_cost_to_target_usd": "cost to target (USD)",
}


def write_variants_report(out_dir: Path) -> Path:
    """Render ``out_dir/report.html`` from ``variants.json`` and ``variants.parquet``."""
    out_dir = Path(out_dir)
    return build_variants_page(out_dir).write(out_dir / "report.html")


def build_variants_page(out_dir: Path) -> Page:
    meta = read_json_object(out_dir / "variants.json")
    table = read_parquet_table(out_dir / "variants.parquet", REQUIRED_COLUMNS)
    vary = " ".join(str(v) for v in meta.get("vary") or [])
    law = meta.get("law") or {}
    page = Page(
        f"stalesim simulate --vary {vary}",
        subtitle=f"{table.height} variants · {meta.get('steps')} learner steps each · seed "
        f"{meta.get('seed')} · law reading {law.get('reading', '-')}",
    )
    if law.get("regime_distance"):
        page.prose(f"Law: {law['regime_distance']}", heading="What the law's answers mean")
    order = table["variant"].to_list()
    for column, title in CHARTS:
        if column in table.columns and table[column].drop_nulls().len():
            page.chart(_bar(table, column, title, order), heading=title)
    shown = [c for c in TABLE_NAMES if c in table.columns]
    page.table(
        table.select(shown).rename({c: TABLE_NAMES[c] for c in shown}),
        heading="Variants",
        caption="Each variant's trace, summary.json and page data are in its subfolder.",
    )
    return page


def _bar(table: pl.DataFrame, column: str, title: str, order: list[str]) -> alt.Chart:
    return (
        alt.Chart(table.select("variant", column))
        .mark_bar()
        .encode(
            y=alt.Y("variant:N", sort=order, title=None),
            x=alt.X(
                f"{column}:Q",
                title=title,
                axis=alt.Axis(format=".2~e") if column == "law_learning_rate" else alt.Axis(),
            ),
            tooltip=["variant:N", alt.Tooltip(f"{column}:Q", format=",.4~g")],
        )
        .properties(width=640, height=28 * max(1, table.height))
    )
