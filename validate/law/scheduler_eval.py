"""Judging learning-rate rules on mixed-staleness runs, paired by seed against the law's rule.

The runs of each rule live in their own sweep folder (a rule is part of the training config):
``constant`` (a grid of fixed learning rates), ``eta0`` (one fixed rate, the law's own
``eta_opt(0)``: what a user who ignores staleness would run), ``ess`` (``lr * sqrt(ESS/B)``, a
grid of base learning rates), ``law`` (:class:`~stalesim.validate.train.staleness_lr.StalenessLR`
at the law's own ``eta_opt(0)``, no tuning) and ``law-max`` (the same law read at the
mini-batch's max lag instead of the rule's own summary). Every rule ran the same seeds, and a
seed fixes the warm start and the sampling, so rules are compared seed by seed.

What it guarantees:

* **No selection inside an interval.** The law's rule is compared with *every* rate of a tuned
  rule, one paired difference per rate: the mean over seeds of (law minus that rate) with a
  Student t interval (``n - 1`` degrees of freedom). Choosing the best rate first and then
  comparing would hand the tuned rule the luck of the choice; cross-fitting the choice (best
  on the other seeds) still undercovers, because the seeds' choices share noise (90% measured
  for "95%" at 6 seeds).
* **The interval's level is its coverage** where seed-to-seed differences are roughly normal;
  checked on synthetic sweeps with a known truth in the tests.
* **A verdict is an equivalence test, read across rates as an intersection-union test**: the
  law's rule is *ahead* of a rule only when every rate's interval lies above 0, *not behind*
  (within ``band``) only when every rate's lower bound is above ``-band``; either claim holds
  at the stated level with no multiplicity correction, because it needs every rate's test to
  pass. It is *behind* when some rate's Bonferroni-widened interval lies below 0, otherwise
  *inconclusive*. A verdict stands only where every score agrees; where they do not, each is
  shown.

Per rule it also reports its in-sample best rate's median steps to each reward target and its
failure rate (:mod:`stalesim.validate.law.failure`), as points: with a handful of seeds, no
interval on a median or a rate is calibrated, so none is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy import stats
from stalesim.validate.law.failure import mark_failures
from stalesim.validate.law.horizon import truncate_runs
from stalesim.validate.law.sweep_runs import read_sweep

RULES = ("constant", "eta0", "ess", "law", "law-max")
#: The rule every other rule is compared with: the law's own schedule, untuned.
REFERENCE = "law"
#: Higher is better for each; all are in reward units (the task's reward is in [0, 1]).
SCORES = {
    "reward_auc": "mean reward over the run",
    "final_reward": "mean reward over the last 10 steps",
    "best_smoothed_reward": "best 10-step mean reward",
}
#: Equivalence band, in reward units: one percentage point of reward, about one seed's
#: standard deviation of the reward AUC on the non-saturating task.
BAND = 0.01
LEVEL = 0.95
#: Reward targets the steps-to-target are read at (the runs' own target is added).
TARGETS = (0.75, 0.8)


def by_seed(frame: pl.DataFrame, score: str) -> dict[float, dict[int, float]]:
    """``score`` per learning rate, per seed."""
    out: dict[float, dict[int, float]] = {}
    for lr, seed, value in frame.select("lr", "seed", score).iter_rows():
        out.setdefault(float(lr), {})[int(seed)] = float(value)
    return out


def paired_interval(differences: np.ndarray, level: float = LEVEL) -> tuple[float, float, float]:
    """Mean of ``differences`` and its Student t interval at ``level`` (nan bounds below 2)."""
    n = len(differences)
    mean = float(np.mean(differences))
    if n < 2:
        return mean, float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, n - 1) * float(np.std(differences, ddof=1)) / np.sqrt(n)
    return mean, mean - half, mean + half


def rule_verdict(differences: dict[float, np.ndarray], band: float = BAND) -> str:
    """The reference rule against a rule with one paired-difference array per rate (reference
    minus rate): ``ahead``, ``not behind``, ``behind`` or ``inconclusive`` (see the module's
    guarantees)."""
    bounds = [paired_interval(d) for d in differences.values()]
    if not bounds or any(not np.isfinite(lo) for _, lo, _ in bounds):
        return "inconclusive"
    if all(lo > 0 for _, lo, _ in bounds):
        return "ahead"
    if all(lo > -band for _, lo, _ in bounds):
        return "not behind"
    corrected = 1 - (1 - LEVEL) / len(bounds)
    if any(paired_interval(d, corrected)[2] < 0 for d in differences.values()):
        return "behind"
    return "inconclusive"


def agreed_verdict(verdicts: list[str]) -> str:
    """What holds under every score: the one verdict they share, the weaker claim where some
    say ``ahead`` and the rest ``not behind`` (ahead implies not behind), else
    ``scores disagree``."""
    kinds = set(verdicts)
    if kinds == {"ahead", "not behind"}:
        return "not behind"
    return kinds.pop() if len(kinds) == 1 else "scores disagree"


def median_steps(values: pl.Series) -> float | None:
    """Median steps to target, a run that never got there counting as never (``None``)."""
    median = float(np.median(values.cast(pl.Float64).fill_null(np.inf).to_numpy()))
    return median if np.isfinite(median) else None


def compare_with_reference(
    by_cell: dict[tuple[str, str], pl.DataFrame], reference: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every other rule against ``reference`` within each staleness distribution: per score and
    rate the paired difference (reference minus rate) with its interval, and per rule the
    verdict across its rates and the scores. ``by_cell`` maps ``(rule, staleness_spec)`` to that
    cell's runs (columns ``lr``, ``seed`` and the :data:`SCORES`); the reference runs at one
    rate."""
    comparisons, verdicts = [], []
    for (rule, spec), frame in sorted(by_cell.items()):
        ours_frame = by_cell.get((reference, spec))
        if rule == reference or ours_frame is None:
            continue
        by_score = {}
        for score in SCORES:
            rates = by_seed(ours_frame, score)
            if len(rates) != 1:
                raise ValueError(
                    f"{reference}/: {len(rates)} learning rates; the reference rule runs untuned, "
                    "at one rate"
                )
            (ours,) = rates.values()
            differences = {}
            for lr, theirs in sorted(by_seed(frame, score).items()):
                seeds = sorted(set(ours) & set(theirs))
                differences[lr] = np.array([ours[s] - theirs[s] for s in seeds])
                mean, lo, hi = paired_interval(differences[lr])
                comparisons.append(
                    {
                        "reference": reference,
                        "rule": rule,
                        "staleness_spec": spec,
                        "score": score,
                        "lr": lr,
                        "difference": mean,
                        "lo": lo,
                        "hi": hi,
                        "seeds": seeds,
                        "per_seed": differences[lr].tolist(),
                    }
                )
            by_score[score] = rule_verdict(differences)
        verdicts.append(
            {
                "reference": reference,
                "rule": rule,
                "staleness_spec": spec,
                "verdict": agreed_verdict(list(by_score.values())),
                "by_score": by_score,
            }
        )
    return comparisons, verdicts


