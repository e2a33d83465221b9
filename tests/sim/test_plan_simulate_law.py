"""`stalesim simulate` reads the law at its run's staleness as ratios to the user's on-policy
run, and in the user's units only when the scenario's ``target`` gives their baseline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from stalesim.cli import main
from stalesim.sim.law.readings import readings

SMALL = [
    "--set", "workload.prompts_per_step=8",
    "--set", "workload.group_size=4",
    "--set", "cluster.rollout_engines=2",
    "--set", "algorithm.minibatches_per_step=2",
]  # fmt: skip
BASELINE = ["--set", "target.baseline_lr=1e-6", "--set", "target.baseline_steps=400"]


def _simulate(tmp_path: Path, *extra: str) -> dict:
    args = ["simulate", *SMALL, *extra, "--steps", "6", "--out", str(tmp_path), "--json"]
    result = CliRunner().invoke(main, [*args, "--quiet"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_simulate_reads_the_law_as_multipliers_without_a_baseline(tmp_path: Path) -> None:
    summary = _simulate(tmp_path / "run")
    law, reading = readings()[0].law, summary["law"]
    s = summary["staleness"]["sample_quantiles"]["max"]  # the shipped laws read the max
    assert reading["reading"] == "conservative"
    assert set(reading["readings"]) == {"conservative", "optimistic", "paper"}
    assert reading["staleness_summary"] == "max" and reading["staleness"] == s
    # the baseline is this batch run on-policy: with 2 mini-batches it is 1 version stale
    s0 = reading["baseline_staleness"]
    assert s0 == 1.0
    assert reading["lr_multiplier"] == pytest.approx(float(law.eta_opt_at(s) / law.eta_opt_at(s0)))
    assert reading["lr_multiplier_lo"] <= reading["lr_multiplier"] <= reading["lr_multiplier_hi"]
    steps = float(law.steps_to_target_at(s) / law.steps_to_target_at(s0))
    assert reading["steps_multiplier"] == pytest.approx(steps)
    # the run is its own baseline batch: learner steps scale as the law's steps
    assert reading["learner_steps_multiplier"] == pytest.approx(steps)
    step_s = 3600 / summary["throughput"]["steps_per_h"]
    assert reading["time_per_baseline_step_s"] == pytest.approx(steps * step_s)
    # time relative to the same cluster run synchronously
    assert reading["sync_step_time_s"] > 0
    assert reading["time_to_target_rel"] == pytest.approx(
        steps * step_s / reading["sync_step_time_s"]
    )
    for absolute in ("learning_rate", "time_to_target_s", "learner_steps_to_target"):
        assert absolute not in reading
    assert "optimistic" in reading["readings"] and reading["lr_multiplier_optimistic"] > 0


def test_with_a_baseline_the_answers_are_in_the_users_units(tmp_path: Path) -> None:
    summary = _simulate(tmp_path / "run", *BASELINE)
    reading = summary["law"]
    assert reading["learning_rate"] == pytest.approx(1e-6 * reading["lr_multiplier"])
    assert reading["learner_steps_to_target"] == pytest.approx(
        400 * reading["learner_steps_multiplier"]
    )
    step_s = 3600 / summary["throughput"]["steps_per_h"]
    assert reading["time_to_target_s"] == pytest.approx(reading["learner_steps_to_target"] * step_s)
    assert reading["cost_to_target_usd"] == pytest.approx(
        reading["time_to_target_s"] / 3600 * summary["derived"]["total_gpus"] * 2.99
    )
    assert reading["time_to_target_s_lo"] <= reading["time_to_target_s"]
    assert reading["time_to_target_s"] <= reading["time_to_target_s_hi"]


def test_simulate_table_prints_ratios_or_the_users_numbers(tmp_path: Path) -> None:
    args = ["simulate", *SMALL, "--steps", "3", "--out", str(tmp_path / "a"), "--quiet"]
    runner = CliRunner()
    result = runner.invoke(main, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "law (conservative) at staleness max" in result.stdout
    assert "learning-rate multiplier" in result.stdout
    assert "your" not in result.stdout.split("learning-rate multiplier")[1].split("\n")[0]
    # the distance from what the law was measured on is stated once, at the top
    assert result.stdout.startswith("law: the law was measured on")
    assert result.stdout.count("the law was measured on") == 1
    assert "model 1.54e+09 parameters" not in result.stdout  # the default preset is 7B
    assert "model 7.61e+09 parameters" in result.stdout
    with_baseline = runner.invoke(
        main, [*args[:-1], "--out", str(tmp_path / "b"), *BASELINE, "--quiet"], terminal_width=200
    )
    assert with_baseline.exit_code == 0, with_baseline.output
    assert "× your 1e-06 = " in with_baseline.stdout
    assert "400 × " in with_baseline.stdout


def test_a_bad_law_is_one_line(tmp_path: Path) -> None:
    args = ["simulate", *SMALL, "--steps", "3", "--out", str(tmp_path / "a"), "--quiet"]
    bad = tmp_path / "law.json"
    bad.write_text("{not json")
    result = CliRunner().invoke(main, [*args, "--law", str(bad)])
    assert result.exit_code == 2
    assert "not JSON" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = CliRunner().invoke(main, [*args, "--reading", "hopeful"])
    assert result.exit_code == 2 and "'hopeful' is not one of" in result.stderr


def test_the_baseline_is_the_same_batch_run_on_policy(tmp_path: Path) -> None:
    # with 2 mini-batches the on-policy run itself is 1 version stale: its multipliers are 1
    sync = _simulate(tmp_path / "sync", "--set", "algorithm.mode=sync")["law"]
    assert sync["baseline_staleness"] == 1.0 == sync["staleness"]
    assert sync["lr_multiplier"] == 1.0 and sync["steps_multiplier"] == 1.0
    assert sync["lr_multiplier_lo"] == pytest.approx(1.0)
    assert sync["lr_multiplier_hi"] == pytest.approx(1.0)
    assert sync["time_to_target_rel"] == pytest.approx(1.0)
    # the async run is read against that same baseline staleness
    law = readings()[0].law
    run = _simulate(tmp_path / "async")["law"]
    assert run["baseline_staleness"] == 1.0
    s = run["staleness"]
    assert run["lr_multiplier"] == pytest.approx(float(law.eta_opt_at(s) / law.eta_opt_at(1.0)))
