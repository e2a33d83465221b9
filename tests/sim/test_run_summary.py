"""The typed run summary: the file users have is unchanged, it reads back, and the simulator's
run and a pipeline run's tables are measured by one definition."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from stalesim.cli import main
from stalesim.common.files import _finite
from stalesim.common.tables import read_table
from stalesim.sim.metrics import RunSummary, measure, read_summary, summarize
from stalesim.sim.presets import load_scenario
from stalesim.sim.run import simulate

from tests.sim.test_trace_golden import CASES, SEED, STEPS

DATA = Path(__file__).resolve().parents[1] / "data" / "summary"


def _keys(value: object) -> object:
    """The key order of every object in a JSON value (values left out)."""
    if isinstance(value, dict):
        return [(k, _keys(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [_keys(v) for v in value]
    return None


def test_default_simulate_writes_the_same_summary_json_key_for_key(tmp_path: Path) -> None:
    """Recorded from ``stalesim simulate`` (default scenario, 50 steps, seed 0) before the
    summary was typed; only the simulator's own wall time may differ."""
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["simulate", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    written = json.loads((out / "summary.json").read_text())
    assert written.pop("wall_s") > 0
    recorded = json.loads((DATA / "default-simulate.json").read_text())
    assert _keys(written) == _keys(recorded)
    assert written == recorded


@pytest.mark.parametrize("mode", list(CASES))
def test_every_modes_summary_is_unchanged(mode: str) -> None:
    """Each mode's rules (drops, dynamic sampling, partial rollouts) measured as before."""
    scenario = load_scenario(None, None, CASES[mode])
    summary = summarize(simulate(scenario, STEPS, SEED), scenario, STEPS, SEED).to_json()
    got = _finite({k: v for k, v in summary.items() if k not in ("scenario", "derived", "wall_s")})
    recorded = json.loads((DATA / "modes.json").read_text())[mode]
    assert _keys(got) == _keys(recorded)
    assert got == recorded


def test_the_summary_reads_back_from_its_json(tmp_path: Path) -> None:
    scenario = load_scenario(None, None, CASES["async_filter"])
    summary = summarize(simulate(scenario, STEPS, SEED), scenario, STEPS, SEED)
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary.to_json()))
    back = read_summary(path)
    assert back == summary
    assert back.staleness.sample_quantiles.max == summary.staleness.sample_quantiles.max
    assert back.dropped_samples == sum(summary.dropped.values()) > 0
    assert RunSummary.model_validate(summary.to_json()).to_json() == summary.to_json()


@pytest.mark.parametrize(
    ("edit", "names"),
    [
        (lambda d: d.pop("throughput"), "throughput"),
        (lambda d: d["staleness"]["sample_quantiles"].update(p99="high"), "p99"),
        (lambda d: d.update(surplus=1), "surplus"),
    ],
)
def test_a_damaged_summary_is_refused_in_one_line(tmp_path: Path, edit, names: str) -> None:
    scenario = load_scenario(None, None, CASES["async"])
    data = summarize(simulate(scenario, STEPS, SEED), scenario, STEPS, SEED).to_json()
    edit(data)
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError) as info:
        read_summary(path)
    message = str(info.value)
    assert message.startswith(str(path)) and names in message and "\n" not in message


def test_row_flattens_the_summary_the_plan_and_the_variants_read() -> None:
    from stalesim.sim.plan.evaluate import SIM_COLUMNS, simulate_one
    from stalesim.sim.variants import SUMMARY_COLUMNS

    scenario = load_scenario(None, None, CASES["one_step"])
    summary = summarize(simulate(scenario, STEPS, SEED), scenario, STEPS, SEED)
    row = summary.row()
    assert set(SIM_COLUMNS) <= set(row) and set(SUMMARY_COLUMNS) <= set(row)
    assert row["step_time_s"] == pytest.approx(3600.0 / summary.throughput.steps_per_h)
    assert row["dropped_samples"] == sum(summary.dropped.values()) > 0
    assert row["gpus"] == summary.derived["total_gpus"]
    plan = simulate_one(scenario.model_dump_json(), STEPS, SEED)
    for name in SIM_COLUMNS:
        if name != "sim_wall_s":
            assert plan[name] == row[name], name


@pytest.mark.parametrize("mode", ["async", "partial_rollout", "async_filter"])
def test_one_trace_through_the_simulator_and_the_pipeline_path_measures_the_same(
    tmp_path: Path, mode: str
) -> None:
    """The simulator's trace, written as a pipeline run's tables and read back through the
    replay's checked reader, measures exactly as the simulator's own summary; the replay's
    comparison of the two finds no error."""
    from stalesim.validate.pipeline.replay import RUN_TABLES, compare, replay_metrics, run_trace

    scenario = load_scenario(None, None, CASES[mode])
    trace = simulate(scenario, STEPS, SEED)
    tables = {}
    for name in ("samples", "steps", "busy", "queue"):
        path = tmp_path / f"{name}.parquet"
        frame = getattr(trace, name)
        if name == "steps":  # a pipeline run's learner also reports its publish time
            frame = frame.with_columns(publish_s=0.0)
        frame.write_parquet(path)
        tables[name] = read_table(path, RUN_TABLES[name])
    simulator = summarize(trace, scenario, STEPS, SEED)
    pipeline = measure(run_trace(tables))
    for section in ("throughput", "step_time_s", "staleness", "dropped", "unconsumed_at_end"):
        assert getattr(pipeline, section) == getattr(simulator, section), section
    assert pipeline.mean_queue_groups == simulator.mean_queue_groups
    assert pipeline.utilisation.learner == simulator.utilisation.learner
    assert pipeline.samples_generated == simulator.samples_generated
    assert pipeline.simulated_s == simulator.simulated_s
    # what only the simulator knows (engine and GPU counts, price) is unknown, not guessed
    assert pipeline.derived is None and pipeline.gpu_hours is None
    assert pipeline.utilisation.rollout is None
    real, sim = replay_metrics(run_trace(tables)), replay_metrics(trace)
    assert real == sim
    errors = compare(real, sim)["errors"]
    assert all(value == 0 for value in errors.values()), errors
