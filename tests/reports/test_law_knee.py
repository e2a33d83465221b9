"""The findings rows that set the pre-registered knee beside its confirmation sweep, rendered from
small synthetic folders: no prediction, runs pending, runs not yet fitted, and a fitted law whose
knee and slope fall inside, outside or across the pre-registered bands."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import polars as pl
import pytest
from stalesim.reports.law_findings import findings
from stalesim.reports.law_knee import KNEE_TESTS, band_verdict, knee_rows

EXPERIMENT = KNEE_TESTS[0][2]


def _rows(root: Path) -> list:
    """The rows of the first knee test (the non-saturating task's)."""
    return [r for r in knee_rows(root) if r.experiment.startswith(EXPERIMENT)]


TEMPLATE = Path(__file__).parents[2] / "reports/results/law-horizon/non-saturating/law.json"


def _prediction(
    root: Path, s_c: float = 3.0, lower_bound: bool = False, folder: str = "law-knee"
) -> None:
    folder = root / folder
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "schema": "stalesim.knee-prediction/1",
        "date": "2026-12-07T05:30:00Z",
        "commit": "0123456789abcdef",
        "prediction": {
            "eta0": 5.4e-4, "r_batch": 0.2, "g_upd": 80.0, "s_c": s_c,
            "s_c_interval": [s_c / 1.5, None if lower_bound else s_c * 1.5],
            "s_c_is_lower_bound": lower_bound, "slope": -1.1, "slope_interval": [-1.2, -1.0],
        },
        "test": {"knee_band_factor": 2.0, "slope_halfwidth": 0.3},
    }  # fmt: skip
    (folder / "prediction.json").write_text(json.dumps(record))


def _law(root: Path, s_c: float, s_c_interval: list[float], pair: dict | None) -> None:
    law = json.loads(TEMPLATE.read_text())
    law = copy.deepcopy(law)
    law["eta_opt"]["s_c"] = s_c
    law["eta_opt"]["alpha"] = 1.0
    law["eta_opt"]["intervals"]["s_c"] = s_c_interval
    law["slopes"]["eta_opt"]["pairs"] = [pair] if pair else []
    law["notes"] = [n for n in law["notes"] if not n.startswith("eta_opt: alpha")]
    folder = root / "law-knee" / "confirm"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "law.json").write_text(json.dumps(law))


def test_band_verdict_is_an_equivalence_test() -> None:
    assert band_verdict(2.0, 4.0, 1.5, 6.0) == "confirms"
    assert band_verdict(7.0, 9.0, 1.5, 6.0) == "refutes"
    assert band_verdict(0.5, 1.0, 1.5, 6.0) == "refutes"
    assert band_verdict(1.0, 4.0, 1.5, 6.0) == "inconclusive"
    assert band_verdict(20.0, 90.0, 1.5, None) == "confirms"


def test_no_prediction_and_runs_pending(tmp_path: Path) -> None:
    assert _rows(tmp_path)[0].measured == "no prediction"
    _prediction(tmp_path)
    (row,) = _rows(tmp_path)
    assert row.measured == "runs pending" and row.verdict == "pending"
    assert "S_c = 3 [2, 4.5]" in row.prediction and "commit 0123456" in row.prediction
    # the findings page carries the row with nothing else under the folder
    assert any(
        f.experiment == EXPERIMENT and f.measured == "runs pending" for f in findings(tmp_path)
    )


def test_runs_done_but_not_fitted(tmp_path: Path) -> None:
    _prediction(tmp_path)
    folder = tmp_path / "law-knee" / "confirm"
    folder.mkdir(parents=True)
    grids = [{"lrs": [1e-4, 2e-4], "staleness": ["fixed:0", "fixed:2"], "seeds": [3, 4, 5]}]
    (folder / "config.json").write_text(json.dumps({"grids": grids}))
    pl.DataFrame({"run_id": ["a", "b", "c"], "lr": [1e-4] * 3}).write_parquet(
        folder / "runs.parquet"
    )
    (row,) = _rows(tmp_path)
    assert row.measured.startswith("3 of 12 runs done, not yet fitted")
    assert row.verdict == "pending"


PAIR_IN = {"from": 3.9, "to": 7.9, "slope": -1.05, "lo": -1.3, "hi": -0.85, "verdict": "one_over_s",
           "n_replicates": 6}  # fmt: skip


