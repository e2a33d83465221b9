"""The replay page shows the replay's own numbers, rendered from the committed CPU run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from stalesim.reports.pipeline_page import build_pipeline_page, staleness_frame

from tests.evidence import RESULTS

RUN = RESULTS / "pipeline-cpu" / "async"


@pytest.mark.skipif(not (RUN / "replay" / "replay.json").exists(), reason="no committed run")
def test_the_page_carries_the_replay_figures_and_both_histograms() -> None:
    import polars as pl

    result = json.loads((RUN / "replay" / "replay.json").read_text())
    page = build_pipeline_page(RUN, RUN / "replay")
    html = page.html()
    assert page.chart_count == 3
    shown = dict(re.findall(r'data-label="([^"]+)" data-value="([^"]*)"', html))
    assert float(shown["real samples/s"]) == pytest.approx(result["real"]["samples_per_s"])
    assert float(shown["sim samples/s"]) == pytest.approx(result["sim"]["samples_per_s"])
    assert float(shown["KS (samples)"]) == pytest.approx(result["errors"]["ks_samples"])
    stale = staleness_frame(
        pl.read_parquet(RUN / "samples.parquet"),
        pl.read_parquet(RUN / "replay" / "samples.parquet"),
    )
    for source in ("real", "sim"):
        shares = stale.filter(pl.col("source") == source)["share"]
        assert shares.sum() == pytest.approx(1.0)


def test_the_targets_table_marks_each_target_met_or_missed() -> None:
    from stalesim.reports.pipeline_page import targets_frame

    errors = {
        "samples_per_s_rel": 0.05,
        "steps_per_s_rel": 0.05,
        "staleness_mean_abs": 0.02,
        "staleness_token_mean_abs": 0.03,
        "ks_samples": 0.2,
        "ks_tokens": 0.05,
    }
    targets = {"throughput_rel": 0.03, "staleness_mean_abs": 0.1, "ks": 0.1}
    met = {"throughput": False, "staleness_mean": True, "ks": False}
    frame = targets_frame({"errors": errors, "targets": targets, "met": met})
    assert frame["target"].to_list() == ["throughput", "staleness_mean", "ks"]
    assert frame["result"].to_list() == ["MISSED", "met", "MISSED"]
    assert "+5.0%" in frame["errors"][0] and "0.200" in frame["errors"][2]


def test_report_replay_renders_the_committed_page_without_replaying(tmp_path: Path) -> None:
    """The page is not committed: `stalesim report replay` renders it from the run and its
    replay alone, the same page the builder gives, and refuses a run with no replay."""
    import shutil

    from click.testing import CliRunner
    from stalesim.cli import main

    run = tmp_path / "async"
    shutil.copytree(RUN, run, ignore=shutil.ignore_patterns("*.html"))
    result = CliRunner().invoke(main, ["report", "replay", str(run)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"wrote {run / 'replay' / 'replay.html'}"
    assert (run / "replay" / "replay.html").read_text() == build_pipeline_page(
        run, run / "replay"
    ).html()
    shutil.rmtree(run / "replay")
    missing = CliRunner().invoke(main, ["report", "replay", str(run)])
    assert missing.exit_code == 2
    assert missing.output.strip() == (
        f"error: {run / 'replay' / 'replay.json'}: no such file (run `stalesim validate replay {run}`)"
    )
