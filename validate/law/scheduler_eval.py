"""Judging learning-rate rules on mixed-staleness runs: steps to target and failure rate.

The runs of each rule live in their own sweep folder (a rule is part of the training config):
``constant`` (a grid of fixed learning rates), ``eta0`` (one fixed rate, the law's own
``eta_opt(0)``: what a user who ignores staleness would run), ``ess`` (``lr * sqrt(ESS/B)``, a
grid of base learning rates) and ``law`` (:class:`~stalesim.validate.train.staleness_lr.StalenessLR` at the law's
own ``eta_opt(0)``, no tuning). For every rule, staleness distribution and learning rate: the
median over seeds of the steps to target (a run that never got there counts as never) and the
fraction of seeds that failed (:mod:`stalesim.validate.law.failure`). A tuned rule is represented by
its best learning rate (fewest median steps, then highest mean reward AUC), chosen again inside
every bootstrap replicate, so the selection's luck is part of the interval.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from stalesim.validate.law.failure import mark_failures
from stalesim.validate.law.sweep_runs import read_sweep

RULES = ("constant", "eta0", "ess", "law")


def _best(frame: pl.DataFrame) -> dict[str, Any]:
    per_lr = (
        frame.group_by("lr")
        .agg(
            pl.col("steps").median().alias("steps"),
            pl.col("failed").cast(pl.Float64).mean().alias("fail_rate"),
            pl.col("reward_auc").mean().alias("auc"),
        )
        .sort(["steps", "auc"], descending=[False, True], nulls_last=True)
    )
    return per_lr.row(0, named=True)


def evaluate_rules(
    root: Path, *, best_reward: float | None, bootstrap: int = 500, seed: int = 0
) -> dict[str, Any]:
    """Per rule and staleness distribution: the best LR's median steps to target and failure
    rate, with seed-bootstrap percentile intervals (95%)."""
    frames = []
    for rule in RULES:
        if (root / rule / "runs.parquet").exists():
            runs, _ = read_sweep(root / rule)
            frames.append(
                mark_failures(runs, best_reward=best_reward).with_columns(
                    pl.lit(rule).alias("rule")
                )
            )
    if not frames:
        raise ValueError(f"{root}: no rule folders ({', '.join(RULES)}) with runs.parquet")
    runs = pl.concat(frames, how="diagonal_relaxed").with_columns(
        pl.col("steps_to_target").cast(pl.Float64).fill_null(np.inf).alias("steps")
    )
    rng = np.random.default_rng(seed)
    seeds = np.array(sorted(runs["seed"].unique().to_list()))
    out = []
    for (rule, spec), frame in sorted(
        runs.partition_by(["rule", "staleness_spec"], as_dict=True).items()
    ):
        point = _best(frame)
        reps = []
        for _ in range(bootstrap):
            draw = rng.choice(seeds, len(seeds))
            picked = pl.concat([frame.filter(pl.col("seed") == s) for s in draw])
            reps.append(_best(picked))
        steps = np.array([r["steps"] for r in reps], dtype=float)
        fails = np.array([r["fail_rate"] for r in reps], dtype=float)
        out.append(
            {
                "rule": rule,
                "staleness_spec": spec,
                "best_lr": point["lr"],
                "lrs_tried": sorted(frame["lr"].unique().to_list()),
                "steps_to_target": None if not np.isfinite(point["steps"]) else point["steps"],
                "steps_lo": float(np.percentile(steps, 2.5)),
                "steps_hi": float(np.percentile(steps, 97.5)),
                "fail_rate": point["fail_rate"],
                "fail_lo": float(np.percentile(fails, 2.5)),
                "fail_hi": float(np.percentile(fails, 97.5)),
                "n_seeds": int(frame["seed"].n_unique()),
            }
        )
    return {
        "rows": out,
        "interval": "seed bootstrap, 95% percentile; the best LR is re-chosen in every replicate",
        "failure": "collapsed, below its warm start, or never reached half the S=0 gain",
    }


def write_summary(root: Path, reference: Path, bootstrap: int = 500) -> Path:
    """Evaluate the rule folders under ``root`` and write ``root/summary.json``; the S = 0 best
    reward of the failure rule comes from the fixed-S ``reference`` sweep."""
    import json

    from stalesim.common.files import write_json
    from stalesim.validate.law.failure import best_on_policy_reward

    ref_runs, _ = read_sweep(reference)
    summary = evaluate_rules(root, best_reward=best_on_policy_reward(ref_runs), bootstrap=bootstrap)
    summary["reference"] = str(reference)
    clean = json.loads(
        json.dumps(summary, default=float).replace("Infinity", "null").replace("NaN", "null")
    )
    path = root / "summary.json"
    write_json(path, clean)
    return path


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m stalesim.validate.law.scheduler_eval",
        description="Evaluate the LR-rule sweeps under ROOT and write ROOT/summary.json.",
    )
    parser.add_argument(
        "root", type=Path, help="the folder of the rule sweeps (constant, eta0, ess, law)"
    )
    parser.add_argument(
        "reference", type=Path, help="the fixed-S sweep giving the S = 0 best reward"
    )
    args = parser.parse_args()
    for folder in (args.root, args.reference):
        if not folder.is_dir():
            parser.error(f"{folder}: not a folder")
    print(f"wrote {write_summary(args.root, args.reference)}")
