"""The rounds table of a partial_rollout trace, on a hand-made trace with known answers."""

from __future__ import annotations

import polars as pl
import pytest
from stalesim.validate.pipeline.rounds import ROUND_COLUMNS, round_table, steady_means

MISSING = None


def trace() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Groups of 2 samples of 3 tokens, B = 1. Step 0 is taken at 1.0: group 0 is complete,
    sample 2 (group 1) has 2 tokens on version 0 and is stopped, sample 3 never started. The
    next round launches group 2 at 1.5; sample 2 resumes and ends with 1 token on version 1.
    Step 1 (version 1) takes group 1 at 2.0; group 2 stays complete in the buffer."""
    rows = [
        # id, group, launch, start, finish, complete, left, vmin, vmax, step, version, token-mean
        (0, 0, 0.0, 0.0, 0.9, 0.9, 1.0, 0, 0, 0, 0, 0.0),
        (1, 0, 0.0, 0.0, 0.9, 0.9, 1.0, 0, 0, 0, 0, 0.0),
        (2, 1, 0.0, 0.5, 1.6, 1.7, 2.0, 0, 1, 1, 1, 1.0 - 1.0 / 3.0),  # versions 0, 0, 1
        (3, 1, 0.0, 1.5, 1.7, 1.7, 2.0, 1, 1, 1, 1, 0.0),
        (4, 2, 1.5, 1.5, 1.8, 1.8, MISSING, 1, 1, MISSING, MISSING, MISSING),
        (5, 2, 1.5, 1.5, 1.8, 1.8, MISSING, 1, 1, MISSING, MISSING, MISSING),
    ]
    names = [
        "sample_id",
        "group_id",
        "group_launch_s",
        "start_s",
        "finish_s",
        "group_complete_s",
        "left_buffer_s",
        "behaviour_version_min",
        "behaviour_version_max",
        "consumed_step",
        "consumed_version",
        "staleness_mean_tokens",
    ]
    samples = pl.DataFrame(rows, schema=names, orient="row").with_columns(
        pl.lit(3).alias("response_tokens")
    )
    # decode iterations end at these times; the one at 1.05 ran after step 0's take
    decode = pl.DataFrame({"time_s": [0.3, 0.6, 0.9, 1.05, 1.6, 1.8]})
    return samples, decode


def test_round_table_reads_the_stopped_sequences_and_the_surplus() -> None:
    table = round_table(*trace())
    assert table.columns == list(ROUND_COLUMNS)
    first, second = table.row(0, named=True), table.row(1, named=True)
    assert first["left_complete"] == 0
    assert first["in_flight"] == 1 and first["stopped"] == 1
    assert first["stopped_tokens"] == pytest.approx(2.0)  # its tokens on version 0
    assert first["iterations_after_take"] == 1
    assert first["next_launched"] == 1
    assert first["queued_next"] == 4  # samples 2, 3 and group 2's two
    assert first["spanning"] == 0
    assert second["left_complete"] == 1  # group 2, complete, not taken
    assert second["in_flight"] == second["stopped"] == 0
    assert second["stopped_tokens"] is None
    assert second["iterations_after_take"] == 0
    assert second["next_launched"] == 0 and second["queued_next"] is None
    assert second["spanning"] == 1  # sample 2
    means = steady_means(table)  # warm-up of 2 steps: 1 step, so step 1 alone
    assert means["left_complete"] == 1 and means["spanning"] == 1
    # a simulated trace has no decode timing table: the column is empty, the rest the same
    simulated = round_table(trace()[0])
    assert simulated["iterations_after_take"].null_count() == 2
    assert simulated.drop("iterations_after_take").equals(table.drop("iterations_after_take"))
