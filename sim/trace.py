"""The trace of a run: what happened to every sample, learner step and busy GPU.

While the simulation runs it appends to plain Python lists, column by column (cheap in the hot
loop); :meth:`TraceRecorder.frames` turns them into Polars frames once, at the end. Samples of
group ``g`` have ids ``g*G .. g*G+G-1``, so group-level facts (when it was launched, consumed or
dropped) are stored once per group and spread to its samples at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

NAN = float("nan")


@dataclass
class TraceRecorder:
    """Column lists filled during a run."""

    group_size: int
    # per sample
    s_prompt: list[int] = field(default_factory=list)
    s_len: list[int] = field(default_factory=list)
    s_done: list[int] = field(default_factory=list)
    s_admit_it: list[int] = field(default_factory=list)
    s_engine: list[int] = field(default_factory=list)
    s_start: list[float] = field(default_factory=list)
    s_finish: list[float] = field(default_factory=list)
    s_vmin: list[int] = field(default_factory=list)
    s_vmax: list[int] = field(default_factory=list)
    s_vsum: list[float] = field(default_factory=list)
    s_round_base: list[int] = field(default_factory=list)  # tokens done when its round began
    # per group
    g_launch: list[float] = field(default_factory=list)
    g_complete: list[float] = field(default_factory=list)
    g_finished: list[int] = field(default_factory=list)
    g_vmin: list[int] = field(default_factory=list)
    g_vmax: list[int] = field(default_factory=list)
    g_step: list[int] = field(default_factory=list)
    g_version: list[int] = field(default_factory=list)
    g_consumed_s: list[float] = field(default_factory=list)
    g_removed_s: list[float] = field(default_factory=list)
    g_drop: list[str | None] = field(default_factory=list)
    # per learner step
    step_start: list[float] = field(default_factory=list)
    step_end: list[float] = field(default_factory=list)
    step_idle: list[float] = field(default_factory=list)
    step_v0: list[int] = field(default_factory=list)
    step_v1: list[int] = field(default_factory=list)
    step_tokens: list[int] = field(default_factory=list)
    # busy intervals
    b_pool: list[str] = field(default_factory=list)
    b_unit: list[int] = field(default_factory=list)
    b_kind: list[str] = field(default_factory=list)
    b_start: list[float] = field(default_factory=list)
    b_end: list[float] = field(default_factory=list)
    # buffer occupancy
    q_time: list[float] = field(default_factory=list)
    q_groups: list[int] = field(default_factory=list)

    def add_group(self, now: float, prompt: int, responses: list[int]) -> int:
        """Register a launched group; returns its id."""
        g = len(self.g_launch)
        n = len(responses)
        self.g_launch.append(now)
        self.g_complete.append(NAN)
        self.g_finished.append(0)
        self.g_vmin.append(1 << 60)
        self.g_vmax.append(-1)
        self.g_step.append(-1)
        self.g_version.append(-1)
        self.g_consumed_s.append(NAN)
        self.g_removed_s.append(NAN)
        self.g_drop.append(None)
        self.s_prompt.extend([prompt] * n)
        self.s_len.extend(responses)
        self.s_done.extend([0] * n)
        self.s_admit_it.extend([0] * n)
        self.s_engine.extend([-1] * n)
        self.s_start.extend([NAN] * n)
        self.s_finish.extend([NAN] * n)
        self.s_vmin.extend([1 << 60] * n)
        self.s_vmax.extend([-1] * n)
        self.s_vsum.extend([0.0] * n)
        self.s_round_base.extend([0] * n)
        return g

    def busy(self, pool: str, unit: int, kind: str, start: float, end: float) -> None:
        if end > start:
            self.b_pool.append(pool)
            self.b_unit.append(unit)
            self.b_kind.append(kind)
            self.b_start.append(start)
            self.b_end.append(end)

    def queue(self, now: float, groups: int) -> None:
        self.q_time.append(now)
        self.q_groups.append(groups)

    def frames(self) -> Trace:
        """The recorded run as Polars frames (the output contract's columns)."""
        g_size = self.group_size
        n = len(self.s_len)
        group_id = np.repeat(np.arange(len(self.g_launch), dtype=np.int64), g_size)[:n]
        finish = np.asarray(self.s_finish, dtype=np.float64)
        g_step = np.asarray(self.g_step, dtype=np.int64)[group_id]
        g_version = np.asarray(self.g_version, dtype=np.int64)[group_id]
        g_drop = pl.Series(self.g_drop, dtype=pl.Utf8).gather(group_id)
        complete = np.isfinite(np.asarray(self.g_complete, dtype=np.float64))[group_id]
        vmin = np.asarray(self.s_vmin, dtype=np.int64)
        vmax = np.asarray(self.s_vmax, dtype=np.int64)
        length = np.asarray(self.s_len, dtype=np.int64)
        vsum = np.asarray(self.s_vsum, dtype=np.float64)
        finished = np.isfinite(finish)
        consumed = g_step >= 0
        samples = pl.DataFrame(
            {
                "sample_id": np.arange(n, dtype=np.int64),
                "group_id": group_id,
                "engine": np.asarray(self.s_engine, dtype=np.int64),
                "group_launch_s": np.asarray(self.g_launch, dtype=np.float64)[group_id],
                "start_s": np.asarray(self.s_start, dtype=np.float64),
                "finish_s": finish,
                "group_complete_s": np.asarray(self.g_complete, dtype=np.float64)[group_id],
                "consumed_s": np.asarray(self.g_consumed_s, dtype=np.float64)[group_id],
                "left_buffer_s": np.asarray(self.g_removed_s, dtype=np.float64)[group_id],
                "prompt_tokens": np.asarray(self.s_prompt, dtype=np.int64),
                "response_tokens": length,
                "behaviour_version_min": vmin,
                "behaviour_version_max": vmax,
                "consumed_step": g_step,
                "consumed_version": g_version,
                "staleness_max": g_version - vmin,
                "staleness_min": g_version - vmax,
                "staleness_mean_tokens": g_version - vsum / np.maximum(length, 1),
            }
        ).with_columns(
            pl.when(pl.col("engine") < 0).then(None).otherwise(pl.col("engine")).alias("engine"),
            pl.col(
                "start_s", "finish_s", "group_complete_s", "consumed_s", "left_buffer_s"
            ).fill_nan(None),
            *[
                pl.when(pl.Series(finished)).then(pl.col(c)).otherwise(None).alias(c)
                for c in ("behaviour_version_min", "behaviour_version_max")
            ],
            *[
                pl.when(pl.Series(consumed & finished)).then(pl.col(c)).otherwise(None).alias(c)
                for c in (
                    "consumed_step",
                    "consumed_version",
                    "staleness_max",
                    "staleness_min",
                    "staleness_mean_tokens",
                )
            ],
            pl.when(g_drop.is_not_null())
            .then(g_drop)
            .when(pl.Series(consumed))
            .then(None)
            .when(pl.Series(complete))
            .then(pl.lit("in_buffer"))
            .otherwise(pl.lit("in_flight"))
            .alias("dropped_reason"),
        )
        steps = pl.DataFrame(
            {
                "step": np.arange(len(self.step_start), dtype=np.int64),
                "start_s": self.step_start,
                "end_s": self.step_end,
                "idle_before_s": self.step_idle,
                "version_start": self.step_v0,
                "version_end": self.step_v1,
                "tokens": self.step_tokens,
            },
            schema_overrides={
                "start_s": pl.Float64,
                "end_s": pl.Float64,
                "idle_before_s": pl.Float64,
            },
        )
        busy = pl.DataFrame(
            {
                "pool": self.b_pool,
                "unit": self.b_unit,
                "kind": self.b_kind,
                "start_s": self.b_start,
                "end_s": self.b_end,
            },
            schema={
                "pool": pl.Utf8,
                "unit": pl.Int64,
                "kind": pl.Utf8,
                "start_s": pl.Float64,
                "end_s": pl.Float64,
            },
        )
        queue = pl.DataFrame(
            {"time_s": self.q_time, "groups_waiting": self.q_groups},
            schema={"time_s": pl.Float64, "groups_waiting": pl.Int64},
        )
        return Trace(samples=samples, steps=steps, busy=busy, queue=queue)


@dataclass
class Trace:
    """A finished run: one frame per file of the output contract."""

    samples: pl.DataFrame
    steps: pl.DataFrame
    busy: pl.DataFrame
    queue: pl.DataFrame
    end_s: float = 0.0
    wall_s: float = 0.0
    info: dict = field(default_factory=dict)
