"""`stalesim simulate` reads the law at its run's staleness, as a plan does for a candidate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from stalesim.cli import main
from stalesim.sim.law import default_law

SMALL = [
    "--set", "workload.prompts_per_step=8",
    "--set", "workload.group_size=4",
    "--set", "cluster.rollout_engines=2",
    "--set", "algorithm.minibatches_per_step=2",
]  # fmt: skip


def test_simulate_summary_carries_the_law_columns(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["simulate", *SMALL, "--steps", "6", "--out", str(out), "--json", "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    law, reading = default_law(), summary["law"]
    s = summary["staleness"]["sample_quantiles"]["max"]  # the shipped law reads the max
    assert reading["staleness_summary"] == "max" and reading["staleness"] == s
    assert reading["eta_opt"] == pytest.approx(float(law.eta_opt_at(s)))
    assert reading["eta_opt_lo"] <= reading["eta_opt"] <= reading["eta_opt_hi"]
    # the run is its own reference batch: learner steps = the law's optimizer steps / M
    assert reading["learner_steps_to_target"] == pytest.approx(float(law.steps_to_target_at(s)) / 2)
    step_s = 3600 / summary["throughput"]["steps_per_h"]
    assert reading["time_to_target_s"] == pytest.approx(reading["learner_steps_to_target"] * step_s)
    assert reading["cost_to_target_usd"] == pytest.approx(
        reading["time_to_target_s"] / 3600 * summary["derived"]["total_gpus"] * 2.99
    )
    page = (out / "report.html").read_text()
    assert f'data-label="recommended learning rate" data-value="{reading["eta_opt"]!r}"' in page


def test_simulate_table_shows_the_law_and_a_bad_law_is_one_line(tmp_path: Path) -> None:
    args = ["simulate", *SMALL, "--steps", "3", "--out", str(tmp_path / "a"), "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "law: learning rate at staleness max" in result.stdout
    bad = tmp_path / "law.json"
    bad.write_text("{not json")
    result = CliRunner().invoke(main, [*args, "--law", str(bad)])
    assert result.exit_code == 2
    assert "not JSON" in result.stderr and len(result.stderr.strip().splitlines()) == 1
