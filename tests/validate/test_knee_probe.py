"""The knee probe's estimators on cases with a known answer, and the probe on a tiny real run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from stalesim.validate.law.knee_probe import (
    ProbeSettings,
    _Recorder,
    alignment,
    crossing,
    decay_scale,
    power_exponent,
    predict_knee,
    prediction_from_tables,
    stale_limited_rate,
)


def _noisy(mean: np.ndarray, n: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return mean[None, :] + sigma * rng.standard_normal((n, mean.size))


def test_alignment_removes_the_noise_bias_of_a_plain_cosine() -> None:
    rng = np.random.default_rng(0)
    dim, phi = 4000, math.acos(0.6)
    fresh = np.zeros(dim)
    fresh[0] = 1.0
    stale = np.zeros(dim)
    stale[0], stale[1] = 1.5 * math.cos(phi), 1.5 * math.sin(phi)  # cos 0.6, 1.5x longer
    # per-batch noise norm ~ 0.1 * sqrt(4000) = 6.3: six times the signal
    got, naive = [], []
    for _ in range(20):
        s, f = _noisy(stale, 16, 0.1, rng), _noisy(fresh, 16, 0.1, rng)
        al = alignment(s, f)
        got.append(al.cosine)
        sm, fm = s.mean(0), f.mean(0)
        naive.append(sm @ fm / np.linalg.norm(sm) / np.linalg.norm(fm))
        assert math.isclose(al.norm2, 2.25, abs_tol=0.4)
        assert math.isclose(al.fresh_norm2, 1.0, abs_tol=0.4)
    assert abs(np.mean(got) - 0.6) < 0.05
    assert np.mean(naive) < 0.4  # the plain cosine of means is pulled towards 0 by the noise
    # relative error ‖g_k − g_0‖ / ‖g_0‖ = sqrt(2.25 + 1 − 2 · 1.5 · 0.6) = 1.2
    s, f = _noisy(stale, 400, 0.1, rng), _noisy(fresh, 400, 0.1, rng)
    assert math.isclose(alignment(s, f).rel_error, 1.2, abs_tol=0.05)
    assert alignment(f, f, same=True).cosine == pytest.approx(1.0)
    with pytest.raises(ValueError, match="even number"):
        alignment(s[:3], f)


def test_crossing_interpolates_and_flags_a_curve_that_never_falls() -> None:
    assert crossing([0, 1, 2], [1.0, 0.75, 0.25]) == (1.5, True)
    assert crossing([0, 1, 2], [1.0, math.nan, 0.0]) == (1.0, True)
    assert crossing([0, 1, 2], [1.0, 0.9, 0.8]) == (2.0, False)
    assert decay_scale([0, 1, 2], [1.0, math.exp(-0.5), math.exp(-1.0)]) == pytest.approx(2.0)
    assert decay_scale([0, 1], [1.0, 1.01]) == math.inf


def test_drift_exponents_of_straight_and_random_walk_motion() -> None:
    rng = np.random.default_rng(1)
    steps = rng.standard_normal((4000, 2000))
    walk = np.cumsum(steps, axis=0)
    lags = [1, 2, 4, 8, 16]
    dist = [np.linalg.norm(walk[2000] - walk[2000 - k]) for k in lags]
    assert power_exponent(lags, dist) == pytest.approx(0.5, abs=0.05)
    assert power_exponent(lags, [3.0 * k for k in lags]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="two positive"):
        power_exponent([1.0], [1.0])


def test_the_bound_puts_the_knee_where_the_stale_rate_meets_eta0_and_its_slope_at_minus_1_over_a():
    r, g0, eta0, a = 0.3, 80.0, 5e-4, 0.8
    pred = predict_knee(r, g0, eta0, a, k_half=5.0, gamma=0.6)
    assert stale_limited_rate(pred.s_c_bound, r, g0, eta0, a) == pytest.approx(eta0)
    s1, s2 = 2 * pred.s_c_bound, 4 * pred.s_c_bound
    slope = math.log(
        stale_limited_rate(s2, r, g0, eta0, a) / stale_limited_rate(s1, r, g0, eta0, a)
    ) / math.log(2)
    assert slope == pytest.approx(pred.slope_bound) == pytest.approx(-1.25)
    assert pred.slope_drift == pytest.approx(-0.75)
    with pytest.raises(ValueError, match="G_upd"):
        predict_knee(r, 0.0, eta0, a, 1.0, 1.0)


def _circle_tables(omega_per_lr: float, radius: float, eta0: float, rng: np.random.Generator):
    """The analytic quadratic case: L(θ) = ½‖θ − θ*‖², the weights circling θ* at radius r
    with angle ω = omega_per_lr · eta per step. The gradient at θ_{v−k} is θ_{v−k} − θ*, so the
    stale gradient's cosine is cos(ωk) at distance 2r sin(ωk/2): cosine 1/2 at ωk = π/3, at the
    distance r. One step's drift is 2r sin(ω/2)."""
    dim = 50
    omega = omega_per_lr * eta0
    rows = []
    for version in (40, 80):

        def theta(v: int) -> np.ndarray:
            return radius * np.r_[math.cos(omega * v), math.sin(omega * v), np.zeros(dim - 2)]

        fresh = _noisy(theta(version), 200, 0.05, rng)
        for k in range(17):
            al = alignment(_noisy(theta(version - k), 200, 0.05, rng), fresh, same=k == 0)
            rows.append({"seed": 0, "version": version, "lag": k,
                         "distance": float(np.linalg.norm(theta(version) - theta(version - k))),
                         "cosine": al.cosine, "rel_error": al.rel_error, "norm2": al.norm2,
                         "fresh_norm2": al.fresh_norm2})  # fmt: skip
    drift = [
        {"seed": 0, "lr": lr, "step_drift": 2 * radius * math.sin(omega_per_lr * lr / 2),
         "g_upd": 2 * radius * math.sin(omega_per_lr * lr / 2) / lr, "steps": 50}
        for lr in (eta0 / 2, eta0, 2 * eta0)
    ]  # fmt: skip
    return rows, drift


