"""Which staleness summary the law should read on the real pipeline: learning-rate rules on
asynchronous runs, compared paired by seed.

On the Ray pipeline the lag of a mini-batch is not set; it emerges from the race between the
rollout engines and the learner, and it varies from sample to sample and step to step. A law
read per update can take that lag's maximum, its mean, or be left out. The runs under ``ROOT``
(any depth; each run folder holds ``config.json``, ``samples.parquet`` and ``steps.parquet``) are
grouped into rules by their own configs:

* ``law-max`` / ``law-mean`` / ``law-token_mean``: :class:`~stalesim.validate.train.staleness_lr.UpdateLR`
  on a law curve, read at that summary of each mini-batch's lags;
* ``no correction``: a constant at the law rules' own base rate (what a user who ignores
  staleness would run);
* ``constant``: every constant rate, the one above included (a tuned constant).

and into cells by mode and ``max_staleness``.

**Scores** are read off the learner policy itself, not off the batches it consumed (those lag it
by the staleness): the mean reward of the samples each version generated
(:func:`~stalesim.validate.pipeline.tradeoff.version_reward_curve`) over versions ``0 .. steps-1``,
and from that curve the same three scores as the trainer's sweeps: ``reward_auc`` (its mean),
``final_reward`` (mean of the last ``smoothing_window`` versions) and ``best_smoothed_reward``
(best trailing ``smoothing_window`` mean).

**Verdicts** are those of :mod:`stalesim.validate.law.scheduler_eval`, with each law rule in turn
as the reference: per score and rate a paired Student t interval of (reference minus rate) over
the shared seeds, read across rates as an intersection-union test (*ahead*, *not behind* within
the band), *behind* by Bonferroni, else *inconclusive*; a verdict stands where every score
agrees. The interval's coverage is checked in the tests of that module.

Run as ``python -m stalesim.validate.pipeline.law_rules ROOT`` (writes ``ROOT/summary.json`` and
prints one line per rule and cell).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import polars as pl
from stalesim.common.files import write_json
from stalesim.validate.law.scheduler_eval import (
    BAND,
    LEVEL,
    SCORES,
    compare_with_reference,
    median_steps,
)
from stalesim.validate.pipeline.tradeoff import (
    trailing_mean,
    version_reaching,
    version_reward_curve,
)

#: The constant at the law rules' base rate: the run that ignores staleness.
NO_CORRECTION = "no correction"
#: Reward targets the steps-to-target points are read at.
TARGETS = (0.75, 0.8, 0.85)


def rule_of(config: dict[str, Any]) -> str:
    """The rule a run's config names: ``law-<summary>``, ``ess`` or ``constant``."""
    lr_rule = config["train"].get("lr_rule") or {"kind": "constant"}
    if lr_rule["kind"] == "law":
        return f"law-{lr_rule['summary']}"
    return str(lr_rule["kind"])


def cell_of(config: dict[str, Any]) -> str:
    """The staleness setup a run belongs to: its mode and admission bound."""
    algorithm = config["algorithm"]
    bound = algorithm.get("max_staleness")
    return algorithm["mode"] if bound is None else f"{algorithm['mode']}, max_staleness {bound}"


def scores_of(curve: pl.DataFrame, steps: int, window: int) -> dict[str, float]:
    """The three scores of a per-version reward curve over versions ``0 .. steps-1``."""
    rewards = curve.filter(pl.col("version") < steps)["reward"].to_numpy()
    if rewards.size < window:
        raise ValueError(f"{rewards.size} versions with samples, fewer than the window {window}")
    return {
        "reward_auc": float(rewards.mean()),
        "final_reward": float(rewards[-window:].mean()),
        "best_smoothed_reward": float(trailing_mean(rewards, window).max()),
    }


def run_record(run_dir: Path) -> dict[str, Any]:
    """One run: its rule, cell, seed and rate, its scores, the lags it trained on and the
    learning rates its updates used."""
    config = json.loads((run_dir / "config.json").read_text())
    train = config["train"]
    window = int(train["smoothing_window"])
    samples = pl.read_parquet(run_dir / "samples.parquet")
    steps = pl.read_parquet(run_dir / "steps.parquet")
    n_steps = int(steps.height)
    curve = version_reward_curve(samples)
    scored = curve.filter(pl.col("version") < n_steps)
    reached = {f"{t:g}": version_reaching(scored, window, t) for t in TARGETS}
    used = samples.filter(pl.col("consumed_step").is_not_null())
    after_warmup = steps.filter(pl.col("step") >= int(train.get("warmup_steps", 0)))
    lr_rule = train.get("lr_rule") or {}
    return {
        "run": str(run_dir),
        "rule": rule_of(config),
        "cell": cell_of(config),
        "seed": int(config["seed"]),
        "lr": float(config["lr"]),
        "law_eta0": lr_rule.get("eta0"),
        "steps": n_steps,
        "collapsed": steps["collapse_reason"].drop_nulls().len() > 0,
        **scores_of(curve, n_steps, window),
        "lag_mean": float(used["staleness_max"].mean()),
        "lag_max": int(used["staleness_max"].max()),
        # the per-step spread of the batch's max lag: what a max-reading rule responds to (in
        # step order, so the sum is the same on every run of this command)
        "batch_max_lag_sd": float(
            used.group_by("consumed_step")
            .agg(pl.col("staleness_max").max())
            .sort("consumed_step")["staleness_max"]
            .std()
        ),
        "applied_lr_mean": float(after_warmup["lr"].mean()),
        "applied_lr_min": float(after_warmup["lr"].min()),
        "steps_to": reached,
    }


