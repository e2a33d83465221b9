"""The pipeline's controller: which groups start when, the buffer, and the trace of the run.

One :class:`Coordinator` (a threaded Ray actor in a run; a plain object in tests) holds what the
simulator's cluster holds: the FIFO queue of samples waiting for an engine, the buffer of
completed groups, each engine's weight version, and the mode's rules, written as the simulator
states them (:mod:`stalesim.sim.modes`):

* ``sync``: batch ``k`` starts once step ``k-1`` is trained and every engine holds its weights;
* ``one_step``: batch ``k+1`` starts once batch ``k`` is generated and every engine holds the
  weights of step ``k-1``;
* ``async``: a group starts whenever an engine has a free slot, unless the admission limit
  says it could not be consumed in time: at most
  :func:`~stalesim.sim.modes.asynchronous.groups_ahead` groups (``(max_staleness + 1)`` chunks,
  or ``(1 + max_stale_fraction)`` publication periods) beyond ``m`` chunks, ``m`` the oldest
  version an engine holds, exactly as the simulator admits. Nothing is dropped for being
  staler than ``max_staleness`` when consumed (a slow group may be); engines take new weights
  when they have drained (or, with ``inflight_updates``, at the next decode iteration);
* ``partial_rollout``: a round runs until ``B`` groups are complete; then every engine stops
  its live sequences, which resume next round on the new weights (their KV cache recomputed).
  The round ends at the report that completes the batch: the reply to it admits nothing and
  tells the engine to stop, so no sequence gains a token once the batch is complete (the
  simulator stops them at that iteration boundary).

Groups are consumed in completion order (the simulator's default ``consumption_order``); only
the separate drop filter ``staleness_filter`` discards a group, one staler than it when
consumed, with its reason, and in the batch-synchronous modes a fresh group replaces it. Weights
are published once per learner step (``publish_interval`` = M) and the learner takes whole
batches (no ``streaming``); :meth:`PipelineConfig.check` refuses the other settings. The trace uses the simulator's recorder
(:class:`~stalesim.sim.trace.TraceRecorder`), so the real run's samples, steps, busy intervals
and queue have exactly the simulator's columns.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Any

import numpy as np
import polars as pl
from stalesim.sim.cluster import STALENESS_FILTER
from stalesim.sim.modes.asynchronous import groups_ahead
from stalesim.sim.trace import TraceRecorder
from stalesim.validate.pipeline.config import PipelineConfig


def drop_bound(config: PipelineConfig) -> tuple[int, str] | None:
    """The simulator's drop rule (``Cluster._take_chunk``): only the drop filter
    ``algorithm.staleness_filter`` discards groups, in every mode; ``max_staleness`` limits
    admission and never drops."""
    f = config.algorithm.staleness_filter
    return None if f is None else (f, STALENESS_FILTER)


class Coordinator:
    """Admission, buffer, consumption order and the run's trace; thread-safe."""

    def __init__(self, config: PipelineConfig, t0: float) -> None:
        self.config = config
        self.t0 = t0
        train, algo = config.train, config.algorithm
        self.mode = algo.mode
        self.B = train.prompts_per_step
        self.G = train.samples_per_prompt
        self.M = train.minibatches_per_step
        self.per_minibatch = self.B // self.M
        self.steps = train.steps
        self.ahead = groups_ahead(algo, self.per_minibatch, self.M)
        self.inflight = algo.inflight_updates
        self.bound = drop_bound(config)
        self.task = train.task
        self.rng = np.random.default_rng(config.seed)
        self.lock = threading.Condition()
        self.rec = TraceRecorder(group_size=self.G)
        self.rec.queue(0.0, 0)
        self.digits: list[list[int]] = []
        self.rewards: list[float] = []  # per sample, NaN until it finishes
        self.pending: deque[int] = deque()
        self.buffer: deque[int] = deque()
        self.payload: dict[int, dict[str, Any]] = {}  # finished sample -> tokens, logps, reward
        self.engine_version = [0] * config.rollout_workers
        self.engine_epoch = [0] * config.rollout_workers
        self.preempt_epoch = 0
        self.launched = 0
        self.dropped = 0
        self.batches_launched = 0
        self.batches_taken = 0
        self.trained = 0
        self.open_groups = 0
        self.round_launched = -1
        self.round_closed = -1  # partial_rollout: the last round whose batch was complete
        self.published_version = 0
        self.taking = 0  # groups an unfinished take_batch holds, out of the buffer
        self.weights: Any = None
        self.stopped = False
        self.decode_rows: list[tuple] = []
        self.prefill_rows: list[tuple] = []
        self.learner_rows: list[tuple] = []
        self.sync_rows: list[tuple] = []
        self.publish_rows: list[tuple] = []
        self.step_extra: list[dict[str, Any]] = []

    def start(self, t0: float) -> None:
        """Start the clock (once every actor is up) and, in one_step mode, the first batch."""
        with self.lock:
            self.t0 = t0
            if self.mode == "one_step" and self.batches_launched == 0:
                self._launch(self.B)
                self.batches_launched = 1

    def now(self) -> float:
        return time.time() - self.t0

    # -- groups -----------------------------------------------------------------------------
    def _launch(self, count: int) -> None:
        now = self.now()
        for _ in range(count):
            g = self.rec.add_group(now, self.task.prompt_len, [0] * self.G)
            self.digits.append(
                self.rng.integers(0, self.task.base, self.task.problem_width).tolist()
            )
            self.pending.extend(range(g * self.G, (g + 1) * self.G))
            self.rewards.extend([math.nan] * self.G)
            self.open_groups += 1
        self.launched += count

    def _min_version(self) -> int:
        return min(self.engine_version)

    def _admission(self) -> None:
        """Launch what the mode allows now (batch-level modes); async launches per group."""
        low = self._min_version()
        if self.mode == "sync":
            k = self.batches_launched
            if k < self.steps and k == self.trained and low >= k * self.M:
                self._launch(self.B)
                self.batches_launched += 1
        elif self.mode == "one_step":
            k = self.batches_launched  # the batch to launch next
            if (
                k < self.steps
                and self.open_groups == 0
                and (k < 2 or (self.trained >= k - 1 and low >= (k - 1) * self.M))
            ):
                self._launch(self.B)
                self.batches_launched += 1
        elif self.mode == "partial_rollout":
            r = self.batches_taken
            if (
                r < self.steps
                and self.round_launched < r
                and self.trained >= r
                and low >= r * self.M
                and all(e >= self.preempt_epoch for e in self.engine_epoch)
            ):
                target = math.ceil(self.B * (1.0 + self.config.algorithm.partial_overprovision))
                self._launch(max(0, target - len(self.buffer) - self.open_groups))
                self.round_launched = r

    def _round_complete(self) -> bool:
        """partial_rollout: the open round's batch is in the buffer, counted as
        :meth:`take_batch` will take it (in order, the drop filter applied)."""
        r = self.batches_taken
        if self.round_launched != r or self.round_closed >= r:
            return False
        accepted = self.taking
        for g in self.buffer:
            if accepted >= self.B:
                break
            version = r * self.M + accepted // self.per_minibatch
            if self.bound is None or version - self.rec.g_vmin[g] <= self.bound[0]:
                accepted += 1
        return accepted >= self.B

    def _async_may_launch(self) -> bool:
        valid = self.launched - self.dropped
        return valid < self._min_version() * self.per_minibatch + self.ahead

    def _may_admit(self, engine: int) -> bool:
        if self.mode == "partial_rollout":
            return (
                self.round_launched == self.batches_taken
                and self.round_closed < self.batches_taken
                and self.engine_epoch[engine] >= self.preempt_epoch
            )
        if self.mode == "async" and not self.inflight:
            # an engine with newer weights waiting stops admitting and drains (sim: engine.py)
            return self.engine_version[engine] >= self.published_version
        return True

    # -- the engines' side ------------------------------------------------------------------
    def exchange(
        self,
        engine: int,
        version: int,
        epoch: int,
        free: int,
        live: int,
        finished: list[dict[str, Any]],
        parked: list[dict[str, Any]],
        timings: dict[str, list[tuple]],
        wait: bool,
    ) -> dict[str, Any]:
        """An engine reports (its version, finished samples, preempted ones, timings) and gets
        samples to admit, newer weights if any, and whether to preempt or stop."""
        with self.lock:
            self.engine_version[engine] = version
            self.engine_epoch[engine] = epoch
            self.decode_rows.extend(timings.get("decode", []))
            self.prefill_rows.extend(timings.get("prefill", []))
            self.sync_rows.extend(timings.get("sync", []))
            for row in timings.get("busy", []):
                self.rec.busy(*row)
            for item in finished:
                self._sample_finished(engine, item)
            if parked:
                self._park(parked)
            reply = self._reply(engine, version, epoch, free, live)
            if wait and not reply["admit"] and reply["weights"] is None and not reply["stop"]:
                self.lock.wait(self.config.idle_wait_s)
                reply = self._reply(engine, version, epoch, free, live)
            return reply

    def _reply(self, engine: int, version: int, epoch: int, free: int, live: int) -> dict:
        admit: list[dict[str, Any]] = []
        if not self.stopped:
            self._admission()
            if free > 0 and self._may_admit(engine):
                while len(admit) < free:
                    if not self.pending:
                        if self.mode != "async" or not self._async_may_launch():
                            break
                        self._launch(1)
                    sid = self.pending.popleft()
                    admit.append(self._work(sid, engine))
        weights = None
        if self.published_version > version and self.weights is not None:
            weights = (self.published_version, self.weights)
        preempt = self.mode == "partial_rollout" and epoch < self.preempt_epoch
        return {
            "admit": admit,
            "weights": weights,
            "preempt": preempt,
            "epoch": self.preempt_epoch,
            "stop": self.stopped,
        }

    def _work(self, sid: int, engine: int) -> dict[str, Any]:
        rec = self.rec
        g = sid // self.G
        if rec.s_start[sid] != rec.s_start[sid]:
            rec.s_start[sid] = self.now()
        rec.s_engine[sid] = engine
        done = self.payload.pop(sid, None)
        return {
            "sample_id": sid,
            "prompt": self.task.prompt_of(self.digits[g]),
            "tokens": done["tokens"] if done else [],
            "logps": done["logps"] if done else [],
            "versions": done["versions"] if done else [],
        }

    def _park(self, parked: list[dict[str, Any]]) -> None:
        """Preempted sequences keep their tokens and go back to the front of the queue."""
        for item in sorted(parked, key=lambda x: x["sample_id"], reverse=True):
            self.payload[item["sample_id"]] = item
            self.pending.appendleft(item["sample_id"])

    def _sample_finished(self, engine: int, item: dict[str, Any]) -> None:
        rec = self.rec
        sid = item["sample_id"]
        versions = item["versions"]
        rec.s_len[sid] = len(item["tokens"])
        rec.s_done[sid] = len(item["tokens"])
        rec.s_engine[sid] = engine
        rec.s_finish[sid] = item["finish_s"]
        rec.s_vmin[sid] = min(versions)
        rec.s_vmax[sid] = max(versions)
        rec.s_vsum[sid] = float(sum(versions))
        self.payload[sid] = item
        self.rewards[sid] = float(item["reward"])
        g = sid // self.G
        rec.g_finished[g] += 1
        rec.g_vmin[g] = min(rec.g_vmin[g], rec.s_vmin[sid])
        rec.g_vmax[g] = max(rec.g_vmax[g], rec.s_vmax[sid])
        if rec.g_finished[g] == self.G:
            now = self.now()
            rec.g_complete[g] = now
            self.open_groups -= 1
            self.buffer.append(g)
            rec.queue(now, len(self.buffer))
            if self.mode == "partial_rollout" and self._round_complete():
                # the round ends now: this report's reply stops the engine's live sequences
                # and admits nothing, rather than one decode iteration later
                self.preempt_epoch += 1
                self.round_closed = self.batches_taken
            self.lock.notify_all()

    # -- the learner's side -----------------------------------------------------------------
    def take_batch(self, step: int, timeout_s: float) -> dict[str, Any] | None:
        """The ``B`` groups step ``step`` consumes, in completion order (drops applied); None
        if they are not there within ``timeout_s`` (the learner asks again)."""
        deadline = time.monotonic() + timeout_s
        asked = time.perf_counter()
        batch: list[int] = []
        rec = self.rec
        with self.lock:
            while len(batch) < self.B:
                self.taking = len(batch)
                while len(self.buffer) < self.B - len(batch):
                    left = deadline - time.monotonic()
                    if left <= 0 or self.stopped:
                        self.taking = 0
                        for g in reversed(batch):  # not consumed after all: back in order
                            self.buffer.appendleft(g)
                            rec.g_step[g] = -1
                            rec.g_version[g] = -1
                            rec.g_removed_s[g] = math.nan
                        return None
                    self.lock.wait(min(left, 0.05))
                now = self.now()
                dropped = 0
                for _ in range(self.B - len(batch)):
                    g = self.buffer.popleft()
                    rec.g_removed_s[g] = now
                    version = step * self.M + len(batch) // self.per_minibatch
                    if self.bound is not None and version - rec.g_vmin[g] > self.bound[0]:
                        rec.g_drop[g] = self.bound[1]
                        self.dropped += 1
                        dropped += 1
                        for sid in range(g * self.G, (g + 1) * self.G):
                            self.payload.pop(sid, None)
                        continue
                    rec.g_step[g] = step
                    rec.g_version[g] = version
                    batch.append(g)
                rec.queue(now, len(self.buffer))
                if dropped and self.mode in ("sync", "one_step", "partial_rollout"):
                    self._launch(dropped)  # batch-synchronous modes replace what they drop
            self.taking = 0
            self.batches_taken = step + 1
            if self.mode == "partial_rollout" and self.round_closed < step:
                # not closed by a report (a take that waited out drops): end the round now
                self.preempt_epoch += 1
                self.round_closed = step
            samples = []
            for g in batch:
                for sid in range(g * self.G, (g + 1) * self.G):
                    samples.append(self.payload.pop(sid))
            self.lock.notify_all()
            return {
                "groups": batch,
                "digits": [self.digits[g] for g in batch],
                "samples": samples,
                "taken_s": self.now(),
                "waited_s": time.perf_counter() - asked,
            }

    def publish(self, version: int, weights: Any, at_s: float, digest: str) -> None:
        """New weights in the object store (``weights`` is an opaque handle to them)."""
        with self.lock:
            self.published_version = version
            self.weights = weights
            self.publish_rows.append((version, at_s, digest))
            self.lock.notify_all()

    def step_done(
        self, row: dict[str, Any], learner_rows: list[tuple], busy: list[tuple], groups: list[int]
    ) -> None:
        """A learner step finished: its row, timing rows, busy intervals and the groups it
        consumed (their consumption time is the step's start)."""
        with self.lock:
            rec = self.rec
            for g in groups:
                rec.g_consumed_s[g] = row["start_s"]
            rec.step_start.append(row["start_s"])
            rec.step_end.append(row["end_s"])
            rec.step_idle.append(row["idle_before_s"])
            rec.step_v0.append(row["version_start"])
            rec.step_v1.append(row["version_end"])
            rec.step_tokens.append(row["tokens"])
            self.step_extra.append(row)
            self.learner_rows.extend(learner_rows)
            for b in busy:
                rec.busy(*b)
            self.trained = row["step"] + 1
            self.lock.notify_all()

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
            self.lock.notify_all()

    def progress(self) -> dict[str, int]:
        with self.lock:
            return {"trained": self.trained, "stopped": int(self.stopped)}

    # -- the record -------------------------------------------------------------------------
    def snapshot(self) -> dict[str, pl.DataFrame]:
        """Every table of the run so far (the files the driver writes)."""
        with self.lock:
            trace = self.rec.frames()
            steps = trace.steps
            if self.step_extra:
                extra = pl.DataFrame(self.step_extra).drop(
                    ["start_s", "end_s", "idle_before_s", "version_start", "version_end", "tokens"]
                )
                steps = steps.join(extra, on="step", how="left")
            rewards = pl.Series("reward", self.rewards, dtype=pl.Float64).fill_nan(None)
            return {
                "samples": trace.samples.with_columns(rewards),
                "steps": steps,
                "busy": trace.busy,
                "queue": trace.queue,
                "decode_timings": pl.DataFrame(
                    self.decode_rows,
                    schema={
                        "engine": pl.Int64,
                        "live_seqs": pl.Int64,
                        "context_tokens": pl.Int64,
                        "seconds": pl.Float64,
                        "time_s": pl.Float64,
                    },
                    orient="row",
                ),
                "prefill_timings": pl.DataFrame(
                    self.prefill_rows,
                    schema={
                        "engine": pl.Int64,
                        "tokens": pl.Int64,
                        "seconds": pl.Float64,
                        "time_s": pl.Float64,
                    },
                    orient="row",
                ),
                "learner_timings": pl.DataFrame(
                    self.learner_rows,
                    schema={
                        "step": pl.Int64,
                        "phase": pl.Utf8,
                        "tokens": pl.Int64,
                        "gpus": pl.Int64,
                        "seconds": pl.Float64,
                    },
                    orient="row",
                ),
                "weights": pl.DataFrame(
                    self.sync_rows,
                    schema={
                        "engine": pl.Int64,
                        "version": pl.Int64,
                        "seen_s": pl.Float64,
                        "start_s": pl.Float64,
                        "end_s": pl.Float64,
                        "digest": pl.Utf8,
                        "ready_s": pl.Float64,
                    },
                    orient="row",
                ),
                "published": pl.DataFrame(
                    self.publish_rows,
                    schema={"version": pl.Int64, "time_s": pl.Float64, "digest": pl.Utf8},
                    orient="row",
                ),
            }
