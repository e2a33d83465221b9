"""Time-binning of intervals against hand-computed values."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from stalesim.reports.simulate_page import pool_utilisation
from stalesim.reports.timeline import bin_intervals, step_signal_intervals


def intervals(*pairs: tuple[float, float], **columns: list) -> pl.DataFrame:
    return pl.DataFrame(
        {"start_s": [p[0] for p in pairs], "end_s": [p[1] for p in pairs], **columns}
    )


def test_two_intervals_cover_a_known_fraction_of_a_bin():
    # [1, 3) and [6, 7) inside the bin [0, 10): 3 busy seconds of 10.
    binned = bin_intervals(intervals((1.0, 3.0), (6.0, 7.0)), t_end=20.0, bins=2)
    assert binned["value"].to_list() == pytest.approx([0.3, 0.0], abs=1e-12)
    assert binned["bin_start_s"].to_list() == [0.0, 10.0]
    assert binned["bin_end_s"].to_list() == [10.0, 20.0]


def test_an_interval_straddling_bin_edges_is_split_by_overlap():
    # [3, 13) over bins of 5 s: 2 s of the first bin, all of the second, 3 s of the third.
    binned = bin_intervals(intervals((3.0, 13.0)), t_end=20.0, bins=4)
    assert binned["value"].to_list() == pytest.approx([0.4, 1.0, 0.6, 0.0], abs=1e-12)


def test_parts_outside_the_window_are_ignored():
    binned = bin_intervals(intervals((-5.0, 2.0), (9.0, 30.0)), t_end=10.0, bins=1)
    assert binned["value"].to_list() == pytest.approx([0.3], abs=1e-12)


def test_weights_give_the_time_weighted_mean():
    # A queue at 2 for [0, 4), 5 for [4, 10): mean over [0, 10) is (8 + 30) / 10.
    events = pl.DataFrame({"time_s": [0.0, 4.0], "groups_waiting": [2, 5]})
    signal = step_signal_intervals(events, time="time_s", value="groups_waiting", t_end=10.0)
    assert signal.rows() == [(0.0, 4.0, 2), (4.0, 10.0, 5)]
    binned = bin_intervals(signal, t_end=10.0, bins=1, weight="groups_waiting")
    assert binned["value"][0] == pytest.approx(3.8, abs=1e-12)
    assert (binned["low"][0], binned["high"][0]) == (2.0, 5.0)


def test_groups_are_binned_separately_and_empty_bins_are_zero():
    frame = intervals((0.0, 1.0), (2.0, 4.0), pool=["a", "b"])
    binned = bin_intervals(frame, t_end=4.0, bins=2, by=["pool"])
    assert binned.select("pool", "bin", "value").rows() == [
        ("a", 0, 0.5),
        ("a", 1, 0.0),
        ("b", 0, 0.0),
        ("b", 1, 1.0),
    ]


def test_binning_conserves_busy_time():
    rng = np.random.default_rng(3)
    start = rng.uniform(0.0, 100.0, 5000)
    frame = intervals(*zip(start, start + rng.exponential(2.0, 5000), strict=True))
    t_end, bins = 90.0, 37
    binned = bin_intervals(frame, t_end=t_end, bins=bins)
    clipped = (frame["end_s"].clip(0.0, t_end) - frame["start_s"].clip(0.0, t_end)).sum()
    assert binned["value"].sum() * (t_end / bins) == pytest.approx(clipped, rel=1e-9)


def test_pool_utilisation_of_the_hand_made_schedule(sim_out):
    busy = pl.read_parquet(sim_out / "busy.parquet")
    # One bin per 10 s period. Rollout: engine 0 decodes 8 s, engine 1 7.5 s, both sync 0.5 s,
    # over 2 units x 10 s. Learner: 4 s of 10 from the second period on.
    util = pool_utilisation(busy, t_end=40.0, bins=4)

    def series(pool: str, kind: str) -> list[float]:
        rows = util.filter((pl.col("pool") == pool) & (pl.col("kind") == kind)).sort("bin")
        return rows["utilisation"].to_list()

    assert series("rollout", "decode") == pytest.approx([15.5 / 20] * 4, abs=1e-12)
    assert series("rollout", "weight_sync") == pytest.approx([1.0 / 20] * 4, abs=1e-12)
    assert series("learner", "train") == pytest.approx([0.0, 0.4, 0.4, 0.4], abs=1e-12)
    assert set(util["units"].to_list()) == {1, 2}


def test_bad_bin_arguments_are_value_errors():
    with pytest.raises(ValueError, match="bins"):
        bin_intervals(intervals((0.0, 1.0)), t_end=1.0, bins=0)
    with pytest.raises(ValueError, match="t_end"):
        bin_intervals(intervals((0.0, 1.0)), t_end=0.0, bins=3)


def test_pool_size_from_the_scenario_counts_idle_engines(sim_out):
    # The scenario says 4 engines; only engines 0 and 1 ever worked, so the pool is half as busy.
    busy = pl.read_parquet(sim_out / "busy.parquet")
    util = pool_utilisation(busy, t_end=40.0, bins=1, units={"rollout": 4})
    rows = {
        (pool, kind): value
        for pool, kind, value in util.select("pool", "kind", "utilisation").rows()
    }
    assert rows[("rollout", "decode")] == pytest.approx(15.5 / 40, abs=1e-12)
    assert rows[("learner", "train")] == pytest.approx(12.0 / 40, abs=1e-12)
