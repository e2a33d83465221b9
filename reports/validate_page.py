"""The validation page: what real GRPO training under controlled staleness measured, and the
staleness–learning-rate law fitted to it.

It reads a sweep folder as data: ``runs.parquet`` (one row per run), ``steps.parquet`` (one row
per learner step, optional) and ``law.json`` (written by ``stalesim fit``). When ``law.json``
is missing the law is fitted here, in memory, and the page says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import altair as alt
import numpy as np
import polars as pl
from stalesim.reports.inputs import read_parquet_table
from stalesim.reports.page import Metric, Page
from stalesim.sim.law.model import Law, load_law

#: Reward curves are averaged over seeds and thinned to at most this many steps per curve.
CURVE_POINTS = 150
FACET_WIDTH = 210
FACET_HEIGHT = 130
#: Staleness axis: symlog keeps S = 0 on a log-like axis.
S_SCALE = alt.Scale(type="symlog", constant=1)
LR_SCALE = alt.Scale(type="log")


#: Columns of runs.parquet every part of the page relies on.
RUN_COLUMNS = ("run_id", "lr", "staleness", "seed", "collapsed")


def render_validate_report(
    runs_dir: Path, out: Path | None = None, *, law_fitted_in_memory: Law | None = None
) -> Path:
    """Render the validation page for the sweep in ``runs_dir``; returns the page's path
    (``runs_dir/report.html`` unless ``out`` is given).

    The law comes from ``runs_dir/law.json``, or from ``law_fitted_in_memory`` when the caller
    fitted one without writing it (the page then says so).
    """
    runs_dir = Path(runs_dir)
    page = build_validate_page(runs_dir, law_fitted_in_memory=law_fitted_in_memory)
    return page.write(out if out is not None else runs_dir / "report.html")


def build_validate_page(runs_dir: Path, *, law_fitted_in_memory: Law | None = None) -> Page:
    """The validation page for ``runs_dir``, not yet written."""
    runs_dir = Path(runs_dir)
    runs = read_parquet_table(runs_dir / "runs.parquet", RUN_COLUMNS)
    if runs.height == 0:
        raise ValueError(f"{runs_dir / 'runs.parquet'}: no runs in it")
    steps_path = runs_dir / "steps.parquet"
    steps = read_parquet_table(steps_path, ("run_id",)) if steps_path.exists() else None
    fitted_here = law_fitted_in_memory is not None
    if law_fitted_in_memory is not None:
        law = law_fitted_in_memory
    elif (runs_dir / "law.json").exists():
        law = load_law(runs_dir / "law.json")
    else:
        raise ValueError(f"{runs_dir / 'law.json'}: no such file (run `stalesim fit {runs_dir}`)")
    points = pl.DataFrame(law.points)
    runs = runs.with_columns(_group_label(runs).alias("group"))
    failed_ids = {f["run_id"]: f.get("failure") for f in law.failures}
    if failed_ids or "failed" not in runs.columns:
        # law.json records which runs failed (collapse, below warm start, never learned); an old
        # law without that list falls back to the collapse flag
        runs = runs.with_columns(
            (
                pl.col("run_id").is_in(list(failed_ids))
                if law.failures
                else pl.col("collapsed").cast(pl.Boolean)
            ).alias("failed")
        )

    preset = law.source.get("preset") or _presets(runs)
    page = Page(
        "Staleness and the learning rate: validation",
        subtitle=f"{preset} sweep · {runs.height} runs · {runs_dir}",
    )
    for heading, metrics in headline_metrics(law, points, runs):
        page.metrics(heading, metrics)
    page.prose(findings(law, points, runs, fitted_here), heading="What the sweep shows")
    if law.regime is not None:
        page.prose(
            f"Measured on: {law.regime.describe()}. The staleness axis is the "
            + (
                "realised mean lag of each S group (lower than S while the pipeline fills)."
                if law.lag_axis == "realised"
                else "nominal S."
            ),
            heading="Regime",
        )
    if law.notes:
        page.prose(
            "\n\n".join(f"{note}." for note in law.notes),
            heading="Limits of this fit",
        )
    unit = law.settings.get("bootstrap_unit_used", "runs resampled inside each LR × S cell")
    page.chart(
        law_chart(law, points),
        heading="Best and largest stable learning rate vs staleness",
        caption=f"Points: per-S estimates with 95% bootstrap intervals (unit: {unit}); hollow "
        "points are bounds (optimum at a grid edge, or no LR failed) and are not fitted. Lines: "
        "the fitted law eta(S) = eta0 / (1 + (S/s_c)^k)^(alpha/k); bands: pointwise 95% "
        "bootstrap band.",
    )
    if law.slopes:
        page.table(
            _slopes_table(law),
            heading="Local slopes d ln eta / d ln S",
            caption="Model-free: the slope between neighbouring staleness values (and over the "
            "ranges below and above the knee), with seed-bootstrap percentile intervals. The "
            "paper predicts 0 below the knee and -1 above it.",
        )
    page.chart(
        exponent_chart(law),
        heading="Fitted exponent alpha vs the paper",
        caption="alpha is the slope of log eta vs log S once staleness dominates; the paper "
        "(arXiv 2607.01083) predicts alpha ≈ 1 in the stale-limited regime. Bars: 95% bootstrap "
        "intervals. If the sweep never leaves the horizon-limited regime, alpha is poorly "
        "determined and its interval is wide.",
    )
    if law.settings.get("objective") in runs.columns:
        page.chart(
            objective_chart(runs, law),
            heading=f"{law.settings['objective']} across the learning-rate grid",
            caption="Mean over seeds (lines) and each run (dots), per fixed staleness; the "
            "dashed rule marks the estimated eta_opt(S): "
            + str(law.settings.get("optimum_rule", "see law.json"))
            + ".",
        )
    if steps is not None and {"run_id", "step", "reward_mean"} <= set(steps.columns):
        page.chart(
            reward_curves_chart(runs, steps),
            heading="Reward curves per learning rate and staleness",
            caption="Mean reward per learner step, averaged over seeds; one panel per staleness, "
            "one line per learning rate. A curve that stops early collapsed.",
        )
    if law.steps_to_target is not None:
        page.chart(
            steps_chart(law, points),
            heading="Steps to target at the best learning rate",
            caption="Points: steps to the target reward at eta_opt(S) (median over seeds, "
            "interpolated in ln(lr) between grid LRs) with 95% bootstrap intervals. Line: the "
            f"fitted model, {law.steps_to_target.describe()}.",
        )
    page.chart(
        heatmap_chart(runs, "steps_to_target"),
        heading="Steps to target reward (LR × staleness)",
        caption="Median over seeds of the learner steps until the smoothed reward first reaches "
        "the target; empty cells: no seed reached it.",
    )
    page.chart(
        heatmap_chart(runs, "failed"),
        heading="Failures (LR × staleness)",
        caption="Fraction of seeds whose run failed: "
        + str(law.settings.get("failure", "collapsed"))
        + ".",
    )
    comparison = law.summary_comparison or {}
    if comparison.get("status") == "compared":
        page.chart(
            summary_chart(comparison),
            heading="Which staleness summary predicts best",
            caption=comparison.get("metric", ""),
        )
    page.prose(_comparison_text(comparison), heading="Staleness summary comparison")
    if comparison.get("distributions"):
        page.table(
            pl.DataFrame(comparison["distributions"]),
            caption="Each distribution's measured eta_opt, its measured staleness summaries "
            "(S_*), and what the law refitted on each summary predicts (predicted_*).",
        )
    page.table(_points_table(points), heading="Per-staleness estimates")
    page.table(_params_table(law), heading="Law parameters")
    page.table(_runs_table(runs), heading="All runs", collapsed=True)
    page.prose(_source_text(law, fitted_here), heading="Where this came from")
    return page


def render_findings_report(root: Path, out: Path | None = None) -> Path:
    """Render the page of the law experiments under ``root`` (default output:
    ``root/law-findings.html``)."""
    root = Path(root)
    return build_findings_page(root).write(out if out is not None else root / "law-findings.html")


def build_findings_page(root: Path) -> Page:
    """One page for all the law experiments: the verdict per paper prediction, and every
    sweep's eta_opt and eta_max against the realised staleness, with intervals."""
    from stalesim.reports.law_findings import findings as law_findings
    from stalesim.reports.law_findings import load_experiment_laws

    laws = load_experiment_laws(Path(root))
    if not laws:
        raise ValueError(
            f"{root}: no experiment law.json under it (expected e.g. law-objective/clip/law.json)"
        )
    rows = law_findings(Path(root))
    page = Page(
        "The staleness–learning-rate law, tested",
        subtitle=f"{len(laws)} fitted sweeps under {root}",
    )
    from stalesim.reports.law_findings import EDGE_KIND, bands, coverage_of

    band = next((bands(law) for law in laws.values() if bands(law)), {})
    page.table(
        pl.DataFrame([row.__dict__ for row in rows]),
        heading="The paper's predictions against the measurements",
        caption="Intervals are 95% leave-one-seed-out jackknife intervals (estimate ± t on "
        "n_seeds - 1 degrees of freedom × the jackknife standard error), each kind widened by "
        "the calibration factor its fit found on synthetic sweeps of its own design; the "
        "coverage column is the widened intervals' coverage counted on fresh synthetic sweeps "
        "(table below). A verdict on an interval whose coverage was not simulated is withheld "
        "(inconclusive). "
        "Verdicts are equivalence tests: ∝ 1/S only when the whole slope interval lies in "
        f"{band.get('one_over_s')}, flat only inside {band.get('flat')} (a ratio from S = 0 "
        f"inside {band.get('flat_ratio')}), else inconclusive; an eta_opt verdict stands only "
        "when every score and horizon agrees. Two sweeps are compared through "
        "eta(S_max)/eta(0); 'confirms'/'refutes' needs non-overlapping intervals.",
    )
    coverage = [
        {
            "sweep": name,
            "method": (law.settings or {}).get("interval_method_used"),
            # eta_opt's three kinds of interval, then the eta_max kinds they mirror
            **{kind: coverage_of(law, kind) for kind in (*EDGE_KIND, *EDGE_KIND.values())},
            "synthetic sweeps": ((law.slopes or {}).get("interval_coverage") or {}).get("n_sim"),
        }
        for name, law in laws.items()
    ]
    page.table(
        pl.DataFrame(coverage),
        heading="Measured coverage of the nominal 95% intervals",
        caption="Each fit ran its own estimator on synthetic sweeps with its design (S values, "
        "learning-rate grid, seeds), a known optimum and stability edge per S (its own "
        "eta_opt and eta_max) and its measured seed noise and failure spread, widened each "
        "kind of interval until 95% held the truth under a symmetric and a skewed reward, and "
        "counted the widened intervals' coverage again on fresh sweeps (the lower of the two "
        "models is shown). reports/results/coverage/ compares the plain jackknife with the old "
        "seed bootstrap.",
    )
    frames = []
    for name, law in laws.items():
        for point in law.points:
            for curve in ("eta_opt", "eta_max"):
                value = point.get(curve)
                if value is None:
                    continue
                frames.append(
                    {
                        "sweep": name,
                        "curve": curve,
                        "S": point.get("staleness_realised", point["staleness"]),
                        "eta": value,
                        "lo": point.get(f"{curve}_lo"),
                        "hi": point.get(f"{curve}_hi"),
                        "bound": point.get(f"{curve}_flag") != "ok",
                    }
                )
    table = pl.DataFrame(frames)
    base = alt.Chart(table).encode(
        x=alt.X("S:Q", scale=S_SCALE, title="realised mean lag (versions)"),
        color=alt.Color("sweep:N"),
    )
    chart = (
        alt.layer(
            base.mark_line(point=True).encode(
                y=alt.Y("eta:Q", scale=LR_SCALE, title="learning rate"),
                shape=alt.Shape("bound:N", title="bound (not an estimate)"),
                tooltip=["sweep", "curve", "S", "eta", "lo", "hi", "bound"],
            ),
            base.mark_rule().encode(y="lo:Q", y2="hi:Q"),
        )
        .properties(width=FACET_WIDTH * 1.5, height=FACET_HEIGHT * 1.6)
        .facet(column=alt.Column("curve:N", title=None))
        .resolve_scale(y="independent")
    )
    page.chart(
        chart,
        heading="eta_opt and eta_max per sweep",
        caption="Per-S estimates with their intervals; SGD sweeps sit two orders of magnitude "
        "higher (its step is the raw gradient times the LR).",
    )
    from stalesim.reports.law_findings import scheduler_rows

    schedule = scheduler_rows(Path(root))
    page.table(
        pl.DataFrame(schedule)
        if schedule
        else pl.DataFrame({"status": ["not run (no law-scheduler or law-sched-alt summary.json)"]}),
        heading="Learning-rate rules on mixed staleness",
        caption="Per rule: its best learning rate in-sample (highest mean reward AUC), that "
        "rate's mean scores, median steps to each reward target (a seed that never got there "
        "counts as never) and failure rate. The verdict compares law = StalenessLR at the law's "
        "eta_opt(0), not tuned, with every rate of the rule, paired by seed (Student t 95%): "
        "ahead / not behind (within 0.01 reward) only when it holds against every rate; it "
        "stands only where every score agrees.",
    )
    regimes = [
        {"sweep": name, "regime": law.regime.describe() if law.regime else "—"}
        for name, law in laws.items()
    ]
    page.table(pl.DataFrame(regimes), heading="What each sweep was measured on")
    return page


