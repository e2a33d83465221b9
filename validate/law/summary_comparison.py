"""Which staleness summary a law should be applied to: the distribution runs decide.

Their ``eta_opt`` is estimated the same way as the fixed-S points (grouped by
``staleness_spec``) and compared with the fixed-S law evaluated at each summary of their
measured staleness (max, p99 where the runs have it, mean, token-weighted mean). The error is the RMS of ``ln(measured / predicted)``;
paired bootstrap replicates say how often one summary beats another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from stalesim.sim.law.fit import fit_curve, spread_intervals
from stalesim.sim.law.intervals import Spread
from stalesim.validate.law.group_estimates import EDGE_FLAGS, Optimum
from stalesim.validate.law.sweep_runs import json_records

#: Staleness summaries compared on the distribution runs: law name -> runs.parquet column.
SUMMARY_COLUMNS = {
    "max": "staleness_max",
    "p99": "staleness_p99",
    "mean": "staleness_mean",
    "token_mean": "staleness_token_mean",
}
#: A "summary A predicts better than B" verdict needs at least this many bootstrap replicates.
MIN_REPLICAS_TO_DECIDE = 20


@dataclass(frozen=True)
class FixedOptima:
    """The fixed-S ``eta_opt`` points the law is fitted to, and their bootstrap replicates."""

    frames: dict[int, pl.DataFrame]  # fixed runs per nominal S
    staleness: np.ndarray  # nominal S of the usable points
    eta: np.ndarray
    boot: np.ndarray  # replicates x usable points

    def measured(self, column: str) -> np.ndarray | None:
        """The fixed runs' mean measured staleness summary per usable point."""
        if not all(column in self.frames[int(s)].columns for s in self.staleness):
            return None
        return np.array(
            [float(self.frames[int(s)][column].cast(pl.Float64).mean()) for s in self.staleness]
        )


