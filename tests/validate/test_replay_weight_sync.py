"""The replay reads the weight sync's three costs off a run's tables, by hand."""

from __future__ import annotations

import polars as pl
import pytest
from stalesim.validate.pipeline.replay import weight_sync_costs


def tables() -> dict[str, pl.DataFrame]:
    steps = pl.DataFrame({"version_end": [1, 2], "end_s": [1.0, 2.0], "publish_s": [0.01, 0.03]})
    weights = pl.DataFrame(
        {
            "engine": [0, 0],
            "version": [1, 2],
            "seen_s": [1.015, 2.02],  # 5 ms after the publish; the second before it returned
            "start_s": [1.02, 2.05],
            "end_s": [1.026, 2.058],
            "ready_s": [1.03, 2.07],
        }
    )
    return {"steps": steps, "weights": weights}


@pytest.mark.parametrize(("inflight", "load"), [(False, (0.01 + 0.02) / 2), (True, 0.007)])
def test_publish_transfer_and_load_are_the_measured_means(inflight: bool, load: float) -> None:
    costs = weight_sync_costs(tables(), inflight)
    assert costs["publish_s"] == pytest.approx(0.02, abs=1e-12)
    assert costs["latency_s"] == pytest.approx((0.005 + 0.0) / 2, abs=1e-12)
    # between batches the engine gets work with its report (ready_s); in flight it decodes on
    assert costs["load_s"] == pytest.approx(load, abs=1e-12)


def test_a_run_without_loads_costs_only_its_publish() -> None:
    t = tables()
    t["weights"] = t["weights"].clear()
    assert weight_sync_costs(t, False) == {"publish_s": 0.02, "latency_s": 0.0, "load_s": 0.0}
