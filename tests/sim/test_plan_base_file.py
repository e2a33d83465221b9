"""A plan's ``base: {file: ...}`` names a scenario file, read relative to the plan."""

from __future__ import annotations

from pathlib import Path

from stalesim.sim.plan.config import load_plan
from stalesim.sim.plan.space import base_mapping


def test_plan_base_file_is_read_relative_to_the_plan(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text(
        "workload: {prompts_per_step: 48, group_size: 4}\ncluster: {learner_gpus: 6}\n"
    )
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text("base: {file: mine.yaml}\nbudget_gpus: 16\n")
    plan, folder = load_plan(plan_file)
    assert plan.base.file == Path("mine.yaml")
    base = base_mapping(plan, folder)
    assert base["workload"]["prompts_per_step"] == 48
    assert base["workload"]["group_size"] == 4
    assert base["cluster"]["learner_gpus"] == 6
