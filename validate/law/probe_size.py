"""How small a probe of the user's own law can be, measured on committed sweeps.

A probe is what a user could afford on their own trainer: the on-policy run (S = 0) and one or
two staleness bounds, each at a few learning rates around their on-policy baseline, with a few
seeds. Each probe design is cut out of a committed full sweep (same runs, fewer of them), turned
into the step table a user would give ``stalesim fit`` (:mod:`stalesim.validate.law.external_runs`)
and fitted with the default settings (500 seed-bootstrap replicates). For every probed bound S the
probe's ``eta_opt(S) / eta_opt(0)`` and its 95% interval are compared with the full sweep's point
value of the same ratio (from its committed ``law.json``): how wide the interval is (hi / lo),
next to the width the full sweep's runs at S = 0 and that bound give, and whether it contains the
full-sweep value.

The designs: the baseline ``b`` is the S = 0 grid learning rate with the best mean objective in
the full sweep (what a user's tuned on-policy rate is); the learning rates are the sweep's
factor-2 grid points ``{b/2, b, 2b}`` (3), the same at S = 0 and ``{b/4, b/2, b}`` at the bound
("3 down"), ``{b/4, b/2, b, 2b}`` (4) or ``{b/4 .. 4b}`` (5), where the sweep ran them; the seeds are every 2-seed subset of the sweep's 3 seeds, or all 3. A ratio
at a bound whose probe optimum sits at the edge of its learning rates is "no answer" (the fit
reports a bound, not an estimate). Only one-bound probes are fitted: the estimate of
``eta_opt(S)`` and its bootstrap interval use only the runs at that S, and the ratio only those and
the on-policy runs, so in a two-bound probe each bound's ratio is the one-bound probe's (the second
bound adds its runs and the law's shape, not precision at the first).

Caveats the output states: the probes are subsets of the very runs the reference was fitted on
(a 3-seed, 5-rate probe holds most of them), so containment here is optimistic for a new
trainer; and a seed bootstrap over 2 or 3 seeds covers less than its nominal 95%.

Run: ``python -m stalesim.validate.law.probe_size reports/results --out reports/results/probe-size``.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import click
import polars as pl
from stalesim.validate.law.external_runs import to_sweep_tables
from stalesim.validate.law.fit import FitSettings, fit_sweep
from stalesim.validate.law.sweep_runs import read_sweep

#: The sweeps the probes are cut from (folders under the results folder given), and the bounds
#: probed in each.
TASKS = {
    "non-saturating": ("law-horizon/non-saturating", (2, 4, 8)),
    "clip": ("law-objective/clip", (2, 4, 8)),
}
#: Learning rates of each design, as multiples of the baseline: (at S = 0, at the bound). "3 down"
#: runs the bound one grid step lower, where its optimum is expected.
LR_SETS = {
    "3": ((0.5, 1.0, 2.0), (0.5, 1.0, 2.0)),
    "3 down": ((0.5, 1.0, 2.0), (0.25, 0.5, 1.0)),
    "4": ((0.25, 0.5, 1.0, 2.0), (0.25, 0.5, 1.0, 2.0)),
    "5": ((0.25, 0.5, 1.0, 2.0, 4.0), (0.25, 0.5, 1.0, 2.0, 4.0)),
}


@dataclass(frozen=True)
class Design:
    """One probe: its bounds, learning-rate multiples and seeds."""

    task: str
    bounds: tuple[int, ...]
    lr_set: str
    seeds: tuple[int, ...]


def step_table(
    runs: pl.DataFrame, steps: pl.DataFrame, *, warm_reward: bool = False
) -> pl.DataFrame:
    """A sweep as the step table a user gives ``stalesim fit``: one row per logged step; with
    ``warm_reward`` also the starting policy's reward (a user's
    table may not have it: the fit then takes the mean of the first logged rewards)."""
    extra = ["warm_reward"] if warm_reward else []
    return (
        steps.drop("lr")  # the per-step (warm-up) rate; the run's rate is the label
        .join(runs.select("run_id", "lr", "staleness", "seed", *extra), on="run_id")
        .select(
            pl.col("run_id").alias("run"),
            "lr",
            "staleness",
            "seed",
            "step",
            pl.col("reward_mean").alias("reward"),
            pl.col("staleness_mean").alias("lag"),
            *extra,
        )
    )


def baseline_lr(runs: pl.DataFrame) -> float:
    """The S = 0 grid learning rate with the best mean ``reward_auc``."""
    zero = runs.filter(pl.col("staleness") == 0).group_by("lr").agg(pl.col("reward_auc").mean())
    return float(zero.sort("reward_auc", descending=True)["lr"][0])


def reference_ratios(law_path: Path) -> dict[int, float]:
    """The full sweep's ``eta_opt(S) / eta_opt(0)`` at every S whose estimate is not a bound."""
    points = {p["staleness"]: p for p in json.loads(law_path.read_text())["points"]}
    zero = points[0]["eta_opt"]
    return {s: p["eta_opt"] / zero for s, p in points.items() if s and p["eta_opt_flag"] == "ok"}