def test_the_probe_tables_of_the_analytic_quadratic_give_its_knee() -> None:
    rng = np.random.default_rng(2)
    eta0, omega_per_lr, radius = 5e-4, 200.0, 2.0  # ω = 0.1 per step at eta0
    rows, drift = _circle_tables(omega_per_lr, radius, eta0, rng)
    pred = prediction_from_tables(rows, drift, eta0, (4e-4, 6e-4))
    omega = omega_per_lr * eta0
    assert pred["r_batch"] == pytest.approx(radius, rel=0.05)
    assert pred["s_c"] == pytest.approx(1 / (2 * math.sin(omega / 2)), rel=0.05)  # 10.0
    assert pred["s_c_drift"] == pytest.approx(math.pi / (3 * omega), rel=0.05)  # 10.5
    assert pred["slope"] == pytest.approx(-1.0, abs=0.01)
    # the chord 2r sin(ωk/2) bends below straight-line motion by lag 16
    chord = [2 * radius * math.sin(omega * k / 2) for k in range(1, 17)]
    assert pred["gamma"] == pytest.approx(power_exponent(range(1, 17), chord), abs=1e-9)
    assert 0.9 < pred["gamma"] < 1.0
    assert not pred["any_r_batch_bound"] and not pred["s_c_is_lower_bound"]
    lo, hi = pred["s_c_interval"]
    assert lo < pred["s_c"] < hi and hi / lo == pytest.approx(1.5, rel=0.1)
    # a rate too slow for the cosine to fall by lag 16: the knee is only bounded from below
    slow_rows, slow_drift = _circle_tables(20.0, radius, eta0, rng)
    slow = prediction_from_tables(slow_rows, slow_drift, eta0)
    assert slow["s_c_is_lower_bound"] and slow["s_c_interval"][1] is None
    assert slow["s_c"] <= 1 / (2 * math.sin(20.0 * eta0 / 2))


