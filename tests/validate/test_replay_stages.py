"""The replay's stage figures, its pooling over seeds and its exit code, on traces built by
hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from stalesim.validate.pipeline.replay import pool_metrics
from stalesim.validate.pipeline.replay_stages import stage_metrics, throughput_standard_error


def trace(n: int = 20, cadence: float = 0.1, idle: float = 0.02) -> dict[str, pl.DataFrame]:
    """``n`` learner steps ending every ``cadence`` s, each waiting ``idle`` s for its batch;
    batch k launched 50 ms before step k's end and completed at it; one engine decoding from 0
    to the last step's end."""
    ends = cadence * (np.arange(n) + 1)
    steps = pl.DataFrame(
        {
            "step": np.arange(n),
            "start_s": ends - (cadence - idle),
            "end_s": ends,
            "idle_before_s": np.full(n, idle),
        }
    )
    samples = pl.DataFrame(
        {
            "consumed_step": np.repeat(np.arange(n), 2),
            "group_launch_s": np.repeat(ends - 0.05, 2),
            "group_complete_s": np.repeat(ends - cadence + 0.05, 2) + np.tile([0.0, 0.05], n),
        }
    )
    busy = pl.DataFrame(
        {"pool": ["rollout"], "kind": ["decode"], "start_s": [0.0], "end_s": [float(ends[-1])]}
    )
    return {"samples": samples, "steps": steps, "busy": busy}


def test_the_stage_figures_of_a_regular_trace_are_its_construction() -> None:
    t = trace()
    m = stage_metrics(t["samples"], t["steps"], t["busy"])
    assert m["cadence_s"] == pytest.approx(0.1)
    assert m["cadence_cv"] == pytest.approx(0.0, abs=1e-9)
    assert m["learner_idle_s"] == pytest.approx(0.02)
    assert m["learner_work_s"] == pytest.approx(0.08)
    assert m["step_s"] == pytest.approx(0.08)
    assert m["step_s_lag1"] is None  # constant step times have no correlation
    # launch at end - 0.05, last group complete at end - 0.1 + 0.1: 0.05 s per batch
    assert m["batch_generation_s"] == pytest.approx(0.05)
    # the engine never idles: its one span, clipped to the window, is one cadence per step
    assert m["rollout_decode_per_step_s"] == pytest.approx(0.1)


def test_alternating_step_times_have_lag1_autocorrelation_minus_one() -> None:
    t = trace()
    steps = t["steps"].with_columns(
        start_s=pl.col("end_s") - pl.Series(np.where(np.arange(20) % 2, 0.05, 0.07))
    )
    m = stage_metrics(t["samples"], steps, t["busy"])
    assert m["step_s_lag1"] == pytest.approx(-1.0)
    assert m["step_s_cv"] == pytest.approx(0.01 / 0.06, rel=1e-6)


def _steps(cadence: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame({"step": np.arange(cadence.size), "end_s": np.cumsum(cadence)})


def test_the_throughput_standard_error_is_the_mean_s_for_independent_steps() -> None:
    rng = np.random.default_rng(1)
    cadence = rng.gamma(4.0, 0.025, 2000)  # mean 0.1, CV 0.5
    se = throughput_standard_error(_steps(cadence))
    window = np.diff(np.cumsum(cadence)[199:])  # the steady-state cadences
    expected = window.std() / window.mean() / np.sqrt(window.size)
    assert se == pytest.approx(expected, rel=0.15)


def test_slowly_drifting_steps_pin_their_throughput_less_than_independent_ones() -> None:
    rng = np.random.default_rng(2)
    levels = np.repeat(rng.gamma(4.0, 0.025, 30), 20)  # the machine's speed, held 20 steps
    shuffled = rng.permutation(levels)
    drifting = throughput_standard_error(_steps(levels))
    independent = throughput_standard_error(_steps(shuffled))
    assert drifting > 2 * independent


def test_too_short_a_run_has_no_standard_error() -> None:
    assert throughput_standard_error(_steps(np.full(15, 0.1))) is None


def test_pooling_means_the_numbers_and_mixes_the_distributions() -> None:
    pooled = pool_metrics(
        [
            {"samples_per_s": 100.0, "idle": None, "hist": {0.0: 1.0}},
            {"samples_per_s": 300.0, "idle": 0.5, "hist": {0.0: 0.5, 1.0: 0.5}},
        ]
    )
    assert pooled["samples_per_s"] == 200.0
    assert pooled["idle"] is None
    assert pooled["hist"] == {0.0: 0.75, 1.0: 0.25}


@pytest.mark.parametrize(("met", "code"), [(True, 0), (False, 1)])
def test_replay_exits_one_when_a_target_is_missed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, met: bool, code: int
) -> None:
    import stalesim.reports.pipeline_page as page
    import stalesim.validate.pipeline.replay as replay
    from stalesim.cli import main

    t = trace()
    stages = stage_metrics(t["samples"], t["steps"], t["busy"])
    figures = {
        "samples_per_s": 1.0,
        "steps_per_s": 1.0,
        "staleness_mean": 1.0,
        "staleness_token_mean": 1.0,
        "learner_idle_fraction": 0.1,
        "queue_mean_groups": 1.0,
    }
    errors = {
        "samples_per_s_rel": 0.0 if met else 0.05,
        "steps_per_s_rel": 0.0 if met else 0.05,
        "staleness_mean_abs": 0.0,
        "staleness_token_mean_abs": 0.0,
        "ks_samples": 0.0,
        "ks_tokens": 0.0,
        "learner_idle_fraction_abs": 0.0,
        "queue_mean_groups_abs": 0.0,
    }
    result = {
        "mode": "async",
        "steps": 20,
        "seeds": [0],
        "real": figures,
        "sim": figures,
        "errors": errors,
        "targets": replay.TARGETS,
        "met": {"throughput": met, "staleness_mean": True, "ks": True},
        "per_seed": [{"seed": 0, **errors}],
        "stages": {"real": stages, "sim": stages},
        "real_throughput_standard_error": 0.05,
    }
    monkeypatch.setattr(replay, "replay", lambda *a, **k: result)
    monkeypatch.setattr(page, "write_pipeline_page", lambda *a: tmp_path / "replay.html")
    out = CliRunner().invoke(main, ["validate", "replay", str(tmp_path)])
    assert out.exit_code == code, out.output
    assert ("throughput met" if met else "throughput MISSED") in out.output
    assert "learner step cadence (ms)" in out.output
