"""The figures `validate pipeline` prints and writes, on traces built by hand."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from stalesim.validate.pipeline.summary import figure_rows, overlap_fraction, run_figures

N, CADENCE, G = 20, 0.1, 8


def steps() -> pl.DataFrame:
    return pl.DataFrame({"step": np.arange(N), "end_s": CADENCE * (np.arange(N) + 1)})


def samples() -> pl.DataFrame:
    # every step consumes 8 samples lagging 0, 0, 0, 0, 1, 1, 2, 3; the warm-up's lag 9
    lags = [9] * G + [9] * G + [0, 0, 0, 0, 1, 1, 2, 3] * (N - 2)
    return pl.DataFrame({"consumed_step": np.repeat(np.arange(N), G), "staleness_max": lags})


def busy(rollout_offset: float) -> pl.DataFrame:
    """The learner works the second half of each cadence and waits the first; one engine
    decodes for half a cadence starting ``rollout_offset`` into each."""
    k = np.arange(N) * CADENCE
    rows = [
        *(("learner", "wait", s, s + 0.05) for s in k),
        *(("learner", "train", s + 0.05, s + 0.1) for s in k),
        *(("rollout", "decode", s + rollout_offset, s + rollout_offset + 0.05) for s in k),
    ]
    return pl.DataFrame(rows, schema=["pool", "kind", "start_s", "end_s"], orient="row")


def test_throughput_and_staleness_over_the_steady_state_window() -> None:
    f = run_figures(samples(), steps(), busy(0.075), G)
    # warm-up: 2 steps; 18 steps in the 1.8 s after the second step's end
    assert f["window"] == {"warmup_steps": 2, "steps": 18, "seconds": pytest.approx(1.8)}
    assert f["throughput"]["steps_per_s"] == pytest.approx(10.0)
    assert f["throughput"]["samples_per_s"] == pytest.approx(80.0)
    # the warm-up's lag 9 is left out; lags 0 (half), 1, 1, 2, 3
    assert f["staleness"] == {"mean": 0.875, "p50": 0.0, "p90": 3.0, "max": 3.0}


@pytest.mark.parametrize(("offset", "overlap"), [(0.075, 0.5), (0.0, 0.0), (0.05, 1.0)])
def test_overlap_is_the_share_of_learner_work_with_an_engine_decoding(
    offset: float, overlap: float
) -> None:
    f = run_figures(samples(), steps(), busy(offset), G)
    assert f["overlap"] == pytest.approx(overlap, abs=1e-9)


def test_two_engines_decoding_at_once_count_once() -> None:
    frame = pl.DataFrame(
        [
            ("learner", "train", 0.0, 2.0),
            ("rollout", "decode", 0.0, 1.0),
            ("rollout", "decode", 0.5, 1.5),
        ],
        schema=["pool", "kind", "start_s", "end_s"],
        orient="row",
    )
    assert overlap_fraction(frame, 0.0, 2.0) == pytest.approx(0.75)
    assert overlap_fraction(frame, 1.5, 2.0) == 0.0
    assert overlap_fraction(frame.filter(pl.col("pool") == "rollout"), 0.0, 2.0) is None


def test_a_run_without_steps_has_no_figures() -> None:
    empty = steps().clear()
    f = run_figures(samples().clear(), empty, busy(0.0).clear(), G)
    assert f["throughput"] == {"samples_per_s": None, "steps_per_s": None}
    assert f["staleness"] == {"mean": None, "p50": None, "p90": None, "max": None}
    assert f["overlap"] is None


def test_the_printout_shows_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    from stalesim.cli.validate_pipeline import print_run_figures

    figures = run_figures(samples(), steps(), busy(0.075), G)
    print_run_figures({"mode": "async", "figures": figures})
    out = capsys.readouterr().out
    for name, value in figure_rows(figures):
        assert value in out, name
    assert "80.0" in out and "0 / 3 / 3" in out and "50.0%" in out


def test_decoding_beside_the_publish_tail_is_not_overlap() -> None:
    """An engine that already holds the new weights may decode while the learner's publish call
    is still returning; a strictly alternating loop still reads 0."""
    frame = pl.DataFrame(
        [
            ("learner", "train", 0.0, 1.0),
            ("learner", "sync", 1.0, 1.4),
            ("learner", "overhead", 1.4, 1.5),
            ("rollout", "decode", 1.2, 2.0),
        ],
        schema=["pool", "kind", "start_s", "end_s"],
        orient="row",
    )
    assert overlap_fraction(frame, 0.0, 2.0) == 0.0
