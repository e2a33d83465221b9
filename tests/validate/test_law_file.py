"""law.json: the law family's shape, the file round trip, and one-line errors on bad files."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from stalesim.cli import main
from stalesim.sim.law.model import law_curve, load_law

LAW_OPT = {"eta0": 1e-3, "s_c": 4.0, "k": 2.0, "alpha": 1.0}


def test_law_curve_limits():
    # flat at eta0 well below s_c, and S ** -alpha well above it
    assert law_curve(0.0, **LAW_OPT) == pytest.approx(1e-3)
    assert law_curve(1e-3, **LAW_OPT) == pytest.approx(1e-3, rel=1e-6)
    big = np.array([1e4, 1e5])
    slope = np.diff(np.log(law_curve(big, **LAW_OPT))) / np.diff(np.log(big))
    assert slope[0] == pytest.approx(-LAW_OPT["alpha"], rel=1e-6)
    # at S = s_c the curve is down by 2 ** (alpha / k)
    assert law_curve(4.0, **LAW_OPT) == pytest.approx(1e-3 / 2**0.5)
    # k -> large is the hard minimum of the two regimes
    sharp = law_curve(np.array([1.0, 16.0]), 1e-3, 4.0, 60.0, 1.0)
    assert sharp == pytest.approx([1e-3, 1e-3 * 4 / 16], rel=1e-3)


def minimal_law() -> dict:
    return {
        "schema": "stalesim.law/1",
        "staleness_summary": "mean",
        "eta_opt": {**LAW_OPT, "intervals": {"alpha": [0.8, 1.2]}},
        "steps_to_target": {"steps0": 120.0, "p": 1.0},
        "source": {"preset": "hand-written"},
    }


def test_law_evaluates_all_three_halves(tmp_path):
    path = tmp_path / "law.json"
    path.write_text(json.dumps(minimal_law()))
    law = load_law(path)
    assert law.eta_opt_at(4.0) == pytest.approx(1e-3 / 2**0.5)
    # p = 1: half the learning rate, twice the steps
    half = law.eta_opt_at(np.array([0.0, 4.0]))
    steps = law.steps_to_target_at(np.array([0.0, 4.0]))
    assert steps[1] / steps[0] == pytest.approx(half[0] / half[1])
    assert steps[0] == pytest.approx(120.0)
    with pytest.raises(ValueError, match="no eta_max"):
        law.eta_max_at(1.0)


def test_fitted_law_round_trips_through_law_json(tmp_path):
    from stalesim.validate.law.fit import FitSettings, fit_runs_dir

    runs_dir = tmp_path / "sweep"
    runs_dir.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for s in (0, 2, 8, 32):
        eta_opt = law_curve(s, **LAW_OPT)
        for lr in np.geomspace(1e-4, 1e-2, 7):
            for seed in range(2):
                rows.append(
                    {
                        "run_id": f"{s}-{lr}-{seed}",
                        "lr": lr,
                        "staleness": s,
                        "seed": seed,
                        "reward_auc": 0.6 - 0.05 * np.log(lr / eta_opt) ** 2 + rng.normal(0, 0.01),
                        "collapsed": bool(lr > 8 * eta_opt),
                        "steps_to_target": 50.0 * LAW_OPT["eta0"] / eta_opt,
                    }
                )
    pl.DataFrame(rows).write_parquet(runs_dir / "runs.parquet")
    result, path = fit_runs_dir(runs_dir, settings=FitSettings(bootstrap=20), command="test")
    assert path == runs_dir / "law.json"
    loaded = load_law(path)
    assert loaded == result.law
    assert loaded.source["command"] == "test"
    assert loaded.eta_opt.fixed == ["k"]  # four staleness values: k is held at 1
    assert [p["staleness"] for p in loaded.points] == [0, 2, 8, 32]
    # the JSON is plain: no NaN tokens that strict JSON readers reject
    assert "NaN" not in path.read_text()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"schema": "stalesim.law/1"}), "'eta_opt'"),
        (json.dumps({**minimal_law(), "eta_opt": {**LAW_OPT, "eta0": -1}}), "eta_opt.eta0"),
        (json.dumps({**minimal_law(), "staleness_summary": "median"}), "staleness_summary"),
        (json.dumps({**minimal_law(), "extra": 1}), "extra"),
    ],
)
def test_malformed_law_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "law.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        load_law(path)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_missing_law_file_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no such law file"):
        load_law(tmp_path / "nope.json")


# ------------------------------------------------------------------ `stalesim fit`


def test_fit_command_rejects_bad_runs_dirs(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(main, ["fit", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2
    assert missing.output.strip().splitlines() == [
        f"error: {tmp_path / 'nowhere'}: no such runs directory"
    ]
    empty = runner.invoke(main, ["fit", str(tmp_path)])
    assert empty.exit_code == 2 and "no runs.parquet" in empty.output
    pl.DataFrame({"lr": [1e-3], "staleness": [0]}).write_parquet(tmp_path / "runs.parquet")
    columns = runner.invoke(main, ["fit", str(tmp_path)])
    assert columns.exit_code == 2
    assert "missing column(s) run_id, seed, collapsed" in columns.output
    assert "Traceback" not in columns.output
    (tmp_path / "runs.parquet").write_text("not parquet")
    garbage = runner.invoke(main, ["fit", str(tmp_path)])
    assert garbage.exit_code == 2 and "not a readable Parquet file" in garbage.output
