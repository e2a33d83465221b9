"""A mode is one ModeSpec: registering a toy one makes it simulate, screen and plan with no other
change (the pipeline's coordinator does not take it yet)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from stalesim.sim.modes import MODES
from stalesim.sim.modes.base import ScreenInputs, ScreenTiming
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
