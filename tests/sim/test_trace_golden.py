"""The same seed gives a bit-identical trace, today and after any refactor of the simulator.

Each mode's trace (every column of the samples, steps, busy and queue frames) is hashed and
compared with the digest recorded before the simulator's code was reorganised. A change of
behaviour, however small, changes a digest; a deliberate model change updates the table below
(regenerate with ``python -m tests.sim.test_trace_golden``), and says why in its commit.
"""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl
import pytest
from stalesim.sim.presets import load_scenario
from stalesim.sim.run import simulate

#: mode -> the overrides that exercise its rules (dynamic sampling and a drop filter included).
CASES: dict[str, tuple[str, ...]] = {
    "sync_colocated": ("algorithm.mode=sync_colocated",),
    "sync": (
        "algorithm.mode=sync",
        "algorithm.dynamic_sampling=true",
        "algorithm.dynamic_sampling_policy=regenerate",
    ),
    "one_step": (
        "algorithm.mode=one_step",
        "algorithm.dynamic_sampling=true",
        "algorithm.dynamic_sampling_policy=oversample",
    ),
    "async": ("algorithm.mode=async", "algorithm.max_staleness=2"),
    "async_filter": (
        "algorithm.mode=async",
        "algorithm.max_staleness=3",
        "algorithm.staleness_filter=1",
        "algorithm.minibatches_per_step=2",
        "algorithm.dynamic_sampling=true",
    ),
    "async_streaming": (
        "algorithm.mode=async",
        "algorithm.streaming=true",
        "algorithm.max_concurrent_rollouts=64",
    ),
    "partial_rollout": ("algorithm.mode=partial_rollout", "algorithm.max_staleness=2"),
}
STEPS, SEED = 6, 3


def _column_bytes(series: pl.Series) -> bytes:
    if series.dtype in (pl.Utf8, pl.String):
        return "\x1f".join("\x00" if v is None else v for v in series.to_list()).encode()
    mask = series.is_null().to_numpy()
    values = series.fill_null(0).to_numpy()
    return mask.tobytes() + np.ascontiguousarray(values).tobytes()


def trace_digest(overrides: tuple[str, ...]) -> str:
    """SHA-256 over every frame's column names, dtypes and values, and the run's end time."""
    trace = simulate(load_scenario(None, None, overrides), STEPS, SEED)
    h = hashlib.sha256()
    for name in ("samples", "steps", "busy", "queue"):
        frame: pl.DataFrame = getattr(trace, name)
        for col in frame.columns:
            h.update(f"{name}.{col}:{frame[col].dtype}".encode())
            h.update(_column_bytes(frame[col]))
    h.update(np.float64(trace.end_s).tobytes())
    return h.hexdigest()


#: Recorded at commit 8072256 (before the recorder and the folders were reorganised).
GOLDEN: dict[str, str] = {
    "async": "f8549d5c2c42ca9af03d0d9d0615e009a4d66a759f37e468f33049e73ef9eca0",
    "async_filter": "6833c0d5e0fa604e53258253e9a07c0ce23f63bde1cc652e5dde82afdbdc5916",
    "async_streaming": "ad788f526b3b116ddf60c006da029fe12384c32dc34147577696686af0b32532",
    "one_step": "10d8865cdf862e2a1f59c796946f5625792b878e51320867fac29cf5e9e73e88",
    "partial_rollout": "8ce75c04e324fd365b5e6d52b0e428a82a83f081e621e7c5ce571cb07f466e5b",
    "sync": "0590554a763f8f17b7e3e645dbc55b7f3b503aac3f0bc3f429efec081e1122a0",
    "sync_colocated": "2dbcef3d4dba327a8f6fa1376f277f7affc9e8d091ec319072e63d291d58b56a",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_trace_is_bit_identical_to_the_recorded_one(case: str) -> None:
    assert trace_digest(CASES[case]) == GOLDEN[case]


if __name__ == "__main__":
    for case in sorted(CASES):
        print(f'    "{case}": "{trace_digest(CASES[case])}",')
