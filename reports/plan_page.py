"""The capacity-planning page ``stalesim plan`` writes, read from its output folder as data.

It reads ``plan.json`` (decision, recommendation, frontier, trade-off family, inputs, law) and
``candidates.parquet`` (every candidate, ranked) and never runs the simulator: a page can be
re-rendered from any finished plan.

The law it reports was measured on a small model, so the page shows only what carries over to
the user's run: the learning-rate and steps multipliers of their on-policy run, and time and
cost to target relative to the best synchronous setup of the plan. Only where the plan's base
scenario gives the user's baseline (``target.baseline_lr``, ``target.baseline_steps``) does it
show a learning rate, hours or dollars, and then as the user's numbers times the multipliers.

Sections: the decision (verdict under every reading of the law, then schedule, bound, split and
learning-rate multiplier, each with how sure and why); how far the scenario is from what the
law was measured on; the recommendation and its runner-up; the time–cost frontier; the
trade-off along the staleness bound; the ranking under each reading; the ranked table; the
infeasible candidates; the inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import altair as alt
import polars as pl
from stalesim.reports.inputs import read_json_object, read_parquet_table
from stalesim.reports.page import Metric, Page, format_number
from stalesim.reports.simulate_page import scenario_table
from stalesim.sim.modes import MODES
from stalesim.sim.plan.rank import describe_setup, on_policy

CHART_WIDTH = 760
#: Rows of the ranked table, setups of the uncertainty chart, and of the per-reading table.
TOP_ROWS = 50
UNCERTAINTY_ROWS = 12
READING_ROWS = 5

REQUIRED_COLUMNS = [
    "candidate_id", "setup", "evaluated", "rank", "on_frontier", "reason", "gpu", "total_gpus",
    "rollout_engines", "rollout_tp", "rollout_gpus", "learner_gpus", "mode", "max_staleness",
    "inflight_updates", "streaming", "prompts_per_step", "group_size", "minibatches_per_step",
    "samples_per_s", "step_time_s", "staleness", "lr_multiplier", "lr_multiplier_lo",
    "lr_multiplier_hi", "steps_multiplier", "learner_steps_multiplier",
    "time_per_baseline_step_s", "time_per_baseline_step_s_lo", "time_per_baseline_step_s_hi",
    "cost_per_baseline_step_usd", "time_to_target_rel", "cost_to_target_rel",
]  # fmt: skip


@dataclass(frozen=True)
class Units:
    """What the page shows a learning rate, a time and a cost in: multipliers and ratios to the
    best synchronous setup, or the user's own numbers where the plan has their baseline."""

    primary: str
    others: tuple[str, ...]
    baseline_lr: float | None
    baseline_steps: float | None
    #: whether time and cost are relative to the best on-policy setup (else the best of all)
    synchronous: bool

    @property
    def time_reference(self) -> str:
        return f"the fastest {'synchronous ' if self.synchronous else ''}setup"

    @property
    def cost_reference(self) -> str:
        # one reference for both: the fastest (synchronous) setup's time and cost
        return self.time_reference

    @property
    def lr(self) -> str:
        return "learning rate" if self.baseline_lr is not None else "LR multiplier"

    @property
    def time(self) -> str:
        if self.baseline_steps is not None:
            return "time to target (h)"
        return f"time to target (× {self.time_reference})"

    @property
    def cost(self) -> str:
        if self.baseline_steps is not None:
            return "cost to target (USD)"
        return f"cost to target (× {self.cost_reference})"

    @property
    def short(self) -> str:
        """The reference in a chart axis or a table header: ``sync`` or ``best``."""
        return "sync" if self.synchronous else "best"

    @property
    def time_axis(self) -> str:
        if self.baseline_steps is not None:
            return "time to target (h)"
        return f"time to target (× {self.short})"

    @property
    def cost_axis(self) -> str:
        if self.baseline_steps is not None:
            return "cost to target (USD)"
        return f"cost to target (× {self.short})"

    @property
    def steps(self) -> str:
        if self.baseline_steps is not None:
            return "learner steps to target"
        return "learner steps (× your baseline's)"


def units_of(summary: dict[str, Any], table: pl.DataFrame) -> Units:
    """The units of a plan: with or without the user's baseline, and the reference setup."""
    law = summary.get("law") or {}
    primary = law.get("reading") or "primary"
    others = tuple(r for r in (law.get("readings") or {}) if r != primary)
    relative_to = summary.get("relative_to")
    reference = table.filter(pl.col("candidate_id") == (relative_to or ""))
    return Units(
        primary=primary,
        others=others,
        baseline_lr=law.get("baseline_lr"),
        baseline_steps=law.get("baseline_steps"),
        synchronous=reference.height > 0 and on_policy(reference["mode"][0]),
    )


