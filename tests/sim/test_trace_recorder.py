"""The trace recorder owns the accounting: what it is told lands in the frames' columns, and
what would break the accounting (a sample finishing twice, a group taken or dropped twice or
consumed twice, step rows out of order) is refused."""

from __future__ import annotations

import math

import pytest
from stalesim.sim.trace import TraceError, TraceRecorder


def two_groups() -> TraceRecorder:
    rec = TraceRecorder(group_size=2)
    assert rec.add_group(0.0, 10, [3, 5]) == 0
    assert rec.add_group(1.0, 20, [4, 4]) == 1
    return rec


def test_what_it_is_told_lands_in_the_columns() -> None:
    rec = two_groups()
    rec.sample_started(0, engine=1, now=0.5)
    rec.sample_started(0, engine=2, now=0.9)  # resumed elsewhere: the start is the first
    rec.sample_progress(0, 0, 0, 0)
    assert not rec.sample_done(0, 2.0, last_stint=(1, 2, 4))
    rec.sample_started(1, engine=1, now=0.5)
    assert rec.sample_done(1, 3.0, last_stint=(3, 3, 15))  # the group's last sample
    assert rec.oldest_version(0) == 0
    rec.take(0, now=3.5, version=4)
    rec.consume(0, step=1, now=3.6)
    rec.drop(1, "staleness_filter", now=4.0)
    rec.step_done(0, 0.0, 1.0, 0.0, 0, 2, 100)
    rec.step_done(1, 1.0, 4.0, 0.5, 2, 4, 200)
    trace = rec.frames()
    s = trace.samples
    assert s["engine"].to_list() == [2, 1, None, None]
    assert s["start_s"].to_list() == [0.5, 0.5, None, None]
    assert s["finish_s"].to_list() == [2.0, 3.0, None, None]
    assert s["behaviour_version_min"].to_list()[:2] == [0, 3]
    assert s["behaviour_version_max"].to_list()[:2] == [2, 3]
    assert s["staleness_mean_tokens"].to_list()[:2] == pytest.approx([4 - 4 / 3, 4 - 15 / 5])
    assert s["consumed_step"].to_list() == [1, 1, None, None]
    assert s["group_complete_s"].to_list() == [3.0, 3.0, None, None]
    assert s["dropped_reason"].to_list() == [None, None, "staleness_filter", "staleness_filter"]
    assert trace.steps["version_end"].to_list() == [2, 4]
    assert rec.steps == 2 and rec.groups == 2


def test_a_put_back_group_can_be_taken_again() -> None:
    rec = two_groups()
    rec.take(0, now=1.0, version=0, step=0)
    rec.untake(0)
    rec.take(0, now=2.0, version=1, step=1)
    left = rec.frames().samples["left_buffer_s"].to_list()
    assert left[0] == 2.0 and (left[2] is None or math.isnan(left[2]))


@pytest.mark.parametrize(
    ("act", "message"),
    [
        (lambda r: [r.sample_done(0, 1.0), r.sample_done(0, 2.0)], "sample 0 finished twice"),
        (lambda r: [r.take(0, 1.0, 0), r.take(0, 2.0, 1)], "group 0 taken after"),
        (lambda r: [r.take(0, 1.0, 0), r.drop(0, "x", 2.0)], "group 0 dropped"),
        (lambda r: [r.drop(1, "x", 1.0), r.take(1, 2.0, 0)], "group 1 taken after"),
        (lambda r: r.consume(0, 0, 1.0), "group 0 consumed without being taken"),
        (lambda r: [r.take(0, 1.0, 0), r.consume(0, 0, 1.0), r.consume(0, 0, 2.0)], "twice"),
        (lambda r: [r.take(0, 1.0, 0), r.consume(0, 0, 1.0), r.untake(0)], "put back after"),
        (lambda r: r.step_done(1, 0.0, 1.0, 0.0, 0, 1, 1), "step 1 written after 0 step rows"),
    ],
)
def test_broken_accounting_is_refused(act, message: str) -> None:
    with pytest.raises(TraceError, match=message):
        act(two_groups())
