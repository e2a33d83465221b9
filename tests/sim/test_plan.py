"""`stalesim plan`: the plan file, the candidate space, the law's reading, the ranking, the screen,
the backends and resuming."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from stalesim.cli import main
from stalesim.common.config_file import ConfigError, validate_config
from stalesim.sim.law.apply import read_law, steps_ratio_box
from stalesim.sim.law.model import Law, LawCurve, StepsModel
from stalesim.sim.law.readings import Reading, default_law, paper_law
from stalesim.sim.plan.config import PlanConfig, expand_values, load_plan
from stalesim.sim.plan.evaluate import ProcessBackend, SerialBackend, simulate_batch
from stalesim.sim.plan.planner import run_plan
from stalesim.sim.plan.rank import pareto_front, rank_column
from stalesim.sim.plan.space import resolve

#: A small, fast base: a 1.5B model, 8 prompts x 4 samples, short responses.
SMALL_BASE = {
    "preset": "default",
    "set": {
        "model.preset": "qwen2.5-1.5b",
        "workload.prompts_per_step": 8,
        "workload.group_size": 4,
        "workload.response_tokens": {"kind": "lognormal", "mean": 300, "sigma": 0.6},
        "workload.max_response_tokens": 1024,
        "cluster.max_num_seqs": 64,
    },
}


def small_plan(**changes: Any) -> PlanConfig:
    data: dict[str, Any] = {
        "name": "test",
        "base": SMALL_BASE,
        "budget_gpus": 4,
        "space": {"learner_gpus": [1, 2], "tp": [1, 2]},
        "variants": [
            {"mode": ["sync", "one_step"]},
            {"mode": ["async"], "max_staleness": [1, 2, 4]},
        ],
        "evaluation": {"steps": 6, "seed": 1, "round_size": 4, "probe": 1, "keep_top": 2},
    }
    data.update(changes)
    return validate_config(PlanConfig, data, "test plan")


def flat_law() -> Law:
    """eta_opt does not move with staleness, so neither do the steps."""
    return Law(
        eta_opt=LawCurve(eta0=1e-3, s_c=1.0, k=2.0, alpha=0.0),
        steps_to_target=StepsModel(form="eta_ratio", steps0=100.0, p=1.0),
    )


def steep_law() -> Law:
    """eta_opt falls as S**-2 past S = 0.5; steps grow as 1 / eta_opt."""
    return Law(
        eta_opt=LawCurve(eta0=1e-3, s_c=0.5, k=4.0, alpha=2.0),
        steps_to_target=StepsModel(form="eta_ratio", steps0=100.0, p=1.0),
    )


def comparable(table: pl.DataFrame) -> pl.DataFrame:
    """The table without the columns that measure this machine's speed."""
    return table.drop("sim_wall_s")


# -- the plan file and the space ----------------------------------------------------------


def test_ranges_expand_inclusively() -> None:
    assert expand_values("x", {"from": 1, "to": 8, "times": 2}) == [1, 2, 4, 8]
    assert expand_values("x", {"from": 2, "to": 14, "step": 4}) == [2, 6, 10, 14]
    assert expand_values("x", {"from": 0.5, "to": 1.0, "step": 0.25}) == [0.5, 0.75, 1.0]
    assert expand_values("x", "async") == ["async"]
    with pytest.raises(ConfigError, match="to=1 is below from=3"):
        expand_values("space.tp", {"from": 3, "to": 1})
    with pytest.raises(ConfigError, match="unknown range key 'stop'"):
        expand_values("space.tp", {"from": 1, "stop": 3})


