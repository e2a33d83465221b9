"""A mode is one ModeSpec: registering a toy one makes it simulate, screen and plan with no other
change; its admission policy drives the simulator here and the pipeline's coordinator in
``tests/validate/test_pipeline_coordinator.py``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from stalesim.sim.modes import MODES
from stalesim.sim.modes.asynchronous import ASYNC
from stalesim.sim.modes.base import Admission, RunShape, ScreenInputs, ScreenTiming
from stalesim.sim.modes.sync import SYNC
from stalesim.sim.plan.planner import run_plan
from stalesim.sim.presets import load_scenario
from stalesim.sim.run import simulate

from tests.sim.test_plan import flat_law, small_plan


def _toy_screen(i: ScreenInputs, _algo) -> ScreenTiming:
    # twice the synchronous step: a deliberately slow toy
    return ScreenTiming(2 * (i.generate_s + i.learn_s + i.weights_s), False, 0.0, 0.0, 0.0)


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> str:
    spec = replace(SYNC, name="toy", summary="sync under another name", screen=_toy_screen)
    monkeypatch.setitem(MODES, "toy", spec)
    return "toy"


class OneChunkAhead(Admission):
    """A toy admission policy: asynchronous, but never more than one chunk of groups beyond
    the engines' weights, whatever ``max_staleness`` says."""

    drains_for_weights = True

    def group_limit(self, min_version: int, run: RunShape) -> int | None:
        return (min_version + 1) * run.chunk


@pytest.fixture
def toy_ahead(monkeypatch: pytest.MonkeyPatch) -> str:
    spec = replace(ASYNC, name="toy_ahead", summary="one chunk ahead", admission=OneChunkAhead())
    monkeypatch.setitem(MODES, "toy_ahead", spec)
    return "toy_ahead"


def test_a_toy_admission_policy_is_what_the_simulator_admits_by(toy_ahead: str) -> None:
    """The toy keeps generation one chunk ahead although max_staleness=3: it runs exactly as
    async with max_staleness=0 (the same limit), and not as async with max_staleness=3."""

    def run(*overrides: str):
        sc = load_scenario(None, None, ("algorithm.minibatches_per_step=1", *overrides))
        return simulate(sc, 6, 1)

    toy = run(f"algorithm.mode={toy_ahead}", "algorithm.max_staleness=3")
    tight = run("algorithm.mode=async", "algorithm.max_staleness=0")
    loose = run("algorithm.mode=async", "algorithm.max_staleness=3")
    assert toy.steps["end_s"].to_list() == tight.steps["end_s"].to_list()
    assert toy.samples["staleness_max"].to_list() == tight.samples["staleness_max"].to_list()
    assert toy.samples["staleness_max"].max() < loose.samples["staleness_max"].max()


def test_a_registered_toy_mode_simulates_like_the_mode_it_copies(toy: str) -> None:
    sync = simulate(load_scenario(None, None, ("algorithm.mode=sync",)), 4, 0)
    mine = simulate(load_scenario(None, None, (f"algorithm.mode={toy}",)), 4, 0)
    assert mine.steps["end_s"].to_list() == sync.steps["end_s"].to_list()


def test_a_registered_toy_mode_is_screened_and_planned(toy: str, tmp_path: Path) -> None:
    plan = small_plan(variants=[{"mode": ["sync", toy]}])
    table = run_plan(plan, flat_law(), tmp_path).table
    modes = set(table.filter(table["evaluated"] == "simulated")["mode"].to_list())
    assert modes == {"sync", toy}

    # its own screen was used: twice the synchronous estimate of the same setup
    def by_setup(mode: str) -> dict[str, float]:
        rows = table.filter((table["mode"] == mode) & table["feasible"])
        return {
            r["setup"].replace(f"mode={mode}", ""): r["screen_time_per_baseline_step_s"]
            for r in rows.iter_rows(named=True)
        }

    sync, mine = by_setup("sync"), by_setup(toy)
    assert sync.keys() == mine.keys() and len(sync) >= 2
    assert [mine[k] / sync[k] for k in sync] == pytest.approx([2.0] * len(sync))
    # on-policy like sync: the same multipliers (1x) against the same baseline
    toy_rows = table.filter((table["mode"] == toy) & table["feasible"])
    assert toy_rows["lr_multiplier"].to_list() == pytest.approx([1.0] * toy_rows.height)


@pytest.mark.parametrize(
    "overrides",
    [
        # B=2 with 100% overprovision: the learner takes the next batch from leftover groups
        # before its round starts (a case property tests found)
        ("algorithm.mode=partial_rollout", "algorithm.partial_overprovision=1.0"),
        ("algorithm.mode=one_step", "algorithm.staleness_filter=1"),
        ("algorithm.mode=sync", "workload.group_size=2", "algorithm.dynamic_sampling=true"),
    ],
)
def test_the_controllers_start_batches_where_their_policy_allows(overrides) -> None:
    """Each batch a controller starts is checked against the mode's admission policy (the
    run raises where they disagree); small batches and single-token answers crowd the events."""
    tiny = (
        "workload.prompts_per_step=2",
        "workload.group_size=1",
        "workload.response_tokens={kind: fixed, value: 1}",
        "cluster.rollout_engines=1",
        "algorithm.max_staleness=0",
        "algorithm.minibatches_per_step=1",
        "weight_sync.pause_policy=overlapped",
    )
    trace = simulate(load_scenario(None, None, (*tiny, *overrides)), 4, 0)
    assert trace.steps["step"].to_list() == [0, 1, 2, 3]