def evaluate_rules(root: Path, *, best_reward: float | None) -> dict[str, Any]:
    """Every rule folder under ``root``: per rule and staleness distribution its best rate's
    points, and per other rule and score the paired difference to :data:`REFERENCE`."""
    frames, step_tables = [], {}
    for rule in RULES:
        if (root / rule / "runs.parquet").exists():
            runs, steps = read_sweep(root / rule)
            frames.append(
                mark_failures(runs, best_reward=best_reward).with_columns(
                    pl.lit(rule).alias("rule")
                )
            )
            step_tables[rule] = steps
    if not frames:
        raise ValueError(f"{root}: no rule folders ({', '.join(RULES)}) with runs.parquet")
    runs = pl.concat(frames, how="diagonal_relaxed")
    own = runs["target_reward"].unique().to_list() if "target_reward" in runs.columns else []
    # the runs' own steps_to_target is read at their own target, where they share one
    own_target = own[0] if len(own) == 1 else None
    targets = sorted(set(TARGETS) | ({own_target} - {None}))

    rows = []
    by_cell = runs.partition_by(["rule", "staleness_spec"], as_dict=True)
    for (rule, spec), frame in sorted(by_cell.items()):
        per_lr = (
            frame.group_by("lr")
            .agg(pl.col("reward_auc").mean().alias("auc"))
            .sort(["auc", "lr"], descending=[True, False])
        )
        best_lr = float(per_lr["lr"][0])
        at_best = frame.filter(pl.col("lr") == best_lr)
        steps_at = {}
        for target in targets:
            if target == own_target:
                judged = at_best
            elif step_tables[rule] is not None:
                horizon = int(at_best["steps"].min())
                judged = truncate_runs(at_best, step_tables[rule], horizon, target_reward=target)
            else:
                continue  # another target is read from the step tables, and there are none
            steps_at[f"{target:g}"] = {
                "median": median_steps(judged["steps_to_target"]),
                "reached": int(judged["steps_to_target"].is_not_null().sum()),
            }
        rows.append(
            {
                "rule": rule,
                "staleness_spec": spec,
                "best_lr": best_lr,
                "lrs_tried": sorted(frame["lr"].unique().to_list()),
                "n_seeds": int(at_best["seed"].n_unique()),
                **{score: float(at_best[score].mean()) for score in SCORES},
                "steps_to_target": steps_at,
                "fail_rate": float(at_best["failed"].cast(pl.Float64).mean()),
            }
        )
    comparisons, verdicts = compare_with_reference(by_cell, REFERENCE)
    return {
        "rows": rows,
        "comparisons": comparisons,
        "verdicts": verdicts,
        "reference": REFERENCE,
        "scores": SCORES,
        "band": BAND,
        "interval": (
            f"paired by seed, Student t {LEVEL:.0%} (n - 1 degrees of freedom); the difference "
            f"is {REFERENCE} minus the other rule at one of its rates; verdicts across rates by "
            "intersection-union (ahead / not behind) or Bonferroni (behind)"
        ),
        "best_lr": "in-sample: the best mean reward AUC over all seeds (for the points only)",
        "failure": "collapsed, below its warm start, or never reached half the S=0 gain",
    }


def write_summary(root: Path, reference: Path) -> Path:
    """Evaluate the rule folders under ``root`` and write ``root/summary.json``; the S = 0 best
    reward of the failure rule comes from the fixed-S ``reference`` sweep."""
    import json

    from stalesim.common.files import write_json
    from stalesim.validate.law.failure import best_on_policy_reward

    ref_runs, _ = read_sweep(reference)
    summary = evaluate_rules(root, best_reward=best_on_policy_reward(ref_runs))
    summary["reference_sweep"] = str(reference)
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
