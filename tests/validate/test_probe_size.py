"""The probe-size study's designs, on the committed non-saturating sweep: a probe that holds the
runs the full sweep's estimate used reproduces its ratio, and one whose rates miss the optimum
gives no answer."""

from __future__ import annotations

import pytest
from stalesim.validate.law.probe_size import (
    Design,
    baseline_lr,
    designs,
    reference_ratios,
    run_design,
    step_table,
)
from stalesim.validate.law.sweep_runs import read_sweep

from tests.evidence import RESULTS

SWEEP = RESULTS / "law-horizon" / "non-saturating"
pytestmark = pytest.mark.skipif(
    not (SWEEP / "runs.parquet").exists(), reason="needs the repository's results folder"
)


def test_probes_reproduce_the_full_sweep_or_say_they_cannot():
    runs, steps = read_sweep(SWEEP)
    table = step_table(runs, steps)
    base = baseline_lr(runs)
    reference = reference_ratios(SWEEP / "law.json")
    assert base == pytest.approx(5e-4)
    assert set(reference) == {2, 4, 8}  # S = 16 and 32 are bounds in the full sweep
    # 4 rates x 3 seeds at S = 8 hold the three rates around the optimum the full sweep used
    (row,) = run_design(Design("ns", (8,), "4", (0, 1, 2)), table, base, reference, 20)
    assert row["answer"] and row["ratio"] == pytest.approx(reference[8], rel=1e-9)
    assert row["lo"] <= row["ratio"] <= row["hi"] and row["contains_full"]
    assert (row["probe_runs"], row["lrs_at_0"], row["lrs_at_S"]) == (21, 3, 4)
    # {b/2, b, 2b} at S = 8: the best rate is the lowest probed, so no estimate
    (row,) = run_design(Design("ns", (8,), "3", (0, 1, 2)), table, base, reference, 20)
    assert not row["answer"] and row["width"] is None and "edge" in row["why_none"]
    assert len(designs("ns", (2, 4, 8), [0, 1, 2])) == 3 * 4 * 4
