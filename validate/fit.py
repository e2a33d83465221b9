"""From a learning-rate × staleness × seed sweep to a fitted staleness–learning-rate law.

The steps, each in its own module: which runs failed (:mod:`stalesim.validate.failure`);
per-S estimates of ``eta_opt``, ``eta_max`` and steps to target
(:mod:`stalesim.validate.group_estimates`), redone on bootstrap replicates that resample whole
seeds (a seed carries its own warm start and all its runs); the law family fitted to them with
intervals (:mod:`stalesim.validate.law_fit`) and, next to it, model-free local slopes
(:mod:`stalesim.validate.slopes`); and the comparison of staleness summaries on the distribution
runs (:mod:`stalesim.validate.summary_comparison`). This module runs them in order and writes
``law.json``.

The staleness axis of the fit is, by default, the **realised** mean lag of each fixed-S group
(the mean over its full-length runs of each run's mean lag): for the first ``S`` versions a
fixed-S run can only be ``v`` versions stale, so a 160-step run at ``S = 32`` averages a lag of
about 28.8, not 32. ``lag_axis="nominal"`` fits against ``S`` itself.
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
from stalesim.validate.failure import backfill_from_steps, mark_failures
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
from stalesim.validate.slopes import local_slopes, range_slope
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
    reach_fraction: float = 0.5
    bootstrap_unit: str = "seed"
    lag_axis: str = "realised"
    horizon: int | None = None
    max_staleness: int | None = None
    #: the S ranges of the "below the knee" and "above the knee" slopes
    early_range: tuple[float, float] = (0.5, 6.0)
    late_range: tuple[float, float] = (6.0, 1e9)

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
                f"ln(lr) interpolation where the failed fraction crosses {self.fail_threshold}; "
                "bootstrap replicates draw it uniformly in ln(lr) between the two grid LRs "
                "around the crossing (grid resolution)"
            ),
            "failure": (
                "collapsed, or final reward below the run's own warm-start reward, or best "
                f"smoothed reward short of warm + {self.reach_fraction:g} x (best S=0 reward - "
                "warm)"
                + (
                    f" (sweeps without warm_reward: final_reward < {self.min_final_reward})"
                    if self.min_final_reward is not None
                    else ""
                )
            ),
            "fail_threshold": self.fail_threshold,
            "min_final_reward": self.min_final_reward,
            "reach_fraction": self.reach_fraction,
            "bootstrap": self.bootstrap,
            "bootstrap_unit": (
                "seeds resampled with replacement, once per replicate for the whole sweep (a "
                "seed carries its own warm start and its runs at every S and LR); objective "
                "deviations scaled by sqrt(n/(n-1)); with 3 seeds a percentile interval covers "
                "less than its nominal level"
                if self.bootstrap_unit == "seed"
                else "runs resampled with replacement inside each (S, lr) cell"
            ),
            "lag_axis": self.lag_axis,
            "horizon": self.horizon,
            "max_staleness": self.max_staleness,
            "early_range": list(self.early_range),
            "late_range": list(self.late_range),
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
    runs: pl.DataFrame | None = None  # the runs as fitted, with ``failed`` and ``failure``


def fit_sweep(
    runs: pl.DataFrame,
    settings: FitSettings | None = None,
    *,
    source: dict[str, Any] | None = None,
    progress: Progress | None = None,
    steps: pl.DataFrame | None = None,
    regime: dict[str, Any] | None = None,
) -> SweepFit:
    """Per-S estimates, the law fits with bootstrap intervals, slopes, and the summary
    comparison. ``steps`` is needed for a ``horizon`` shorter than the runs."""
    settings = settings or FitSettings()
    if settings.horizon is not None:
        if steps is None:
            raise ValueError("a horizon needs the sweep's steps.parquet")
        from stalesim.validate.horizon import truncate_runs

        runs = truncate_runs(runs, steps, settings.horizon)
    if settings.max_staleness is not None:
        runs = runs.filter(pl.col("staleness") <= settings.max_staleness)
    runs = mark_failures(
        backfill_from_steps(runs, steps),
        reach_fraction=settings.reach_fraction,
        min_final_reward=settings.min_final_reward,
    )
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
    if len(groups) < 2 or (len(groups) == 2 and 0 not in groups):
        raise ValueError(
            f"need fixed-staleness runs at 3 or more staleness values (or at S=0 and one S>0, "
            f"for a two-point law) to fit the law, got {sorted(groups) or 'none'}"
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
    seeds = np.array(sorted(runs["seed"].unique().to_list())) if "seed" in runs.columns else None
    # two seeds give only three distinct seed draws: too coarse, so runs are resampled instead
    by_seed = settings.bootstrap_unit == "seed" and seeds is not None and len(seeds) >= 3
    for _ in range(settings.bootstrap):
        if by_seed:
            draw = rng.choice(seeds, size=len(seeds), replace=True)

            def resample(c: Cells, draw: np.ndarray = draw) -> Cells:
                return c.for_seeds(draw)
        else:

            def resample(c: Cells) -> Cells:
                return c.resampled(rng)

        replicas.append(
            {
                s: estimate_group(resample(c), settings.window, edge_jitter=rng)
                for s, c in groups.items()
            }
        )
        spec_replicas.append(
            {spec: estimate_optimum(resample(c), settings.window) for spec, c in spec_cells.items()}
        )
        if progress is not None:
            progress(1)
    staleness = np.array(sorted(groups), dtype=float)
    realised = np.array([_realised_lag(fixed_frames[int(s)], int(s)) for s in staleness])
    axis = realised if settings.lag_axis == "realised" else staleness
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
    needed = 2 if len(groups) == 2 else 3
    if opt_usable.sum() < needed:
        raise ValueError(
            "eta_opt is at the edge of the learning-rate grid for all but "
            f"{int(opt_usable.sum())} staleness values ({dict(zip(staleness.astype(int).tolist(), opt_flags, strict=True))}); "
            "widen the grid"
        )
    opt_curve, opt_curve_boot = fit_with_bootstrap(axis, opt, opt_boot, opt_usable)
    max_usable = np.array([f not in CENSORED_FLAGS for f in max_flags])
    max_curve, max_curve_boot = (None, None)
    if max_usable.sum() >= needed:
        max_curve, max_curve_boot = fit_with_bootstrap(axis, emax, emax_boot, max_usable)

    steps_model = fit_steps_model(axis, steps, steps_boot, opt_curve, opt_curve_boot, tail)
    s_grid = staleness_grid(float(axis.max()))
    law_opt = curve_record(
        opt_curve, opt_curve_boot, axis[opt_usable], opt[opt_usable], s_grid, tail
    )
    law_max = (
        curve_record(max_curve, max_curve_boot, axis[max_usable], emax[max_usable], s_grid, tail)
        if max_curve is not None
        else None
    )
    slopes = {
        label: {
            "local": local_slopes(axis, eta, boot, usable, tail),
            "early": range_slope(axis, eta, boot, usable, *settings.early_range, tail),
            "late": range_slope(axis, eta, boot, usable, *settings.late_range, tail),
            "drop_from_zero": _drop_from_zero(axis, eta, boot, usable, tail),
        }
        for label, eta, boot, usable in (
            ("eta_opt", opt, opt_boot, opt_usable),
            ("eta_max", emax, emax_boot, max_usable),
        )
    }

    points = pl.DataFrame(
        {
            "staleness": staleness.astype(int),
            "staleness_realised": realised,
            "n_seeds": [int(fixed_frames[int(s)]["seed"].n_unique()) for s in staleness],
            "n_failed": [int(fixed_frames_failed(runs, int(s))) for s in staleness],
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
            "lag_axis": settings.lag_axis,
            "regime": regime,
            "slopes": slopes,
            "failures": json_records(
                runs.filter(pl.col("failed")).select("run_id", "failure").sort("run_id")
            ),
            "staleness_summary": chosen or "max",
            "eta_opt": law_opt,
            "eta_max": law_max,
            "steps_to_target": steps_model,
            "alpha_paper": PAPER_ALPHA,
            "points": json_records(points),
            "summary_comparison": comparison,
            "settings": settings.as_dict()
            | {"bootstrap_unit_used": "seed" if by_seed else "run (fewer than 3 seeds)"},
            "source": source or {},
            "notes": notes,
        }
    )
    return SweepFit(law, points, distribution_points, runs)


def fixed_frames_failed(runs: pl.DataFrame, staleness: int) -> int:
    """How many fixed-S runs at ``staleness`` failed."""
    return fixed_runs(runs).filter(pl.col("staleness") == staleness)["failed"].sum()


def _realised_lag(frame: pl.DataFrame, nominal: int) -> float:
    """Mean realised lag of one fixed-S group: over its runs that ran to the end (a collapsed
    run stopped early, so more of it lies in the pipeline fill); ``nominal`` without the column."""
    if "staleness_mean" not in frame.columns:
        return float(nominal)
    full = frame.filter(~pl.col("collapsed").fill_null(False).cast(pl.Boolean))
    use = full if full.height else frame
    value = use["staleness_mean"].cast(pl.Float64).mean()
    return float(value) if value is not None else float(nominal)


def _drop_from_zero(
    axis: np.ndarray, eta: np.ndarray, boot: np.ndarray, usable: np.ndarray, tail
) -> dict[str, Any] | None:
    """``eta(S_max) / eta(0)`` over usable points, with its bootstrap interval."""
    idx = np.flatnonzero(usable)
    if idx.size < 2 or axis[idx[0]] != 0:
        return None
    first, last = idx[0], idx[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        reps = boot[:, last] / boot[:, first]
    reps = reps[np.isfinite(reps)]
    return {
        "from": 0.0,
        "to": float(axis[last]),
        "ratio": float(eta[last] / eta[first]),
        "lo": float(np.percentile(reps, tail[0])) if reps.size else None,
        "hi": float(np.percentile(reps, tail[1])) if reps.size else None,
    }


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
    if opt_usable.sum() == 2:
        notes.append(
            "two staleness values: the law is the two-point form eta0 / (1 + S)^alpha (s_c and "
            "k held at 1); read the ratio eta(S)/eta(0), not the curve's shape"
        )
    elif opt_usable.sum() < 5:
        notes.append("fewer than 5 usable staleness values: k is held at 1 in the law fits")
    if max_curve is None:
        notes.append(
            "eta_max(S) not fitted: too few staleness values with a failing LR (3 needed, or S=0 "
            "and one S>0)"
        )
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


def describe_regime(
    runs_dir: Path, runs: pl.DataFrame, settings: FitSettings | None = None
) -> dict[str, Any] | None:
    """What the law was measured on, from the sweep's ``config.json`` (None without one)."""
    import json

    path = runs_dir / "config.json"
    if not path.exists():
        return None
    train = json.loads(path.read_text()).get("train", {})
    grpo = train.get("grpo", {})
    optimizer = train.get("optimizer", {"name": "adamw", "beta1": 0.9})
    if grpo.get("is_cap") is not None:
        objective = (
            f"decoupled (proximal = current policy, IS weights truncated at {grpo['is_cap']:g})"
        )
    else:
        objective = f"clipped PPO (eps {grpo.get('eps_low', 0.2):g}/{grpo.get('eps_high', 0.28):g})"
    if optimizer.get("name", "adamw") == "adamw":
        opt = f"AdamW (beta1 {optimizer.get('beta1', 0.9):g}, beta2 {optimizer.get('beta2', 0.999):g})"
    else:
        opt = f"SGD (momentum {optimizer.get('momentum', 0.0):g})"
    policy, task = train.get("policy", {}), train.get("task", {})
    fixed = fixed_runs(runs)
    if settings is not None and settings.max_staleness is not None:
        fixed = fixed.filter(pl.col("staleness") <= settings.max_staleness)
    realised = fixed["staleness_mean"] if "staleness_mean" in fixed.columns else fixed["staleness"]
    horizon = settings.horizon if settings and settings.horizon else train.get("steps")
    return {
        "objective": objective,
        "optimizer": opt,
        "prompts_per_step": train.get("prompts_per_step"),
        "samples_per_prompt": train.get("samples_per_prompt"),
        "minibatches_per_step": train.get("minibatches_per_step", 1),
        "steps": horizon,
        "staleness_range": [int(fixed["staleness"].min()), int(fixed["staleness"].max())],
        "realised_lag_range": [float(realised.min()), float(realised.max())],
        "model": (
            f"{policy.get('n_layer')}-layer {policy.get('n_embd')}-wide decoder "
            f"(~{_param_count(policy, task) / 1e3:.0f}k parameters)"
        ),
        "model_params": _param_count(policy, task),
        "task": f"sort {task.get('n_digits')} digits of base {task.get('base')}",
    }


def _param_count(policy: dict[str, Any], task: dict[str, Any]) -> int:
    """Parameters of the validate policy (tied embeddings): embeddings plus blocks."""
    width, layers = int(policy.get("n_embd", 64)), int(policy.get("n_layer", 2))
    ratio = int(policy.get("mlp_ratio", 4))
    vocab = int(task.get("base", 10)) + 3
    block = 2 * int(task.get("n_digits", 6)) + 2
    per_layer = 4 * width * width + 4 * width + 2 * ratio * width * width + (ratio + 1) * width
    per_layer += 4 * width  # two layer norms
    return vocab * width + block * width + layers * per_layer + 2 * width


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
    runs, steps = read_sweep(runs_dir)
    result = fit_sweep(
        runs,
        settings,
        source=describe_source(runs_dir, runs, command),
        progress=progress,
        steps=steps,
        regime=describe_regime(runs_dir, runs, settings),
    )
    path = Path(out) if out is not None else runs_dir / "law.json"
    write_json(path, result.law.to_json_dict())
    return result, path


__all__ = ["FitSettings", "SweepFit", "describe_source", "fit_runs_dir", "fit_sweep"]