def _presets(runs: pl.DataFrame) -> str:
    if "preset" not in runs.columns:
        return "unnamed"
    return ", ".join(sorted(map(str, runs["preset"].drop_nulls().unique().to_list()))) or "unnamed"


def _group_label(runs: pl.DataFrame) -> pl.Expr:
    """``S=4`` for fixed runs, the spec for distribution runs."""
    fixed = pl.lit("S=") + pl.col("staleness").cast(pl.Utf8)
    if "staleness_kind" not in runs.columns or "staleness_spec" not in runs.columns:
        return fixed
    return (
        pl.when(pl.col("staleness_kind") == "fixed").then(fixed).otherwise(pl.col("staleness_spec"))
    )


def _group_order(runs: pl.DataFrame) -> list[str]:
    ordered = runs.select("group", "staleness", _is_fixed(runs).alias("fixed")).unique()
    ordered = ordered.sort(["fixed", "staleness", "group"], descending=[True, False, False])
    return ordered["group"].to_list()


def _is_fixed(runs: pl.DataFrame) -> pl.Expr:
    if "staleness_kind" not in runs.columns:
        return pl.lit(True)
    return pl.col("staleness_kind") == "fixed"


# --------------------------------------------------------------------------- numbers and prose


def _point(points: pl.DataFrame, staleness: int, column: str) -> float | None:
    row = points.filter(pl.col("staleness") == staleness)
    if row.height == 0 or column not in row.columns:
        return None
    value = row[column][0]
    return None if value is None else float(value)


