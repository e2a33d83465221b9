"""The CPU pipeline's runs in verl's trainer form, and the calibration from them alone."""

from __future__ import annotations

import polars as pl
import pytest
from stalesim.sim.calibrate.trainer_logs import log_from_rows
from stalesim.validate.pipeline.log import counterfactual, verl_rows

from tests.evidence import RESULTS

RUNS = RESULTS / "pipeline-cpu"
SCENARIO = RUNS / "counterfactual" / "scenario-sync.yaml"


def test_a_pipeline_run_in_verl_form_keeps_its_step_times_and_lengths() -> None:
    rows = verl_rows(RUNS / "sync")
    steps = pl.read_parquet(RUNS / "sync" / "steps.parquet").sort("step")
    assert [r["step"] for r in rows] == list(range(1, steps.height + 1))
    log = log_from_rows(rows, "verl", "sync")
    # step times add up to the run's end; generation is the learner's wait
    assert log.column("step_s").sum() == pytest.approx(steps["end_s"].to_numpy()[-1])
    assert log.column("gen_s").tolist() == pytest.approx(steps["idle_before_s"].to_list())
    samples = pl.read_parquet(RUNS / "sync" / "samples.parquet").filter(
        pl.col("consumed_step").is_not_null()
    )
    assert log.column("response_mean").mean() == pytest.approx(
        samples["response_tokens"].mean(), rel=1e-3
    )


def test_the_sync_run_calibrated_from_its_logs_reproduces_itself() -> None:
    result = counterfactual(RUNS / "sync", {}, SCENARIO)
    run = result["runs"]["sync (the calibration run)"]
    assert abs(run["samples_per_s_rel"]) <= 0.03
    assert run["sim_staleness_mean"] == 0.0
    # no per-decode-iteration table was read: the decode model is the scenario's roofline,
    # scaled
    assert result["calibration"]["generation"]["scale"] > 1
