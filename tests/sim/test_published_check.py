"""The published-setups check: its files are consistent and its arithmetic is right.

No test here asserts that a prediction is close to a measurement: that would fit the simulator
to the check it exists to pass."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from stalesim.cli import main
from stalesim.common.config_file import ConfigError
from stalesim.sim.derived import derive
from stalesim.sim.metrics import measure
from stalesim.sim.published_check import (
    MECHANISMS,
    load_measurements,
    load_published,
    predict_pair,
    published_folder,
    scenario_names,
)
from stalesim.sim.run import simulate
from stalesim.sim.scenario import check_feasible

from tests.evidence import RESULTS


@pytest.mark.parametrize("name", scenario_names())
def test_every_published_scenario_loads_and_is_feasible(name: str) -> None:
    scenario = load_published(name)
    check_feasible(scenario, derive(scenario))
    assert scenario.name == name
    text = (published_folder() / f"{name}.yaml").read_text()
    # every file cites its source and says what it left at the defaults
    assert "Source:" in text
    assert "Not stated" in text


def test_measurements_name_a_source_and_existing_scenarios() -> None:
    names = set(scenario_names())
    measurements = load_measurements()
    assert len(measurements) >= 2
    used = set()
    for m in measurements:
        assert m.source.strip() and m.url.startswith("https://")
        assert m.sync_scenario in names and m.async_scenario in names
        assert m.speedup == pytest.approx(m.sync_step_s / m.async_step_s)
        used |= {m.sync_scenario, m.async_scenario}
    assert used == names  # no orphan scenario


def test_the_time_models_never_read_the_measurements() -> None:
    # The measurements file is data for the check only: no module but the check (and its
    # command's help text) names it.
    import pathlib

    import stalesim.cli as cli
    import stalesim.sim as sim

    readers = [
        p.name
        for package in (sim, cli)
        for p in pathlib.Path(package.__file__).parent.glob("*.py")
        if "measurements.yaml" in p.read_text() or "MEASUREMENTS_FILE" in p.read_text()
    ]
    assert sorted(readers) == ["published.py", "published_check.py"]


def test_a_measurement_naming_a_missing_scenario_is_refused(monkeypatch, tmp_path) -> None:
    from stalesim.sim import published_check

    data = yaml.safe_load((published_folder() / "measurements.yaml").read_text())
    data["measurements"][0]["async_scenario"] = "no-such-setup"
    for p in published_folder().iterdir():
        (tmp_path / p.name).write_text(p.read_text())
    (tmp_path / "measurements.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setattr(published_check, "published_folder", lambda: tmp_path)
    with pytest.raises(ConfigError, match="no-such-setup"):
        published_check.load_measurements()


def test_predicted_speedup_is_sync_over_async_step_time_from_the_traces() -> None:
    m = load_measurements()[-1]  # the smallest pair (16 GPUs)
    sync, asyn = load_published(m.sync_scenario), load_published(m.async_scenario)
    steps = 6
    p = predict_pair(sync, asyn, steps, seed=3)
    # by hand from the traces: step ends, drop the warm-up step (6 // 10 -> 1), mean cadence
    cadences = []
    for scenario in (sync, asyn):
        ends = np.sort(simulate(scenario, steps, 3).steps["end_s"].to_numpy())
        cadences.append(float(np.mean(np.diff(ends))))  # steps 1..5 after the warm-up step 0
    assert p.sync_step_s == pytest.approx(cadences[0], rel=1e-12)
    assert p.async_step_s == pytest.approx(cadences[1], rel=1e-12)
    assert p.speedup == pytest.approx(cadences[0] / cadences[1], rel=1e-12)
    assert measure(simulate(sync, steps, 3)).step_time_s.mean == pytest.approx(
        cadences[0], rel=1e-12
    )


def test_mechanism_switches_are_valid_overrides() -> None:
    # every switch loads on at least one published scenario (so none is silently dead)
    for mech in MECHANISMS:
        loaded = 0
        for name in scenario_names():
            for overrides in (mech.sync, mech.asynchronous):
                if not overrides:
                    continue
                try:
                    load_published(name, overrides)
                    loaded += 1
                except ConfigError:
                    pass
        assert loaded > 0, mech.name


def test_check_published_command_writes_its_files(tmp_path) -> None:
    out = tmp_path / "check"
    result = CliRunner().invoke(
        main,
        ["check", "published", "--steps", "3", "--no-mechanisms", "--quiet", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    data = json.loads((out / "published_check.json").read_text())
    assert len(data["pairs"]) == len(load_measurements())
    for row in data["pairs"]:
        assert row["predicted_speedup"] == pytest.approx(
            row["predicted_sync_step_s"] / row["predicted_async_step_s"]
        )
        assert row["speedup_rel_error"] == pytest.approx(
            row["predicted_speedup"] / row["measured_speedup"] - 1
        )
        if row["calibrated_speedup"] is not None:
            assert row["calibrated_speedup"] == pytest.approx(
                row["calibrated_sync_step_s"] / row["calibrated_async_step_s"]
            )
            assert row["calibrated_speedup_rel_error"] == pytest.approx(
                row["calibrated_speedup"] / row["measured_speedup"] - 1
            )
    assert any(row["calibrated_speedup"] is not None for row in data["pairs"])
    assert (out / "published_check.csv").read_text().startswith("id,")
    html = (out / "report.html").read_text()
    assert "Predicted vs measured" in html and data["pairs"][0]["id"] in html


def test_check_published_bad_steps_is_one_line_error(tmp_path) -> None:
    result = CliRunner().invoke(
        main, ["check", "published", "--steps", "1", "--quiet", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "--steps=1" in result.output
    assert not (tmp_path / "published_check.json").exists()


def test_report_published_rerenders_the_committed_result(tmp_path) -> None:
    import shutil

    committed = RESULTS / "published-check"
    shutil.copy(committed / "published_check.json", tmp_path / "published_check.json")
    result = CliRunner().invoke(main, ["report", "published", str(tmp_path)])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "report.html").read_text()
    data = json.loads((tmp_path / "published_check.json").read_text())
    for row in data["pairs"]:
        assert row["id"] in html
    missing = CliRunner().invoke(main, ["report", "published", str(tmp_path / "nope")])
    assert missing.exit_code == 2


def test_a_drop_filter_below_the_learners_lead_is_refused_not_run_forever() -> None:
    # Found by this check's "drop filter" rerun: streaming with M=4, K=4 asks for chunks up to
    # K-1 = 3 versions past the engines' weights; a filter of 2 dropped and relaunched them
    # forever (the run never ended and grew without bound). At 3 it runs.
    from stalesim.sim.presets import load_scenario

    base = (
        "algorithm.minibatches_per_step=4",
        "algorithm.streaming=true",
        "algorithm.publish_interval=4",
        "algorithm.max_staleness=4",
    )
    with pytest.raises(ConfigError, match=r"staleness_filter=2.*allowed: >= 3"):
        load_scenario(None, None, (*base, "algorithm.staleness_filter=2"))
    trace = simulate(load_scenario(None, None, (*base, "algorithm.staleness_filter=3")), 3, 0)
    assert trace.steps.height == 3
    # batch consumption (M=4, K=4) needs M-1 + K - gcd(M, K) = 3 too
    batch = tuple(o for o in base if "streaming" not in o)
    with pytest.raises(ConfigError, match="allowed: >= 3"):
        load_scenario(None, None, (*batch, "algorithm.staleness_filter=2"))


def test_sync_breakdowns_hold_only_synchronous_figures_of_measured_pairs() -> None:
    from stalesim.sim.published_check import load_breakdowns

    measurements = load_measurements()
    sync_sides = {m.sync_scenario for m in measurements}
    async_sides = {m.async_scenario for m in measurements}
    breakdowns = load_breakdowns()
    assert {"verl-colocated-sync-128", "verl-one-step-colocated-sync-16"} <= set(breakdowns)
    for name, b in breakdowns.items():
        assert name in sync_sides and name not in async_sides
        assert load_published(name).algorithm.mode in ("sync", "sync_colocated")
        assert b.url.startswith("https://") and b.source.strip()
        # the breakdown's step time is the measured synchronous step time of its pairs
        for m in measurements:
            if m.sync_scenario == name:
                assert b.metrics["timing_s/step"] == pytest.approx(m.sync_step_s)


def test_calibration_from_a_breakdown_reproduces_its_phases() -> None:
    from stalesim.sim.calibrate.logs import with_fragment
    from stalesim.sim.published_check import calibrate_from_breakdown, load_breakdowns

    b = load_breakdowns()["verl-one-step-colocated-sync-16"]
    cal = calibrate_from_breakdown(b)
    scenario = with_fragment(load_published(b.scenario), cal.fragment())
    trace = simulate(scenario, 4, 0)
    busy = trace.busy.filter(trace.busy["pool"] == "learner")
    per_step = {
        kind: float(
            (
                busy.filter(busy["kind"] == kind)["end_s"]
                - busy.filter(busy["kind"] == kind)["start_s"]
            ).sum()
        )
        / 4
        for kind in ("old_logprob", "update")
    }
    # the learner's phases come back as published (the step's token count varies a little
    # from step to step around the scenario's assumed lengths the rates were fitted at)
    assert per_step["update"] == pytest.approx(b.metrics["timing_s/update_actor"], rel=0.1)
    assert per_step["old_logprob"] == pytest.approx(b.metrics["timing_s/old_log_prob"], rel=0.1)
    gen = trace.steps["idle_before_s"].to_numpy()
    assert gen.mean() == pytest.approx(b.metrics["timing_s/gen"], rel=0.1)
