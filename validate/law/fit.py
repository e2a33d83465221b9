"""From a learning-rate × staleness × seed sweep to a fitted staleness–learning-rate law.

The steps, each in its own module: which runs failed (:mod:`stalesim.validate.law.failure`);
per-S estimates of ``eta_opt``, ``eta_max`` and steps to target
(:mod:`stalesim.validate.law.group_estimates`), redone on bootstrap replicates that resample whole
seeds (a seed carries its own warm start and all its runs); the law family fitted to them with
intervals (:mod:`stalesim.sim.law.fit`) and, next to it, model-free local slopes
(:mod:`stalesim.validate.law.slopes`); and the comparison of staleness summaries on the distribution
runs (:mod:`stalesim.validate.law.summary_comparison`). This module runs them in order and writes
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from stalesim.common.files import write_json
from stalesim.sim.law.fit import (
    CurveFit,
    bound_notes,
    curve_record,
    fit_steps_model,
    fit_with_bootstrap,
    staleness_grid,
)
from stalesim.sim.law.intervals import Spread
from stalesim.sim.law.model import LAW_SCHEMA, PAPER_ALPHA, Law
from stalesim.validate.law.coverage import calibrated_spreads
from stalesim.validate.law.failure import backfill_from_steps, mark_failures
from stalesim.validate.law.group_estimates import (
    CENSORED_FLAGS,
    EDGE_FLAGS,
    Cells,
    build_cells,
)
from stalesim.validate.law.replicates import (
    SCORE_HORIZONS,
    FitSettings,
    Progress,
    drop_from_zero,
    first_step_ratio,
    realised_lag,
    replicate_groups,
)
from stalesim.validate.law.saturation import measure_saturation
from stalesim.validate.law.slopes import (
    FLAT_BAND,
    FLAT_RATIO_BAND,
    ONE_OVER_S_BAND,
    local_slopes,
    pair_slopes,
    range_slope,
)
from stalesim.validate.law.summary_comparison import FixedOptima, compare_summaries
from stalesim.validate.law.sweep_runs import (
    distribution_groups,
    fixed_runs,
    json_records,
    read_sweep,
)
from stalesim.validate.train.task_configs import task_config


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
    raw_runs, steps_frame = runs, steps
    if settings.horizon is not None:
        if steps is None:
            raise ValueError("a horizon needs the sweep's steps.parquet")
        from stalesim.validate.law.horizon import truncate_runs

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
    seeds = np.array(sorted(runs["seed"].unique().to_list())) if "seed" in runs.columns else None
    reps = replicate_groups(groups, settings, seeds, rng, spec_cells, progress)
    point, spread = reps.point, reps.spread
    staleness = np.array(sorted(groups), dtype=float)
    realised = np.array([realised_lag(fixed_frames[int(s)], int(s)) for s in staleness])
    axis = realised if settings.lag_axis == "realised" else staleness

    opt, opt_boot = reps.series(staleness, lambda g: g.optimum.eta)
    emax, emax_boot = reps.series(staleness, lambda g: g.edge.eta, with_resolution=True)
    steps, steps_boot = reps.series(staleness, lambda g: g.steps)
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
    # the percentile bootstrap refits every replicate of every synthetic sweep: too costly to
    # check at full size inside a fit, so it gets a smaller check (python -m
    # stalesim.validate.law.coverage measures it properly)
    jackknife = spread.method == "jackknife"
    sims = settings.coverage_sims if jackknife else min(settings.coverage_sims, 20)
    coverage, scales = None, {}
    if sims and (jackknife or settings.bootstrap):
        from stalesim.validate.law.calibration import interval_coverage
        from stalesim.validate.law.coverage import design_from_cells

        design = design_from_cells(groups, point, axis)
        if design is not None:
            coverage = interval_coverage(
                design,
                sims=sims,
                method=spread.method,
                seed=settings.seed,
                confidence=settings.confidence,
                window=settings.window,
                replicates=min(settings.bootstrap, 100),
            )
            factors = (coverage.get("calibration") or {}).get("factors") or {}
            scales = {k: v for k, v in factors.items() if v is not None}
    # eta_opt's and eta_max's intervals, slopes and ratios each widened by their calibration
    # factor (steps to target is not simulated, so its interval stays the plain t interval)
    calibrated = calibrated_spreads(spread, scales)
    opt_curve, opt_curve_boot = fit_with_bootstrap(axis, opt, opt_boot, opt_usable, spread)
    max_usable = np.array([f not in CENSORED_FLAGS for f in max_flags])
    max_curve, max_curve_boot = (None, None)
    if max_usable.sum() >= needed:
        max_curve, max_curve_boot = fit_with_bootstrap(axis, emax, emax_boot, max_usable, spread)

    steps_model = fit_steps_model(axis, steps, steps_boot, opt_curve, opt_curve_boot, spread)
    s_grid = staleness_grid(float(axis.max()))
    law_opt = curve_record(
        opt_curve, opt_curve_boot, axis[opt_usable], opt[opt_usable], s_grid, spread
    )
    law_max = (
        curve_record(max_curve, max_curve_boot, axis[max_usable], emax[max_usable], s_grid, spread)
        if max_curve is not None
        else None
    )
    slopes: dict[str, Any] = {
        "eta_opt": slope_block(
            axis, opt, opt_boot, opt_usable, calibrated["slope"], settings, calibrated["ratio"]
        ),
        "eta_max": slope_block(
            axis,
            emax,
            emax_boot,
            max_usable,
            calibrated["eta_max_slope"],
            settings,
            calibrated["eta_max_ratio"],
        ),
    }
    opt_lo, opt_hi = calibrated["eta_opt"].columns(opt, opt_boot, log=True)
    max_lo, max_hi = calibrated["eta_max"].columns(emax, emax_boot, log=True)
    steps_lo, steps_hi = spread.columns(steps, steps_boot, log=True)
    progress_table = [_progress(fixed_frames[int(s)]) for s in staleness]

    points = pl.DataFrame(
        {
            "staleness": staleness.astype(int),
            "staleness_realised": realised,
            "n_seeds": [int(fixed_frames[int(s)]["seed"].n_unique()) for s in staleness],
            "n_failed": [int(fixed_frames_failed(runs, int(s))) for s in staleness],
            "n_unstable": [p["n_unstable"] for p in progress_table],
            "n_no_progress": [p["n_no_progress"] for p in progress_table],
            "n_lrs_reaching": [p["n_lrs_reaching"] for p in progress_table],
            "no_rate_reaches": [p["n_lrs_reaching"] == 0 for p in progress_table],
            "n_runs": [sum(len(v) for v in groups[int(s)].values) for s in staleness],
            "n_lrs": [len(groups[int(s)].lrs) for s in staleness],
            "grid_best_lr": [point[int(s)].optimum.grid_best_lr for s in staleness],
            "eta_opt": opt,
            "eta_opt_lo": opt_lo,
            "eta_opt_hi": opt_hi,
            "eta_opt_log_sd": spread.column_sd(opt_boot, log=True),
            "eta_opt_flag": opt_flags,
            "eta_opt_in_fit": opt_usable,
            "eta_max": emax,
            "eta_max_lo": max_lo,
            "eta_max_hi": max_hi,
            "eta_max_flag": max_flags,
            "eta_max_in_fit": max_usable if max_curve is not None else np.zeros_like(max_usable),
            "steps_to_target": steps,
            "steps_to_target_lo": steps_lo,
            "steps_to_target_hi": steps_hi,
        }
    )
    slopes["bands"] = {
        "one_over_s": list(ONE_OVER_S_BAND),
        "flat": list(FLAT_BAND),
        "flat_ratio": list(FLAT_RATIO_BAND),
        "rule": (
            "a verdict holds only when the whole interval lies inside its band (equivalence "
            "test); falls/rises only when it lies wholly beyond a band; else inconclusive"
        ),
    }
    if settings.by_score and steps_frame is not None:
        slopes["by_score"] = scores_block(raw_runs, steps_frame, settings, seeds, scales)
    if coverage is not None:
        slopes["interval_coverage"] = coverage
    fixed_optima = FixedOptima(
        frames=fixed_frames,
        staleness=staleness[opt_usable],
        eta=opt[opt_usable],
        boot=opt_boot[:, opt_usable],
    )
    distribution_points, comparison = compare_summaries(
        fixed_optima, spec_frames, reps.spec_point, reps.spec_loo, spread
    )
    chosen = comparison.get("best") if comparison.get("distinguishable") else None
    notes = _notes(groups, staleness, opt_flags, max_flags, opt_usable, max_curve, steps_model)
    stuck = [
        int(s) for s, p in zip(staleness, progress_table, strict=True) if not p["n_lrs_reaching"]
    ]
    if stuck:
        notes.append(
            f"no grid rate reaches the target at S={stuck} (no learning rate got half of its "
            "seeds to the reach bar): this is a lack of progress, not instability, and eta_max "
            "does not count it"
        )
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
                runs.filter(pl.col("failed"))
                .select(
                    "run_id",
                    "failure",
                    *(["failure_kind"] if "failure_kind" in runs.columns else []),
                )
                .sort("run_id")
            ),
            "staleness_summary": chosen or "max",
            "eta_opt": law_opt,
            "eta_max": law_max,
            "steps_to_target": steps_model,
            "alpha_paper": PAPER_ALPHA,
            "points": json_records(points),
            "summary_comparison": comparison,
            "settings": settings.as_dict()
            | {
                "bootstrap_unit_used": reps.unit,
                "interval_method_used": spread.method,
                "interval": spread.describe()
                + (
                    "; eta_opt's and eta_max's intervals, slopes and ratios then widened by their "
                    "calibration "
                    f"factors {scales} (slopes.interval_coverage.calibration)"
                    if scales
                    else ""
                ),
            },
            "source": source or {},
            "notes": notes,
        }
    )
    return SweepFit(law, points, distribution_points, runs)


#: The scores eta_opt is located by, all higher-is-better: the mean reward over the horizon,
#: the speed 1 / (1 + steps to target) (0 when the target was never reached), and the best
#: smoothed reward.
SCORES = {
    "reward_auc": "AUC",
    "speed": "steps to target",
    "best_smoothed_reward": "best smoothed reward",
}
#: A run judged at horizon H must be at least this many times S long (else its lag is mostly
#: pipeline fill), so S > H / MIN_STEPS_PER_S is left out at that horizon.
MIN_STEPS_PER_S = 5


def scores_block(
    runs: pl.DataFrame,
    steps: pl.DataFrame,
    settings: FitSettings,
    seeds: np.ndarray | None,
    scales: dict[str, float] | None = None,
) -> dict[str, Any]:
    """eta_opt located by each of :data:`SCORES` at each of :data:`SCORE_HORIZONS` (up to the
    fit's own horizon), with its slopes and ratios, so a verdict can be checked against the
    choice of score and horizon. Keyed ``"<score>@<horizon>"``. ``scales`` are the default
    score's calibration factors per kind, applied here too (each score and horizon is not
    calibrated on its own)."""
    scales = scales or {}
    from dataclasses import replace

    from stalesim.validate.law.horizon import truncate_runs

    length = int(runs["steps"].min()) if "steps" in runs.columns else None
    top = settings.horizon or length
    if top is None:
        return {}
    horizons = sorted({h for h in SCORE_HORIZONS if h < top} | {top})
    quiet = replace(settings, bootstrap=0 if settings.interval_method == "jackknife" else 100)
    out: dict[str, Any] = {}
    for horizon in horizons:
        try:
            judged = runs if horizon == length else truncate_runs(runs, steps, horizon)
        except ValueError:
            continue  # runs without their steps cannot be judged at a shorter horizon
        cap = horizon // MIN_STEPS_PER_S
        if settings.max_staleness is not None:
            cap = min(cap, settings.max_staleness)
        judged = mark_failures(
            backfill_from_steps(judged.filter(pl.col("staleness") <= cap), steps),
            reach_fraction=settings.reach_fraction,
            min_final_reward=settings.min_final_reward,
        ).with_columns(
            (1.0 / (1.0 + pl.col("steps_to_target").cast(pl.Float64))).fill_null(0.0).alias("speed")
        )
        frames = {
            int(key[0]): f
            for key, f in sorted(fixed_runs(judged).partition_by("staleness", as_dict=True).items())
        }
        if len(frames) < 2 or 0 not in frames:
            continue
        realised = np.array([realised_lag(frames[s], s) for s in frames])
        staleness = np.array(sorted(frames), dtype=float)
        axis = realised if settings.lag_axis == "realised" else staleness
        for score in SCORES:
            if score not in judged.columns and score != "speed":
                continue
            groups = {
                s: build_cells(f, score, settings.min_final_reward) for s, f in frames.items()
            }
            reps = replicate_groups(groups, quiet, seeds, np.random.default_rng(settings.seed))
            eta, boot = reps.series(staleness, lambda g: g.optimum.eta)
            flags = [reps.point[int(s)].optimum.flag for s in staleness]
            usable = np.array([f not in EDGE_FLAGS for f in flags])
            widened = calibrated_spreads(reps.spread, scales)
            lo, hi = widened["eta_opt"].columns(eta, boot, log=True)
            block = slope_block(
                axis, eta, boot, usable, widened["slope"], settings, widened["ratio"]
            )
            out[f"{score}@{horizon}"] = {
                "score": score,
                "score_label": SCORES[score],
                "horizon": horizon,
                "points": [
                    {
                        "staleness": int(s),
                        "staleness_realised": float(a),
                        "eta_opt": float(e),
                        "lo": None if not np.isfinite(lo_) else float(lo_),
                        "hi": None if not np.isfinite(hi_) else float(hi_),
                        "flag": f,
                    }
                    for s, a, e, lo_, hi_, f in zip(
                        staleness, axis, eta, lo, hi, flags, strict=True
                    )
                ],
                **{k: v for k, v in block.items() if k != "local"},
            }
    return out


def fixed_frames_failed(runs: pl.DataFrame, staleness: int) -> int:
    """How many fixed-S runs at ``staleness`` failed."""
    return fixed_runs(runs).filter(pl.col("staleness") == staleness)["failed"].sum()


def slope_block(
    axis: np.ndarray,
    eta: np.ndarray,
    boot: np.ndarray,
    usable: np.ndarray,
    spread: Spread,
    settings: FitSettings,
    ratio_spread: Spread | None = None,
) -> dict[str, Any]:
    """Every slope and ratio of one curve's points that law.json records, with intervals
    (``ratio_spread``, default ``spread``, for the ratios to S = 0)."""
    ratio_spread = ratio_spread or spread
    return {
        "local": local_slopes(axis, eta, boot, usable, spread),
        "pairs": pair_slopes(axis, eta, boot, usable, spread),
        "early": range_slope(axis, eta, boot, usable, *settings.early_range, spread),
        "late": range_slope(axis, eta, boot, usable, *settings.late_range, spread),
        "drop_from_zero": drop_from_zero(axis, eta, boot, usable, ratio_spread),
        "first_step": first_step_ratio(axis, eta, boot, usable, ratio_spread),
    }


def _progress(frame: pl.DataFrame) -> dict[str, int]:
    """How one S group failed: unstable runs, no-progress runs, and the grid rates at which at
    least half the runs reached the bar (neither unstable nor without progress)."""
    if "unstable" not in frame.columns:
        n = int(frame["failed"].sum()) if "failed" in frame.columns else 0
        return {"n_unstable": n, "n_no_progress": 0, "n_lrs_reaching": frame["lr"].n_unique()}
    reached = ~(pl.col("unstable").fill_null(False) | pl.col("no_progress").fill_null(False))
    per_lr = frame.group_by("lr").agg(reached.cast(pl.Float64).mean().alias("share"))
    return {
        "n_unstable": int(frame["unstable"].sum()),
        "n_no_progress": int(frame["no_progress"].sum()),
        "n_lrs_reaching": int((per_lr["share"] >= 0.5).sum()),
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
    runs_dir: Path,
    runs: pl.DataFrame,
    settings: FitSettings | None = None,
    steps: pl.DataFrame | None = None,
) -> dict[str, Any] | None:
    """What the law was measured on, from the sweep's ``config.json`` (None without one), and
    whether its task saturated within the horizon (from ``steps``, where given)."""
    from stalesim.common.tables import read_json_object

    path = runs_dir / "config.json"
    if not path.exists():
        return None
    train = read_json_object(path).get("train", {})
    grpo = train.get("grpo", {}) if isinstance(train, dict) else None
    optimizer = (
        train.get("optimizer", {"name": "adamw", "beta1": 0.9}) if isinstance(train, dict) else None
    )
    policy, task = (train.get("policy", {}), train.get("task", {})) if grpo is not None else (0, 0)
    if not all(isinstance(part, dict) for part in (grpo, optimizer, policy, task)):
        raise ValueError(
            f"{path}: 'train' and its grpo, optimizer, policy and task must be objects"
        )
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
    fixed = fixed_runs(runs)
    if settings is not None and settings.max_staleness is not None:
        fixed = fixed.filter(pl.col("staleness") <= settings.max_staleness)
    realised = fixed["staleness_mean"] if "staleness_mean" in fixed.columns else fixed["staleness"]
    horizon = settings.horizon if settings and settings.horizon else train.get("steps")
    window = int(train.get("smoothing_window", 10))
    saturation = measure_saturation(runs, steps, horizon, window)
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
        "task": task_config(task).label,
        "saturated": saturation.saturated if saturation else None,
        "saturation": saturation.describe() if saturation else None,
    }


def _param_count(policy: dict[str, Any], task: dict[str, Any]) -> int:
    """Parameters of the validate policy (tied embeddings): embeddings plus blocks."""
    width, layers = int(policy.get("n_embd", 64)), int(policy.get("n_layer", 2))
    ratio = int(policy.get("mlp_ratio", 4))
    config = task_config(task)
    vocab = config.vocab
    block = config.prompt_len + config.response_len
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
    if fixed_runs(runs).height == 0:
        raise ValueError(
            f"{runs_dir}: no fixed-staleness runs to fit the law to (its runs all draw their "
            "staleness from a distribution)"
        )
    result = fit_sweep(
        runs,
        settings,
        source=describe_source(runs_dir, runs, command),
        progress=progress,
        steps=steps,
        regime=describe_regime(runs_dir, runs, settings, steps),
    )
    path = Path(out) if out is not None else runs_dir / "law.json"
    write_json(path, result.law.to_json_dict())
    return result, path


__all__ = ["FitSettings", "SweepFit", "describe_source", "fit_runs_dir", "fit_sweep"]