def headline_metrics(
    law: Law, points: pl.DataFrame, runs: pl.DataFrame
) -> list[tuple[str, list[Metric]]]:
    """The numbers at the top of the page."""
    s_top = int(points["staleness"].max())
    opt0, opt_top = _point(points, 0, "eta_opt"), _point(points, s_top, "eta_opt")
    ratio = opt_top / opt0 if opt0 and opt_top else None
    alpha_ci = law.eta_opt.intervals.get("alpha")
    steps0 = _point(points, 0, "steps_to_target")
    steps_top = _point(points, s_top, "steps_to_target")
    collapsed = runs["collapsed"].cast(pl.Float64).mean()
    learning = [
        Metric("eta_opt at S=0", opt0, note=_ci_note(points, 0, "eta_opt")),
        Metric(f"eta_opt at S={s_top}", opt_top, note=_ci_note(points, s_top, "eta_opt")),
        Metric(f"eta_opt(S={s_top}) / eta_opt(0)", ratio),
        Metric(
            "alpha (eta_opt)",
            law.eta_opt.alpha,
            note=f"95% interval {alpha_ci[0]:.3g}–{alpha_ci[1]:.3g}" if alpha_ci else "",
        ),
        Metric("alpha, paper", law.alpha_paper),
    ]
    for staleness in (0, s_top):
        value = _point(points, staleness, "eta_max")
        if value is None:
            continue
        flag = points.filter(pl.col("staleness") == staleness)["eta_max_flag"][0]
        shown: float | str = value
        if flag == "above_grid":
            shown = f"> {value:.3g}"  # no LR of the grid failed: a lower bound
        elif flag == "below_grid":
            shown = f"< {value:.3g}"
        learning.append(
            Metric(
                f"eta_max at S={staleness}",
                shown,
                note=_ci_note(points, staleness, "eta_max") if flag == "ok" else flag,
            )
        )
    sweep = [
        Metric("steps to target, S=0", steps0),
        Metric(f"steps to target, S={s_top}", steps_top),
        Metric("runs", runs.height),
        Metric("collapsed", float(collapsed) if collapsed is not None else None, kind="percent"),
    ]
    return [("Learning rate", learning), ("Sweep", sweep)]