@pytest.fixture
def tiny_train(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("STALESIM_CACHE_DIR", str(tmp_path / "cache"))
    from stalesim.validate.train.presets import preset_sweep

    train = preset_sweep("law-horizon-ns").train
    return train.model_validate(
        train.model_dump()
        | {
            "policy": {"n_layer": 1, "n_head": 2, "n_embd": 16},
            "task": {"n_digits": 3, "base": 8},
            "warm_start": {"steps": 5, "batch_size": 32},
            "prompts_per_step": 4,
            "samples_per_prompt": 4,
            "warmup_steps": 2,
            "eval_prompts": 4,
        }
    )


def test_watching_a_run_leaves_it_unchanged_and_the_distances_are_the_recorded_drift(
    tiny_train,
) -> None:
    from stalesim.validate.law.knee_probe import _on_policy_run
    from stalesim.validate.train.tasks import SortTask

    settings = ProbeSettings(eta0=3e-3, seeds=[0], checkpoints=[6], max_lag=3, batches=2,
                             batch_prompts=4, drift_steps=5, warmup_steps=2)  # fmt: skip
    rec = _Recorder(tiny_train, SortTask(tiny_train.task), settings, 0)
    watched = _on_policy_run(tiny_train, 3e-3, 0, 8, rec)
    alone = _on_policy_run(tiny_train, 3e-3, 0, 8, None)
    assert [r["reward_mean"] for r in watched.steps] == [r["reward_mean"] for r in alone.steps]
    assert [r["loss"] for r in watched.steps] == [r["loss"] for r in alone.steps]
    table = {row["lag"]: row for row in rec.table}
    assert sorted(table) == [0, 1, 2, 3]
    assert table[0]["distance"] == 0.0 and table[0]["cosine"] == pytest.approx(1.0)
    assert table[1]["distance"] == pytest.approx(dict(rec.drift)[6], rel=1e-12)
    assert table[3]["distance"] <= sum(dict(rec.drift)[v] for v in (4, 5, 6)) + 1e-12


def test_the_command_writes_a_prediction_and_refuses_bad_input_in_one_line(
    tiny_train, tmp_path: Path
) -> None:
    from stalesim.cli import main

    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(json.dumps({"train": {k: tiny_train.model_dump()[k] for k in (
        "policy", "task", "warm_start", "prompts_per_step", "samples_per_prompt",
        "warmup_steps", "eval_prompts")}}))  # fmt: skip
    args = ["validate", "knee-probe", "--set", f"@{tiny}", "--eta0", "3e-3", "--seeds", "0",
            "--checkpoints", "6", "--max-lag", "3", "--batches", "8", "--batch-prompts", "16",
            "--drift-steps", "5", "--out", str(tmp_path / "out"), "--quiet"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "prediction.json").read_text())
    assert record["schema"] == "stalesim.knee-prediction/1"
    assert len(record["alignment"]) == 4 and len(record["drift"]) == 3
    assert sorted(r["lr"] for r in record["drift"]) == pytest.approx([1.5e-3, 3e-3, 6e-3])
    assert record["test"]["knee_band_factor"] == 2.0
    base = [a for a in args if a != "--quiet"][:-2]  # without --out
    eta = base.index("--eta0")
    no_eta = base[:eta] + base[eta + 2 :]
    for given, word in (
        ([*base, "--checkpoints", "3"], "--checkpoints"),
        ([*base, "--batches", "3"], "--batches"),
        ([*no_eta, "--eta0", "-1"], "--eta0"),
        ([*base, "--drift-factors", "2"], "--drift-factors"),
        ([*base, "--drift-steps", "50"], "--drift-steps"),
        ([*base, "--seeds", "a"], "--seeds"),
        ([*no_eta, "--law", str(tmp_path / "none.json")], "--law"),
    ):
        run = CliRunner().invoke(main, [*given, "--out", str(tmp_path / "bad")])
        assert run.exit_code == 2, (given, run.output)
        assert word in run.output and len(run.output.strip().splitlines()) == 1
        assert not (tmp_path / "bad").exists()


def test_the_probe_runs_on_every_task_family_its_preset_names(tiny_train, monkeypatch) -> None:
    """The probe builds the preset's own task: on the exact-match addition task, whose answer
    is one digit longer than its operands, it measures every lag, and the lag-0 alignment is the
    fresh gradient itself. (A tiny binary-reward run is too noisy to read a knee from, so the
    tables are taken before the prediction.)"""
    from stalesim.validate.law import knee_probe

    monkeypatch.setattr(
        knee_probe, "prediction_from_tables", lambda rows, drift, *_, **__: {"rows": rows}
    )
    add = tiny_train.model_validate(
        tiny_train.model_dump()
        | {
            "task": {"kind": "add", "n_digits": 2, "base": 3},
            # enough supervised steps that some groups hold a pass: a binary reward with none
            # gives every sample the same advantage, and every gradient is zero
            "warm_start": {"steps": 200, "batch_size": 32},
        }
    )
    settings = ProbeSettings(eta0=3e-3, seeds=[0], checkpoints=[6], max_lag=3, batches=8,
                             batch_prompts=16, drift_steps=5)  # fmt: skip
    record = knee_probe.run_probe(add, settings)
    lags = {row["lag"]: row for row in record["alignment"]}
    assert sorted(lags) == [0, 1, 2, 3]
    assert lags[0]["distance"] == 0.0
    assert lags[0]["cosine"] == pytest.approx(1.0)