def compare_summaries(
    fixed: FixedOptima,
    spec_frames: dict[str, pl.DataFrame],
    spec_point: dict[str, Optimum],
    spec_replicas: list[dict[str, Optimum]],
    spread: Spread,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Which measured staleness summary, put into a law fitted on the fixed-S runs, predicts
    the distribution runs' ``eta_opt`` best.

    For each summary the law is refitted with the fixed runs' *measured* value of that summary
    as ``S`` (it is below the nominal S because the lag cannot reach before version 0), so both
    sides of the comparison use the same measurement.
    """
    if not spec_frames:
        return pl.DataFrame(), {
            "status": "no distribution runs in the sweep",
            "distinguishable": False,
        }
    summaries = {
        name: column
        for name, column in SUMMARY_COLUMNS.items()
        if all(column in f.columns for f in spec_frames.values())
        and fixed.measured(column) is not None
    }
    identical = _identical_summaries(fixed, spec_frames, summaries)
    summaries = {name: column for name, column in summaries.items() if name not in identical}
    rows = []
    for spec, frame in spec_frames.items():
        row: dict[str, Any] = {
            "staleness_spec": spec,
            "n_runs": frame.height,
            "n_lrs": frame["lr"].n_unique(),
            "eta_opt": spec_point[spec].eta,
            "eta_opt_flag": spec_point[spec].flag,
        }
        for name, column in summaries.items():
            row[f"S_{name}"] = float(frame[column].cast(pl.Float64).mean())
        rows.append(row)
    table = pl.DataFrame(rows)
    usable = [r["staleness_spec"] for r in rows if r["eta_opt_flag"] not in EDGE_FLAGS]
    if not summaries:
        return table, {
            "status": "runs carry no staleness summary columns",
            "distinguishable": False,
        }
    if not usable:
        return table, {
            "status": "eta_opt of every distribution is at a grid edge or has fewer than 3 LRs",
            "excluded": list(spec_frames),
            "distinguishable": False,
        }
    at = {
        name: np.array(
            [table.filter(pl.col("staleness_spec") == s)[f"S_{name}"][0] for s in usable]
        )
        for name in summaries
    }
    measured = np.log(np.array([spec_point[s].eta for s in usable]))
    replica_measured = np.log(
        np.array([[rep[s].eta for s in usable] for rep in spec_replicas])
    ).reshape(len(spec_replicas), len(usable))
    log_sd = spread.column_sd(fixed.boot, log=True)
    fixed_k = 1.0 if len(fixed.staleness) < 5 else None

    errors: dict[str, float] = {}
    boot: dict[str, np.ndarray] = {}
    predictions: dict[str, list[float]] = {}
    for name, column in summaries.items():
        x = fixed.measured(column)
        curve = fit_curve(x, fixed.eta, log_sd, fixed_k=fixed_k)
        predicted = np.log(curve(at[name]))
        errors[name] = float(np.sqrt(np.mean((measured - predicted) ** 2)))
        predictions[f"predicted_{name}"] = [float(v) for v in np.exp(predicted)]
        replica_errors = []
        for row, spec_row in zip(fixed.boot, replica_measured, strict=True):
            replica = fit_curve(x, row, log_sd, fixed_k=fixed_k, start=curve)
            replica_errors.append(np.sqrt(np.mean((spec_row - np.log(replica(at[name]))) ** 2)))
        boot[name] = np.array(replica_errors)
    table = table.join(
        pl.DataFrame({"staleness_spec": usable, **predictions}), on="staleness_spec", how="left"
    )
    ranking = sorted(errors, key=errors.get)
    best = ranking[0]
    replicas = len(next(iter(boot.values())))
    wins = {
        other: float(np.mean(boot[best] < boot[other])) if replicas else float("nan")
        for other in ranking[1:]
    }
    margins: dict[str, list[float | None]] = {}
    if spread.method == "jackknife":
        # leave-one-seed-out replicates are too few to count wins: the best summary must beat
        # every other by an error difference whose interval excludes 0
        for other in ranking[1:]:
            margins[other] = list(
                spread.interval(errors[other] - errors[best], boot[other] - boot[best])
            )
        distinguishable = bool(margins) and all(
            lo is not None and lo > 0 for lo, _ in margins.values()
        )
    else:
        distinguishable = (
            replicas >= MIN_REPLICAS_TO_DECIDE
            and bool(wins)
            and all(w >= 0.95 for w in wins.values())
        )
    if margins:
        verdict = (
            f"{best} predicts best (its error is lower than every other summary's, the "
            "difference's interval above 0)"
            if distinguishable
            else f"not distinguishable: {best} has the lowest error ({errors[best]:.3g}; "
            + ", ".join(f"{o} {errors[o]:.3g}" for o in margins)
            + "), but the interval of the difference holds 0 for "
            + ", ".join(o for o, (lo, _) in margins.items() if lo is None or lo <= 0)
        )
    elif wins and replicas < MIN_REPLICAS_TO_DECIDE:
        verdict = (
            f"undecided: {best} has the lowest error ({errors[best]:.3g}; "
            + ", ".join(f"{o} {errors[o]:.3g}" for o in wins)
            + f"), but {replicas} bootstrap replicates (fewer than {MIN_REPLICAS_TO_DECIDE}) "
            "cannot tell that from noise"
        )
    elif distinguishable:
        verdict = (
            f"{best} predicts best (lower error than every other summary in at least 95% of "
            "bootstrap replicates)"
        )
    elif wins:
        verdict = (
            f"not distinguishable: {best} has the lowest error ({errors[best]:.3g}; "
            + ", ".join(f"{o} {errors[o]:.3g}" for o in wins)
            + "), but it has the lower error in only "
            + ", ".join(f"{w:.0%} of replicates against {o}" for o, w in wins.items())
            + " (95% needed)"
        )
    else:
        verdict = f"only one summary available ({best})"
    missing = [name for name in SUMMARY_COLUMNS if name not in summaries and name not in identical]
    return table, {
        "status": "compared",
        "n_distributions": len(usable),
        "distributions": json_records(table),
        "excluded": [s for s in spec_frames if s not in usable],
        "not_available": missing,
        "identical": identical,
        "metric": (
            "RMS over distribution runs of ln(measured eta_opt / predicted), the prediction "
            "being the law refitted on the fixed runs' measured value of the same summary"
        ),
        "rmse_log": errors,
        "rmse_log_intervals": spread_intervals(
            spread, {name: (errors[name], boot[name], True) for name in boot}
        ),
        "ranking": ranking,
        "best": best,
        "win_rate_of_best": wins,
        "error_difference_intervals": margins,
        "distinguishable": distinguishable,
        "verdict": verdict,
    }


def _identical_summaries(
    fixed: FixedOptima, spec_frames: dict[str, pl.DataFrame], summaries: dict[str, str]
) -> dict[str, str]:
    """Summaries equal to an earlier one on every run (e.g. mean and token-weighted mean when
    all responses have one length): they cannot be told apart, so they are compared once."""
    identical: dict[str, str] = {}
    names = list(summaries)
    for i, name in enumerate(names):
        for first in names[:i]:
            if first in identical:
                continue
            a, b = summaries[first], summaries[name]
            same = np.allclose(fixed.measured(a), fixed.measured(b), rtol=1e-9) and all(
                np.allclose(f[a].cast(pl.Float64).to_numpy(), f[b].cast(pl.Float64).to_numpy())
                for f in spec_frames.values()
            )
            if same:
                identical[name] = first
                break
    return identical