def _ci_note(points: pl.DataFrame, staleness: int, column: str) -> str:
    lo, hi = _point(points, staleness, f"{column}_lo"), _point(points, staleness, f"{column}_hi")
    if lo is None or hi is None:
        return ""
    return f"95% bootstrap interval {lo:.3g}–{hi:.3g}"


def findings(law: Law, points: pl.DataFrame, runs: pl.DataFrame, fitted_here: bool) -> str:
    """Plain statements of what the sweep does and does not show, computed from the numbers."""
    s_top = int(points["staleness"].max())
    flag0 = points.filter(pl.col("staleness") == 0)["eta_opt_flag"].to_list()
    lines = []
    if flag0:
        lines.append(
            "At S=0 the best learning rate is an interior optimum of the grid."
            if flag0[0] == "ok"
            else f"At S=0 the best learning rate is not an interior optimum ({flag0[0]}): the "
            "grid does not bracket it, so it is a bound."
        )
    opt0_hi = _point(points, 0, "eta_opt_hi")
    opt0_lo = _point(points, 0, "eta_opt_lo")
    top_hi = _point(points, s_top, "eta_opt_hi")
    top = _point(points, s_top, "eta_opt")
    opt0 = _point(points, 0, "eta_opt")
    if None not in (opt0_lo, opt0_hi, top_hi, top, opt0):
        if top_hi < opt0_lo:
            lines.append(
                f"At S={s_top} the best learning rate ({top:.3g}) is lower than at S=0 "
                f"({opt0:.3g}) by more than the bootstrap spread: their 95% intervals do not "
                "overlap."
            )
        elif top < opt0:
            lines.append(
                f"At S={s_top} the best learning rate ({top:.3g}) is lower than at S=0 "
                f"({opt0:.3g}), but not by more than the bootstrap spread (the 95% intervals "
                "overlap)."
            )
        else:
            lines.append(
                f"At S={s_top} the best learning rate ({top:.3g}) is not lower than at S=0 "
                f"({opt0:.3g}): within S ≤ {s_top} the optimum does not move down."
            )
    lines.extend(_shape_statement(points))
    column = "failed" if "failed" in runs.columns else "collapsed"
    failing = runs.filter(pl.col(column).cast(pl.Boolean))
    collapsed = int(runs["collapsed"].cast(pl.Boolean).sum())
    if failing.height:
        lowest = float(failing["lr"].min())
        lines.append(
            f"{failing.height} of {runs.height} runs failed ({collapsed} collapsed, the rest "
            f"ended below their warm start or never learned); the lowest learning rate with a "
            f"failure was {lowest:.3g}."
        )
    else:
        lines.append("No run failed: eta_max is only bounded below by the largest LR tried.")
    alpha_ci = law.eta_opt.intervals.get("alpha")
    if alpha_ci:
        inside = alpha_ci[0] <= law.alpha_paper <= alpha_ci[1]
        lines.append(
            f"The fitted exponent of eta_opt is alpha = {law.eta_opt.alpha:.3g} (95% interval "
            f"{alpha_ci[0]:.3g}–{alpha_ci[1]:.3g}), "
            + ("consistent with" if inside else "not consistent with")
            + f" the paper's alpha ≈ {law.alpha_paper:g}"
            + (
                f"; the knee is at s_c = {law.eta_opt.s_c:.3g} versions."
                if 0.051 < law.eta_opt.s_c < 9.9e3  # not on the fit's bounds
                else "."
            )
        )
    steps = law.steps_to_target
    if steps is not None:
        text = f"Steps to target at eta_opt: {steps.describe()}."
        other = steps.alternative
        if other:
            text += (
                f" This form has the lower AIC ({other['aic_of_chosen']:.3g} against "
                f"{other['aic']:.3g} for the {other['form']} form, whose rms ln-residual is "
                f"{other['rmse_log']:.3f})."
            )
        if steps.form == "staleness":
            text += (
                " The data say steps to target keep growing with staleness by more than the "
                "best learning rate falls, so the 1/eta_opt model is not used."
            )
        elif not steps.p_fixed:
            text += " p = 1 would mean the same distance travelled at a slower pace."
        lines.append(text)
    fitted_runs = law.source.get("n_runs")
    if not fitted_here and fitted_runs is not None and fitted_runs != runs.height:
        lines.append(
            f"Warning: law.json was fitted to {fitted_runs} runs but the folder now holds "
            f"{runs.height}; run `stalesim fit` again to bring the law up to date."
        )
    if fitted_here:
        lines.append(
            f"No law.json was found next to the runs, so this page fitted the law itself with "
            f"{law.settings.get('bootstrap', 'its default number of')} bootstrap replicates; run `stalesim fit` to record it."
        )
    return "\n\n".join(lines)