def write_plan_report(out_dir: Path) -> Path:
    """Render ``out_dir/report.html`` from ``plan.json`` and ``candidates.parquet``."""
    out_dir = Path(out_dir)
    return build_plan_page(out_dir).write(out_dir / "report.html")


def rerender_plan_report(out_dir: Path) -> Path:
    """Render the page of the finished plan in ``out_dir`` again and record it in the folder's
    completion marker (under the folder's lock, so no plan publishes meanwhile). Refuses a
    folder whose result is unfinished or mixed (ValueError, one line)."""
    from stalesim.common.output_dir import locked, require_complete, seal
    from stalesim.sim.plan.output import RESULT_FILES

    out_dir = Path(out_dir)
    with locked(out_dir, wait=False, what=" (a plan?)"):
        marker = require_complete(out_dir, "plan", RESULT_FILES)
        assert marker is not None
        path = write_plan_report(out_dir)
        seal(out_dir, "plan", sorted({*marker["files"], path.name}))
    return path


def read_candidates(out_dir: Path, summary: dict[str, Any]) -> pl.DataFrame:
    """``candidates.parquet`` with the columns the page plots, in the page's units:
    ``lr_shown``, ``time_shown`` and ``cost_shown`` (each with ``_lo``/``_hi`` where the law
    has an interval and ``_<reading>`` for the other readings), and ``label``, a short name
    of each setup that no other candidate shares."""
    law = summary.get("law") or {}
    primary = law.get("reading")
    others = [r for r in (law.get("readings") or {}) if r != primary]
    required = [*REQUIRED_COLUMNS]
    required += [f"{k}_{r}" for r in others for k in ("lr_multiplier", "time_to_target_rel")]
    required += [f"rank_{r}" for r in others]
    with_lr = law.get("baseline_lr") is not None
    with_steps = law.get("baseline_steps") is not None
    if with_lr:
        required += ["learning_rate", "learning_rate_lo", "learning_rate_hi"]
        required += [f"learning_rate_{r}" for r in others]
    if with_steps:
        required += ["learner_steps_to_target", "cost_to_target_usd"]
        required += [f"time_to_target_s{s}" for s in ("", "_lo", "_hi")]
        required += [f"time_to_target_s_{r}" for r in others]
    table = read_parquet_table(out_dir / "candidates.parquet", required)
    suffixes = ["", "_lo", "_hi"]
    if with_lr:
        lr = [pl.col(f"learning_rate{s}").alias(f"lr_shown{s}") for s in suffixes]
        lr += [pl.col(f"learning_rate_{r}").alias(f"lr_shown_{r}") for r in others]
    else:
        lr = [pl.col(f"lr_multiplier{s}").alias(f"lr_shown{s}") for s in suffixes]
        lr += [pl.col(f"lr_multiplier_{r}").alias(f"lr_shown_{r}") for r in others]
    if with_steps:
        time = [(pl.col(f"time_to_target_s{s}") / 3600).alias(f"time_shown{s}") for s in suffixes]
        time += [(pl.col(f"time_to_target_s_{r}") / 3600).alias(f"time_shown_{r}") for r in others]
        time += [pl.col("cost_to_target_usd").alias("cost_shown")]
    else:
        # the interval's ends over the same reference setup as the point
        reference = _reference_time(table)
        time = [pl.col("time_to_target_rel").alias("time_shown")]
        time += [
            (pl.col(f"time_per_baseline_step_s{s}") / reference).alias(f"time_shown{s}")
            for s in ("_lo", "_hi")
        ]
        time += [pl.col(f"time_to_target_rel_{r}").alias(f"time_shown_{r}") for r in others]
        time += [pl.col("cost_to_target_rel").alias("cost_shown")]
    table = table.with_columns(*lr, *time)
    return table.with_columns(pl.Series("label", distinct_labels(table), dtype=pl.String))


def _reference_time(table: pl.DataFrame) -> float:
    """Seconds per baseline step of the setup that time is relative to (NaN without one)."""
    ratio = (
        table.filter(pl.col("time_to_target_rel") > 0)
        .select(pl.col("time_per_baseline_step_s") / pl.col("time_to_target_rel"))
        .to_series()
        .drop_nulls()
    )
    return float(ratio[0]) if ratio.len() else float("nan")


