"""The rounds of a ``partial_rollout`` trace: what was in flight when each batch was taken.

A ``partial_rollout`` round ends when the learner takes its ``B`` groups; the sequences still
generating then are stopped and resume next round on the new weights, and the next round tops
the groups in flight back up to ``ceil(B * (1 + partial_overprovision))``. Whether a round ends
with sequences to stop depends on how the round's sequences fill the engines, so this reads,
per learner step ``r`` (take instant ``T_r``, the first consumed group's ``left_buffer_s``),
from the trace's own columns (a pipeline run and its simulated replay have the same ones):

* ``left_complete``: complete groups still in the buffer after the take (the surplus of the
  round that completed rather than being stopped);
* ``in_flight``: sequences started before ``T_r`` that finished after it;
* ``stopped``: of those, the ones that finished only in a later round (started before ``T_r``,
  finished after the next round's first launch): stopped and resumed;
* ``stopped_tokens``: the mean tokens they had generated when the round ended (their tokens on
  the older of exactly two behaviour versions);
* ``iterations_after_take``: decode iterations the engines ran after ``T_r`` and before the
  next round's first launch (a pipeline run's ``decode_timings``, whose ``time_s`` is when an
  iteration ended; none for a simulated trace, whose engines stop at the last iteration
  boundary before ``T_r`` by construction);
* ``next_launched``: groups launched at the next round's start;
* ``queued_next``: sequences waiting for a slot or live when the next round starts (stopped,
  never started and newly launched): above the engines' slots, a round admits sequences
  mid-wave;
* ``spanning``: samples the step consumed whose tokens span two or more versions.

Run as ``python -m stalesim.validate.pipeline.rounds RUN_DIR [STEPS]``: the table of the run and
of its replay (``RUN_DIR/replay``, the simulator's first seed) side by side for the first
``STEPS`` learner steps, then both tables' means over the steady-state window.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl
from stalesim.common.tables import Column, read_table
from stalesim.sim.metrics import warmup_steps

SAMPLE_COLUMNS: dict[str, Column] = {
    "group_id": Column("int", min=0),
    "group_launch_s": Column("float", min=0, nullable=True),
    "start_s": Column("float", min=0, nullable=True),
    "finish_s": Column("float", min=0, nullable=True),
    "group_complete_s": Column("float", min=0, nullable=True),
    "left_buffer_s": Column("float", min=0, nullable=True),
    "response_tokens": Column("int", min=0),
    "behaviour_version_min": Column("int", nullable=True),
    "behaviour_version_max": Column("int", nullable=True),
    "consumed_step": Column("int", min=0, nullable=True),
    "consumed_version": Column("int", min=0, nullable=True),
    "staleness_mean_tokens": Column("float", min=0, nullable=True),
}
DECODE_COLUMNS: dict[str, Column] = {"time_s": Column("float")}

#: the table's columns, in order (``step`` first)
ROUND_COLUMNS = (
    "step",
    "left_complete",
    "in_flight",
    "stopped",
    "stopped_tokens",
    "iterations_after_take",
    "next_launched",
    "queued_next",
    "spanning",
)


def round_table(samples: pl.DataFrame, decode: pl.DataFrame | None = None) -> pl.DataFrame:
    """One row per learner step of a ``partial_rollout`` trace (columns :data:`ROUND_COLUMNS`,
    defined in the module's docstring); ``decode`` is the run's decode timing table, if it has
    one."""
    used = samples.filter(pl.col("consumed_step").is_not_null())
    takes = used.group_by("consumed_step").agg(pl.col("left_buffer_s").min()).sort("consumed_step")
    steps = takes["consumed_step"].to_list()
    take_s = takes["left_buffer_s"].to_numpy()
    start = samples["start_s"].fill_null(np.inf).to_numpy()
    finish = samples["finish_s"].fill_null(np.inf).to_numpy()
    launch = samples["group_launch_s"].fill_null(np.inf).to_numpy()
    complete = samples["group_complete_s"].fill_null(np.inf).to_numpy()
    consumed = samples["consumed_step"].fill_null(np.iinfo(np.int64).max).to_numpy()
    group = samples["group_id"].to_numpy()
    length = samples["response_tokens"].to_numpy().astype(np.float64)
    vmin = samples["behaviour_version_min"].fill_null(-1).to_numpy()
    vmax = samples["behaviour_version_max"].fill_null(-1).to_numpy()
    # tokens on the older of two versions: len * vmax - sum of the tokens' versions, the sum
    # read back from the token-mean staleness against the consuming version
    vsum = length * (
        samples["consumed_version"].cast(pl.Float64).to_numpy()
        - samples["staleness_mean_tokens"].to_numpy()
    )
    older = np.where(vmax - vmin == 1, length * vmax - vsum, np.nan)
    spans = vmax > vmin
    ended = None if decode is None else decode["time_s"].to_numpy()
    rows = []
    for i, (step, t) in enumerate(zip(steps, take_s, strict=True)):
        later = launch[launch > t]
        next_start = float(later.min()) if later.size else np.inf
        if i + 1 < len(take_s):
            next_start = min(next_start, float(take_s[i + 1]))
        live = (start < t) & (finish > t)
        stopped = live & (finish > next_start)
        left = np.unique(group[(complete <= t) & (consumed > step)]).size
        new = np.unique(group[launch == next_start]).size if np.isfinite(next_start) else 0
        queued = int(((launch <= next_start) & (finish > next_start)).sum())
        tokens = older[stopped]
        tokens = tokens[np.isfinite(tokens)]
        rows.append(
            {
                "step": step,
                "left_complete": left,
                "in_flight": int(live.sum()),
                "stopped": int(stopped.sum()),
                "stopped_tokens": float(tokens.mean()) if tokens.size else None,
                "iterations_after_take": None
                if ended is None
                else int(((ended > t) & (ended < next_start)).sum()),
                "next_launched": new,
                "queued_next": queued if np.isfinite(next_start) else None,
                "spanning": int((spans & (consumed == step)).sum()),
            }
        )
    schema = {
        "step": pl.Int64,
        "left_complete": pl.Int64,
        "in_flight": pl.Int64,
        "stopped": pl.Int64,
        "stopped_tokens": pl.Float64,
        "iterations_after_take": pl.Int64,
        "next_launched": pl.Int64,
        "queued_next": pl.Int64,
        "spanning": pl.Int64,
    }
    return pl.DataFrame(rows, schema=schema, orient="row")


def read_rounds(trace_dir: Path) -> pl.DataFrame:
    """:func:`round_table` of the trace in ``trace_dir`` (``samples.parquet``, and
    ``decode_timings.parquet`` where the trace is a pipeline run's)."""
    samples = read_table(trace_dir / "samples.parquet", SAMPLE_COLUMNS)
    timings = trace_dir / "decode_timings.parquet"
    decode = read_table(timings, DECODE_COLUMNS) if timings.is_file() else None
    return round_table(samples, decode)


def steady_means(table: pl.DataFrame) -> dict[str, float | None]:
    """Each column's mean over the steady-state window (the replay's warm-up rule)."""
    w = warmup_steps(table.height)
    steady = table.filter(pl.col("step") >= w)
    return {c: steady[c].mean() for c in ROUND_COLUMNS[1:]}  # type: ignore[misc]


def main(argv: list[str]) -> int:
    from rich.console import Console
    from rich.table import Table

    if not argv or len(argv) > 2 or (len(argv) == 2 and not argv[1].isdigit()):
        print("usage: python -m stalesim.validate.pipeline.rounds RUN_DIR [STEPS]", file=sys.stderr)
        return 2
    run = Path(argv[0])
    first = int(argv[1]) if len(argv) == 2 else 12
    try:
        real, sim = read_rounds(run), read_rounds(run / "replay")
    except ValueError as err:  # a missing or damaged table: one line naming it
        print(f"error: {err}", file=sys.stderr)
        return 2
    console = Console(width=160)
    table = Table(title=f"partial_rollout rounds of {run}: real | simulated (seed 0)")
    table.add_column("step", justify="right")
    for c in ROUND_COLUMNS[1:]:
        table.add_column(c, justify="right")

    def cell(a: float | None, b: float | None) -> str:
        def f(x: float | None) -> str:
            if x is None or x != x:
                return "-"
            return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"

        return f"{f(a)} | {f(b)}"

    for i in range(min(first, real.height, sim.height)):
        r, s = real.row(i, named=True), sim.row(i, named=True)
        table.add_row(str(r["step"]), *(cell(r[c], s[c]) for c in ROUND_COLUMNS[1:]))
    mr, ms = steady_means(real), steady_means(sim)
    table.add_row("steady mean", *(cell(mr[c], ms[c]) for c in ROUND_COLUMNS[1:]))
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
