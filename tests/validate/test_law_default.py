"""The law stalesim ships: a real fit, labelled with where it came from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from stalesim.sim.law import Law, default_law

RESULTS_LAW = Path(__file__).resolve().parents[2] / "reports/results/cpu-tiny/law.json"


def test_default_law_is_labelled_with_its_source():
    law = default_law()
    assert isinstance(law, Law)
    source = law.source
    assert source["preset"] == "cpu-tiny"
    assert source["command"].startswith("stalesim fit")
    assert source["date"] and source["machine"]
    assert sorted(p["staleness"] for p in law.points) == [0, 1, 2, 4, 8, 16, 32]


def test_default_law_matches_its_points_and_its_stored_fit_quality():
    law = default_law()
    fitted = [p for p in law.points if p["eta_opt_in_fit"]]
    s = np.array([p["staleness"] for p in fitted], dtype=float)
    residuals = np.log(np.array([p["eta_opt"] for p in fitted]) / law.eta_opt_at(s))
    assert residuals == pytest.approx(law.eta_opt.quality.residuals_log, abs=1e-9)
    assert np.sqrt(np.mean(residuals**2)) == pytest.approx(law.eta_opt.quality.rmse_log)


@pytest.mark.skipif(not RESULTS_LAW.exists(), reason="needs the repository's results folder")
def test_default_law_is_the_committed_cpu_tiny_fit():
    shipped = default_law().to_json_dict()
    committed = json.loads(RESULTS_LAW.read_text())
    assert shipped["source"]["copied_from"] == "reports/results/cpu-tiny/law.json"
    shipped.pop("source")
    committed.pop("source")
    assert shipped == committed
