"""Whether a task saturated within its horizon: the rule on reward curves of known shape, and
the label every fitted law (and so every shipped reading) carries."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from stalesim.cli import main
from stalesim.sim.law.model import Regime
from stalesim.sim.law.readings import readings, shipped_law
from stalesim.validate.law.saturation import SATURATION_RATIO, measure_saturation

WARM = 0.2


def _sweep(curves: dict[tuple[float, int, int], np.ndarray]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """runs and steps tables of runs keyed (lr, staleness, seed) with the given reward curves."""
    runs, steps = [], []
    for i, ((lr, s, seed), curve) in enumerate(curves.items()):
        rid = f"r{i}"
        runs.append({"run_id": rid, "lr": lr, "staleness": s, "seed": seed, "warm_reward": WARM})
        steps += [{"run_id": rid, "step": t, "reward_mean": float(r)} for t, r in enumerate(curve)]
    return pl.DataFrame(runs), pl.DataFrame(steps)


def _exponential(tau: float, steps: int = 200, top: float = 0.9) -> np.ndarray:
    t = np.arange(steps)
    return WARM + (top - WARM) * (1 - np.exp(-t / tau))


def _expected_ratio(curve: np.ndarray, horizon: int) -> float:
    window = max(10, horizon // 10)
    middle = curve[horizon // 2 - window : horizon // 2].mean()
    end = curve[horizon - window : horizon].mean()
    return (end - middle) / (middle - WARM)


@pytest.mark.parametrize(("tau", "saturated"), [(20.0, True), (60.0, True), (150.0, False)])
def test_exponential_curves_read_as_their_time_constant_says(tau: float, saturated: bool) -> None:
    curve = _exponential(tau)
    runs, steps = _sweep({(1e-3, 0, 0): curve, (1e-3, 0, 1): curve})
    result = measure_saturation(runs, steps, None)
    assert result is not None
    assert result.ratio == pytest.approx(_expected_ratio(curve, 200), rel=1e-9)
    # without the window's smoothing the ratio is exp(-T / (2 tau))
    assert result.ratio == pytest.approx(math.exp(-200 / (2 * tau)), abs=0.1)
    assert result.saturated is saturated and (result.ratio < SATURATION_RATIO) is saturated
    assert result.final_reward == pytest.approx(curve[-20:].mean())
    assert (result.horizon, result.seeds, result.lr) == (200, 2, 1e-3)


def test_a_straight_line_never_saturates_and_a_shorter_horizon_saturates_less() -> None:
    line = WARM + 0.003 * np.arange(200)
    runs, steps = _sweep({(1e-3, 0, 0): line})
    result = measure_saturation(runs, steps, None)
    assert result.ratio == pytest.approx(_expected_ratio(line, 200)) and not result.saturated
    bent = _exponential(40.0)
    runs, steps = _sweep({(1e-3, 0, 0): bent})
    full, early = measure_saturation(runs, steps, None), measure_saturation(runs, steps, 60)
    assert full.saturated and not early.saturated and early.horizon == 60
    assert early.ratio == pytest.approx(_expected_ratio(bent, 60))


def test_the_best_on_policy_rate_is_read_and_the_rest_ignored() -> None:
    fast, slow = _exponential(20.0), _exponential(400.0, top=0.95)
    collapsed = _exponential(5.0)[:50]  # stopped at step 50
    runs, steps = _sweep(
        {
            (1e-3, 0, 0): slow,  # the best mean reward over 200 steps? no: fast is higher
            (2e-3, 0, 0): fast,
            (4e-3, 0, 0): collapsed,
            (2e-3, 8, 0): slow,  # stale runs are not read
        }
    )
    assert fast.mean() > slow.mean()
    result = measure_saturation(runs, steps, None)
    assert result.lr == 2e-3 and result.saturated and result.seeds == 1
    # no on-policy runs, no steps, or a horizon too short to read: not measured
    assert measure_saturation(runs.filter(pl.col("staleness") > 0), steps, None) is None
    assert measure_saturation(runs, None, None) is None
    assert measure_saturation(runs, steps, 15) is None


def test_a_regime_label_names_task_size_batch_horizon_and_saturation() -> None:
    regime = Regime(
        task="add two 3-digit base-10 numbers",
        model_params=101_000,
        prompts_per_step=64,
        samples_per_prompt=8,
        minibatches_per_step=4,
        steps=300,
        saturated=False,
        objective="clipped PPO",
    )
    assert regime.label() == (
        "add two 3-digit base-10 numbers; 101,000-parameter policy; 64 x 8 samples per step in "
        "4 mini-batches; 300-step horizon; did not saturate within its horizon"
    )
    assert regime.describe().startswith(regime.label() + "; clipped PPO")
    assert Regime(steps=10).label().endswith("10-step horizon; saturation not measured")
    assert Regime().describe() == "unknown regime"


def test_the_shipped_readings_carry_their_measured_labels() -> None:
    conservative, optimistic = shipped_law("conservative"), shipped_law("optimistic")
    assert conservative.regime.saturated is False and optimistic.regime.saturated is True
    assert conservative.regime.label() == (
        "sort 12 digits of base 16; 102,976-parameter policy; 16 x 8 samples per step; "
        "300-step horizon; did not saturate within its horizon"
    )
    assert optimistic.regime.label().endswith("160-step horizon; saturated within its horizon")
    assert "0.47x what the first half did" in conservative.regime.saturation
    for reading in readings():
        assert reading.label in reading.provenance


def test_the_readings_and_their_labels_are_listed_on_the_terminal() -> None:
    result = CliRunner().invoke(main, ["presets"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if "│" in line}
    for name, task, size, horizon, saturated in [
        ("conservative", "sort 12 digits of base 16", "102,976", "300 steps", "no"),
        ("optimistic", "sort 6 digits of base 10", "101,824", "160 steps", "yes"),
    ]:
        cells = [c.strip() for c in rows[name].split("│")[1:-1]]
        assert cells[:6] == [name, task, size, "16 x 8", horizon, saturated]


def test_the_simulate_and_plan_terminals_show_the_reading_label() -> None:
    from stalesim.cli.plan import recommendation_lines
    from stalesim.cli.tables import law_rows

    label = "sort 12 digits of base 16; 1-parameter policy"
    law = {
        "reading": "conservative",
        "readings": {"conservative": "x"},
        "labels": {"conservative": label},
        "lr_multiplier": 0.5,
        "staleness_summary": "max",
        "staleness": 4.0,
    }
    assert ("  measured on", label) in law_rows(law)
    # a summary written before readings carried labels shows the provenance instead
    older = {k: v for k, v in law.items() if k != "labels"}
    assert ("  measured on", "x") in law_rows(older)
    summary = {
        "name": "t",
        "counts": {
            "candidates": 1,
            "feasible": 0,
            "infeasible": 1,
            "simulated": 0,
            "screened_out": 0,
        },
        "evaluation": {"wall_s": 0.1},
        "recommendation": {"best": None},
        "law": law,
    }
    assert f"law reading conservative: measured on {label}" in recommendation_lines(summary)


def test_the_plan_and_simulate_pages_show_each_reading_with_its_label() -> None:
    from types import SimpleNamespace

    from stalesim.reports.plan_page import readings_text
    from stalesim.reports.simulate_page import law_readings_table

    shown = readings()
    law = {"reading": shown[0].name, "readings": {r.name: r.provenance for r in shown}}
    text = readings_text({"law": law}, SimpleNamespace(primary=shown[0].name))
    table = law_readings_table(law)
    for reading in shown:
        assert f"{reading.name}: {reading.provenance}." in text
        assert reading.label in text
    assert table["measured on"].to_list() == [r.provenance for r in shown]
    assert all(r.label in cell for r, cell in zip(shown, table["measured on"], strict=True))
