"""The trace of a run: what happened to every sample, group, learner step and busy GPU.

:class:`TraceRecorder` owns the columns. The simulator and the real pipeline tell it what
happened through its methods (a group launched, a sample started, generated tokens on some
weights, finished; a group taken, consumed or dropped; a learner step done; a GPU busy; the
buffer's size), and it checks the accounting as it goes: a sample finishes once, a group is
taken or dropped once and consumed once, and each learner step's row is written once, in
order. Nothing else writes its columns. While a run goes the columns are plain Python lists
(cheap in the hot loop); :meth:`TraceRecorder.frames` turns them into Polars frames once, at
the end. Samples of group ``g`` have ids ``g*G .. g*G+G-1``, so group-level facts (when it was
launched, consumed or dropped) are stored once per group and spread to its samples at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

NAN = float("nan")
_NO_VERSION_YET = 1 << 60  # the minimum over no tokens: above every version


class TraceError(RuntimeError):
    """The run broke the trace's accounting (a bug in whoever reported it, never bad input)."""


class TraceRecorder:
    """The columns of a run and the methods that fill them."""

    def __init__(self, group_size: int) -> None:
        self.group_size = group_size
        # per sample
        self._s_prompt: list[int] = []
        self._s_len: list[int] = []
        self._s_engine: list[int] = []
        self._s_start: list[float] = []
        self._s_finish: list[float] = []
        self._s_vmin: list[int] = []
        self._s_vmax: list[int] = []
        self._s_vsum: list[float] = []
        # per group
        self._g_launch: list[float] = []
        self._g_complete: list[float] = []
        self._g_finished: list[int] = []
        self._g_vmin: list[int] = []
        self._g_step: list[int] = []
        self._g_version: list[int] = []
        self._g_consumed_s: list[float] = []
        self._g_removed_s: list[float] = []
        self._g_drop: list[str | None] = []
        # per learner step
        self._step_start: list[float] = []
        self._step_end: list[float] = []
        self._step_idle: list[float] = []
        self._step_v0: list[int] = []
        self._step_v1: list[int] = []
        self._step_tokens: list[int] = []
        # busy intervals
        self._b_pool: list[str] = []
        self._b_unit: list[int] = []
        self._b_kind: list[str] = []
        self._b_start: list[float] = []
        self._b_end: list[float] = []
        # buffer occupancy
        self._q_time: list[float] = []
        self._q_groups: list[int] = []

    # -- reading ----------------------------------------------------------------------------
    @property
    def prompt_tokens(self) -> Sequence[int]:
        """Every sample's prompt length (a live view: read it, never write it)."""
        return self._s_prompt

    @property
    def response_tokens(self) -> Sequence[int]:
        """Every sample's response length (a live view: read it, never write it)."""
        return self._s_len

    @property
    def groups(self) -> int:
        """Groups launched so far."""
        return len(self._g_launch)

    @property
    def steps(self) -> int:
        """Learner steps done so far."""
        return len(self._step_start)

    def has_started(self, sid: int) -> bool:
        """Whether sample ``sid`` was ever admitted by an engine."""
        start = self._s_start[sid]
        return start == start

    def oldest_version(self, g: int) -> int:
        """The oldest weights version that generated a token of group ``g`` so far."""
        return self._g_vmin[g]

    # -- groups and samples -----------------------------------------------------------------
    def add_group(self, now: float, prompt: int, responses: list[int]) -> int:
        """Register a group launched at ``now``; returns its id."""
        g = len(self._g_launch)
        n = len(responses)
        self._g_launch.append(now)
        self._g_complete.append(NAN)
        self._g_finished.append(0)
        self._g_vmin.append(_NO_VERSION_YET)
        self._g_step.append(-1)
        self._g_version.append(-1)
        self._g_consumed_s.append(NAN)
        self._g_removed_s.append(NAN)
        self._g_drop.append(None)
        self._s_prompt.extend([prompt] * n)
        self._s_len.extend(responses)
        nans = [NAN] * n
        self._s_engine.extend([-1] * n)
        self._s_start.extend(nans)
        self._s_finish.extend(nans)
        self._s_vmin.extend([_NO_VERSION_YET] * n)
        self._s_vmax.extend([-1] * n)
        self._s_vsum.extend([0.0] * n)
        return g

    def sample_started(self, sid: int, engine: int, now: float) -> None:
        """``engine`` admits sample ``sid`` at ``now`` (its start is the first admission)."""
        self._s_engine[sid] = engine
        start = self._s_start
        if start[sid] != start[sid]:
            start[sid] = now

    def sample_progress(self, sid: int, vmin: int, vmax: int, vsum: float) -> None:
        """Sample ``sid`` generated tokens on versions ``vmin..vmax``, ``vsum`` the sum of each
        token's version (one stint on an engine: until it finished, was preempted or ran out
        of its round's budget)."""
        if vmin < self._s_vmin[sid]:
            self._s_vmin[sid] = vmin
        if vmax > self._s_vmax[sid]:
            self._s_vmax[sid] = vmax
        self._s_vsum[sid] += vsum

    def sample_generated(self, sid: int, engine: int, length: int, versions: list[int]) -> None:
        """What a real engine generated for sample ``sid``: its response length and each
        token's weights version (the pipeline learns them only when the sample is done)."""
        self._s_len[sid] = length
        self._s_engine[sid] = engine
        self._s_vmin[sid] = min(versions)
        self._s_vmax[sid] = max(versions)
        self._s_vsum[sid] = float(sum(versions))

    def sample_done(
        self,
        sid: int,
        now: float,
        last_stint: tuple[int, int, int] | None = None,
        group_complete_s: float | None = None,
    ) -> bool:
        """Sample ``sid`` finished at ``now``, its last stint's versions ``last_stint`` as
        :meth:`sample_progress` takes them (None: recorded already); True when it was its
        group's last sample (the group is complete at ``group_complete_s``, default ``now``)."""
        finish = self._s_finish
        if finish[sid] == finish[sid]:
            raise TraceError(f"sample {sid} finished twice")
        finish[sid] = now
        s_vmin = self._s_vmin
        vmin = s_vmin[sid]
        if last_stint is not None:  # sample_progress, inline: this is the hot path
            low, high, vsum = last_stint
            if low < vmin:
                s_vmin[sid] = vmin = low
            if high > self._s_vmax[sid]:
                self._s_vmax[sid] = high
            self._s_vsum[sid] += vsum
        g = sid // self.group_size
        g_vmin = self._g_vmin
        if vmin < g_vmin[g]:
            g_vmin[g] = vmin
        count = self._g_finished[g] + 1
        self._g_finished[g] = count
        if count == self.group_size:
            self._g_complete[g] = now if group_complete_s is None else group_complete_s
            return True
        return False

    def take(self, g: int, now: float, version: int, step: int = -1) -> None:
        """The learner takes group ``g`` out of the buffer at ``now`` for ``version`` (and
        learner ``step`` when already known)."""
        if self._g_version[g] >= 0 or self._g_drop[g] is not None:
            raise TraceError(f"group {g} taken after it was taken or dropped")
        self._g_removed_s[g] = now
        self._g_version[g] = version
        self._g_step[g] = step

    def untake(self, g: int) -> None:
        """Put a taken group back (the learner gave up waiting for the rest of its batch)."""
        if self._g_consumed_s[g] == self._g_consumed_s[g]:
            raise TraceError(f"group {g} put back after it was consumed")
        self._g_removed_s[g] = NAN
        self._g_version[g] = -1
        self._g_step[g] = -1

    def consume(self, g: int, step: int, now: float) -> None:
        """Learner step ``step``, starting at ``now``, trains on group ``g`` (taken before)."""
        if self._g_version[g] < 0:
            raise TraceError(f"group {g} consumed without being taken")
        if self._g_consumed_s[g] == self._g_consumed_s[g]:
            raise TraceError(f"group {g} consumed twice")
        self._g_step[g] = step
        self._g_consumed_s[g] = now

    def drop(self, g: int, reason: str, now: float) -> None:
        """Group ``g`` leaves at ``now`` without being consumed, for ``reason``."""
        if self._g_version[g] >= 0 or self._g_drop[g] is not None:
            raise TraceError(f"group {g} dropped ({reason}) after it was taken or dropped")
        self._g_drop[g] = reason
        self._g_removed_s[g] = now

    # -- learner steps, GPUs, buffer --------------------------------------------------------
    def step_done(
        self,
        step: int,
        start: float,
        end: float,
        idle_before: float,
        version_start: int,
        version_end: int,
        tokens: int,
    ) -> None:
        """Learner step ``step`` ran from ``start`` to ``end`` (steps are written in order,
        once each)."""
        if step != len(self._step_start):
            raise TraceError(f"learner step {step} written after {len(self._step_start)} step rows")
        self._step_start.append(start)
        self._step_end.append(end)
        self._step_idle.append(idle_before)
        self._step_v0.append(version_start)
        self._step_v1.append(version_end)
        self._step_tokens.append(tokens)

    def busy(self, pool: str, unit: int, kind: str, start: float, end: float) -> None:
        """GPU ``unit`` of ``pool`` did ``kind`` of work from ``start`` to ``end`` (empty
        intervals are not kept)."""
        if end > start:
            self._b_pool.append(pool)
            self._b_unit.append(unit)
            self._b_kind.append(kind)
            self._b_start.append(start)
            self._b_end.append(end)

    def queue(self, now: float, groups: int) -> None:
        """The buffer holds ``groups`` completed groups from ``now`` on."""
        self._q_time.append(now)
        self._q_groups.append(groups)

    def frames(self) -> Trace:
        """The recorded run as Polars frames (the output contract's columns)."""
        g_size = self.group_size
        n = len(self._s_len)
        group_id = np.repeat(np.arange(len(self._g_launch), dtype=np.int64), g_size)[:n]
        finish = np.asarray(self._s_finish, dtype=np.float64)
        g_step = np.asarray(self._g_step, dtype=np.int64)[group_id]
        g_version = np.asarray(self._g_version, dtype=np.int64)[group_id]
        g_drop = pl.Series(self._g_drop, dtype=pl.Utf8).gather(group_id)
        complete = np.isfinite(np.asarray(self._g_complete, dtype=np.float64))[group_id]
        vmin = np.asarray(self._s_vmin, dtype=np.int64)
        vmax = np.asarray(self._s_vmax, dtype=np.int64)
        length = np.asarray(self._s_len, dtype=np.int64)
        vsum = np.asarray(self._s_vsum, dtype=np.float64)
        finished = np.isfinite(finish)
        consumed = g_step >= 0
        samples = pl.DataFrame(
            {
                "sample_id": np.arange(n, dtype=np.int64),
                "group_id": group_id,
                "engine": np.asarray(self._s_engine, dtype=np.int64),
                "group_launch_s": np.asarray(self._g_launch, dtype=np.float64)[group_id],
                "start_s": np.asarray(self._s_start, dtype=np.float64),
                "finish_s": finish,
                "group_complete_s": np.asarray(self._g_complete, dtype=np.float64)[group_id],
                "consumed_s": np.asarray(self._g_consumed_s, dtype=np.float64)[group_id],
                "left_buffer_s": np.asarray(self._g_removed_s, dtype=np.float64)[group_id],
                "prompt_tokens": np.asarray(self._s_prompt, dtype=np.int64),
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
                "step": np.arange(len(self._step_start), dtype=np.int64),
                "start_s": self._step_start,
                "end_s": self._step_end,
                "idle_before_s": self._step_idle,
                "version_start": self._step_v0,
                "version_end": self._step_v1,
                "tokens": self._step_tokens,
            },
            schema_overrides={
                "start_s": pl.Float64,
                "end_s": pl.Float64,
                "idle_before_s": pl.Float64,
            },
        )
        busy = pl.DataFrame(
            {
                "pool": self._b_pool,
                "unit": self._b_unit,
                "kind": self._b_kind,
                "start_s": self._b_start,
                "end_s": self._b_end,
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
            {"time_s": self._q_time, "groups_waiting": self._q_groups},
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
