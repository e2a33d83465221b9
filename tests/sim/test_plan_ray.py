"""`stalesim plan --ray`: a Ray cluster evaluates the same candidates to the same table."""

from __future__ import annotations

from pathlib import Path

import pytest
from stalesim.common.config_file import validate_config
from stalesim.sim.law.readings import default_law
from stalesim.sim.plan.config import PlanConfig
from stalesim.sim.plan.evaluate import RayBackend, SerialBackend
from stalesim.sim.plan.planner import run_plan

PLAN = {
    "name": "ray",
    "base": {
        "preset": "default",
        "set": {
            "model.preset": "qwen2.5-1.5b",
            "workload.prompts_per_step": 8,
            "workload.group_size": 4,
            "workload.response_tokens": {"kind": "lognormal", "mean": 300, "sigma": 0.6},
            "workload.max_response_tokens": 1024,
        },
    },
    "budget_gpus": 4,
    "space": {"learner_gpus": [1, 2]},
    "variants": [{"mode": ["sync"]}, {"mode": ["async"], "max_staleness": [1, 2, 4]}],
    "evaluation": {"steps": 6, "seed": 3, "round_size": 4, "probe": 1},
}


@pytest.mark.xdist_group("ray")
def test_ray_backend_gives_the_local_table(ray_local, tmp_path: Path) -> None:
    plan = validate_config(PlanConfig, PLAN, "test plan")
    local = run_plan(plan, default_law(), tmp_path / "local", backend=SerialBackend()).table
    backend = RayBackend("local")
    try:
        assert backend.workers >= 1
        on_ray = run_plan(plan, default_law(), tmp_path / "ray", backend=backend).table
    finally:
        backend.close()
    assert ray_local.is_initialized()  # the shared instance was used, not shut down
    assert on_ray.drop("sim_wall_s").equals(local.drop("sim_wall_s"))
    assert (on_ray["evaluated"] == "simulated").sum() >= 2