def probe_ratio(table: pl.DataFrame, bound: int, bootstrap: int, seed: int) -> dict:
    """The probe's ratio at ``bound``: point, interval, and why there is none."""
    ext = to_sweep_tables(table.filter(pl.col("staleness").is_in([0, bound])))
    try:
        fit = fit_sweep(ext.runs, FitSettings(bootstrap=bootstrap, seed=seed), steps=ext.steps)
    except ValueError as exc:  # the fit refuses: an optimum at the edge of the probe's rates
        return {"answer": False, "why": str(exc).split(";")[0][:80]}
    flags = dict(zip(fit.points["staleness"], fit.points["eta_opt_flag"], strict=True))
    drop = (fit.law.slopes or {}).get("eta_opt", {}).get("drop_from_zero")
    if flags.get(0) != "ok" or flags.get(bound) != "ok" or drop is None:
        return {"answer": False, "why": f"eta_opt flags {flags}"}
    return {"answer": True, "ratio": drop["ratio"], "lo": drop["lo"], "hi": drop["hi"]}


def designs(task: str, bounds: tuple[int, ...], seeds: list[int]) -> list[Design]:
    """Every probe design of one task."""
    bound_sets = [(s,) for s in bounds]
    seed_sets = [tuple(c) for n in (2, 3) for c in itertools.combinations(seeds, n)]
    return [Design(task, b, name, s) for b in bound_sets for name in LR_SETS for s in seed_sets]


def run_design(
    design: Design,
    table: pl.DataFrame,
    base: float,
    reference: dict[int, float],
    bootstrap: int,
    full: dict[int, dict] | None = None,
) -> list[dict]:
    """One row per probed bound of ``design``."""
    at_zero, at_bound = LR_SETS[design.lr_set]

    def rates(factors: tuple[float, ...]) -> pl.Expr:
        return pl.any_horizontal(*(((pl.col("lr") / (base * f)) - 1).abs() < 1e-9 for f in factors))

    picked = table.filter(
        pl.col("seed").is_in(list(design.seeds))
        & (
            ((pl.col("staleness") == 0) & rates(at_zero))
            | (pl.col("staleness").is_in(list(design.bounds)) & rates(at_bound))
        )
    )
    rows = []
    for bound in design.bounds:
        n_runs = picked["run"].n_unique()
        result = probe_ratio(picked, bound, bootstrap, seed=0)
        truth = reference.get(bound)
        inside = result["lo"] <= truth <= result["hi"] if result["answer"] and truth else None
        rows.append(
            {
                "task": design.task,
                "bounds": "+".join(map(str, design.bounds)),
                "S": bound,
                "lr_set": design.lr_set,
                "n_seeds": len(design.seeds),
                "seeds": ",".join(map(str, design.seeds)),
                "probe_runs": n_runs,
                "lrs_at_0": picked.filter(pl.col("staleness") == 0)["lr"].n_unique(),
                "lrs_at_S": picked.filter(pl.col("staleness") == bound)["lr"].n_unique(),
                "full_ratio": truth,
                "full_width": (full or {}).get(bound, {}).get("width"),
                "answer": result["answer"],
                "ratio": result.get("ratio"),
                "lo": result.get("lo"),
                "hi": result.get("hi"),
                "width": result["hi"] / result["lo"] if result["answer"] else None,
                "contains_full": inside,
                "why_none": result.get("why"),
            }
        )
    return rows