def test_budget_sets_the_engines_and_infeasible_candidates_carry_reasons() -> None:
    plan = small_plan(
        budget_gpus=8,
        space={"learner_gpus": [2, 3], "tp": [1, 2], "model": ["qwen2.5-1.5b", "llama-3.1-70b"]},
        variants=[{"mode": ["sync", "sync_colocated"]}],
    )
    candidates = resolve(plan)
    by_label = {c.label(): c for c in candidates}
    ok = by_label["learner_gpus=2 tp=2 model=qwen2.5-1.5b mode=sync"]
    assert ok.feasible and ok.scenario.cluster.rollout_engines == 3
    assert ok.derived.total_gpus == 8
    odd = by_label["learner_gpus=3 tp=2 model=qwen2.5-1.5b mode=sync"]
    assert odd.reason == (
        "budget_gpus=8 minus cluster.learner_gpus=3 leaves 5 rollout GPUs, not a multiple of "
        "cluster.rollout_tp=2"
    )
    big = by_label["learner_gpus=2 tp=1 model=llama-3.1-70b mode=sync"]
    assert "do not fit an engine of cluster.rollout_tp=1" in big.reason
    # colocated: the learner shares all 8 GPUs, so the learner_gpus values are one candidate
    colocated = [c for c in candidates if c.data["algorithm"]["mode"] == "sync_colocated"]
    assert len(colocated) == 4  # one per model and TP
    small = next(c for c in colocated if c.feasible and c.scenario.cluster.rollout_tp == 2)
    assert small.scenario.cluster.rollout_engines == 4 and small.derived.total_gpus == 8


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"space": {"algorithm.max_stalenes": [1]}}, "unknown key algorithm.max_stalenes"),
        ({"space": {"mode": ["eventually"]}}, "algorithm.mode='eventually'"),
        ({"space": {"tp": {"from": 1, "to": 4, "step": 0}}}, "step=0 must be positive"),
        ({"objective": "time"}, "unknown key objective"),
        ({"space": {"engines": [2]}}, "both set the engine count"),
    ],
)
def test_bad_plans_are_one_line_errors(changes: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("*", r"\*")):
        resolve(small_plan(**changes))


def test_default_plan_loads_and_names_thousands_of_candidates() -> None:
    plan, _ = load_plan()
    assert plan.budget_gpus == 16
    candidates = resolve(plan)
    assert len(candidates) > 3000
    assert len({c.candidate_id for c in candidates}) == len(candidates)
    assert any(not c.feasible for c in candidates)


# -- the law ------------------------------------------------------------------------------


def test_law_reading_is_ratios_of_the_law_and_its_intervals() -> None:
    law = default_law()
    paper = paper_law(law)
    s = np.array([0.0, 1.0, 2.0, 8.0])
    cols = read_law([Reading("fitted", law, ""), Reading("paper", paper, "")], s)
    np.testing.assert_allclose(cols["lr_multiplier"], law.eta_opt_at(s) / law.eta_opt_at(0))
    np.testing.assert_allclose(
        cols["steps_multiplier"], law.steps_to_target_at(s) / law.steps_to_target_at(0)
    )
    assert cols["lr_multiplier"][0] == 1.0 and cols["steps_multiplier"][0] == 1.0
    assert np.all(cols["lr_multiplier_lo"] <= cols["lr_multiplier"]) and np.all(
        cols["lr_multiplier"] <= cols["lr_multiplier_hi"]
    )
    lo, hi = steps_ratio_box(law, s)
    assert np.all(lo <= cols["steps_multiplier"]) and np.all(cols["steps_multiplier"] <= hi)
    # the paper's reading: eta0 / (1 + S/s_c) with its own knee; steps grow as 1/eta
    c = paper.eta_opt
    expected = 1 / (1 + s / c.s_c)
    np.testing.assert_allclose(cols["lr_multiplier_paper"], expected)
    np.testing.assert_allclose(cols["steps_multiplier_paper"], 1 / expected)


# -- ranking ------------------------------------------------------------------------------


def test_rank_and_frontier_by_hand() -> None:
    time_s = np.array([3.0, 1.0, 2.0, 1.0, np.nan])
    cost = np.array([1.0, 3.0, 2.0, 4.0, 0.5])
    eligible = np.array([True, True, True, True, True])
    assert rank_column(time_s, eligible).tolist() == [4, 1, 3, 2, 5]
    # (1, 4) is beaten by (1, 3); the NaN time is never on the frontier
    assert pareto_front(time_s, cost, eligible).tolist() == [True, True, True, False, False]


