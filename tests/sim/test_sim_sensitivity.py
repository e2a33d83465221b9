"""The sensitivity view, by hand: a synchronous cadence moves by what each coefficient adds."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from stalesim.cli import main
from stalesim.sim.hardware import CATALOG
from stalesim.sim.plan.sensitivity import coefficients, perturbed, sensitivity
from stalesim.sim.presets import load_scenario

SYNC = (
    "algorithm.mode=sync",
    "workload.prompts_per_step=2",
    "workload.group_size=2",
    "workload.prompt_tokens={kind: fixed, value: 10}",
    "workload.response_tokens={kind: fixed, value: 20}",
    "cluster.rollout_engines=1",
    "cluster.decode_coefficients={a_s: 0.01, beta_s_per_token: 0, gamma_s_per_seq: 0}",
    "cluster.learner_coefficients={train_gpu_s_per_token: 0.08, step_overhead_s: 0.75}",
    "weight_sync.bandwidth_bytes_per_s=1e30",
    "weight_sync.latency_s=0.25",
)


def test_sync_cadence_moves_as_computed_by_hand() -> None:
    """Cadence = generation 20 x 0.01 s + learner (two forward passes of 120 tokens at
    0.08/3 GPU-s each, the update at 0.08 GPU-s per token, over 8 GPUs, plus 0.75 s) + sync
    0.25 s = 0.2 + 2.75 + 0.25 = 3.2 s."""
    result = sensitivity(load_scenario(None, None, SYNC), steps=4)
    assert result["step_time_s"] == pytest.approx(3.2, rel=1e-9)
    assert result["reference_mode"] == "async" and result["speedup"] > 0
    rows = {(r["key"], r["direction"]): r for r in result["rows"]}
    train = rows[("cluster.learner_coefficients.train_gpu_s_per_token", "high")]
    # the unmeasured forward passes are a third of training, so they move with it: +0.4 s
    assert train["moved_to"] == pytest.approx(0.096)
    assert train["step_time_change"] == pytest.approx(0.4 / 3.2, rel=1e-9)
    overhead = rows[("cluster.learner_coefficients.step_overhead_s", "low")]
    assert overhead["step_time_change"] == pytest.approx(-0.15 / 3.2, rel=1e-9)
    a = rows[("cluster.decode_coefficients.a_s", "high")]
    assert a["step_time_change"] == pytest.approx(0.04 / 3.2, rel=1e-9)
    latency = rows[("weight_sync.latency_s", "high")]
    assert latency["step_time_change"] == pytest.approx(0.05 / 3.2, rel=1e-9)
    # every moved key appears twice; the roofline's keys are not used by this scenario
    keys = {r["key"] for r in result["rows"]}
    assert "cluster.learner_mfu" not in keys and "cluster.rollout_memory_efficiency" not in keys
    assert len(result["rows"]) == 2 * len(keys)


def test_keys_follow_the_scenario_and_efficiencies_clip_at_one() -> None:
    default = coefficients(load_scenario())
    assert "cluster.learner_mfu" in default and "cluster.tp_allreduce_latency_s" not in default
    assert "cluster.colocated_switch_latency_s" not in default
    big = load_scenario(
        None,
        None,
        ("cluster.learner_gpus=16", "cluster.learner_dp_linear_gpus=8", "cluster.rollout_tp=2"),
    )
    keys = coefficients(big)
    assert "cluster.learner_dp_scaling" in keys and "cluster.tp_allreduce_latency_s" in keys
    colocated = coefficients(load_scenario(None, "colocated"))
    assert "cluster.colocated_switch_latency_s" in colocated
    moved, used = perturbed(big, "cluster.learner_dp_scaling", 1.2)
    assert used == 1.0 and moved.cluster.learner_dp_scaling == 1.0
    # up to the linear range data parallelism loses nothing, so its coefficient is not used
    assert "cluster.learner_dp_scaling" not in coefficients(
        load_scenario(None, None, ("cluster.learner_gpus=64",))
    )
    # an unset MFU is moved from the value the scenario runs with: the GPU's own
    h20 = load_scenario(None, None, ("hardware.gpu=H20",))
    moved, used = perturbed(h20, "cluster.learner_mfu", 0.8)
    assert used == pytest.approx(0.8 * CATALOG["H20"].train_mfu, rel=1e-12)
    assert moved.cluster.learner_mfu == used


def test_cli_json_has_the_sensitivity_key(tmp_path) -> None:
    args = ["simulate", "--json", "--sensitivity", "--steps", "4", "--out", str(tmp_path)]
    for item in SYNC:
        args += ["--set", item]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["sensitivity"]["step_time_s"] == pytest.approx(3.2, rel=1e-9)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["sensitivity"] == summary["sensitivity"]
    assert "Sensitivity to the coefficients" in (tmp_path / "report.html").read_text()