def summarise(table: pl.DataFrame) -> pl.DataFrame:
    """Per task, probed bound, number of learning rates and seeds: the answers, the median
    interval width (hi / lo) and the fraction of intervals holding the full-sweep value."""
    return (
        table.group_by("task", "S", "lr_set", "n_seeds")
        .agg(
            pl.len().alias("probes"),
            pl.col("answer").sum().alias("answered"),
            pl.col("full_ratio").first(),
            pl.col("full_width").first(),
            pl.col("ratio").median().alias("median_ratio"),
            pl.col("width").median().alias("median_width"),
            pl.col("contains_full").cast(pl.Float64).mean().alias("containment"),
            pl.col("probe_runs").min().alias("runs"),
            pl.col("lrs_at_0").min(),
            pl.col("lrs_at_S").min(),
        )
        .sort("task", "S", "lr_set", "n_seeds")
    )


@click.command()
@click.argument("root", metavar="RESULTS_DIR", type=click.Path(path_type=Path, file_okay=False))
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True)
@click.option("--bootstrap", type=click.IntRange(min=10), default=500, show_default=True)
def main(out: Path, bootstrap: int, root: Path) -> None:
    """Fit every probe design cut from the sweeps under RESULTS_DIR (law-horizon/non-saturating,
    law-objective/clip); write probes.csv and summary.csv."""
    for folder, _ in TASKS.values():
        if not (root / folder / "runs.parquet").is_file():
            raise click.UsageError(f"{root / folder}: no sweep (runs.parquet) under RESULTS_DIR")
    start = time.perf_counter()
    rows = []
    for task, (folder, bounds) in TASKS.items():
        runs, steps = read_sweep(root / folder)
        table = step_table(runs, steps)
        base = baseline_lr(runs)
        reference = reference_ratios(root / folder / "law.json")
        seeds = sorted(runs["seed"].unique().to_list())
        # the same ratio and interval from every run of the full sweep at S = 0 and the bound
        full = {}
        for bound in bounds:
            whole = probe_ratio(table, bound, bootstrap, seed=0)
            full[bound] = {"width": whole["hi"] / whole["lo"]} if whole["answer"] else {}
        for design in designs(task, bounds, seeds):
            rows.extend(run_design(design, table, base, reference, bootstrap, full))
        click.echo(f"{task}: baseline lr {base:g}, {len(rows)} probe rows so far", err=True)
    probes = pl.DataFrame(rows, infer_schema_length=None)
    out.mkdir(parents=True, exist_ok=True)
    probes.write_csv(out / "probes.csv", float_precision=5)
    summary = summarise(probes)
    summary.write_csv(out / "summary.csv", float_precision=4)
    elapsed = time.perf_counter() - start
    click.echo(
        f"{probes.height} probe rows in {elapsed:.0f} s; wrote {out}/probes.csv, summary.csv"
    )
    with pl.Config(tbl_rows=100, tbl_cols=20, tbl_width_chars=160):
        click.echo(summary)


if __name__ == "__main__":
    main()


__all__ = ["Design", "baseline_lr", "designs", "reference_ratios", "run_design", "step_table"]
