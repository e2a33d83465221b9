"""How often the law's "95%" intervals hold the truth: the whole estimator run on synthetic
sweeps whose answer is known.

A synthetic sweep copies a real sweep's design — its staleness values (on the fit's lag axis),
its learning-rate grid per S and its number of seeds — and draws every run's objective as

    y(S, lr, seed) = peak - a · (ln lr - ln eta*(S))² · (skew if ln lr > ln eta*(S) else 1) + e,

with ``e ~ N(0, sigma²)`` independent per run. The truth ``eta*(S)`` is the real sweep's own
``eta_opt`` estimate at each S (so it sits where the real optima sit relative to the grid),
``a`` is the median curvature of the parabolas through the real sweep's three best cell means,
and ``sigma`` is the pooled standard deviation of the objective over seeds in the cells around
each S's best rate. ``skew > 1`` makes the curve fall faster above its optimum than below, as the
measured curves do (a cliff where training breaks), which biases the three-point parabola.

Each synthetic sweep goes through the same code as ``stalesim fit``
(:func:`stalesim.validate.law.replicates.replicate_groups`, the slope and ratio functions and
:class:`~stalesim.sim.law.intervals.Spread`), and the coverage is the share of the reported
intervals that hold the truth: of ``eta_opt`` at each S, of the slope between every pair of S,
and of the ratios ``eta(S_1)/eta(0)`` and ``eta(S_max)/eta(0)``.

Run it as ``python -m stalesim.validate.law.coverage`` (see ``--help``) to write the comparison of
interval methods on the committed sweeps.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from stalesim.sim.law.intervals import Spread
from stalesim.validate.law.group_estimates import EDGE_FLAGS, Cells, GroupEstimate

#: Percentile-bootstrap replicates per synthetic sweep (the old method; costly, so fewer).
PERCENTILE_REPLICATES = 200
#: How much steeper than below its optimum the skewed synthetic objective falls above it.
SKEW = 3.0
#: The kinds of interval judged on eta_opt's points, and on eta_max's where the design has edges.
KINDS = ("eta_opt", "slope", "ratio")
EDGE_KINDS = ("eta_max", "eta_max_slope", "eta_max_ratio")
ALL_KINDS = KINDS + EDGE_KINDS
#: Grid-resolution draws of eta_max per synthetic sweep (the fit draws ``bootstrap`` of them).
EDGE_DRAWS = 100


@dataclass(frozen=True)
class Design:
    """What a synthetic sweep copies from a real one, and the truth it is drawn around."""

    staleness: tuple[int, ...]  # nominal S per group
    axis: tuple[float, ...]  # the fit's lag axis per group (realised mean lag by default)
    lrs: tuple[tuple[float, ...], ...]  # learning-rate grid per group
    truth: tuple[float, ...]  # eta*(S) per group
    n_seeds: int
    curvature: float  # a, objective units per (ln lr)²
    sigma: float  # run-to-run standard deviation of the objective
    peak: float = 0.5
    skew: float = 1.0
    #: eta_max(S) per group (None where the sweep's edge is a grid bound): runs fail with
    #: probability Phi((ln lr - ln edge) / edge_width); None: no run fails
    edges: tuple[float | None, ...] | None = None
    edge_width: float | None = None

    def label(self) -> str:
        return (
            f"S={list(self.staleness)}, {len(self.lrs[0])} LRs, {self.n_seeds} seeds, "
            f"sigma/a={self.sigma / self.curvature:.3g}, skew {self.skew:g}"
        )


def design_from_cells(
    groups: dict[int, Cells], point: dict[int, GroupEstimate], axis: np.ndarray
) -> Design | None:
    """The design of a real sweep, its truth set to its own ``eta_opt`` at the S where that is
    an estimate (not a grid edge); None when fewer than 2 such S remain or it has one seed."""
    keep = [i for i, s in enumerate(sorted(groups)) if point[s].optimum.flag not in EDGE_FLAGS]
    if len(keep) < 2:
        return None
    order = sorted(groups)
    curvatures, variances = [], []
    for s in order:
        cells = groups[s]
        means = np.array([v.mean() for v in cells.values])
        best = int(np.argmax(means))
        if 0 < best < len(means) - 1:
            x = np.log(cells.lrs[best - 1 : best + 2])
            coef = np.polyfit(x, means[best - 1 : best + 2], 2)
            if coef[0] < 0:
                curvatures.append(-coef[0])
        for v in cells.values[max(0, best - 1) : best + 2]:
            if len(v) > 1:
                variances.append(v.var(ddof=1))
    seeds = {int(x) for c in groups.values() for cs in (c.seeds or ()) for x in cs}
    if not curvatures or not variances or len(seeds) < 2:
        return None
    edges = tuple(
        float(point[order[i]].edge.eta) if point[order[i]].edge.flag == "ok" else None for i in keep
    )
    width = edge_width([groups[order[i]] for i in keep], edges)
    return Design(
        edges=edges if width is not None else None,
        edge_width=width,
        staleness=tuple(int(order[i]) for i in keep),
        axis=tuple(float(axis[i]) for i in keep),
        lrs=tuple(tuple(float(v) for v in groups[order[i]].lrs) for i in keep),
        truth=tuple(float(point[order[i]].optimum.eta) for i in keep),
        n_seeds=len(seeds),
        curvature=float(np.median(curvatures)),
        sigma=float(np.sqrt(np.mean(variances))),
    )


def edge_width(cells: list[Cells], edges: tuple[float | None, ...]) -> float | None:
    """The spread in ``ln lr`` over which runs go from stable to unstable around their edge:
    the maximum-likelihood ``w`` of ``P(fail) = Phi((ln lr - ln edge) / w)`` over the runs of
    every group whose edge is an estimate (bounded to [0.02, 3]); None without such a group."""
    from scipy import optimize

    x, y = [], []
    for c, edge in zip(cells, edges, strict=True):
        if edge is None:
            continue
        for lr, failed in zip(c.lrs, c.failed, strict=True):
            x += [np.log(lr / edge)] * len(failed)
            y += [bool(f) for f in failed]
    if not x:
        return None
    xs, ys = np.array(x), np.array(y)

    def nll(log_w: float) -> float:
        p = np.clip(stats.norm.cdf(xs / np.exp(log_w)), 1e-12, 1 - 1e-12)
        return float(-(np.log(p[ys]).sum() + np.log(1 - p[~ys]).sum()))

    best = optimize.minimize_scalar(nll, bounds=(np.log(0.02), np.log(3.0)), method="bounded")
    return float(np.exp(best.x))


def _lists(value: Any) -> Any:
    """Tuples as lists, as law.json reads them back (so a fitted law equals its loaded file)."""
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


def synthetic_groups(design: Design, rng: np.random.Generator) -> dict[int, Cells]:
    """One synthetic sweep of ``design``: per S, ``n_seeds`` runs at every grid rate."""
    groups = {}
    seeds = np.arange(design.n_seeds)
    edges = design.edges or (None,) * len(design.staleness)
    # failures come from a child generator, so the objective's draws do not depend on them
    fail_rng = rng.spawn(1)[0] if design.edges is not None else None
    for s, lrs, truth, edge in zip(design.staleness, design.lrs, design.truth, edges, strict=True):
        x = np.log(np.array(lrs))
        dx = x - np.log(truth)
        mean = design.peak - design.curvature * dx**2 * np.where(dx > 0, design.skew, 1.0)
        values = mean[:, None] + rng.normal(0.0, design.sigma, (len(lrs), design.n_seeds))
        if fail_rng is None or edge is None:
            failed = np.zeros((len(lrs), design.n_seeds), bool)
        else:
            chance = stats.norm.cdf((x - np.log(edge)) / design.edge_width)
            failed = fail_rng.uniform(size=(len(lrs), design.n_seeds)) < chance[:, None]
        groups[s] = Cells(
            lrs=np.array(lrs),
            values=tuple(values),
            failed=tuple(failed),
            steps=tuple(np.full(design.n_seeds, np.inf) for _ in lrs),
            seeds=tuple(seeds for _ in lrs),
        )
    return groups


def synthetic_estimates(
    design: Design, settings: Any, rng: np.random.Generator
) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic sweep of ``design`` through the fit's per-S estimator: its replicates
    (``settings`` choose the method), the ``eta_opt`` point per S, the replicate rows, and
    which points are usable (not at a grid edge)."""
    from stalesim.validate.law.replicates import replicate_groups

    groups = synthetic_groups(design, rng)
    # the jackknife draws only eta_max's grid-resolution rows: from a child generator, so the
    # next sweep's objective does not depend on how many were drawn
    jackknife = settings.interval_method == "jackknife"
    rep_rng = rng.spawn(1)[0] if jackknife and settings.bootstrap else rng
    reps = replicate_groups(groups, settings, np.arange(design.n_seeds), rep_rng)
    staleness = np.array(design.staleness, dtype=float)
    eta, boot = reps.series(staleness, lambda g: g.optimum.eta)
    usable = np.array([reps.point[s].optimum.flag not in EDGE_FLAGS for s in design.staleness])
    return reps, eta, boot, usable


