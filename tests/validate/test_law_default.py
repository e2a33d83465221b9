"""The laws stalesim ships: real fits, labelled with where they came from and the regime they
hold for. The default is the conservative reading; the optimistic one is the clipped fit."""

from __future__ import annotations

import json

import numpy as np
import pytest
from stalesim.sim.law.model import Law
from stalesim.sim.law.readings import default_law, shipped_law

from tests.evidence import RESULTS, ROOT

# The shipped laws name the committed fit they were copied from, relative to the repository.
SHIPPED_FROM = "reports/results/law-objective/clip/law.json"
CONSERVATIVE_FROM = "reports/results/law-horizon/non-saturating/law.json"
RESULTS_LAW = RESULTS / "law-objective" / "clip" / "law.json"


def test_default_law_is_labelled_with_its_source_and_regime():
    law = shipped_law("optimistic")
    assert isinstance(law, Law)
    assert default_law().source["preset"] == "law-horizon-ns"
    assert default_law().regime.steps == 300
    source = law.source
    assert source["preset"] == "law-clip"
    assert source["command"].startswith("stalesim fit")
    assert source["date"] and source["machine"]
    assert law.regime is not None
    assert law.regime.objective.startswith("clipped PPO")
    assert law.regime.optimizer.startswith("AdamW")
    assert law.regime.prompts_per_step == 16 and law.regime.samples_per_prompt == 8
    assert law.regime.staleness_range == (0, 32)
    assert law.lag_axis == "realised"
    assert law.settings["bootstrap_unit_used"] == "seed (leave one out)"
    assert {0, 2, 8, 32} <= {p["staleness"] for p in law.points}


@pytest.mark.parametrize("name", ["conservative", "optimistic"])
def test_default_law_matches_its_points_and_its_stored_fit_quality(name: str):
    law = shipped_law(name)
    fitted = [p for p in law.points if p["eta_opt_in_fit"]]
    axis = "staleness_realised" if law.lag_axis == "realised" else "staleness"
    s = np.array([p[axis] for p in fitted], dtype=float)
    residuals = np.log(np.array([p["eta_opt"] for p in fitted]) / law.eta_opt_at(s))
    assert residuals == pytest.approx(law.eta_opt.quality.residuals_log, abs=1e-9)
    assert np.sqrt(np.mean(residuals**2)) == pytest.approx(law.eta_opt.quality.rmse_log)


@pytest.mark.skipif(not RESULTS_LAW.exists(), reason="needs the repository's results folder")
@pytest.mark.parametrize(
    ("name", "copied_from"), [("optimistic", SHIPPED_FROM), ("conservative", CONSERVATIVE_FROM)]
)
def test_shipped_laws_are_the_committed_fits(name: str, copied_from: str):
    shipped = shipped_law(name).to_json_dict()
    committed = json.loads((ROOT / copied_from).read_text())
    assert shipped["source"]["copied_from"] == copied_from
    shipped.pop("source")
    committed.pop("source")
    assert shipped == committed