def short_setup(row: dict[str, Any]) -> str:
    """A setup in one short line, e.g. ``8×H100 4×TP1+4 async≤2 128×8/1``: GPUs, rollout
    engines × tensor parallelism + learner GPUs (``shared`` when colocated), mode with its
    bound, prompts × samples per prompt / mini-batches."""
    spec = MODES[row["mode"]]
    learner = "shared" if spec.colocated else str(row["learner_gpus"])
    mode = row["mode"]
    if spec.own_publication:
        mode += f"≤{row['max_staleness']}"
    mode += "+inflight" if row.get("inflight_updates") else ""
    mode += "+streaming" if row.get("streaming") else ""
    return (
        f"{row['total_gpus']}×{row['gpu']} {row['rollout_engines']}×TP{row['rollout_tp']}"
        f"+{learner} {mode} {row['prompts_per_step']}×{row['group_size']}/"
        f"{row['minibatches_per_step']}"
    )


def distinct_labels(table: pl.DataFrame) -> list[str]:
    """:func:`short_setup` of every row, with the candidate id added where two rows would
    otherwise share a label (they differ in a key the short form leaves out)."""
    labels = [short_setup(row) for row in table.iter_rows(named=True)]
    seen: dict[str, int] = {}
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
    return [
        f"{label} [{cid[:6]}]" if seen[label] > 1 else label
        for label, cid in zip(labels, table["candidate_id"], strict=True)
    ]