def _shape_statement(points: pl.DataFrame) -> list[str]:
    """Where eta_opt stops falling, if it does, in words."""
    usable = points.filter(pl.col("eta_opt_flag") == "ok").sort("staleness")
    if usable.height < 3:
        return []
    eta = usable["eta_opt"].to_numpy()
    staleness = usable["staleness"].to_numpy()
    lowest = int(np.argmin(eta))
    if lowest == len(eta) - 1:
        return [
            f"eta_opt is lowest at the largest staleness measured (S={staleness[-1]}): it is "
            "still falling there."
        ]
    tail = eta[lowest:]
    return [
        f"eta_opt falls from S={staleness[0]} to S={staleness[lowest]} "
        f"({eta[0]:.3g} → {eta[lowest]:.3g}, ×{eta[lowest] / eta[0]:.2f}) and then stops "
        f"falling: from S={staleness[lowest]} to S={staleness[-1]} the estimates stay within "
        f"{tail.min():.3g}–{tail.max():.3g}. The law family is monotone, so it can only fit "
        "this with a flat tail (a small alpha)."
    ]


def _comparison_text(comparison: dict[str, Any]) -> str:
    if comparison.get("status") != "compared":
        return f"Not compared: {comparison.get('status', 'no comparison in law.json')}."
    text = comparison["verdict"] + "."
    if comparison.get("identical"):
        same = ", ".join(f"{a} = {b}" for a, b in comparison["identical"].items())
        text += f" Identical on these runs, so compared once: {same}."
    if comparison.get("not_available"):
        text += f" Not recorded by the runs: {', '.join(comparison['not_available'])}."
    if comparison.get("excluded"):
        text += (
            " Distributions left out (optimum at a grid edge): "
            + ", ".join(comparison["excluded"])
            + "."
        )
    return text


def _source_text(law: Law, fitted_here: bool) -> str:
    source = law.source
    parts = [f"{key}: `{value}`" for key, value in source.items() if value is not None]
    settings = law.settings
    text = "Fit: " + "; ".join(parts) + "." if parts else "The law records no source."
    if settings:
        text += (
            f"\n\nObjective `{settings.get('objective')}` ({settings.get('objective_direction')}); "
            f"eta_opt rule: {settings.get('optimum_rule')}; eta_max rule: "
            f"{settings.get('eta_max_rule')}, failure = {settings.get('failure')}; bootstrap: "
            f"{settings.get('bootstrap')} replicates of {settings.get('bootstrap_unit')}; law "
            f"fit: {settings.get('law_fit')}."
        )
    return text


# --------------------------------------------------------------------------- charts