@pytest.mark.parametrize(
    ("s_c", "interval", "pair", "knee", "slope"),
    [
        (3.5, [2.0, 5.0], PAIR_IN, "confirms", "confirms"),  # inside [1.5, 6] and [-1.4, -0.8]
        (20.0, [12.0, 30.0], {**PAIR_IN, "lo": -0.6, "hi": -0.2, "slope": -0.4}, "refutes",
         "refutes"),
        (5.0, [1.0, 9.0], {**PAIR_IN, "lo": -2.0, "hi": -0.5}, "inconclusive", "inconclusive"),
    ],
)  # fmt: skip
def test_a_fitted_confirmation_is_read_against_the_preregistered_bands(
    tmp_path: Path, s_c: float, interval: list[float], pair: dict, knee: str, slope: str
) -> None:
    _prediction(tmp_path)
    _law(tmp_path, s_c, interval, pair)
    knee_row, slope_row = _rows(tmp_path)
    assert knee_row.verdict == knee and f"s_c = {s_c:.3g}" in knee_row.measured
    assert "band [1.5, 6]" in knee_row.measured
    assert slope_row.verdict == slope
    assert "[-1.40, -0.80]" in slope_row.measured and "coverage" not in slope_row.measured
    assert slope_row.coverage.startswith("9")  # the fit's simulated slope coverage


def test_a_fit_whose_alpha_sits_on_its_bound_locates_no_knee(tmp_path: Path) -> None:
    _prediction(tmp_path)
    _law(tmp_path, 3.5, [2.0, 5.0], PAIR_IN)
    path = tmp_path / "law-knee" / "confirm" / "law.json"
    law = json.loads(path.read_text())
    law["notes"].append("eta_opt: alpha = 5 sits on its bound: the points do not pin it down")
    path.write_text(json.dumps(law))
    knee_row, _ = _rows(tmp_path)
    assert knee_row.verdict == "inconclusive" and "alpha sits on its bound" in knee_row.measured


def test_a_pair_below_the_predicted_knee_does_not_test_the_slope(tmp_path: Path) -> None:
    _prediction(tmp_path, s_c=5.0)
    _law(tmp_path, 5.0, [3.0, 8.0], {**PAIR_IN, "from": 2.0, "to": 3.9})
    _, slope_row = _rows(tmp_path)
    assert slope_row.verdict.startswith("inconclusive (not testable")


def test_a_knee_predicted_beyond_the_grid_is_read_as_flat(tmp_path: Path) -> None:
    _prediction(tmp_path, s_c=80.0, lower_bound=True)  # /2 is beyond S = 32
    _law(tmp_path, 5.0, [3.0, 8.0], None)
    knee_row, _ = _rows(tmp_path)
    # the template's eta_opt(8)/eta_opt(0) is 0.33 [0.09, 1.19]: it overlaps the flat band
    assert knee_row.measured.startswith("predicted flat to S = ")
    assert knee_row.verdict == "inconclusive"


def test_every_knee_test_gets_its_rows_from_its_own_folders(tmp_path: Path) -> None:
    """The addition task's prediction and sweep are read as the first task's are."""
    _prediction(tmp_path, s_c=8.0, lower_bound=True, folder="law-task2/knee-probe")
    rows = knee_rows(tmp_path)
    assert [r.measured for r in rows] == ["no prediction", "runs pending"]
    assert rows[1].experiment == KNEE_TESTS[1][2] and "S_c ≥ 8" in rows[1].prediction


def test_the_knee_row_carries_the_measured_coverage_of_its_interval(tmp_path: Path) -> None:
    _prediction(tmp_path)
    _law(tmp_path, 3.5, [2.0, 5.0], PAIR_IN)
    assert _rows(tmp_path)[0].coverage == "not simulated"
    record = {"coverage": 0.855, "n_sim": 200, "reported_share": 1.0}
    (tmp_path / "law-knee" / "confirm" / "knee_coverage.json").write_text(json.dumps(record))
    knee_row = _rows(tmp_path)[0]
    assert knee_row.coverage.startswith("86% (s_c, 200 synthetic sweeps")


def test_the_knee_verdict_reads_the_interval_calibrated_to_its_level(tmp_path: Path) -> None:
    _prediction(tmp_path)
    _law(tmp_path, 3.5, [2.0, 5.0], PAIR_IN)
    assert _rows(tmp_path)[0].verdict == "confirms"  # [2, 5] inside the band [1.5, 6]
    record = {
        "coverage": 0.55,
        "n_sim": 200,
        "reported_share": 1.0,
        "calibration": {"factor": 2.0, "coverage": 0.94, "n_intervals": 200},
    }
    (tmp_path / "law-knee" / "confirm" / "knee_coverage.json").write_text(json.dumps(record))
    knee_row = _rows(tmp_path)[0]
    # widened 2x on the log scale about 3.5: [3.5 (2/5)^2 ... ] = [1.4, 8.75], beyond the band
    assert "calibrated to its level (×2.00): [1.4, 8.75]" in knee_row.measured
    assert knee_row.verdict == "inconclusive"
    assert knee_row.coverage.startswith("94% (s_c, calibrated")
