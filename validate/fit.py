"""From a learning-rate × staleness × seed sweep to a fitted staleness–learning-rate law.

The steps, each in its own module: per-S estimates of ``eta_opt``, ``eta_max`` and steps to
target (:mod:`stalesim.validate.group_estimates`), redone on bootstrap replicates that resample
the runs inside every (S, LR) cell; the law family fitted to them with intervals
(:mod:`stalesim.validate.law_fit`); and the comparison of staleness summaries on the
distribution runs (:mod:`stalesim.validate.summary_comparison`). This module runs them in order
and writes ``law.json``.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from stalesim.sim.files import write_json
from stalesim.sim.law import LAW_SCHEMA, PAPER_ALPHA, Law
from stalesim.validate.group_estimates import (
    CENSORED_FLAGS,
    EDGE_FLAGS,
    Cells,
    GroupEstimate,
    Optimum,
    build_cells,
    estimate_group,
    estimate_optimum,
)
from stalesim.validate.law_fit import (
    CurveFit,
    bootstrap_log_sd,
    bound_notes,
    curve_record,
    fit_steps_model,
    fit_with_bootstrap,
    nanpercentile,
    staleness_grid,
)
from stalesim.validate.summary_comparison import FixedOptima, compare_summaries
from stalesim.validate.sweep_runs import (
    distribution_groups,
    fixed_runs,
    json_records,
    read_sweep,
)

Progress = Callable[[int], None]


@dataclass
class FitSettings:
    """Knobs of :func:`fit_sweep`, recorded in ``law.json``."""

    objective: str = "reward_auc"
    window: int = 1
    bootstrap: int = 500
    seed: int = 0
    confidence: float = 0.95
    fail_threshold: float = 0.5
    min_final_reward: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "objective_direction": "higher is better",
            "optimum_rule": (
                f"vertex of the quadratic in ln(lr) through the per-LR mean objective at the "
                f"best grid LR ±{self.window}"
                + ("" if self.window == 1 else " (weights n_seeds/variance; fallback ±1)")
            ),
            "window": self.window,
            "eta_max_rule": (
                f"ln(lr) interpolation where the failed fraction crosses {self.fail_threshold}"
            ),
            "failure": "collapsed"
            + (
                f" or final_reward < {self.min_final_reward}"
                if self.min_final_reward is not None
                else ""
            ),
            "fail_threshold": self.fail_threshold,
            "min_final_reward": self.min_final_reward,
            "bootstrap": self.bootstrap,
            "bootstrap_unit": (
                "runs (seeds) resampled with replacement inside each (S, lr) cell, objective "
                "deviations scaled by sqrt(n/(n-1))"
            ),
            "seed": self.seed,
            "confidence": self.confidence,
            "law_fit": "least_squares on ln(eta), weights 1/max(bootstrap sd of ln eta, 0.05)",
        }


@dataclass
class SweepFit:
    """Everything :func:`fit_sweep` found: the law plus tables for printing and reports."""

    law: Law
    points: pl.DataFrame  # one row per fixed S
    distribution_points: pl.DataFrame  # one row per staleness distribution


def fit_sweep(
    runs: pl.DataFrame,
    settings: FitSettings | None = None,
    *,
    source: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> SweepFit:
    """Per-S estimates, the law fits with bootstrap intervals, and the summary comparison."""
    settings = settings or FitSettings()
    if settings.objective not in runs.columns:
        raise ValueError(
            f"objective {settings.objective!r} is not a runs.parquet column "
            f"(have: {', '.join(runs.columns)})"
        )
    fixed_frames = {
        int(key[0]): frame
        for key, frame in sorted(fixed_runs(runs).partition_by("staleness", as_dict=True).items())
    }
    groups = {
        s: build_cells(frame, settings.objective, settings.min_final_reward)
        for s, frame in fixed_frames.items()
    }
    if len(groups) < 3:
        raise ValueError(
            f"need fixed-staleness runs at 3 or more staleness values to fit the law, "
            f"got {sorted(groups) or 'none'}"
        )
    spec_frames = distribution_groups(runs)
    spec_cells = {
        spec: build_cells(frame, settings.objective, settings.min_final_reward)
        for spec, frame in spec_frames.items()
    }
    rng = np.random.default_rng(settings.seed)
    point = {s: estimate_group(c, settings.window) for s, c in groups.items()}
    spec_point = {spec: estimate_optimum(c, settings.window) for spec, c in spec_cells.items()}
    replicas: list[dict[int, GroupEstimate]] = []
    spec_replicas: list[dict[str, Optimum]] = []
    for _ in range(settings.bootstrap):
        replicas.append(
            {s: estimate_group(c.resampled(rng), settings.window) for s, c in groups.items()}
        )
        spec_replicas.append(
            {
                spec: estimate_optimum(c.resampled(rng), settings.window)
                for spec, c in spec_cells.items()
            }
        )
        if progress is not None:
            progress(1)
    staleness = np.array(sorted(groups), dtype=float)
    tail = (1 - settings.confidence) / 2 * 100, (1 + settings.confidence) / 2 * 100

    def series(pick: Callable[[GroupEstimate], float | None]) -> tuple[np.ndarray, np.ndarray]:
        estimate = np.array([_nan(pick(point[int(s)])) for s in staleness])
        boot = np.array([[_nan(pick(r[int(s)])) for s in staleness] for r in replicas])
        return estimate, boot.reshape(len(replicas), len(staleness))

    opt, opt_boot = series(lambda g: g.optimum.eta)
    emax, emax_boot = series(lambda g: g.edge.eta)
    steps, steps_boot = series(lambda g: g.steps)
    opt_flags = [point[int(s)].optimum.flag for s in staleness]
    max_flags = [point[int(s)].edge.flag for s in staleness]

    opt_usable = np.array([f not in EDGE_FLAGS for f in opt_flags])
    if opt_usable.sum() < 3:
        raise ValueError(
            "eta_opt is at the edge of the learning-rate grid for all but "
            f"{int(opt_usable.sum())} staleness values ({dict(zip(staleness.astype(int).tolist(), opt_flags, strict=True))}); "
            "widen the grid"
        )
    opt_curve, opt_curve_boot = fit_with_bootstrap(staleness, opt, opt_boot, opt_usable)
    max_usable = np.array([f not in CENSORED_FLAGS for f in max_flags])
    max_curve, max_curve_boot = (None, None)
    if max_usable.sum() >= 3:
        max_curve, max_curve_boot = fit_with_bootstrap(staleness, emax, emax_boot, max_usable)

    steps_model = fit_steps_model(staleness, steps, steps_boot, opt_curve, opt_curve_boot, tail)
    s_grid = staleness_grid(float(staleness.max()))
    law_opt = curve_record(
        opt_curve, opt_curve_boot, staleness[opt_usable], opt[opt_usable], s_grid, tail
    )
    law_max = (
        curve_record(
            max_curve, max_curve_boot, staleness[max_usable], emax[max_usable], s_grid, tail
        )
        if max_curve is not None
        else None
    )

    points = pl.DataFrame(
        {
            "staleness": staleness.astype(int),
            "n_runs": [sum(len(v) for v in groups[int(s)].values) for s in staleness],
            "n_lrs": [len(groups[int(s)].lrs) for s in staleness],
            "grid_best_lr": [point[int(s)].optimum.grid_best_lr for s in staleness],
            "eta_opt": opt,
            "eta_opt_lo": nanpercentile(opt_boot, tail[0]),
            "eta_opt_hi": nanpercentile(opt_boot, tail[1]),
            "eta_opt_log_sd": bootstrap_log_sd(opt_boot),
            "eta_opt_flag": opt_flags,
            "eta_opt_in_fit": opt_usable,
            "eta_max": emax,
            "eta_max_lo": nanpercentile(emax_boot, tail[0]),
            "eta_max_hi": nanpercentile(emax_boot, tail[1]),
            "eta_max_flag": max_flags,
            "eta_max_in_fit": max_usable if max_curve is not None else np.zeros_like(max_usable),
            "steps_to_target": steps,
            "steps_to_target_lo": nanpercentile(steps_boot, tail[0]),
            "steps_to_target_hi": nanpercentile(steps_boot, tail[1]),
        }
    )
    fixed_optima = FixedOptima(
        frames=fixed_frames,
        staleness=staleness[opt_usable],
        eta=opt[opt_usable],
        boot=opt_boot[:, opt_usable],
    )
    distribution_points, comparison = compare_summaries(
        fixed_optima, spec_frames, spec_point, spec_replicas, tail
    )
    chosen = comparison.get("best") if comparison.get("distinguishable") else None
    notes = _notes(groups, staleness, opt_flags, max_flags, opt_usable, max_curve, steps_model)
    for label, curve in (("eta_opt", opt_curve), ("eta_max", max_curve)):
        if curve is not None:
            notes.extend(bound_notes(label, curve))
    if chosen is None:
        notes.append(
            "staleness_summary is max (the bound an async mode enforces) by default: the "
            "distribution runs did not single out a summary"
        )
    law = Law.model_validate(
        {
            "schema": LAW_SCHEMA,
            "staleness_summary": chosen or "max",
            "eta_opt": law_opt,
            "eta_max": law_max,
            "steps_to_target": steps_model,
            "alpha_paper": PAPER_ALPHA,
            "points": json_records(points),
            "summary_comparison": comparison,
            "settings": settings.as_dict(),
            "source": source or {},
            "notes": notes,
        }
    )
    return SweepFit(law, points, distribution_points)


def _notes(
    groups: dict[int, Cells],
    staleness: np.ndarray,
    opt_flags: list[str],
    max_flags: list[str],
    opt_usable: np.ndarray,
    max_curve: CurveFit | None,
    steps_model: dict[str, Any] | None,
) -> list[str]:
    """Plain warnings about what limits this fit, for the CLI and the page."""
    notes = []
    single = sorted(s for s, c in groups.items() if any(len(v) < 2 for v in c.values))
    if single:
        notes.append(
            f"only one run in some LR cells at S={single}: the bootstrap cannot see seed noise "
            "there, so intervals are too narrow"
        )
    for label, flags in (("eta_opt", opt_flags), ("eta_max", max_flags)):
        odd = {int(s): f for s, f in zip(staleness, flags, strict=True) if f != "ok"}
        if odd:
            notes.append(f"{label} is a bound, not an estimate, at {odd} (left out of the fit)")
    if opt_usable.sum() < 5:
        notes.append("fewer than 5 usable staleness values: k is held at 1 in the law fits")
    if max_curve is None:
        notes.append("eta_max(S) not fitted: fewer than 3 staleness values with a failing LR")
    if steps_model is None:
        notes.append("steps_to_target not modelled: the target was reached at fewer than 2 S")
    return notes


def _nan(value: float | None) -> float:
    return np.nan if value is None else float(value)


def describe_source(runs_dir: Path, runs: pl.DataFrame, command: str) -> dict[str, Any]:
    """Where a fit came from: the sweep, its preset, the date, the machine and the command."""
    presets = (
        sorted(runs["preset"].drop_nulls().unique().to_list()) if "preset" in runs.columns else []
    )
    return {
        "runs_dir": str(runs_dir),
        "preset": ", ".join(map(str, presets)) or None,
        "n_runs": runs.height,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.system()} {platform.release()})",
        "command": command,
    }


def fit_runs_dir(
    runs_dir: str | Path,
    out: str | Path | None = None,
    settings: FitSettings | None = None,
    *,
    command: str = "stalesim fit",
    progress: Progress | None = None,
) -> tuple[SweepFit, Path]:
    """Fit the sweep in ``runs_dir`` and write ``law.json`` (default: inside ``runs_dir``)."""
    runs_dir = Path(runs_dir)
    runs, _ = read_sweep(runs_dir)
    result = fit_sweep(
        runs, settings, source=describe_source(runs_dir, runs, command), progress=progress
    )
    path = Path(out) if out is not None else runs_dir / "law.json"
    write_json(path, result.law.to_json_dict())
    return result, path


__all__ = ["FitSettings", "SweepFit", "describe_source", "fit_runs_dir", "fit_sweep"]
