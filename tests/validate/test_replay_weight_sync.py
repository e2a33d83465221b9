"""The replay reads the weight sync's three costs off a run's tables, by hand."""

from __future__ import annotations

import polars as pl
import pytest
from stalesim.validate.pipeline.replay import weight_sync_costs


def tables() -> dict[str, pl.DataFrame]:
    steps = pl.DataFrame(
        {"version_end": [1, 2, 3], "end_s": [1.0, 2.0, 3.0], "publish_s": [0.01, 0.03, 0.02]}
    )
    weights = pl.DataFrame(
        {
            "engine": [0, 0, 0],
            "version": [1, 2, 3],
            # heard 30, 25 and 50 ms after each step ended (the second before its publish
            # returned)
            "seen_s": [1.03, 2.025, 3.05],
            "start_s": [1.03, 2.05, 3.05],
            "end_s": [1.036, 2.058, 3.06],
            # the last version's report is the run's stop, 440 ms later
            "ready_s": [1.04, 2.07, 3.5],
        }
    )
    return {"steps": steps, "weights": weights}


@pytest.mark.parametrize(("inflight", "load"), [(False, (0.01 + 0.02) / 2), (True, 0.007)])
def test_publish_transfer_and_load_are_the_measured_means(inflight: bool, load: float) -> None:
    costs = weight_sync_costs(tables(), inflight)
    assert costs["publish_s"] == pytest.approx(0.02, abs=1e-12)
    # publish + latency = the mean time from a step's end until the engine heard: 35 ms
    assert costs["latency_s"] == pytest.approx(0.035 - 0.02, abs=1e-12)
    # between batches the engine gets work with its report (ready_s); in flight it decodes on;
    # the last version's load is followed by no work and is left out
    assert costs["load_s"] == pytest.approx(load, abs=1e-12)


def test_engines_hearing_before_the_publish_returns_cost_no_latency() -> None:
    t = tables()
    t["weights"] = t["weights"].with_columns(seen_s=pl.Series([1.005, 2.01, 3.015]))
    # heard 10 ms after the end on average, the publish took 20 ms: no transfer time left
    assert weight_sync_costs(t, False)["latency_s"] == 0.0


def test_a_run_without_loads_costs_only_its_publish() -> None:
    t = tables()
    t["weights"] = t["weights"].clear()
    assert weight_sync_costs(t, False) == {"publish_s": 0.02, "latency_s": 0.0, "load_s": 0.0}
