"""The readings of the law a decision is weighed under, and the decision's robustness."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from stalesim.sim.law.apply import learner_steps_per_baseline_step, to_target
from stalesim.sim.law.model import Law, LawCurve, StepsModel
from stalesim.sim.law.readings import (
    DEFAULT_READING,
    Reading,
    default_law,
    paper_law,
    readings,
    shipped_law,
)
from stalesim.sim.plan.planner import run_plan
from stalesim.sim.presets import load_scenario

from tests.sim.test_plan import flat_law, small_plan, steep_law


def test_the_shipped_readings_and_their_provenance() -> None:
    laws = readings()
    assert [r.name for r in laws] == ["conservative", "optimistic", "paper"]
    assert DEFAULT_READING == "conservative" and default_law() == laws[0].law
    conservative, optimistic = laws[0].law, laws[1].law
    # each is a committed fit with where it came from
    assert conservative.source["copied_from"].endswith("law-horizon/non-saturating/law.json")
    assert optimistic.source["copied_from"].endswith("law-objective/clip/law.json")
    # each is labelled with what it was measured on, saturation included (measured at its fit)
    assert "did not saturate within its horizon" in laws[0].provenance
    assert "; saturated within its horizon" in laws[1].provenance
    # every reading is 1 at S = 0 and the conservative one falls faster past the knee
    for r in laws:
        assert float(r.law.eta_opt_at(0) / r.law.eta_opt_at(0)) == 1.0
    ratio = lambda law, s: float(law.eta_opt_at(s) / law.eta_opt_at(0))  # noqa: E731
    assert ratio(conservative, 8) < ratio(optimistic, 8)
    assert [r.name for r in readings("optimistic")] == ["optimistic", "conservative", "paper"]
    with pytest.raises(ValueError, match="no law reading 'hopeful'"):
        readings("hopeful")
    with pytest.raises(ValueError, match="no shipped law 'paper'"):
        shipped_law("paper")


def test_the_paper_reading_recovers_a_law_that_has_alpha_one() -> None:
    # points that lie exactly on eta0 / (1 + S / 3): the refit finds eta0 and s_c again
    s = np.array([0.0, 1.0, 2.0, 4.0, 8.0, 16.0])
    eta = 5e-4 / (1 + s / 3.0)
    law = Law(
        eta_opt=LawCurve(eta0=4e-4, s_c=10.0, k=4.0, alpha=3.0),
        steps_to_target=StepsModel(form="eta_ratio", steps0=80.0, p=0.5),
        lag_axis="nominal",
        points=[
            {"staleness": float(x), "eta_opt": float(y), "eta_opt_in_fit": True}
            for x, y in zip(s, eta, strict=True)
        ],
    )
    paper = paper_law(law)
    assert paper.eta_opt.alpha == 1.0 and paper.eta_opt.k == 1.0
    assert paper.eta_opt.eta0 == pytest.approx(5e-4, rel=1e-6)
    assert paper.eta_opt.s_c == pytest.approx(3.0, rel=1e-6)
    # steps grow as 1 / eta from the law's own steps at S = 0
    np.testing.assert_allclose(paper.steps_to_target_at(s), 80.0 * (1 + s / 3.0))
    # a law without points keeps its curve and takes alpha = 1
    bare = paper_law(law.model_copy(update={"points": []}))
    assert (bare.eta_opt.eta0, bare.eta_opt.s_c, bare.eta_opt.k) == (4e-4, 10.0, 4.0)


def test_to_target_multiplies_the_users_baseline() -> None:
    cols = {
        "lr_multiplier": np.array([1.0, 0.5]),
        "steps_multiplier": np.array([1.0, 2.0]),
        "steps_multiplier_other": np.array([1.0, 1.5]),
    }
    # a setup with twice the baseline's samples per step needs half the learner steps
    per_step = learner_steps_per_baseline_step(
        np.array([512.0, 1024.0]), np.array([1.0, 1.0]), 512.0, 1.0, "samples"
    )
    np.testing.assert_allclose(per_step, [1.0, 0.5])
    step_time, gpus, price = np.array([10.0, 6.0]), np.array([8.0, 8.0]), np.array([2.0, 2.0])
    ratios = to_target(cols, step_time, per_step, gpus, price)
    np.testing.assert_allclose(ratios["time_per_baseline_step_s"], [10.0, 6.0])
    np.testing.assert_allclose(ratios["time_per_baseline_step_s_other"], [10.0, 4.5])
    assert "time_to_target_s" not in ratios and "learning_rate" not in ratios
    users = to_target(cols, step_time, per_step, gpus, price, 1e-6, 400.0)
    np.testing.assert_allclose(users["learning_rate"], [1e-6, 5e-7])
    np.testing.assert_allclose(users["learner_steps_to_target"], [400.0, 400.0])
    np.testing.assert_allclose(users["time_to_target_s"], [4000.0, 2400.0])
    np.testing.assert_allclose(users["cost_to_target_usd"], [4000 / 3600 * 16, 2400 / 3600 * 16])
    # the same optimizer steps whatever the batch: M_base / M learner steps
    per_update = learner_steps_per_baseline_step(
        np.array([512.0, 1024.0]), np.array([1.0, 2.0]), 512.0, 1.0, "updates"
    )
    np.testing.assert_allclose(per_update, [1.0, 0.5])


def test_the_regime_distance_reads_a_presets_model_size() -> None:
    law = shipped_law("conservative")
    scenario = load_scenario(None, None, ("model.preset=qwen2.5-32b",))
    line = law.regime_distance(scenario)
    assert "model 3.25e+10 parameters" in line and "315,608x" in line
    assert "measured over 300-step runs (your horizon: set target.baseline_steps)" in line
    with_steps = load_scenario(None, None, ("target.baseline_steps=600",))
    assert "a 600-step baseline (2x the measured 300-step runs)" in law.regime_distance(with_steps)
    # the distance every scenario has is not repeated as a warning
    assert law.regime_warnings(scenario) == []


def test_a_decision_that_depends_on_the_reading_says_which_and_what_instead(
    tmp_path: Path,
) -> None:
    plan = small_plan(
        budget_gpus=None,
        space={"cluster.rollout_engines": [1], "cluster.learner_gpus": [1]},
        variants=[{"mode": ["sync"]}, {"mode": ["async"], "max_staleness": [1, 2, 4]}],
        evaluation={"steps": 8, "seed": 1, "screen": False},
    )
    flat, steep = Reading("flat", flat_law(), "no penalty"), Reading("steep", steep_law(), "")
    robust = run_plan(plan, [flat, Reading("flat2", flat_law(), "")], tmp_path / "r").summary
    assert robust["decision"]["robust"] and robust["decision"]["verdict"].startswith("robust")
    summary = run_plan(plan, [flat, steep], tmp_path / "d").summary
    decision, rec = summary["decision"], summary["recommendation"]
    best, under = rec["best"], rec["under_readings"]["steep"]
    assert under["best"]["candidate_id"] != best["candidate_id"]
    assert not decision["robust"]
    assert decision["verdict"].startswith("depends on the reading: under steep the best is")
    assert f"ranks #{under['recommendation_rank']}" in decision["verdict"]
    items = {item["name"]: item for item in decision["items"]}
    bound = items["bound"]
    assert not bound["same_under_all"] and "steep" in bound["differ"]
    lr = items["learning-rate multiplier"]
    assert lr["under_readings"]["flat"] == pytest.approx(1.0)  # no penalty: the baseline's rate
    # each reading's multiplier is for the setup it recommends: the steep reading picks a
    # less stale setup, whose rate it lowers less than the recommendation's
    assert lr["under_readings"]["steep"] == pytest.approx(under["best"]["lr_multiplier_steep"])
    assert best["lr_multiplier_steep"] < 0.5 < lr["under_readings"]["steep"]
    # relative times: the reference is the synchronous candidate
    table = pl.read_parquet(tmp_path / "d" / "candidates.parquet")
    sync = table.filter(pl.col("mode") == "sync").row(0, named=True)
    assert summary["relative_to"] == sync["candidate_id"] and sync["time_to_target_rel"] == 1.0
