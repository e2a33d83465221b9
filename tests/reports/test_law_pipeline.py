"""The pipeline question's findings rows, read from a summary written by the pipeline's rule
comparison on run folders with a known answer."""

from __future__ import annotations

import json
from pathlib import Path

from stalesim.reports.law_findings import findings
from stalesim.reports.law_pipeline import SUMMARY, pipeline_rows
from stalesim.validate.pipeline.law_rules import evaluate

from tests.validate.test_pipeline_law_rules import _sweep


def test_no_summary_gives_no_rows(tmp_path: Path) -> None:
    assert pipeline_rows(tmp_path) == []


def test_each_comparison_is_a_row_with_its_differences_and_lags(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _sweep(runs, max_effect=0.03)  # law-max 0.03 ahead of law-mean in every seed
    summary = json.loads(json.dumps(evaluate(runs), default=float))
    (tmp_path / SUMMARY).parent.mkdir(parents=True)
    (tmp_path / SUMMARY).write_text(json.dumps(summary))
    rows = {r.prediction: r for r in pipeline_rows(tmp_path)}
    max_vs_mean = rows["the law read at the max lag against at the mean lag"]
    assert max_vs_mean.experiment == "pipeline (async, max_staleness 4): which lag the law reads"
    assert max_vs_mean.verdict.startswith("law-max ahead")
    assert "AUC +0.030" in max_vs_mean.measured
    assert "law-max: mean lag 2.00, max 4" in max_vs_mean.measured
    assert "6 seeds" in max_vs_mean.coverage
    tuned = rows["the law read at the mean lag against a tuned constant"]
    # one difference per rate of the constant, per score
    assert tuned.measured.count("AUC at ") == 2
    assert tuned.verdict.startswith("law-mean ahead")
    # the findings table carries them
    assert any(r.experiment.startswith("pipeline (") for r in findings(tmp_path))