def law_chart(law: Law, points: pl.DataFrame) -> alt.TopLevelMixin:
    """eta_opt(S) and eta_max(S): estimates with intervals, the fitted law and its band."""
    curves = []
    estimates = []
    s_top = float(points["staleness"].max())
    for name, curve in (("eta_opt", law.eta_opt), ("eta_max", law.eta_max)):
        if curve is None:
            continue
        band = curve.band
        grid = np.array(band.staleness) if band else np.linspace(0.0, 1.25 * s_top, 60)
        curves.append(
            pl.DataFrame(
                {
                    "S": grid,
                    "eta": curve(grid),
                    "lo": band.lo if band else [None] * len(grid),
                    "hi": band.hi if band else [None] * len(grid),
                    "quantity": name,
                },
                schema_overrides={"lo": pl.Float64, "hi": pl.Float64},
            )
        )
    for name in ("eta_opt", "eta_max"):
        if name not in points.columns:
            continue
        estimates.append(
            points.select(
                pl.col("staleness").cast(pl.Float64).alias("S"),
                pl.col(name).alias("eta"),
                pl.col(f"{name}_lo").alias("lo"),
                pl.col(f"{name}_hi").alias("hi"),
                pl.col(f"{name}_flag").alias("flag"),
                pl.col(f"{name}_in_fit").alias("fitted"),
                pl.lit(name).alias("quantity"),
            )
        )
    color = alt.Color("quantity:N", title=None)
    ticks = [0, *[2**i for i in range(int(np.log2(max(s_top, 1))) + 2)]]
    x = alt.X("S:Q", scale=S_SCALE, title="staleness S (versions)", axis=alt.Axis(values=ticks))
    y = alt.Y("eta:Q", scale=LR_SCALE, title="learning rate")
    layers = []
    if curves:
        # the curve is drawn a little past the largest S measured, no further: beyond it the
        # band is extrapolation
        lines = pl.concat(curves).filter(pl.col("S") <= 1.25 * s_top)
        base = alt.Chart(lines)
        layers.append(
            base.mark_area(opacity=0.18).encode(
                x=x,
                y=alt.Y("lo:Q", scale=LR_SCALE),
                y2="hi:Q",
                color=alt.Color("quantity:N", legend=None),
            )
        )
        layers.append(base.mark_line().encode(x=x, y=y, color=color))
    dots = pl.concat(estimates).drop_nulls("eta")
    base = alt.Chart(dots)
    tooltip = ["quantity:N", "S:Q", alt.Tooltip("eta:Q", format=".3g"), "flag:N", "fitted:N"]
    layers.append(
        base.mark_rule().encode(x=x, y=alt.Y("lo:Q", scale=LR_SCALE), y2="hi:Q", color=color)
    )
    layers.append(
        base.mark_point(size=60, filled=True).encode(
            x=x,
            y=y,
            color=color,
            fill=alt.condition("datum.fitted", color, alt.value("white")),
            tooltip=tooltip,
        )
    )
    return alt.layer(*layers).properties(width=720, height=340)


def steps_chart(law: Law, points: pl.DataFrame) -> alt.TopLevelMixin:
    """Measured steps to target at eta_opt(S) and the fitted steps model."""
    s_top = float(points["staleness"].max())
    grid = np.concatenate([[0.0], np.geomspace(0.25, 1.25 * s_top, 60)])
    model = pl.DataFrame({"S": grid, "steps": law.steps_to_target_at(grid)})
    measured = points.select(
        pl.col("staleness").cast(pl.Float64).alias("S"),
        pl.col("steps_to_target").alias("steps"),
        pl.col("steps_to_target_lo").alias("lo"),
        pl.col("steps_to_target_hi").alias("hi"),
    ).drop_nulls("steps")
    ticks = [0, *[2**i for i in range(int(np.log2(max(s_top, 1))) + 2)]]
    x = alt.X("S:Q", scale=S_SCALE, title="staleness S (versions)", axis=alt.Axis(values=ticks))
    y = alt.Y("steps:Q", scale=LR_SCALE, title="learner steps to target")
    return alt.layer(
        alt.Chart(model).mark_line(color="#54a24b").encode(x=x, y=y),
        alt.Chart(measured).mark_rule(color="#54a24b").encode(x=x, y="lo:Q", y2="hi:Q"),
        alt.Chart(measured)
        .mark_point(filled=True, size=60, color="#54a24b")
        .encode(x=x, y=y, tooltip=["S:Q", alt.Tooltip("steps:Q", format=".1f")]),
    ).properties(width=720, height=260)


def exponent_chart(law: Law) -> alt.TopLevelMixin:
    """alpha of each fitted curve with its interval, next to the paper's alpha = 1."""
    rows = []
    for name, curve in (("eta_opt", law.eta_opt), ("eta_max", law.eta_max)):
        if curve is None:
            continue
        lo, hi = curve.intervals.get("alpha", (curve.alpha, curve.alpha))
        rows.append({"curve": name, "alpha": curve.alpha, "lo": lo, "hi": hi})
    frame = pl.DataFrame(rows)
    y = alt.Y("curve:N", title=None)
    x_scale = alt.Scale(domain=[0, max(2.0, float(frame["hi"].max()) * 1.05)])
    base = alt.Chart(frame)
    paper = alt.Chart(pl.DataFrame({"alpha": [law.alpha_paper], "label": ["paper: alpha ≈ 1"]}))
    return alt.layer(
        base.mark_rule(strokeWidth=2).encode(
            x=alt.X("lo:Q", scale=x_scale, title="alpha"), x2="hi:Q", y=y
        ),
        base.mark_point(size=90, filled=True).encode(
            x="alpha:Q", y=y, tooltip=[alt.Tooltip("alpha:Q", format=".3g"), "lo:Q", "hi:Q"]
        ),
        paper.mark_rule(color="#e45756", strokeDash=[5, 4]).encode(x="alpha:Q"),
        paper.mark_text(color="#e45756", align="left", dx=4, dy=-6, baseline="bottom").encode(
            x="alpha:Q", text="label:N"
        ),
    ).properties(width=560, height=90)