def test_a_faster_and_cheaper_setup_dominates(tmp_path: Path) -> None:
    # Same GPUs and workload; the learner at half the MFU is strictly slower, so strictly
    # dearer too. A doubled price changes cost exactly twofold and time not at all.
    plan = small_plan(
        budget_gpus=None,
        space={"cluster.learner_mfu": [0.2, 0.4], "hardware.price_per_gpu_hour": [2.0, 4.0]},
        variants=[{"mode": ["sync"]}],
    )
    result = run_plan(plan, flat_law(), tmp_path)
    table = result.table.sort("index")
    assert table["evaluated"].to_list() == ["simulated"] * 4
    t = dict(zip(table["setup"], table["time_per_baseline_step_s"], strict=True))
    c = dict(zip(table["setup"], table["cost_per_baseline_step_usd"], strict=True))
    slow2 = "cluster.learner_mfu=0.2 hardware.price_per_gpu_hour=2.0 mode=sync"
    fast2 = "cluster.learner_mfu=0.4 hardware.price_per_gpu_hour=2.0 mode=sync"
    fast4 = "cluster.learner_mfu=0.4 hardware.price_per_gpu_hour=4.0 mode=sync"
    assert t[fast2] < t[slow2] and c[fast2] < c[slow2]
    assert t[fast4] == t[fast2] and c[fast4] == pytest.approx(2 * c[fast2])
    best = result.summary["recommendation"]["best"]
    assert best["setup"] == fast2  # ties on time go to the first in plan order
    front = table.filter(pl.col("on_frontier"))["setup"].to_list()
    assert front == [fast2]
    cost_plan = plan.model_copy(
        update={"target": plan.target.model_copy(update={"objective": "cost"})}
    )
    by_cost = run_plan(cost_plan, flat_law(), tmp_path / "cost")
    rec = by_cost.summary["recommendation"]
    assert rec["best"]["setup"] == fast2
    runner = min((slow2, fast4), key=c.get)
    assert rec["runner_up"]["setup"] == runner
    assert rec["runner_up_worse_by"] == pytest.approx(c[runner] / c[fast2] - 1)


def test_the_law_decides_between_throughput_and_staleness(tmp_path: Path) -> None:
    # Learner-bound async: a larger bound lets more generation overlap and raises throughput
    plan = small_plan(
        budget_gpus=None,
        space={"cluster.rollout_engines": [1], "cluster.learner_gpus": [1]},
        variants=[{"mode": ["async"], "max_staleness": [0, 1, 2, 4]}],
        evaluation={"steps": 8, "seed": 1, "screen": False},
    )
    flat = run_plan(plan, flat_law(), tmp_path / "flat").table.filter(pl.col("rank") > 0)
    steep = run_plan(plan, steep_law(), tmp_path / "steep").table.filter(pl.col("rank") > 0)
    fastest = flat.sort("samples_per_s", descending=True)["max_staleness"][0]
    flat_best = flat.sort("rank")["max_staleness"][0]
    steep_best = steep.sort("rank")["max_staleness"][0]
    assert (
        flat["samples_per_s"].max() > flat.filter(pl.col("max_staleness") == 0)["samples_per_s"][0]
    )
    assert flat_best == fastest  # flat law: throughput alone decides
    assert steep_best < flat_best  # steep law: a smaller bound wins
    assert steep_best == steep.sort("staleness")["max_staleness"][0]


def test_the_screen_never_discards_the_best(tmp_path: Path) -> None:
    for i, law in enumerate((default_law(), steep_law(), flat_law())):
        plan = small_plan(space={"learner_gpus": [1, 2], "tp": [1, 2], "prompts_per_step": [8, 16]})
        screened = run_plan(plan, law, tmp_path / f"s{i}").table
        full_plan = plan.model_copy(
            update={"evaluation": plan.evaluation.model_copy(update={"screen": False})}
        )
        full = run_plan(full_plan, law, tmp_path / f"f{i}").table
        assert (screened["evaluated"] == "screened out").sum() > 0
        for column in ("rank", "rank_paper"):
            top_full = full.filter(pl.col(column).is_between(1, 2)).sort(column)["candidate_id"]
            top_screened = screened.filter(pl.col(column).is_between(1, 2)).sort(column)[
                "candidate_id"
            ]
            assert top_screened.to_list() == top_full.to_list()
        front = lambda t: sorted(t.filter(pl.col("on_frontier"))["candidate_id"].to_list())  # noqa: E731
        assert front(screened) == front(full)


