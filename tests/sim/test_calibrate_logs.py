"""stalesim calibrate --from: trainer logs in, a scenario fragment out.

The recorded logs in tests/data/logs are made in each framework's own format from a known
ground truth (their README says how); the round trip calibrates logs that the simulator itself
wrote in verl's metric names.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from stalesim.cli import main
from stalesim.common.config_file import ConfigError
from stalesim.sim.calibrate.logs import calibrate_log, cut_mean, sigma_from_clip, uncut_mean
from stalesim.sim.calibrate.trainer_logs import read_log, verl_metrics_from_trace, write_verl_jsonl
from stalesim.sim.derived import derive
from stalesim.sim.presets import load_scenario
from stalesim.sim.run import simulate

LOGS = Path(__file__).parents[1] / "data" / "logs"
SCENARIO = LOGS / "scenario-sync.yaml"
TRUTH = json.loads((LOGS / "truth.json").read_text())


def _calibrate(framework: str, path: Path, sim_steps: int = 3):
    return calibrate_log(
        read_log(path, framework), load_scenario(str(SCENARIO)), sim_steps=sim_steps
    )


@pytest.mark.parametrize(
    ("framework", "path"),
    [("verl", LOGS / "verl-grpo.jsonl"), ("areal", LOGS / "areal-tensorboard")],
)
def test_logs_with_token_counts_recover_the_ground_truth(framework: str, path: Path) -> None:
    cal = _calibrate(framework, path)
    learner = cal.learner.coefficients
    # 2% noise per phase over 24 steps; the fixed 0.5 s is ~1% of an update and folds into
    # the rate when the token counts cannot separate it
    assert learner["train_gpu_s_per_token"] == pytest.approx(
        TRUTH["train_gpu_s_per_token"], rel=0.03
    )
    assert learner["forward_gpu_s_per_token"] == pytest.approx(
        TRUTH["forward_gpu_s_per_token"], rel=0.03
    )
    w = cal.workload
    assert w.response_mean == pytest.approx(TRUTH["response_mean"], rel=0.03)
    assert w.sigma == pytest.approx(TRUTH["response_sigma"], abs=0.05)
    assert w.growth == pytest.approx(TRUTH["response_growth_per_step"], abs=0.002)
    assert w.prompt_tokens == pytest.approx(TRUTH["prompt_mean"], abs=5)
    # the generation fit matches the logged mean generation time of the simulated steps
    assert cal.generation.simulated_mean_s == pytest.approx(
        cal.generation.measured_mean_s, rel=0.01
    )


def test_openrlhf_wandb_export_reads_its_prefixed_keys() -> None:
    cal = _calibrate("openrlhf", LOGS / "openrlhf-wandb-export.csv")
    log = read_log(LOGS / "openrlhf-wandb-export.csv", "openrlhf")
    assert log.keys["update_s"] == "train/timing/ppo_train"
    assert log.keys["forward_s"] == "train/timing/make_experience"
    assert log.column("step").tolist() == list(range(1, 25))
    # no token count, no prompt length in OpenRLHF's metrics: the scenario's 512-token prompts
    # stand in for the true ~400, so the per-token rate comes out ~5% low
    assert cal.learner.tokens_from.startswith("(prompt + response mean)")
    assert cal.learner.coefficients["train_gpu_s_per_token"] == pytest.approx(
        TRUTH["train_gpu_s_per_token"], rel=0.08
    )
    # make_experience holds both forward passes (and the reward), split over 2 passes
    assert cal.learner.coefficients["forward_gpu_s_per_token"] == pytest.approx(
        TRUTH["forward_gpu_s_per_token"], rel=0.08
    )
    assert cal.workload.response_mean == pytest.approx(TRUTH["response_mean"], rel=0.03)


def test_lognormal_cut_at_the_cap_solves_back() -> None:
    mean, sigma, cap = 3000.0, 0.9, 8192.0
    mu = math.log(mean) - 0.5 * sigma**2
    clip = 1.0 - 0.5 * math.erfc(-((math.log(cap) - mu) / sigma) / math.sqrt(2))
    cut = cut_mean(mean, sigma, cap)
    assert cut < mean
    # Monte Carlo check of the closed form
    rng = np.random.default_rng(0)
    draws = np.minimum(np.exp(mu + sigma * rng.standard_normal(2_000_000)), cap)
    assert cut == pytest.approx(draws.mean(), rel=2e-3)
    assert sigma_from_clip(cut, clip, cap) == pytest.approx(sigma, rel=1e-6)
    assert uncut_mean(cut, sigma, cap) == pytest.approx(mean, rel=1e-6)


def _round_trip_scenario(tmp_path: Path, scale: float):
    base = {
        "name": "round-trip",
        "cluster": {"rollout_engines": 8, "learner_gpus": 16},
        "algorithm": {"mode": "sync", "minibatches_per_step": 2},
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    roofline = derive(load_scenario(str(tmp_path / "base.yaml"))).time_model
    truth = {
        "learner_coefficients": {
            "train_gpu_s_per_token": 9e-4,
            "forward_gpu_s_per_token": 2.5e-4,
            "step_overhead_s": 3.0,
        },
        "decode_coefficients": {
            k: scale * getattr(roofline, k)
            for k in ("a_s", "beta_s_per_token", "gamma_s_per_seq", "prefill_s_per_token")
        },
    }
    logged = {**base, "cluster": {**base["cluster"], **truth}}
    logged["workload"] = {"response_growth_per_step": 0.02}
    (tmp_path / "logged.yaml").write_text(yaml.safe_dump(logged))
    return tmp_path / "base.yaml", load_scenario(str(tmp_path / "logged.yaml")), truth


def test_round_trip_logs_written_by_the_simulator_give_back_its_coefficients(tmp_path) -> None:
    base_file, logged, truth = _round_trip_scenario(tmp_path, scale=1.3)
    steps = 10
    trace = simulate(logged, steps, seed=0)
    log_file = write_verl_jsonl(
        verl_metrics_from_trace(trace, logged.workload.max_response_tokens),
        tmp_path / "run.jsonl",
    )
    out = tmp_path / "fragment.yaml"
    result = CliRunner().invoke(
        main,
        [
            "calibrate",
            "--from",
            "verl",
            str(log_file),
            "--scenario",
            str(base_file),
            "--sim-steps",
            str(steps),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    fragment = yaml.safe_load(out.read_text())
    got = fragment["cluster"]["learner_coefficients"]
    # two learner nodes (data-parallel efficiency 0.93) and two optimizer steps per step: the
    # fit divides them out again
    for key, value in truth["learner_coefficients"].items():
        assert got[key] == pytest.approx(value, rel=0.02), key
    decode = fragment["cluster"]["decode_coefficients"]
    for key, value in truth["decode_coefficients"].items():
        assert decode[key] == pytest.approx(value, rel=0.02), key
    # the calibrated scenario reproduces the logged run's step time
    calibrated = load_scenario(str(base_file), overrides=(f"@{out}",))
    assert calibrated.cluster.learner_coefficients is not None
    again = simulate(calibrated, steps, seed=0).steps["end_s"].to_numpy()[-1]
    assert again == pytest.approx(trace.steps["end_s"].to_numpy()[-1], rel=0.03)


def test_fragment_layers_over_a_scenario_file_in_simulate_and_plan(tmp_path) -> None:
    fragment = {
        "workload": {"response_tokens": {"kind": "fixed", "value": 700}},
        "cluster": {"learner_coefficients": {"train_gpu_s_per_token": 5e-4}},
    }
    (tmp_path / "frag.yaml").write_text(yaml.safe_dump(fragment))
    scenario = load_scenario(
        str(SCENARIO), overrides=(f"@{tmp_path / 'frag.yaml'}", "workload.group_size=4")
    )
    assert scenario.algorithm.mode == "sync"  # from the scenario file
    assert scenario.workload.response_tokens.kind == "fixed"  # replaced whole, not merged
    assert scenario.workload.response_tokens.value == 700
    assert scenario.cluster.learner_coefficients.train_gpu_s_per_token == 5e-4
    assert scenario.workload.group_size == 4
    from stalesim.sim.plan.config import load_plan

    plan, _ = load_plan(None, overrides=(f"@{tmp_path / 'frag.yaml'}",))
    assert plan.base.set["cluster.learner_coefficients.train_gpu_s_per_token"] == 5e-4
    assert plan.base.set["workload.response_tokens"] == {"kind": "fixed", "value": 700}
    missing = CliRunner().invoke(main, ["simulate", "--set", "@nope.yaml", "--quiet"])
    assert missing.exit_code == 2 and "nope.yaml" in missing.output


def _verl_rows(n: int = 4) -> list[dict]:
    return [
        {
            "step": i,
            "data": {
                "timing_s/gen": 100.0 + i,
                "timing_s/old_log_prob": 20.0,
                "timing_s/update_actor": 60.0 + i,
                "response_length/mean": 1500.0,
                "prompt_length/mean": 400.0,
            },
        }
        for i in range(1, n + 1)
    ]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _bad_rows(kind: str) -> list[dict]:
    rows = _verl_rows()
    if kind == "nan":
        rows[2]["data"]["timing_s/update_actor"] = float("nan")
    elif kind == "inf":
        rows[1]["data"]["timing_s/gen"] = float("inf")
    elif kind == "negative":
        rows[3]["data"]["timing_s/old_log_prob"] = -1.0
    elif kind == "missing":
        for r in rows:
            del r["data"]["timing_s/update_actor"]
    return rows


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("nan", "'timing_s/update_actor' at step 3"),
        ("inf", "'timing_s/gen' at step 2"),
        ("negative", "'timing_s/old_log_prob' at step 4: -1 is negative"),
        ("missing", "missing metric column 'timing_s/update_actor'"),
    ],
)
def test_bad_timings_are_one_line_errors_naming_file_and_column(tmp_path, kind, expected) -> None:
    log = _jsonl(tmp_path / "run.jsonl", _bad_rows(kind))
    out = tmp_path / "fragment.yaml"
    result = CliRunner().invoke(main, ["calibrate", "--from", "verl", str(log), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    assert str(log) in result.output and expected in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("empty.jsonl", "", "the log is empty"),
        ("garbage.jsonl", "{not json\n", "line 1 is not JSON"),
        ("binary.csv", b"\xff\xfe\x00\x01", "the log is empty"),
        ("ragged.csv", "_step,train/timing/generation\n0,1,2,3\n", "cannot read as CSV"),
        ("run.parquet", b"PAR1", "unknown log format .parquet"),
        (
            "nan.csv",
            "_step,train/timing/generation,train/timing/ppo_train\n0,nan,3\n",
            "not a finite",
        ),
    ],
)
def test_unreadable_or_empty_logs_are_one_line_errors(tmp_path, name, content, expected) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    framework = "openrlhf" if name.endswith(".csv") else "verl"
    result = CliRunner().invoke(main, ["calibrate", "--from", framework, str(path)])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and str(path) in result.output
    assert expected in result.output


def test_a_folder_without_event_files_and_missing_logs_are_refused(tmp_path) -> None:
    result = CliRunner().invoke(main, ["calibrate", "--from", "areal", str(tmp_path)])
    assert result.exit_code == 2 and "TensorBoard event files" in result.output
    result = CliRunner().invoke(main, ["calibrate", "--from", "areal", str(tmp_path / "x.jsonl")])
    assert result.exit_code == 2 and "no such file" in result.output
    result = CliRunner().invoke(main, ["calibrate", "--scenario", str(SCENARIO)])
    assert result.exit_code == 2 and "--scenario is for --from" in result.output


def test_missing_tbparse_is_named_in_one_line(monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "tbparse", None)
    with pytest.raises(
        ConfigError, match=r"needs tbparse and tensorboard: pip install -e '\.\[logs\]'"
    ):
        read_log(LOGS / "areal-tensorboard", "areal")


def test_an_async_run_fits_the_learner_and_says_generation_is_not_fitted(tmp_path) -> None:
    log = _jsonl(tmp_path / "run.jsonl", _verl_rows(6))
    scenario = load_scenario(None, None, ("algorithm.mode=async",))
    cal = calibrate_log(read_log(log, "verl"), scenario)
    assert cal.generation.scale is None
    assert "decode_coefficients" not in cal.fragment()["cluster"]
    assert any("generation rate not fitted" in w for w in cal.warnings)
    # update seconds = x * tokens / (8 GPUs) with tokens = (400 + 1500) * 64 * 8 (the tokens
    # do not vary, so no fixed cost is separated)
    tokens = (400 + 1500) * 64 * 8
    expected = np.mean([61, 62, 63, 64, 65, 66]) * 8 / tokens
    assert cal.learner.coefficients["train_gpu_s_per_token"] == pytest.approx(expected, rel=1e-9)
    assert cal.learner.coefficients["step_overhead_s"] == 0.0


def test_a_fit_that_explains_little_is_warned(tmp_path) -> None:
    rows = _verl_rows(8)
    rng = np.random.default_rng(1)
    for r in rows:  # update times unrelated to the (growing) tokens
        r["data"]["response_length/mean"] = 1000.0 + 200 * r["step"]
        r["data"]["timing_s/update_actor"] = float(rng.uniform(20, 120))
    log = _jsonl(tmp_path / "run.jsonl", rows)
    cal = calibrate_log(read_log(log, "verl"), load_scenario(None, None, ("algorithm.mode=async",)))
    assert any("learner update fit explains little" in w for w in cal.warnings)


def test_a_wandb_json_export_reads_like_the_jsonl_it_came_from(tmp_path) -> None:
    rows = [json.loads(line) for line in (LOGS / "verl-grpo.jsonl").read_text().splitlines()]
    # wandb's history export: flat rows, the step as _step (from 0), runtime columns beside
    history = [{"_step": r["step"] - 1, "_runtime": 10.0 * r["step"], **r["data"]} for r in rows]
    (tmp_path / "history.json").write_text(json.dumps(history))
    a = read_log(LOGS / "verl-grpo.jsonl", "verl")
    b = read_log(tmp_path / "history.json", "verl")
    assert b.column("step").tolist() == [s - 1 for s in a.column("step").tolist()]
    for column in ("gen_s", "update_s", "tokens", "response_mean", "clip_ratio"):
        assert b.column(column).tolist() == a.column(column).tolist()