def objective_chart(runs: pl.DataFrame, law: Law) -> alt.TopLevelMixin:
    """The objective vs learning rate for every fixed staleness, with eta_opt(S) marked."""
    objective = law.settings["objective"]
    fixed = runs.filter(_is_fixed(runs)).select(
        "lr", "staleness", pl.col(objective).cast(pl.Float64).alias("value")
    )
    means = fixed.group_by("lr", "staleness").agg(pl.col("value").mean()).sort("lr")
    optima = pl.DataFrame(law.points).select("staleness", pl.col("eta_opt").alias("lr"))
    color = alt.Color("staleness:O", title="S", scale=alt.Scale(scheme="viridis"))
    x = alt.X("lr:Q", scale=LR_SCALE, title="learning rate")
    y = alt.Y("value:Q", title=objective, scale=alt.Scale(zero=False))
    return alt.layer(
        alt.Chart(fixed).mark_circle(size=18, opacity=0.45).encode(x=x, y=y, color=color),
        alt.Chart(means)
        .mark_line(point=True)
        .encode(
            x=x,
            y=y,
            color=color,
            tooltip=[
                "staleness:O",
                alt.Tooltip("lr:Q", format=".3g"),
                alt.Tooltip("value:Q", format=".3f"),
            ],
        ),
        alt.Chart(optima).mark_rule(strokeDash=[4, 3]).encode(x="lr:Q", color=color),
    ).properties(width=720, height=320)