def read_runs(root: Path) -> pl.DataFrame:
    """Every finished run under ``root``, one row each (``steps_to`` a struct per target)."""
    dirs = sorted(
        p.parent for p in root.rglob("config.json") if (p.parent / "steps.parquet").exists()
    )
    if not dirs:
        raise ValueError(f"{root}: no pipeline runs (folders with config.json and steps.parquet)")
    return pl.DataFrame([run_record(d) for d in dirs])


def _label_no_correction(runs: pl.DataFrame) -> pl.DataFrame:
    """Copy the constant run at each cell's law base rate into its own ``no correction`` rule."""
    bases = runs.filter(pl.col("rule").str.starts_with("law-"))["lr"].unique().to_list()
    if len(bases) != 1:
        return runs
    (base,) = bases
    plain = runs.filter((pl.col("rule") == "constant") & (pl.col("lr") == base))
    return pl.concat([runs, plain.with_columns(pl.lit(NO_CORRECTION).alias("rule"))])


def evaluate(root: Path) -> dict[str, Any]:
    """Per cell and rule the mean scores, lags and applied rates; per law rule as reference,
    its paired comparisons and verdicts against every other rule."""
    runs = _label_no_correction(read_runs(root))
    keyed = runs.rename({"cell": "staleness_spec"})
    by_cell = keyed.partition_by(["rule", "staleness_spec"], as_dict=True)
    rows = []
    for (rule, cell), frame in sorted(by_cell.items()):
        for lr, at in sorted(frame.partition_by("lr", as_dict=True).items()):
            targets = at["steps_to"].to_list()
            rows.append(
                {
                    "rule": rule,
                    "staleness_spec": cell,
                    "lr": float(lr[0]),
                    "n_seeds": int(at["seed"].n_unique()),
                    **{score: float(at[score].mean()) for score in SCORES},
                    "lag_mean": float(at["lag_mean"].mean()),
                    "lag_max": int(at["lag_max"].max()),
                    "applied_lr_mean": float(at["applied_lr_mean"].mean()),
                    "collapsed": int(at["collapsed"].sum()),
                    "steps_to_target": {
                        t: {
                            "median": median_steps(
                                pl.Series([r[t] for r in targets], dtype=pl.Float64)
                            ),
                            "reached": sum(r[t] is not None for r in targets),
                        }
                        for t in targets[0]
                    },
                }
            )
    references = sorted(r for r in runs["rule"].unique() if r.startswith("law-"))
    comparisons, verdicts = [], []
    for reference in references:
        c, v = compare_with_reference(by_cell, reference)
        comparisons += c
        verdicts += v
    return {
        "rows": rows,
        "comparisons": comparisons,
        "verdicts": verdicts,
        "references": references,
        "scores": {
            "reward_auc": "mean reward of the samples each learner version generated, over the "
            "run's versions",
            "final_reward": "the same over the last smoothing_window versions",
            "best_smoothed_reward": "best smoothing_window-version trailing mean",
        },
        "band": BAND,
        "interval": (
            f"paired by seed, Student t {LEVEL:.0%} (n - 1 degrees of freedom); the difference "
            "is the reference law rule minus the other rule at one of its rates; verdicts across "
            "rates by intersection-union (ahead / not behind) or Bonferroni (behind)"
        ),
        "runs": runs.drop("steps_to").to_dicts(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stalesim.validate.pipeline.law_rules",
        description="Compare learning-rate rules on the pipeline runs under ROOT and write "
        "ROOT/summary.json.",
    )
    parser.add_argument("root", type=Path, help="folder holding the pipeline runs, at any depth")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"{args.root}: not a folder")
    try:
        summary = evaluate(args.root)
    except ValueError as err:
        parser.error(str(err))
    write_json(args.root / "summary.json", _clean(summary))
    verdicts = {(v["reference"], v["rule"], v["staleness_spec"]): v for v in summary["verdicts"]}
    for row in summary["rows"]:
        against = "; ".join(
            f"{ref} vs it: {v['verdict']}"
            for (ref, rule, cell), v in verdicts.items()
            if rule == row["rule"] and cell == row["staleness_spec"]
        )
        print(
            f"{row['staleness_spec']} | {row['rule']} lr {row['lr']:.3g}: AUC "
            f"{row['reward_auc']:.4f}, final {row['final_reward']:.4f}, lag mean "
            f"{row['lag_mean']:.2f} max {row['lag_max']}, applied lr {row['applied_lr_mean']:.3g}"
            + (f" | {against}" if against else "")
        )
    print(f"wrote {args.root / 'summary.json'}")
    return 0


def _clean(summary: dict[str, Any]) -> Any:
    return json.loads(
        json.dumps(summary, default=float).replace("Infinity", "null").replace("NaN", "null")
    )


if __name__ == "__main__":
    sys.exit(main())
