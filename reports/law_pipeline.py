"""The findings rows of the pipeline question: which staleness summary the law should read when
the lag emerges from a real asynchronous run (``reports/results/pipeline-law/summary.json``,
written by ``python -m stalesim.validate.pipeline.law_rules``).

Per admission bound, each law rule (read at the mini-batch's max lag, at its mean lag) is set
beside the other law rule, beside no correction (a constant at the law's own eta_opt(0)) and
beside every rate of a tuned constant, with the paired-by-seed verdict of
:mod:`stalesim.validate.law.scheduler_eval` and each score's mean difference and interval. This
module only reads the summary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: Where the pipeline experiment's summary lives under the results root.
SUMMARY = "pipeline-law/summary.json"
#: The comparisons shown, as (reference rule, other rule, what the row asks).
QUESTIONS = (
    ("law-max", "law-mean", "the law read at the max lag against at the mean lag"),
    ("law-mean", "law-max", "the law read at the mean lag against at the max lag"),
    ("law-max", "no correction", "the law read at the max lag against no correction"),
    ("law-mean", "no correction", "the law read at the mean lag against no correction"),
    ("law-max", "constant", "the law read at the max lag against a tuned constant"),
    ("law-mean", "constant", "the law read at the mean lag against a tuned constant"),
)
SCORE_LABELS = {"reward_auc": "AUC", "final_reward": "final", "best_smoothed_reward": "best"}


def _differences(summary: dict[str, Any], ref: str, rule: str, cell: str) -> str:
    """Each score's paired difference (reference minus rule) per rate of the rule."""
    parts = []
    for c in summary["comparisons"]:
        if (c["reference"], c["rule"], c["staleness_spec"]) != (ref, rule, cell):
            continue
        lo, hi = c["lo"], c["hi"]
        interval = "[no interval]" if lo is None or hi is None else f"[{lo:+.3f}, {hi:+.3f}]"
        rate = f" at {c['lr']:.3g}" if rule == "constant" else ""
        parts.append(
            f"{SCORE_LABELS.get(c['score'], c['score'])}{rate} {c['difference']:+.3f} {interval}"
        )
    return "; ".join(parts)


def _lags(summary: dict[str, Any], rule: str, cell: str) -> str:
    rows = [r for r in summary["rows"] if r["rule"] == rule and r["staleness_spec"] == cell]
    if not rows:
        return ""
    mean = sum(r["lag_mean"] for r in rows) / len(rows)
    rate = sum(r["applied_lr_mean"] for r in rows) / len(rows)
    return (
        f"{rule}: mean lag {mean:.2f}, max {max(r['lag_max'] for r in rows)}, mean rate {rate:.3g}"
    )


def pipeline_rows(root: Path) -> list[Any]:
    """The findings rows of the pipeline experiment under ``root`` ([] when it was not run)."""
    from stalesim.reports.law_findings import Finding

    path = root / SUMMARY
    if not path.exists():
        return []
    summary = json.loads(path.read_text())
    verdicts = {(v["reference"], v["rule"], v["staleness_spec"]): v for v in summary["verdicts"]}
    cells = sorted({v["staleness_spec"] for v in summary["verdicts"]})
    n_seeds = max((r["n_seeds"] for r in summary["rows"]), default=0)
    coverage = (
        f"paired t, {n_seeds} seeds: 94% on synthetic sweeps with a shared per-seed effect "
        "(tests/validate/test_law_measurement.py)"
    )
    rows = []
    for cell in cells:
        for ref, rule, question in QUESTIONS:
            verdict = verdicts.get((ref, rule, cell))
            if verdict is None:
                continue
            by_score = ", ".join(
                f"{SCORE_LABELS.get(k, k)}: {v}" for k, v in verdict["by_score"].items()
            )
            measured = (
                f"{ref} minus {rule}, paired by seed: {_differences(summary, ref, rule, cell)}; "
                f"{_lags(summary, ref, cell)}; {_lags(summary, rule, cell)}"
            )
            rows.append(
                Finding(
                    f"pipeline ({cell}): which lag the law reads",
                    question,
                    measured,
                    f"{ref} {verdict['verdict']} ({by_score})",
                    coverage,
                )
            )
    return rows