# -- backends and resuming ----------------------------------------------------------------


def test_process_backend_gives_the_serial_table(tmp_path: Path) -> None:
    plan = small_plan()
    serial = run_plan(plan, default_law(), tmp_path / "serial", backend=SerialBackend()).table
    pool = ProcessBackend(2)
    try:
        parallel = run_plan(plan, default_law(), tmp_path / "pool", backend=pool).table
    finally:
        pool.close()
    assert comparable(parallel).equals(comparable(serial))


class _Interrupted(Exception):
    pass


class _StopAfter(SerialBackend):
    """Runs the first ``rounds`` rounds, then stops the plan as a kill would."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self.simulated: list[str] = []

    def run(self, batches, steps, seed):
        if self.rounds == 0:
            raise _Interrupted
        self.rounds -= 1
        results = [simulate_batch(b, steps, seed) for b in batches]
        self.simulated += [cid for batch in results for cid, _ in batch]
        return results


def test_a_stopped_plan_resumes_without_redoing_work(tmp_path: Path) -> None:
    plan = small_plan()
    first = _StopAfter(rounds=2)
    with pytest.raises(_Interrupted):
        run_plan(plan, default_law(), tmp_path / "out", backend=first)
    kept = pl.read_parquet(tmp_path / "out" / "simulated.parquet")
    assert sorted(kept["candidate_id"].to_list()) == sorted(first.simulated)
    assert not (tmp_path / "out" / "candidates.parquet").exists()
    second = _StopAfter(rounds=10_000)
    resumed = run_plan(plan, default_law(), tmp_path / "out", backend=second)
    assert not set(second.simulated) & set(first.simulated)
    assert resumed.summary["counts"]["resumed"] == len(first.simulated)
    fresh = run_plan(plan, default_law(), tmp_path / "fresh").table
    assert comparable(resumed.table).equals(comparable(fresh))


# -- the command --------------------------------------------------------------------------


def _write_plan(path: Path, **changes: Any) -> Path:
    path.write_text(json.dumps(small_plan(**changes).model_dump(mode="json")))
    return path


def test_plan_command_prints_the_recommendation_and_writes_the_files(tmp_path: Path) -> None:
    plan_file = _write_plan(tmp_path / "plan.yaml")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["plan", str(plan_file), "--out", str(out), "--workers", "1", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert "recommended (fastest to target, law reading conservative)" in result.stdout
    assert result.stdout.startswith("stalesim plan: test:")
    assert "decision (" in result.stdout
    summary = json.loads((out / "plan.json").read_text())
    table = pl.read_parquet(out / "candidates.parquet")
    best = table.filter(pl.col("rank") == 1).row(0, named=True)
    assert summary["recommendation"]["best"]["candidate_id"] == best["candidate_id"]
    assert best["time_per_baseline_step_s"] == pytest.approx(
        best["learner_steps_multiplier"] * best["step_time_s"]
    )
    # no baseline: only ratios, never a learning rate or hours from the law's small model
    assert "learning_rate" not in table.columns and "time_to_target_s" not in table.columns
    assert " h " not in result.stdout and "e-0" not in result.stdout
    reference = table.filter(pl.col("candidate_id") == summary["relative_to"]).row(0, named=True)
    assert reference["time_to_target_rel"] == 1.0
    assert best["time_to_target_rel"] == pytest.approx(
        best["time_per_baseline_step_s"] / reference["time_per_baseline_step_s"]
    )
    assert (out / "report.html").exists()


@pytest.mark.parametrize(
    ("args", "plan_text", "needle"),
    [
        ((), "space:\n  tp: [1, 2\n", "malformed YAML"),
        ((), "spaces: {}\n", "unknown key spaces"),
        ((), "space:\n  cluster.rollout_tpp: [1]\n", "unknown key cluster.rollout_tpp"),
        ((), "budget_gpus: 0\n", "budget_gpus=0"),
        (("--objective", "speed"), "", "'speed' is not one of"),
        (("--budget-gpus", "0"), "", "--budget-gpus=0"),
        (("--law", "/no/such/law.json"), "", "no such law file"),
        (("--gpu", "TPU"), "", "unknown GPU"),
    ],
)
def test_bad_plan_input_is_one_line_and_exit_code_2(
    tmp_path: Path, args: tuple[str, ...], plan_text: str, needle: str
) -> None:
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(plan_text)
    result = CliRunner().invoke(
        main, ["plan", str(plan_file), "--out", str(tmp_path / "out"), "--quiet", *args]
    )
    assert result.exit_code == 2, result.output
    assert needle in result.stderr
    if not needle.startswith("'"):
        assert len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr


def test_a_simulate_folder_is_not_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    (out / "report.html").write_text("the simulate page")
    plan_file = _write_plan(tmp_path / "plan.yaml")
    result = CliRunner().invoke(main, ["plan", str(plan_file), "--out", str(out), "--quiet"])
    assert result.exit_code == 2
    assert "holds a `stalesim simulate` run" in result.stderr
    assert (out / "report.html").read_text() == "the simulate page"


def test_a_plan_without_a_feasible_candidate_says_so(tmp_path: Path) -> None:
    plan = small_plan(budget_gpus=3, space={"learner_gpus": [1], "tp": [4]}, variants=[])
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(json.dumps(plan.model_dump(mode="json")))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["plan", str(plan_file), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "no feasible candidate" in result.stdout
    table = pl.read_parquet(out / "candidates.parquet")
    assert table["reason"].to_list() == [
        "budget_gpus=3 minus cluster.learner_gpus=1 leaves 2 rollout GPUs, fewer than one engine "
        "of cluster.rollout_tp=4"
    ]
    assert "No candidate of this plan is feasible" in (out / "report.html").read_text()


# -- a plan a user can act on --------------------------------------------------------------


def test_a_set_on_a_key_the_space_varies_narrows_the_space_and_says_so() -> None:
    plan, _ = load_plan(overrides=("workload.prompts_per_step=512",))
    assert plan.space["prompts_per_step"] == [512]
    assert plan.notes == [
        "--set workload.prompts_per_step=512 fixes space.prompts_per_step (the plan varied it "
        "over [32, 64, 128])"
    ]
    assert {c.data["workload"]["prompts_per_step"] for c in resolve(plan)} == {512}
    # a key the space does not vary is only the base's
    plain, _ = load_plan(overrides=("model.preset=qwen2.5-1.5b",))
    assert plain.notes == [] and plain.base.set["model.preset"] == "qwen2.5-1.5b"


def test_a_colocated_candidate_without_a_budget_shares_every_gpu_of_the_setup() -> None:
    plan = small_plan(
        budget_gpus=None,
        space={"cluster.rollout_engines": [4], "cluster.learner_gpus": [4]},
        variants=[{"mode": ["sync", "sync_colocated"]}],
    )
    by_mode = {c.data["algorithm"]["mode"]: c for c in resolve(plan)}
    assert by_mode["sync"].derived.total_gpus == 8
    colocated = by_mode["sync_colocated"]
    assert colocated.derived.total_gpus == 8 and colocated.scenario.cluster.rollout_engines == 8


def test_the_bound_column_is_empty_where_the_mode_sets_no_bound(tmp_path: Path) -> None:
    table = run_plan(small_plan(), flat_law(), tmp_path).table
    one_step = table.filter(pl.col("mode") == "one_step")
    assert one_step.height and one_step["max_staleness"].is_null().all()
    bounded = table.filter(pl.col("mode") == "async")["max_staleness"].drop_nulls().unique().sort()
    assert bounded.to_list() == [1, 2, 4]


def test_a_fragment_file_is_part_of_the_base_and_fixes_nothing(tmp_path: Path) -> None:
    fragment = tmp_path / "mine.yaml"
    fragment.write_text("algorithm: {mode: sync_colocated}\nworkload: {prompts_per_step: 32}\n")
    plan, _ = load_plan(overrides=(f"@{fragment}",))
    assert plan.notes == []
    assert plan.space["prompts_per_step"] == [32, 64, 128]
    assert {m for v in plan.variants for m in v["mode"]} == {
        "sync_colocated",
        "sync",
        "one_step",
        "async",
    }
    assert plan.base.set["algorithm.mode"] == "sync_colocated"