def simulate_coverage(
    design: Design,
    n_sim: int,
    *,
    method: str = "jackknife",
    seed: int = 0,
    confidence: float = 0.95,
    window: int = 1,
    replicates: int = PERCENTILE_REPLICATES,
    scales: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Run the estimator on ``n_sim`` synthetic sweeps of ``design`` and count how often its
    intervals hold the truth (see the module docstring); ``replicates`` per sweep for the
    percentile method. Deterministic for a given ``seed``.

    ``scales`` widens each kind's jackknife intervals (``eta_opt``, ``slope``, ``ratio``) by a
    calibration factor before they are judged. ``needed_scale`` is, per kind, the smallest
    factor by which the intervals as judged would have to be widened for the share that holds
    the truth to reach ``confidence``: the ``confidence`` quantile of |estimate - truth| /
    half-width (on the interval's own scale, log for ``eta_opt`` and ratios)."""
    from stalesim.validate.law.replicates import FitSettings, drop_from_zero, first_step_ratio
    from stalesim.validate.law.slopes import pair_slopes

    if n_sim < 1:
        raise ValueError(f"n_sim {n_sim}: must be at least 1")
    edges = design.edges is not None
    settings = FitSettings(
        interval_method=method,
        confidence=confidence,
        window=window,
        # the jackknife's only draws are eta_max's grid-resolution rows
        bootstrap=(EDGE_DRAWS if edges else 0) if method == "jackknife" else replicates,
        by_score=False,
        coverage_sims=0,
    )
    kinds = ALL_KINDS if edges else KINDS
    scales = {**dict.fromkeys(kinds, 1.0), **(scales or {})}
    rng = np.random.default_rng(seed)
    axis = np.array(design.axis)
    staleness = np.array(design.staleness, dtype=float)
    hits: dict[str, list[bool]] = {k: [] for k in kinds}
    errors: dict[str, list[float]] = {k: [] for k in kinds}
    asked = dict.fromkeys(hits, 0)
    widths: list[float] = []

    def judge(kind: str, centre: float, lo: float, hi: float, truth: float) -> None:
        hits[kind].append(bool(lo <= truth <= hi))
        errors[kind].append(relative_error(centre, lo, hi, truth))

    def judge_curve(
        names: tuple[str, str, str],
        spread: dict[str, Any],
        est: np.ndarray,
        boot: np.ndarray,
        usable: np.ndarray,
        log_truth: np.ndarray,
    ) -> None:
        """Every interval of one curve's points: per S, between two S, to S = 0."""
        point, slope, ratio = names
        lo, hi = spread[point].columns(est, boot, log=True)
        for i in range(len(est)):
            asked[point] += 1
            if usable[i] and np.isfinite(lo[i]) and np.isfinite(hi[i]):
                judge(point, np.log(est[i]), np.log(lo[i]), np.log(hi[i]), log_truth[i])
                if point == "eta_opt":
                    widths.append(float(np.log(hi[i] / lo[i])))
        positive = int((axis > 0).sum())
        asked[slope] += positive * (positive - 1) // 2
        for record in pair_slopes(axis, est, boot, usable, spread[slope]):
            if not (np.isfinite(record["lo"]) and np.isfinite(record["hi"])):
                continue
            i, j = int(np.argmax(axis == record["from"])), int(np.argmax(axis == record["to"]))
            true_slope = (log_truth[j] - log_truth[i]) / (np.log(axis[j]) - np.log(axis[i]))
            judge(slope, record["slope"], record["lo"], record["hi"], true_slope)
        for fn in (first_step_ratio, drop_from_zero):
            asked[ratio] += 1 if axis[0] == 0 else 0
            record = fn(axis, est, boot, usable, spread[ratio])
            if record is None or record["lo"] is None or record["hi"] is None:
                continue
            j = int(np.argmax(axis == record["to"]))
            logs = np.log([record["ratio"], record["lo"], record["hi"]])
            judge(ratio, *logs, log_truth[j] - log_truth[0])

    log_opt = np.log(np.array(design.truth))
    log_edge = np.log(np.array([np.nan if e is None else e for e in (design.edges or ())]))
    for _ in range(n_sim):
        reps, eta, boot, usable = synthetic_estimates(design, settings, rng)
        spread = calibrated_spreads(reps.spread, scales, kinds)
        judge_curve(KINDS, spread, eta, boot, usable, log_opt)
        if edges:
            emax, emax_boot = reps.series(staleness, lambda g: g.edge.eta, with_resolution=True)
            known = np.isfinite(log_edge) & np.array(
                [reps.point[s].edge.flag == "ok" for s in design.staleness]
            )
            judge_curve(EDGE_KINDS, spread, emax, emax_boot, known, log_edge)
    return {
        "method": method,
        "nominal": confidence,
        "n_sim": n_sim,
        "coverage": {k: (float(np.mean(v)) if v else None) for k, v in hits.items()},
        "scales": scales,
        "needed_scale": {k: needed_scale(v, confidence) for k, v in errors.items()},
        "n_intervals": {k: len(v) for k, v in hits.items()},
        "reported_share": {k: (len(hits[k]) / asked[k] if asked[k] else None) for k in hits},
        "median_eta_opt_width_factor": float(np.exp(np.median(widths))) if widths else None,
        "design": _lists(asdict(design)),
        "model": (
            "objective = peak - a (ln lr - ln eta*)^2 (x skew above eta*) + N(0, sigma^2) per "
            "run; truth eta* = the sweep's eta_opt; a and sigma measured on the sweep"
        ),
    }


def calibrated_spreads(
    spread: Spread, scales: dict[str, float], kinds: tuple[str, ...] = ALL_KINDS
) -> dict[str, Spread]:
    """Per interval kind, ``spread`` widened by that kind's calibration factor (1 where it has
    none: the plain interval)."""
    return {k: spread.widened(scales.get(k, 1.0)) for k in kinds}


def relative_error(centre: float, lo: float, hi: float, truth: float) -> float:
    """|truth - centre| in half-widths of the interval ``[lo, hi]`` around ``centre``: the
    interval holds the truth exactly when this is at most 1 (0 or inf for a zero width)."""
    half = (hi - lo) / 2
    miss = abs(truth - centre)
    if half <= 0:
        return 0.0 if miss == 0 else float("inf")
    return float(miss / half)


def needed_scale(errors: list[float], confidence: float) -> float | None:
    """The smallest factor ``c`` with at least ``confidence`` of ``errors`` at or below ``c``
    (inf when that share never reaches it); None without errors."""
    if not errors:
        return None
    return float(np.quantile(np.asarray(errors), confidence, method="inverted_cdf"))


def sweep_design(runs_dir: Path) -> Design | None:
    """The design of the committed sweep in ``runs_dir`` at its full horizon, measured as
    ``stalesim fit`` measures it (default settings)."""
    from stalesim.validate.law.failure import backfill_from_steps, mark_failures
    from stalesim.validate.law.group_estimates import build_cells, estimate_group
    from stalesim.validate.law.replicates import FitSettings, realised_lag
    from stalesim.validate.law.sweep_runs import fixed_runs, read_sweep

    settings = FitSettings()
    runs, steps = read_sweep(runs_dir)
    runs = mark_failures(backfill_from_steps(runs, steps))
    frames = {
        int(k[0]): f
        for k, f in sorted(fixed_runs(runs).partition_by("staleness", as_dict=True).items())
    }
    if len(frames) < 2:
        return None
    groups = {s: build_cells(f, settings.objective) for s, f in frames.items()}
    point = {s: estimate_group(c) for s, c in groups.items()}
    axis = np.array([realised_lag(frames[s], s) for s in sorted(frames)])
    return design_from_cells(groups, point, axis)


#: The committed sweeps the coverage table is measured on (folders under the results root).
SWEEPS = (
    "law-horizon/non-saturating",
    "law-objective/clip",
    "law-objective/decoupled",
    "law-batch/b4",
    "law-optimizer/sgd",
    "cpu-tiny",
)


def coverage_table(
    root: Path,
    sims: int,
    percentile_sims: int,
    seed: int = 0,
    skews: tuple[float, ...] = (1.0, SKEW),
) -> list[dict[str, Any]]:
    """Coverage of the jackknife on the designs of :data:`SWEEPS` under ``root`` at each
    ``skew`` (and with 4 and 6 seeds on the non-saturating design), and of the percentile
    bootstrap at the committed seed counts on the symmetric objective."""
    rows = []
    for name in SWEEPS:
        path = root / name
        if not (path / "runs.parquet").exists():
            continue
        design = sweep_design(path)
        if design is None:
            continue
        variants = [(design.n_seeds, skew) for skew in skews]
        if name == SWEEPS[0]:
            variants += [(n, skew) for n in (4, 6) for skew in skews]
        for n_seeds, skew in variants:
            d = replace(design, n_seeds=n_seeds, skew=float(skew))
            methods = [("jackknife", sims)]
            # the old method is costly (a refit per replicate): compared on the symmetric case
            if n_seeds == design.n_seeds and skew == 1 and percentile_sims:
                methods.append(("percentile", percentile_sims))
            for method, n in methods:
                start = time.perf_counter()
                result = simulate_coverage(d, n, method=method, seed=seed)
                result["seconds"] = round(time.perf_counter() - start, 2)
                rows.append(
                    {
                        "sweep": name,
                        "n_seeds": n_seeds,
                        "skew": float(skew),
                        "sigma_over_a": d.sigma / d.curvature,
                        "method": method,
                        "n_sim": n,
                        **{f"cover_{k}": v for k, v in result["coverage"].items()},
                        **{f"n_{k}": v for k, v in result["n_intervals"].items()},
                        "width_factor": result["median_eta_opt_width_factor"],
                        "seconds": result["seconds"],
                    }
                )
                print(
                    f"{name:28s} seeds {n_seeds} skew {skew:g} {method:10s} "
                    + " ".join(f"{k} {v:.3f}" for k, v in result["coverage"].items() if v)
                    + f" ({result['seconds']:.1f}s)",
                    file=sys.stderr,
                )
    return rows


def markdown_table(table: Any) -> str:
    """A polars table as a Markdown pipe table (floats to 3 decimals, missing as —)."""

    def cell(value: Any) -> str:
        if value is None:
            return "—"
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + " --- |" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.iter_rows()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m stalesim.validate.law.coverage``: write the coverage table."""
    import polars as pl

    parser = argparse.ArgumentParser(
        prog="python -m stalesim.validate.law.coverage",
        description="Measure the coverage of the law's intervals on synthetic sweeps that copy "
        "the committed sweeps' designs, for the jackknife-t and the percentile bootstrap.",
    )
    parser.add_argument(
        "root", type=Path, help="the results folder holding the committed sweeps (reports/results)"
    )
    parser.add_argument("--out", type=Path, default=None, help="folder for coverage.csv/.md")
    parser.add_argument("--sims", type=int, default=300, help="synthetic sweeps per row")
    parser.add_argument(
        "--percentile-sims", type=int, default=30, help="synthetic sweeps per bootstrap row"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"{args.root}: not a folder")
    if args.sims < 1 or args.percentile_sims < 0:
        parser.error("--sims must be >= 1 and --percentile-sims >= 0")
    rows = coverage_table(args.root, args.sims, args.percentile_sims, args.seed)
    if not rows:
        parser.error(f"{args.root}: none of the sweeps {', '.join(SWEEPS)} is under it")
    table = pl.DataFrame(rows)
    out = args.out or args.root / "coverage"
    out.mkdir(parents=True, exist_ok=True)
    table.write_csv(out / "coverage.csv", float_precision=4)
    (out / "coverage.md").write_text(markdown_table(table.drop("seconds")))
    print(f"wrote {out / 'coverage.csv'} and {out / 'coverage.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