def build_plan_page(out_dir: Path) -> Page:
    """The plan page of the plan in ``out_dir``, not yet written."""
    out_dir = Path(out_dir)
    summary = read_json_object(out_dir / "plan.json")
    table = read_candidates(out_dir, summary)
    units = units_of(summary, table)
    counts = summary.get("counts") or {}
    page = Page(
        f"Capacity plan: {summary.get('name', 'plan')}",
        subtitle=f"{counts.get('candidates', 0):,} candidates · {counts.get('feasible', 0):,} "
        f"feasible · {counts.get('simulated', 0):,} simulated · ranked by "
        f"{'wall-clock time' if summary.get('objective') == 'time' else 'cost'} to target "
        f"under the {units.primary} reading of the law",
    )
    rec = summary.get("recommendation") or {}
    best = rec.get("best")
    if best is None:
        page.prose("No candidate of this plan is feasible: see the reasons below.", "Decision")
    else:
        page.prose(decision_text(summary), heading="Decision")
        page.table(decision_table(summary, table, units))
    page.prose(law_text(summary, units), heading="The law and your run")
    if best is not None:
        cards = recommendation_cards(summary, table, units)
        page.metrics(*cards[0])
        page.prose(recommendation_text(summary, table, units), heading="")
        for heading, metrics in cards[1:]:
            page.metrics(heading, metrics)
    simulated = table.filter(pl.col("evaluated") == "simulated")
    priced = simulated.filter(pl.col("cost_shown").is_not_null())
    if simulated.height and not priced.height:
        gpus = ", ".join(sorted(set(simulated["gpu"].to_list())))
        page.prose(
            f"No simulated setup has a price ({gpus}: the catalog has none), so there is no "
            f"cost axis: set `prices: {{GPU: dollars per GPU-hour}}` in the plan. The ranked "
            "table below gives each setup's time to target.",
            heading="Time and cost to target",
        )
    elif simulated.height:
        page.chart(
            frontier_chart(simulated, units),
            heading="Time and cost to target",
            caption="Every simulated setup; the line joins the Pareto frontier (no other setup "
            "is both faster and cheaper). Hover a point for its setup. Setups without a price "
            "have no cost and are not shown. "
            + (
                "Hours and dollars are your baseline's steps times each setup's steps "
                "multiplier and step time."
                if units.baseline_steps is not None
                else f"Time is relative to {units.time_reference}, cost to "
                f"{units.cost_reference} (set `target.baseline_steps` for hours and dollars)."
            ),
        )
    family = trade_off_rows(table, summary)
    if family.height >= 2:
        page.chart(
            trade_off_chart(family, units),
            heading="The trade-off behind the choice",
            caption="The recommended setup (or the best one with a staleness bound) with only "
            "its bound changed: a larger bound lets generation run further ahead (throughput "
            f"rises), the staleness it allows lowers the {units.lr} the law recommends, and "
            "time to target (steps at that rate times step time) has a minimum, marked. "
            f"Bands: the {units.primary} reading's box over its fitted parameters' intervals "
            "(every corner evaluated; exactly 1 at your baseline's own staleness): a spread, "
            "not a calibrated interval.",
        )
    else:
        page.prose(
            "No candidate varies the staleness bound (algorithm.max_staleness), so there is no "
            "trade-off curve to show.",
            heading="The trade-off behind the choice",
        )
    if simulated.height:
        page.prose(
            readings_text(summary, units), heading="Uncertainty: the ranking under each reading"
        )
        page.chart(
            uncertainty_chart(simulated, units),
            caption=f"Time to target of the best setups under each reading of the law (one "
            f"marker per reading), with the {units.primary} reading's interval (line). A setup "
            "that another reading ranks first is shown too.",
        )
        page.table(
            readings_table(simulated, units),
            caption=f"The {READING_ROWS} best setups under each reading, with their rank and "
            "time to target under every reading.",
        )
        page.table(
            ranked_table(simulated, units),
            heading="Ranked candidates",
            caption=f"The best {TOP_ROWS} simulated setups under the {units.primary} reading. "
            + (
                ""
                if units.baseline_steps is not None
                else f"Time relative to {units.time_reference}, cost to {units.cost_reference}; "
            )
            + ("" if units.baseline_lr is not None else "LR ×: the learning-rate multiplier; ")
            + "steps: learner steps to target"
            + ("" if units.baseline_steps is not None else " over your baseline's")
            + "; # reading: the rank under that reading. Setup: GPUs, rollout engines × TP + learner GPUs, mode (≤ staleness bound), "
            "prompts × samples / mini-batches. The full table (every candidate, screened-out "
            "ones with the screen's estimates) is candidates.parquet.",
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


def _x(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}×"


def _g(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


def _hours(seconds: float | None) -> str:
    return "—" if seconds is None else f"{format_number(seconds / 3600)} h"


def _usd(value: float | None) -> str:
    return "—" if value is None else f"${value:,.0f}"


def user_lr(row: dict[str, Any], units: Units, suffix: str = "") -> str:
    """``0.62 × your 1e-06 = 6.2e-07``, or ``0.62×`` without the user's learning rate."""
    multiplier = row.get(f"lr_multiplier{suffix}")
    if units.baseline_lr is None or multiplier is None:
        return _x(multiplier)
    return f"{multiplier:.3g} × your {units.baseline_lr:.3g} = {multiplier * units.baseline_lr:.3g}"


def decision_text(summary: dict[str, Any]) -> str:
    decision = summary.get("decision") or {}
    verdict = decision.get("verdict") or ""
    readings = ", ".join((summary.get("law") or {}).get("readings") or {})
    return (
        f"{verdict[:1].upper()}{verdict[1:]} of the law ({readings}). What to do, how sure the "
        "tool is of each part, and why:"
    )


def decision_table(summary: dict[str, Any], table: pl.DataFrame, units: Units) -> pl.DataFrame:
    """One row per part of the decision: the answer under the primary reading, whether the
    other readings agree (and what they pick where not), and why."""
    decision = summary.get("decision") or {}
    best = (summary.get("recommendation") or {}).get("best") or {}
    rows = []
    for item in decision.get("items") or []:
        if item["name"] == "learning-rate multiplier":
            values = item.get("under_readings") or {}
            agree = "readings agree" if item["same_under_all"] else "readings differ"
            answer = user_lr(best, units) if best else _x(item.get("value"))
            sure = f"{agree}: " + ", ".join(f"{r} {_x(v)}" for r, v in values.items())
            rows.append(("learning rate", answer, sure, _plain(item.get("why") or "—")))
            continue
        sure = (
            "same under every reading"
            if item["same_under_all"]
            else "; ".join(f"{r} picks {v}" for r, v in item["differ"].items())
        )
        why = item.get("why") or ""
        if item["name"] == "bound" and not why:
            why = _bound_why(summary, table, best)
        rows.append((item["name"], str(item["value"]), sure, _plain(why or "—")))
    return pl.DataFrame(rows, schema=["decision", "answer", "how sure", "why"], orient="row")


def _plain(text: str) -> str:
    """Text for a table cell, which shows backticks as they are: without them."""
    return text.replace("`", "")


def _bound_why(summary: dict[str, Any], table: pl.DataFrame, best: dict[str, Any]) -> str:
    """Why this staleness bound: where it lies along the trade-off curve of the bound."""
    family = trade_off_rows(table, summary)
    if not best or family.height < 2 or best["candidate_id"] not in family["candidate_id"]:
        return ""
    column = (
        "time_per_baseline_step_s"
        if summary.get("objective") == "time"
        else "cost_per_baseline_step_usd"
    )
    ranked = family.filter(pl.col(column).is_not_null()).sort(column)
    if ranked.height < 2 or ranked["candidate_id"][0] != best["candidate_id"]:
        return ""
    bounds = ", ".join(str(b) for b in family["max_staleness"].to_list())
    runner = ranked.row(1, named=True)
    return (
        f"of the bounds simulated ({bounds}) it has the least {summary.get('objective')} to "
        f"target; the next best, {runner['max_staleness']}, needs "
        f"{runner[column] / ranked[column][0]:.3g}×"
    )


def law_text(summary: dict[str, Any], units: Units) -> str:
    law = summary.get("law") or {}
    distance = law.get("regime_distance") or (
        "the law carries no record of what it was measured on."
    )
    text = (
        "The law is applied as ratios to your on-policy run, never as the learning rates or "
        f"hours of the small model it was measured on: {distance}"
    )
    if units.baseline_lr is None or units.baseline_steps is None:
        missing = [
            key
            for key, value in (
                ("`target.baseline_lr`", units.baseline_lr),
                ("`target.baseline_steps`", units.baseline_steps),
            )
            if value is None
        ]
        text += (
            f"\n\nSet {' and '.join(missing)} in the base scenario (your on-policy run's "
            "learning rate and learner steps to the target reward) to see your own learning "
            "rate, hours and dollars."
        )
    for warning in law.get("warnings") or []:
        text += f"\n\nLaw warning: {warning}"
    return text


def _bound(row: dict[str, Any]) -> str | int:
    """The staleness a setup allows: none on-policy, its bound where the mode honours one, the
    mode's own schedule otherwise."""
    spec = MODES[row["mode"]]
    if spec.on_policy:
        return "none (on-policy)"
    if spec.own_publication:
        return row["max_staleness"]
    if spec.schedule_staleness is not None:
        return f"{spec.schedule_staleness(row['minibatches_per_step'])} (its schedule)"
    return "—"


def recommendation_cards(
    summary: dict[str, Any], table: pl.DataFrame, units: Units
) -> list[tuple[str, list[Metric]]]:
    rec = summary["recommendation"]
    best = _row(table, rec["best"]["candidate_id"])
    runner = rec.get("runner_up")
    spec = MODES[best["mode"]]
    band = f"box {_g(best.get('lr_multiplier_lo'))} to {_g(best.get('lr_multiplier_hi'))}×"
    if units.baseline_lr is not None:
        lr = Metric(
            "learning rate",
            best.get("learning_rate"),
            note=f"{user_lr(best, units)}; {band} your learning rate",
        )
    else:
        lr = Metric(
            "LR multiplier",
            best.get("lr_multiplier"),
            "× your LR",
            note=f"{band}; multiply your on-policy run's learning rate by it",
        )
    if units.baseline_steps is not None:
        time_cards = [
            Metric(
                "time to target",
                best.get("time_shown"),
                "h",
                note=_interval(best.get("time_shown_lo"), best.get("time_shown_hi")),
            ),
            Metric("cost to target", best.get("cost_to_target_usd"), "USD"),
            Metric("learner steps to target", _whole(best.get("learner_steps_to_target"))),
        ]
    else:
        time_cards = [
            Metric(
                "time to target",
                best.get("time_to_target_rel"),
                f"× {units.short}",
                note=f"relative to {units.time_reference}; "
                + _interval(best.get("time_shown_lo"), best.get("time_shown_hi")),
            ),
            Metric(
                "cost to target",
                best.get("cost_to_target_rel"),
                f"× {units.short}",
                note=f"relative to {units.cost_reference}",
            ),
            Metric(
                "learner steps",
                best.get("learner_steps_multiplier"),
                "× yours",
                note="learner steps to target over your on-policy run's (batch differences "
                "included)",
            ),
        ]
    cards = [
        Metric("GPUs", f"{best['total_gpus']} × {best['gpu']}"),
        Metric(
            "split",
            f"{best['rollout_engines']}×TP{best['rollout_tp']} rollout"
            + (
                " (learner shares them)" if spec.colocated else f" + {best['learner_gpus']} learner"
            ),
        ),
        Metric(
            "mode",
            best["mode"]
            + (" + in-flight" if best["inflight_updates"] else "")
            + (" + streaming" if best.get("streaming") else ""),
        ),
        Metric("staleness bound", _bound(best)),
        lr,
        *time_cards,
        Metric("throughput", best.get("samples_per_s"), "samples/s"),
        Metric(
            f"staleness ({summary['law']['staleness_summary']})", best.get("staleness"), "versions"
        ),
    ]
    groups = [("Recommendation", cards)]
    if runner is not None:
        other = _row(table, runner["candidate_id"])
        worse = rec.get("runner_up_worse_by")
        with_hours = units.baseline_steps is not None
        ratio = f"× {units.short}"
        groups.append(
            (
                f"Runner-up: {other['label']}",
                [
                    Metric("time to target", other.get("time_shown"), "h" if with_hours else ratio),
                    Metric(
                        "cost to target", other.get("cost_shown"), "USD" if with_hours else ratio
                    ),
                    Metric(
                        units.lr, other.get("lr_shown"), "" if units.baseline_lr else "× your LR"
                    ),
                    Metric(f"worse by ({summary['objective']})", worse, kind="percent"),
                ],
            )
        )
    return groups


def _row(table: pl.DataFrame, candidate_id: str) -> dict[str, Any]:
    return table.filter(pl.col("candidate_id") == candidate_id).row(0, named=True)


def _interval(lo: float | None, hi: float | None) -> str:
    if lo is None or hi is None:
        return ""
    return f"interval {format_number(lo)} to {format_number(hi)}"


def recommendation_text(summary: dict[str, Any], table: pl.DataFrame, units: Units) -> str:
    rec = summary["recommendation"]
    best = _row(table, rec["best"]["candidate_id"])
    law = summary["law"]
    word = "fastest" if summary["objective"] == "time" else "cheapest"
    lr = (
        f"a learning rate of {user_lr(best, units)} [{_g(best.get('learning_rate_lo'))}, "
        f"{_g(best.get('learning_rate_hi'))}]"
        if units.baseline_lr is not None
        else f"a learning rate {_x(best['lr_multiplier'])} your on-policy run's "
        f"[{_g(best.get('lr_multiplier_lo'))}, {_g(best.get('lr_multiplier_hi'))}]"
    )
    text = (
        f"Recommended ({word} to target under the {units.primary} reading): "
        f"{describe_setup(best)}. The law reads its staleness ({law['staleness_summary']} = "
        f"{format_number(best['staleness'])} versions) as {lr}, and "
        f"{_x(best['learner_steps_multiplier'])} the learner steps of your baseline run"
        + (f" (batch {law['baseline_batch']})." if law.get("baseline_batch") else ".")
    )
    if units.baseline_steps is not None and best.get("time_to_target_s") is not None:
        text += (
            f" Time to target: {units.baseline_steps:,.0f} × "
            f"{best['learner_steps_multiplier']:.3g} = {best['learner_steps_to_target']:,.0f} "
            f"learner steps × {format_number(best['step_time_s'])} s = "
            f"{_hours(best['time_to_target_s'])} [{_hours(best.get('time_to_target_s_lo'))}, "
            f"{_hours(best.get('time_to_target_s_hi'))}], cost "
            f"{_usd(best.get('cost_to_target_usd'))}."
        )
    else:
        text += (
            f" Time to target is {_x(best['time_to_target_rel'])} that of "
            f"{units.time_reference}, cost {_x(best['cost_to_target_rel'])} that of "
            f"{units.cost_reference}."
        )
    return text


def frontier_chart(simulated: pl.DataFrame, units: Units) -> alt.TopLevelMixin:
    frame = simulated.filter(
        pl.col("cost_shown").is_not_null() & pl.col("time_shown").is_not_null()
    ).select("label", "gpu", "mode", "rank", "on_frontier", "time_shown", "cost_shown",
             "samples_per_s", "lr_shown")  # fmt: skip
    lr_format = ".3~e" if units.baseline_lr is not None else ".3~g"
    tooltip = [
        alt.Tooltip("label:N", title="setup"),
        alt.Tooltip("rank:Q"),
        alt.Tooltip("time_shown:Q", title=units.time, format=",.3~g"),
        alt.Tooltip("cost_shown:Q", title=units.cost, format=",.3~g"),
        alt.Tooltip("samples_per_s:Q", title="samples/s", format=",.2f"),
        alt.Tooltip("lr_shown:Q", title=units.lr, format=lr_format),
    ]
    x = alt.X("time_shown:Q", title=units.time, scale=alt.Scale(zero=False))
    y = alt.Y("cost_shown:Q", title=units.cost, scale=alt.Scale(zero=False))
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
        alt.Chart(frame.filter(pl.col("on_frontier")).sort("time_shown"))
        .mark_line(color="#222", strokeWidth=1.5, point=alt.OverlayMarkDef(color="#222", size=60))
        .encode(x=x, y=y, order="time_shown:Q", tooltip=tooltip)
    )
    return alt.layer(points, front).properties(width=CHART_WIDTH, height=360)


def trade_off_rows(table: pl.DataFrame, summary: dict[str, Any]) -> pl.DataFrame:
    ids = (summary.get("trade_off") or {}).get("candidates") or []
    return table.filter(
        pl.col("candidate_id").is_in(ids)
        & (pl.col("evaluated") == "simulated")
        & pl.col("max_staleness").is_not_null()
    ).sort("max_staleness")


def trade_off_chart(family: pl.DataFrame, units: Units) -> alt.TopLevelMixin:
    steps = (
        "learner_steps_multiplier" if units.baseline_steps is None else "learner_steps_to_target"
    )
    # only what the chart draws goes into the page
    family = family.select(
        "label", "max_staleness", "samples_per_s", "staleness", "lr_shown", "lr_shown_lo",
        "lr_shown_hi", "time_shown", "time_shown_lo", "time_shown_hi", steps,
    )  # fmt: skip
    x = alt.X(
        "max_staleness:Q",
        title="staleness bound (algorithm.max_staleness)",
        scale=alt.Scale(type="log", base=2),
        axis=alt.Axis(values=family["max_staleness"].to_list()),
    )
    tip = [alt.Tooltip("label:N", title="setup"), alt.Tooltip("max_staleness:Q", title="bound")]
    base = alt.Chart(family)
    throughput = base.mark_line(point=True).encode(
        x=x,
        y=alt.Y("samples_per_s:Q", title="samples/s", scale=alt.Scale(zero=False)),
        tooltip=[*tip, alt.Tooltip("samples_per_s:Q", format=",.2f")],
    )
    lr_axis = alt.Axis(format=".1e") if units.baseline_lr is not None else alt.Axis()
    lr = alt.layer(
        base.mark_area(opacity=0.2, color="#f58518").encode(
            x=x, y=alt.Y("lr_shown_lo:Q", title=units.lr), y2="lr_shown_hi:Q"
        ),
        base.mark_line(point=alt.OverlayMarkDef(color="#f58518"), color="#f58518").encode(
            x=x,
            y=alt.Y("lr_shown:Q", title=units.lr, axis=lr_axis),
            tooltip=[
                *tip,
                alt.Tooltip("lr_shown:Q", title=units.lr, format=".3~g"),
                alt.Tooltip("lr_shown_lo:Q", title="band from", format=".3~g"),
                alt.Tooltip("lr_shown_hi:Q", title="band to", format=".3~g"),
                alt.Tooltip("staleness:Q", title="staleness read by the law"),
            ],
        ),
    )
    best = family.filter(pl.col("time_shown").is_not_null()).sort("time_shown").head(1)
    time = alt.layer(
        base.mark_area(opacity=0.2, color="#54a24b").encode(
            x=x, y=alt.Y("time_shown_lo:Q", title=units.time_axis), y2="time_shown_hi:Q"
        ),
        base.mark_line(point=alt.OverlayMarkDef(color="#54a24b"), color="#54a24b").encode(
            x=x,
            y=alt.Y("time_shown:Q", title=units.time_axis),
            tooltip=[
                *tip,
                alt.Tooltip("time_shown:Q", title=units.time, format=",.3~g"),
                alt.Tooltip(f"{steps}:Q", title=units.steps, format=",.3~g"),
            ],
        ),
        alt.Chart(best)
        .mark_point(shape="diamond", size=140, filled=True, color="#e45756")
        .encode(x=x, y="time_shown:Q", tooltip=[alt.Tooltip("label:N", title="minimum")]),
    )
    return alt.vconcat(
        throughput.properties(width=CHART_WIDTH, height=150),
        lr.properties(width=CHART_WIDTH, height=150),
        time.properties(width=CHART_WIDTH, height=170),
    )


def _top_under_readings(simulated: pl.DataFrame, units: Units, rows: int) -> pl.DataFrame:
    """The best ``rows`` setups under the primary reading plus the best ``rows`` under each
    other reading that are not among them, in the primary reading's order."""
    keep = pl.col("rank").is_between(1, rows)
    for reading in units.others:
        keep = keep | pl.col(f"rank_{reading}").is_between(1, rows)
    return simulated.filter(keep & (pl.col("rank") > 0)).sort("rank")


def uncertainty_chart(simulated: pl.DataFrame, units: Units) -> alt.TopLevelMixin:
    top = (
        simulated.filter(pl.col("rank") > 0)
        .sort("rank")
        .head(UNCERTAINTY_ROWS)
        .vstack(_top_under_readings(simulated, units, 1))
        .unique("candidate_id", keep="first", maintain_order=True)
        .with_columns(pl.format("#{} {}", "rank", "label").alias("row"))
    )
    order = top["row"].to_list()
    readings = [units.primary, *units.others]
    long = pl.concat(
        [
            top.select(
                "row",
                pl.lit(reading).alias("reading"),
                pl.col("time_shown" if i == 0 else f"time_shown_{reading}").alias("time"),
                pl.col("rank" if i == 0 else f"rank_{reading}").alias("rank under it"),
            )
            for i, reading in enumerate(readings)
        ]
    )
    y = alt.Y("row:N", title=None, sort=order, axis=alt.Axis(labelLimit=520))
    x_title = units.time
    interval = (
        alt.Chart(top.select("row", "time_shown_lo", "time_shown_hi"))
        .mark_rule(strokeWidth=3, opacity=0.35)
        .encode(
            y=y,
            x=alt.X("time_shown_lo:Q", title=x_title, scale=alt.Scale(zero=False)),
            x2="time_shown_hi:Q",
            tooltip=[
                alt.Tooltip("row:N", title="setup"),
                alt.Tooltip("time_shown_lo:Q", title=f"{units.primary} from", format=",.3~g"),
                alt.Tooltip("time_shown_hi:Q", title=f"{units.primary} to", format=",.3~g"),
            ],
        )
    )
    markers = (
        alt.Chart(long)
        .mark_point(filled=True, size=70, opacity=0.85)
        .encode(
            y=y,
            x=alt.X("time:Q", title=x_title, scale=alt.Scale(zero=False)),
            color=alt.Color("reading:N", title="reading", scale=alt.Scale(domain=readings)),
            shape=alt.Shape("reading:N", title="reading", scale=alt.Scale(domain=readings)),
            tooltip=[
                alt.Tooltip("row:N", title="setup"),
                alt.Tooltip("reading:N"),
                alt.Tooltip("time:Q", title=units.time, format=",.3~g"),
                alt.Tooltip("rank under it:Q"),
            ],
        )
    )
    return alt.layer(interval, markers).properties(
        width=CHART_WIDTH - 200, height=24 * max(1, top.height)
    )


def readings_text(summary: dict[str, Any], units: Units) -> str:
    law = summary.get("law") or {}
    lines = [
        "The law is read several ways, each a committed fit with its provenance; the ranking "
        f"uses the {units.primary} reading."
    ]
    for name, provenance in (law.get("readings") or {}).items():
        lines.append(f"{name}: {provenance}.")
    return "\n\n".join(lines)


def readings_table(simulated: pl.DataFrame, units: Units) -> pl.DataFrame:
    top = _top_under_readings(simulated, units, READING_ROWS)
    readings = [units.primary, *units.others]
    time = "h" if units.baseline_steps is not None else "× sync"
    return top.select(
        *(
            pl.col("rank" if i == 0 else f"rank_{r}").alias(f"rank ({r})")
            for i, r in enumerate(readings)
        ),
        pl.col("label").alias("setup"),
        *(
            pl.col("time_shown" if i == 0 else f"time_shown_{r}").alias(f"time ({r}, {time})")
            for i, r in enumerate(readings)
        ),
    )


def ranked_table(simulated: pl.DataFrame, units: Units) -> pl.DataFrame:
    """The ranked setups with what a user acts on first: time, cost, learning rate, steps."""
    ranked = simulated.filter(pl.col("rank") > 0).sort("rank")
    steps = (
        "learner_steps_to_target"
        if units.baseline_steps is not None
        else "learner_steps_multiplier"
    )
    return ranked.select(
        pl.col("rank").alias("#"),
        pl.col("time_shown").alias(units.time_axis.replace(" to target", "")),
        pl.col("cost_shown").alias(units.cost_axis.replace(" to target", "")),
        pl.col("lr_shown").alias(units.lr if units.baseline_lr is not None else "LR ×"),
        pl.col(steps).alias("learner steps" if units.baseline_steps is not None else "steps ×"),
        *(pl.col(f"rank_{r}").alias(f"# {r}") for r in units.others),
        pl.col("label").alias("setup"),
        pl.col("samples_per_s").alias("samples/s"),
        pl.col("step_time_s").alias("step time (s)"),
        pl.col("staleness").alias("staleness"),
        pl.when(pl.col("on_frontier")).then(pl.lit("yes")).otherwise(pl.lit("")).alias("frontier"),
    )


def inputs_table(summary: dict[str, Any]) -> pl.DataFrame:
    law = summary.get("law") or {}
    plan = summary.get("plan") or {}
    flat = {
        "plan": plan,
        "law": {k: v for k, v in law.items() if k not in ("warnings", "regime_distance")},
        "evaluation": summary.get("evaluation") or {},
        "counts": summary.get("counts") or {},
    }
    return scenario_table(flat, round_numbers=True)


def _whole(steps: float | None) -> int | None:
    """Learner steps are whole: a run cannot take a fraction of one."""
    return None if steps is None else math.ceil(steps)
