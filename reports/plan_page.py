"""The capacity-planning page ``stalesim plan`` writes, read from its output folder as data.

It reads ``plan.json`` (recommendation, frontier, trade-off family, inputs, law) and
``candidates.parquet`` (every candidate, ranked) and never runs the simulator: a page can be
re-rendered from any finished plan. Sections: the recommendation card with its runner-up; the
time–cost frontier; the trade-off along the staleness bound (throughput up, learning rate down,
time to target with a minimum); the uncertainty (the law's interval carried through, and the
ranking under the paper's exponent); the ranked table; the infeasible candidates with reasons;
the inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import altair as alt
import polars as pl
from stalesim.reports.inputs import read_json_object, read_parquet_table
from stalesim.reports.page import Metric, Page, format_number
from stalesim.reports.simulate_page import scenario_table
from stalesim.sim.plan_rank import describe_setup

CHART_WIDTH = 760
#: Rows of the ranked table and bars of the uncertainty chart.
TOP_ROWS = 50
UNCERTAINTY_ROWS = 12

REQUIRED_COLUMNS = [
    "candidate_id", "setup", "evaluated", "rank", "rank_alpha1", "on_frontier", "reason", "gpu",
    "mode", "max_staleness", "samples_per_s", "staleness", "eta_opt", "eta_opt_lo", "eta_opt_hi",
    "time_to_target_s", "time_to_target_s_lo", "time_to_target_s_hi", "time_to_target_s_alpha1",
    "cost_to_target_usd", "learner_steps_to_target",
]  # fmt: skip

TABLE_COLUMNS = [
    "rank",
    "rank_alpha1",
    "setup",
    "gpu",
    "total_gpus",
    "mode",
    "max_staleness",
    "samples_per_s",
    "step_time_s",
    "staleness",
    "eta_opt",
    "learner_steps_to_target",
    "time_to_target_h",
    "cost_to_target_usd",
    "idle_gpu_hours_to_target",
    "on_frontier",
]


def write_plan_report(out_dir: Path) -> Path:
    """Render ``out_dir/report.html`` from ``plan.json`` and ``candidates.parquet``."""
    out_dir = Path(out_dir)
    return build_plan_page(out_dir).write(out_dir / "report.html")


def rerender_plan_report(out_dir: Path) -> Path:
    """Render the page of the finished plan in ``out_dir`` again and record it in the folder's
    completion marker (under the folder's lock, so no plan publishes meanwhile). Refuses a
    folder whose result is unfinished or mixed (ValueError, one line)."""
    from stalesim.sim.output_dir import locked, require_complete, seal
    from stalesim.sim.plan_output import RESULT_FILES

    out_dir = Path(out_dir)
    with locked(out_dir, wait=False, what=" (a plan?)"):
        marker = require_complete(out_dir, "plan", RESULT_FILES)
        assert marker is not None
        path = write_plan_report(out_dir)
        seal(out_dir, "plan", sorted({*marker["files"], path.name}))
    return path


def read_candidates(out_dir: Path) -> pl.DataFrame:
    table = read_parquet_table(out_dir / "candidates.parquet", REQUIRED_COLUMNS)
    return table.with_columns(
        (pl.col("time_to_target_s") / 3600).alias("time_to_target_h"),
        (pl.col("time_to_target_s_lo") / 3600).alias("time_to_target_h_lo"),
        (pl.col("time_to_target_s_hi") / 3600).alias("time_to_target_h_hi"),
        (pl.col("time_to_target_s_alpha1") / 3600).alias("time_to_target_h_alpha1"),
    )


def build_plan_page(out_dir: Path) -> Page:
    """The plan page of the plan in ``out_dir``, not yet written."""
    out_dir = Path(out_dir)
    summary = read_json_object(out_dir / "plan.json")
    table = read_candidates(out_dir)
    counts = summary.get("counts") or {}
    page = Page(
        f"Capacity plan: {summary.get('name', 'plan')}",
        subtitle=f"{counts.get('candidates', 0):,} candidates · {counts.get('feasible', 0):,} "
        f"feasible · {counts.get('simulated', 0):,} simulated · ranked by "
        f"{'wall-clock time' if summary.get('objective') == 'time' else 'cost'} to target",
    )
    rec = summary.get("recommendation") or {}
    best = rec.get("best")
    if best is None:
        page.prose(
            "No candidate of this plan is feasible: see the reasons below.", "Recommendation"
        )
    else:
        for heading, metrics in recommendation_cards(summary):
            page.metrics(heading, metrics)
        page.prose(recommendation_text(summary), heading="")
    simulated = table.filter(pl.col("evaluated") == "simulated")
    if simulated.height:
        page.chart(
            frontier_chart(simulated),
            heading="Time and cost to target",
            caption="Every simulated setup; the line joins the Pareto frontier (no other setup "
            "is both faster and cheaper). Hover a point for its setup. Setups without a price "
            "have no cost and are not shown.",
        )
    family = trade_off_rows(table, summary)
    if family.height >= 2:
        page.chart(
            trade_off_chart(family, summary),
            heading="The trade-off behind the choice",
            caption="The recommended setup (or the best one with a staleness bound) with only "
            "its bound changed: a larger bound lets generation run further ahead (throughput "
            "rises), the staleness it allows lowers the learning rate the law recommends, and "
            "time to target — steps at that rate times step time — has a minimum. Bands: the "
            "law's 95% intervals.",
        )
    else:
        page.prose(
            "No candidate varies the staleness bound (algorithm.max_staleness), so there is no "
            "trade-off curve to show.",
            heading="The trade-off behind the choice",
        )
    if simulated.height:
        page.chart(
            uncertainty_chart(simulated),
            heading="Uncertainty",
            caption="Time to target of the best setups with the law's interval carried through "
            "(bars: the eta_opt band and the box over the steps model's parameter intervals), "
            "and the same setups if the law's exponent were the paper's alpha = 1 (diamonds).",
        )
        page.table(
            alpha_table(simulated),
            heading="Ranking under the paper's exponent",
            caption=alpha_caption(summary),
        )
        page.table(
            ranked_table(simulated),
            heading="Ranked candidates",
            caption=f"The best {TOP_ROWS} simulated setups. Times in hours, cost in USD; "
            "`rank_alpha1` is the rank under the paper's exponent. The full table (every "
            "candidate, screened-out ones with the screen's estimates) is candidates.parquet.",
            max_rows=TOP_ROWS,
        )
    infeasible = table.filter(pl.col("evaluated") == "infeasible")
    page.table(
        infeasible.select("setup", "reason")
        if infeasible.height
        else pl.DataFrame(
            {"setup": [], "reason": []}, schema={"setup": pl.String, "reason": pl.String}
        ),
        heading=f"Infeasible candidates ({infeasible.height:,})",
        caption="Each with the reason the simulator's own checks give.",
        collapsed=True,
        max_rows=2000,
    )
    page.table(
        inputs_table(summary),
        heading="Inputs",
        caption="The plan, the law and how it was applied.",
        collapsed=True,
        max_rows=10_000,
    )
    base = summary.get("base_scenario")
    if isinstance(base, dict):
        page.table(
            scenario_table(base),
            heading="Base scenario",
            caption="Every candidate is this scenario with its own keys changed.",
            collapsed=True,
            max_rows=10_000,
        )
    return page


def _hours(value: Any) -> float | None:
    return None if value is None else value / 3600.0


def recommendation_cards(summary: dict[str, Any]) -> list[tuple[str, list[Metric]]]:
    rec = summary["recommendation"]
    best = rec["best"]
    runner = rec.get("runner_up")
    cards = [
        Metric("GPUs", f"{best['total_gpus']} × {best['gpu']}"),
        Metric(
            "split",
            f"{best['rollout_engines']}×TP{best['rollout_tp']} rollout"
            + ("" if best["mode"] == "sync_colocated" else f" + {best['learner_gpus']} learner"),
        ),
        Metric(
            "mode",
            best["mode"]
            + (" + in-flight" if best["inflight_updates"] else "")
            + (" + streaming" if best.get("streaming") else ""),
        ),
        Metric("staleness bound", best["max_staleness"] if best["mode"] == "async" else "—"),
        Metric("learning rate", best.get("eta_opt"), note=_interval(best, "eta_opt")),
        Metric(
            "time to target",
            _hours(best.get("time_to_target_s")),
            "h",
            note=_interval(best, "time_to_target_s", 1 / 3600),
        ),
        Metric("cost to target", best.get("cost_to_target_usd"), "USD"),
        Metric("learner steps", best.get("learner_steps_to_target")),
        Metric("throughput", best.get("samples_per_s"), "samples/s"),
        Metric(
            f"staleness ({summary['law']['staleness_summary']})", best.get("staleness"), "versions"
        ),
    ]
    groups = [("Recommendation", cards)]
    if runner is not None:
        worse = rec.get("runner_up_worse_by")
        groups.append(
            (
                "Runner-up",
                [
                    Metric("setup", describe_setup(runner)),
                    Metric("time to target", _hours(runner.get("time_to_target_s")), "h"),
                    Metric("cost to target", runner.get("cost_to_target_usd"), "USD"),
                    Metric(f"worse by ({summary['objective']})", worse, kind="percent"),
                ],
            )
        )
    return groups


def _interval(row: dict[str, Any], name: str, scale: float = 1.0) -> str:
    lo, hi = row.get(f"{name}_lo"), row.get(f"{name}_hi")
    if lo is None or hi is None:
        return ""
    return f"95% interval {format_number(lo * scale)} to {format_number(hi * scale)}"


def recommendation_text(summary: dict[str, Any]) -> str:
    rec = summary["recommendation"]
    best = rec["best"]
    law = summary["law"]
    text = (
        f"Recommended: {describe_setup(best)}. The law reads its staleness "
        f"({law['staleness_summary']} = {format_number(best['staleness'])} versions) as a "
        f"learning rate of {format_number(best['eta_opt'])} "
        f"({_interval(best, 'eta_opt') or 'no interval'}) and "
        f"{format_number(best['learner_steps_to_target'])} learner steps to target; at "
        f"{format_number(best['step_time_s'])} s per step that is "
        f"{format_number(_hours(best['time_to_target_s']))} h."
    )
    alpha1 = rec.get("best_alpha1")
    if alpha1 is not None:
        if alpha1["candidate_id"] == best["candidate_id"]:
            text += " With the paper's exponent (alpha = 1) it stays the best."
        else:
            text += (
                f" With the paper's exponent (alpha = 1) the best would be {describe_setup(alpha1)}"
                f" and this one ranks #{rec.get('best_rank_alpha1')}."
            )
    for warning in law.get("warnings") or []:
        text += f"\n\nLaw warning: {warning}"
    return text


def frontier_chart(simulated: pl.DataFrame) -> alt.TopLevelMixin:
    frame = simulated.filter(
        pl.col("cost_to_target_usd").is_not_null() & pl.col("time_to_target_h").is_not_null()
    ).select(
        "setup",
        "gpu",
        "mode",
        "rank",
        "on_frontier",
        "time_to_target_h",
        "cost_to_target_usd",
        "samples_per_s",
        "eta_opt",
    )
    tooltip = [
        alt.Tooltip("setup:N"),
        alt.Tooltip("rank:Q"),
        alt.Tooltip("time_to_target_h:Q", title="time to target (h)", format=",.2f"),
        alt.Tooltip("cost_to_target_usd:Q", title="cost (USD)", format=",.0f"),
        alt.Tooltip("samples_per_s:Q", title="samples/s", format=",.2f"),
        alt.Tooltip("eta_opt:Q", title="learning rate", format=".3~e"),
    ]
    x = alt.X("time_to_target_h:Q", title="time to target (h)", scale=alt.Scale(zero=False))
    y = alt.Y("cost_to_target_usd:Q", title="cost to target (USD)", scale=alt.Scale(zero=False))
    points = (
        alt.Chart(frame)
        .mark_point(filled=True, size=45, opacity=0.6)
        .encode(
            x=x,
            y=y,
            color=alt.Color("gpu:N", title="GPU"),
            shape=alt.Shape("mode:N", title="mode"),
            tooltip=tooltip,
        )
    )
    front = (
        alt.Chart(frame.filter(pl.col("on_frontier")).sort("time_to_target_h"))
        .mark_line(color="#222", strokeWidth=1.5, point=alt.OverlayMarkDef(color="#222", size=60))
        .encode(x=x, y=y, order="time_to_target_h:Q", tooltip=tooltip)
    )
    return alt.layer(points, front).properties(width=CHART_WIDTH, height=360)


def trade_off_rows(table: pl.DataFrame, summary: dict[str, Any]) -> pl.DataFrame:
    ids = (summary.get("trade_off") or {}).get("candidates") or []
    return table.filter(
        pl.col("candidate_id").is_in(ids) & (pl.col("evaluated") == "simulated")
    ).sort("max_staleness")


def trade_off_chart(family: pl.DataFrame, summary: dict[str, Any]) -> alt.TopLevelMixin:
    x = alt.X(
        "max_staleness:Q",
        title="staleness bound (algorithm.max_staleness)",
        scale=alt.Scale(type="log", base=2),
        axis=alt.Axis(values=family["max_staleness"].to_list()),
    )
    tip = [alt.Tooltip("setup:N"), alt.Tooltip("max_staleness:Q", title="bound")]
    base = alt.Chart(family)
    throughput = base.mark_line(point=True).encode(
        x=x,
        y=alt.Y("samples_per_s:Q", title="samples/s", scale=alt.Scale(zero=False)),
        tooltip=[*tip, alt.Tooltip("samples_per_s:Q", format=",.2f")],
    )
    lr = alt.layer(
        base.mark_area(opacity=0.2).encode(
            x=x, y=alt.Y("eta_opt_lo:Q", title="learning rate"), y2="eta_opt_hi:Q"
        ),
        base.mark_line(point=True, color="#f58518").encode(
            x=x,
            y=alt.Y("eta_opt:Q", title="learning rate", axis=alt.Axis(format=".1e")),
            tooltip=[
                *tip,
                alt.Tooltip("eta_opt:Q", format=".3e"),
                alt.Tooltip("staleness:Q", title="staleness read by the law"),
            ],
        ),
    )
    best = family.sort("time_to_target_h").head(1)
    time = alt.layer(
        base.mark_area(opacity=0.2, color="#54a24b").encode(
            x=x,
            y=alt.Y("time_to_target_h_lo:Q", title="time to target (h)"),
            y2="time_to_target_h_hi:Q",
        ),
        base.mark_line(point=True, color="#54a24b").encode(
            x=x,
            y=alt.Y("time_to_target_h:Q", title="time to target (h)"),
            tooltip=[
                *tip,
                alt.Tooltip("time_to_target_h:Q", format=",.2f"),
                alt.Tooltip("learner_steps_to_target:Q", format=",.0f"),
            ],
        ),
        alt.Chart(best)
        .mark_point(shape="diamond", size=140, filled=True, color="#e45756")
        .encode(x=x, y="time_to_target_h:Q", tooltip=[alt.Tooltip("setup:N", title="minimum")]),
    )
    return alt.vconcat(
        throughput.properties(width=CHART_WIDTH, height=150),
        lr.properties(width=CHART_WIDTH, height=150),
        time.properties(width=CHART_WIDTH, height=170),
    )


def uncertainty_chart(simulated: pl.DataFrame) -> alt.TopLevelMixin:
    top = (
        simulated.filter(pl.col("rank") > 0)
        .sort("rank")
        .head(UNCERTAINTY_ROWS)
        .with_columns(pl.format("#{} {}", "rank", "setup").alias("label"))
    )
    order = top["label"].to_list()
    y = alt.Y("label:N", title=None, sort=order)
    base = alt.Chart(top)
    return alt.layer(
        base.mark_rule(strokeWidth=3, opacity=0.5).encode(
            y=y,
            x=alt.X(
                "time_to_target_h_lo:Q",
                title="time to target (h, log scale)",
                scale=alt.Scale(type="log"),
            ),
            x2="time_to_target_h_hi:Q",
        ),
        base.mark_point(filled=True, size=60).encode(
            y=y,
            x="time_to_target_h:Q",
            tooltip=[
                "label:N",
                alt.Tooltip("time_to_target_h:Q", format=",.2f"),
                alt.Tooltip("time_to_target_h_lo:Q", format=",.2f"),
                alt.Tooltip("time_to_target_h_hi:Q", format=",.2f"),
            ],
        ),
        base.mark_point(shape="diamond", size=70, color="#e45756").encode(
            y=y,
            x="time_to_target_h_alpha1:Q",
            tooltip=[
                "label:N",
                alt.Tooltip("time_to_target_h_alpha1:Q", title="alpha = 1 (h)", format=",.2f"),
                alt.Tooltip("rank_alpha1:Q", title="rank with alpha = 1"),
            ],
        ),
    ).properties(width=CHART_WIDTH, height=24 * max(1, top.height))


def alpha_table(simulated: pl.DataFrame) -> pl.DataFrame:
    return (
        simulated.filter(pl.col("rank_alpha1").is_between(1, 10))
        .sort("rank_alpha1")
        .select(
            pl.col("rank_alpha1").alias("rank (alpha = 1)"),
            pl.col("rank").alias("rank (fitted)"),
            "setup",
            pl.col("time_to_target_h_alpha1").alias("time (h, alpha = 1)"),
            pl.col("time_to_target_h").alias("time (h, fitted)"),
        )
    )


def alpha_caption(summary: dict[str, Any]) -> str:
    eta = (summary.get("law") or {}).get("eta_opt") or {}
    return (
        f"The law's fitted exponent is alpha = {format_number(eta.get('alpha'))}; the paper "
        f"predicts {format_number((summary.get('law') or {}).get('alpha_paper'))}. Under the "
        "paper's exponent the best learning rate falls as 1/S past the knee and the steps to "
        "target grow as 1/eta_opt. The ten best setups under that reading, with their fitted rank."
    )


def ranked_table(simulated: pl.DataFrame) -> pl.DataFrame:
    present = [c for c in TABLE_COLUMNS if c in simulated.columns]
    return simulated.filter(pl.col("rank") > 0).sort("rank").select(present)


def inputs_table(summary: dict[str, Any]) -> pl.DataFrame:
    law = summary.get("law") or {}
    plan = summary.get("plan") or {}
    flat = {
        "plan": plan,
        "law": {k: v for k, v in law.items() if k != "warnings"},
        "evaluation": summary.get("evaluation") or {},
        "counts": summary.get("counts") or {},
    }
    return scenario_table(flat, round_numbers=True)