def reward_curves_chart(runs: pl.DataFrame, steps: pl.DataFrame) -> alt.TopLevelMixin:
    """Small multiples: reward vs step, one panel per staleness, one line per learning rate."""
    joined = steps.select("run_id", "step", pl.col("reward_mean").cast(pl.Float64)).join(
        runs.select("run_id", "lr", "group"), on="run_id", how="inner"
    )
    curves = (
        joined.group_by("group", "lr", "step")
        .agg(pl.col("reward_mean").mean().alias("reward"), pl.len().alias("seeds"))
        .sort("group", "lr", "step")
    )
    longest = int(curves["step"].max()) + 1 if curves.height else 1
    stride = max(1, -(-longest // CURVE_POINTS))
    curves = curves.filter(pl.col("step") % stride == 0).with_columns(
        pl.col("lr").map_elements(lambda v: f"{v:.2g}", return_dtype=pl.Utf8).alias("lr_label")
    )
    lr_order = [f"{v:.2g}" for v in sorted(runs["lr"].unique().to_list())]
    return (
        alt.Chart(curves)
        .mark_line(strokeWidth=1.3)
        .encode(
            x=alt.X("step:Q", title="learner step"),
            y=alt.Y("reward:Q", title="mean reward", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color(
                "lr_label:O", title="learning rate", sort=lr_order, scale=alt.Scale(scheme="plasma")
            ),
            tooltip=["group:N", "lr_label:N", "step:Q", alt.Tooltip("reward:Q", format=".3f")],
        )
        .properties(width=FACET_WIDTH, height=FACET_HEIGHT)
        .facet(facet=alt.Facet("group:N", title=None, sort=_group_order(runs)), columns=3)
    )


def heatmap_chart(runs: pl.DataFrame, column: str) -> alt.TopLevelMixin:
    """LR × staleness grid of the median steps to target, or of the collapse fraction."""
    if column in ("collapsed", "failed"):
        value = pl.col(column).cast(pl.Float64).mean().alias("value")
        title, fmt, scheme = f"{column} fraction", ".0%", "reds"
        domain: Any = [0.0, 1.0]
    else:
        present = column in runs.columns
        # a run that never reached the target counts as infinitely slow, so the median is
        # undefined (empty cell) once half the seeds never got there
        steps = pl.col(column).cast(pl.Float64).fill_null(float("inf")) if present else pl.lit(None)
        value = steps.median().alias("value")
        title, fmt, scheme = "median steps to target", ".0f", "blues"
        domain = alt.Undefined
    cells = (
        runs.group_by("group", "lr")
        .agg(value, pl.len().alias("runs"))
        .with_columns(
            pl.when(pl.col("value").is_infinite())
            .then(None)
            .otherwise(pl.col("value"))
            .alias("value"),
            pl.col("lr").map_elements(lambda v: f"{v:.2g}", return_dtype=pl.Utf8).alias("lr_label"),
        )
        .with_columns(
            pl.col("value")
            .map_elements(lambda v: format(v, fmt), return_dtype=pl.Utf8)
            .fill_null("never" if column not in ("collapsed", "failed") else "—")
            .alias("label")
        )
    )
    lr_order = [f"{v:.2g}" for v in sorted(runs["lr"].unique().to_list())]
    x = alt.X("lr_label:O", sort=lr_order, title="learning rate")
    y = alt.Y("group:O", sort=_group_order(runs), title="staleness")
    base = alt.Chart(cells).encode(x=x, y=y)
    return alt.layer(
        base.mark_rect().encode(
            color=alt.Color("value:Q", title=title, scale=alt.Scale(scheme=scheme, domain=domain)),
            tooltip=["group:N", "lr_label:N", alt.Tooltip("value:Q", format=fmt), "runs:Q"],
        ),
        base.mark_text(fontSize=10).encode(text="label:N"),
    ).properties(width=620, height=alt.Step(24))


def summary_chart(comparison: dict[str, Any]) -> alt.TopLevelMixin:
    """Held-out RMS log error of each staleness summary, with bootstrap intervals."""
    intervals = comparison.get("rmse_log_intervals", {})
    frame = pl.DataFrame(
        [
            {
                "summary": name,
                "rmse": error,
                "lo": intervals.get(name, [error, error])[0],
                "hi": intervals.get(name, [error, error])[1],
            }
            for name, error in comparison["rmse_log"].items()
        ]
    )
    y = alt.Y("summary:N", sort=comparison.get("ranking"), title=None)
    base = alt.Chart(frame)
    return alt.layer(
        base.mark_bar(opacity=0.7).encode(
            x=alt.X("rmse:Q", title="RMS ln(measured / predicted eta_opt)"), y=y
        ),
        base.mark_rule().encode(x="lo:Q", x2="hi:Q", y=y),
    ).properties(width=560, height=alt.Step(26))


# --------------------------------------------------------------------------- tables


def _points_table(points: pl.DataFrame) -> pl.DataFrame:
    wanted = [
        "staleness",
        "n_runs",
        "n_lrs",
        "grid_best_lr",
        "eta_opt",
        "eta_opt_lo",
        "eta_opt_hi",
        "eta_opt_flag",
        "eta_max",
        "eta_max_lo",
        "eta_max_hi",
        "eta_max_flag",
        "steps_to_target",
        "steps_to_target_lo",
        "steps_to_target_hi",
    ]
    return points.select([c for c in wanted if c in points.columns])


def _slopes_table(law: Law) -> pl.DataFrame:
    rows = []
    for curve in ("eta_opt", "eta_max"):
        block = (law.slopes or {}).get(curve) or {}
        parts = [("early", block.get("early")), ("late", block.get("late"))]
        parts += [("local", item) for item in block.get("local", [])]
        for kind, item in parts:
            if not item:
                continue
            rows.append(
                {
                    "curve": curve,
                    "range": kind,
                    "S from": item["from"],
                    "S to": item["to"],
                    "slope": item["slope"],
                    "lo": item["lo"],
                    "hi": item["hi"],
                    "verdict": item["verdict"],
                }
            )
        drop = block.get("drop_from_zero")
        if drop:
            rows.append(
                {
                    "curve": curve,
                    "range": "eta(S_max)/eta(0)",
                    "S from": 0.0,
                    "S to": drop["to"],
                    "slope": drop["ratio"],
                    "lo": drop["lo"],
                    "hi": drop["hi"],
                    "verdict": "ratio",
                }
            )
    return pl.DataFrame(
        rows,
        schema={
            "curve": pl.String,
            "range": pl.String,
            "S from": pl.Float64,
            "S to": pl.Float64,
            "slope": pl.Float64,
            "lo": pl.Float64,
            "hi": pl.Float64,
            "verdict": pl.String,
        },
    )


def _params_table(law: Law) -> pl.DataFrame:
    rows = []
    for name, curve in (("eta_opt", law.eta_opt), ("eta_max", law.eta_max)):
        if curve is None:
            continue
        for param in ("eta0", "s_c", "k", "alpha"):
            lo, hi = curve.intervals.get(param, (None, None))
            rows.append(
                {
                    "curve": name,
                    "parameter": param,
                    "value": float(getattr(curve, param)),
                    "lo": lo,
                    "hi": hi,
                    "note": "fixed" if param in curve.fixed else "",
                }
            )
        quality = curve.quality
        if quality is not None:
            rows.append(
                {
                    "curve": name,
                    "parameter": "R² of ln eta",
                    "value": quality.r2_log,
                    "lo": None,
                    "hi": None,
                    "note": f"{quality.n_points} points",
                }
            )
    steps = law.steps_to_target
    if steps is not None:
        names = ("steps0", "p") if steps.form == "eta_ratio" else ("steps0", "s_c", "k", "beta")
        for param in names:
            lo, hi = steps.intervals.get(param, (None, None))
            rows.append(
                {
                    "curve": f"steps_to_target ({steps.form})",
                    "parameter": param,
                    "value": float(getattr(steps, param)),
                    "lo": lo,
                    "hi": hi,
                    "note": "fixed" if param == "p" and steps.p_fixed else "",
                }
            )
    return pl.DataFrame(
        rows, schema_overrides={"lo": pl.Float64, "hi": pl.Float64, "value": pl.Float64}
    )


def _runs_table(runs: pl.DataFrame) -> pl.DataFrame:
    wanted = [
        "run_id",
        "group",
        "lr",
        "seed",
        "final_reward",
        "reward_auc",
        "steps_to_target",
        "collapsed",
        "failed",
        "collapse_step",
        "warm_reward",
        "staleness_mean",
        "staleness_token_mean",
        "staleness_max",
        "wall_s",
    ]
    return runs.select([c for c in wanted if c in runs.columns]).sort("group", "lr", "seed")


__all__ = [
    "build_findings_page",
    "build_validate_page",
    "exponent_chart",
    "findings",
    "headline_metrics",
    "heatmap_chart",
    "law_chart",
    "objective_chart",
    "render_findings_report",
    "render_validate_report",
    "reward_curves_chart",
    "steps_chart",
    "summary_chart",
]
