"""The pipeline's controller: which groups start when, the buffer, and the trace of the run.

One :class:`Coordinator` (a threaded Ray actor in a run; a plain object in tests) holds what the
simulator's cluster holds: the FIFO queue of samples waiting for an engine, the buffer of
completed groups and each engine's weight version. What may start, what is dropped and whether
taking a batch preempts the engines it asks the mode's admission policy
(:class:`~stalesim.sim.modes.base.Admission`), the same object the simulator's controllers ask,
with the same :class:`~stalesim.sim.modes.base.AdmissionState`; it compares no mode names, so
any registered mode with a policy runs here.

Groups are consumed in completion order (the simulator's default ``consumption_order``).
Weights are published once per learner step (``publish_interval`` = M) and the learner takes
whole batches (no ``streaming``); :meth:`PipelineConfig.check` refuses the other settings.
Preempting engines acknowledge it (their epoch) before a new round admits. A round that preempts
(``partial_rollout``) ends at the engine report that completes its batch, counted as
:meth:`take_batch` will take it: the reply to that report admits nothing and stops the engine's
live sequences, so no sequence gains a token once the batch is complete (the simulator stops them
at that iteration boundary). The trace is the
simulator's recorder (:class:`~stalesim.sim.trace.TraceRecorder`), so the real run's samples,
steps, busy intervals and queue have exactly the simulator's columns and accounting checks.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Any

import numpy as np
import polars as pl
from stalesim.sim.modes import MODES
from stalesim.sim.modes.asynchronous import groups_ahead
from stalesim.sim.modes.base import AdmissionState, RunShape
from stalesim.sim.trace import TraceRecorder
from stalesim.validate.pipeline.config import PipelineConfig


class Coordinator:
    """Admission, buffer, consumption order and the run's trace; thread-safe."""

    def __init__(self, config: PipelineConfig, t0: float) -> None:
        self.config = config
        self.t0 = t0
        train, algo = config.train, config.algorithm
        self.B = train.prompts_per_step
        self.G = train.samples_per_prompt
        self.M = train.minibatches_per_step
        self.per_minibatch = self.B // self.M
        self.steps = train.steps
        admission = MODES[algo.mode].admission
        if admission is None:
            raise ValueError(f"algorithm.mode={algo.mode} has no admission policy")
        self.policy = admission
        self.run = RunShape(
            steps=self.steps,
            batch_groups=self.B,
            minibatches=self.M,
            groups_ahead=groups_ahead(algo, self.per_minibatch, self.M),
            overprovision=algo.partial_overprovision,
            staleness_filter=algo.staleness_filter,
        )
        self.inflight = algo.inflight_updates
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
        self.round_closed = -1  # a preempting mode: the last round whose batch was complete
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
        """Start the clock (once every actor is up) and launch what the mode allows at once."""
        with self.lock:
            self.t0 = t0
            self._admission()

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

    def _state(self) -> AdmissionState:
        return AdmissionState(
            launched=self.launched,
            dropped=self.dropped,
            open_groups=self.open_groups,
            buffered=len(self.buffer),
            batches_launched=self.batches_launched,
            batches_taken=self.batches_taken,
            trained=self.trained,
            min_version=self._min_version(),
        )

    def _round_complete(self) -> bool:
        """A preempting mode's open round has its batch in the buffer, counted as
        :meth:`take_batch` will take it (in order, the drop filter applied)."""
        r = self.batches_taken
        if self.batches_launched <= r or self.round_closed >= r:
            return False
        accepted = self.taking
        for g in self.buffer:
            if accepted >= self.B:
                break
            version = r * self.M + accepted // self.per_minibatch
            if self.policy.drop_reason(version, self.rec.oldest_version(g), self.run) is None:
                accepted += 1
        return accepted >= self.B

    def _admission(self) -> None:
        """Launch the next batch (or round) if the mode's policy allows it now."""
        if self.policy.preempts_on_take and min(self.engine_epoch) < self.preempt_epoch:
            return  # engines are still stopping the last round's sequences
        count = self.policy.batch(self._state(), self.run)
        if count is not None:
            self._launch(count)
            self.batches_launched += 1

    def _may_launch_group(self) -> bool:
        """Whether the policy lets one more group start now (modes that launch per group)."""
        limit = self.policy.group_limit(self._min_version(), self.run)
        return limit is not None and self.launched - self.dropped < limit

    def _may_admit(self, engine: int) -> bool:
        if self.policy.preempts_on_take and (
            self.engine_epoch[engine] < self.preempt_epoch
            or self.round_closed >= self.batches_taken
        ):
            return False  # it has not stopped its sequences yet, or the round's batch is complete
        # with newer weights waiting and no in-flight updates, an engine may have to drain
        newer = not self.inflight and self.engine_version[engine] < self.published_version
        return self.policy.engine_may_admit(self._state(), newer)

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
                        if not self._may_launch_group():
                            break
                        self._launch(1)
                    sid = self.pending.popleft()
                    admit.append(self._work(sid, engine))
        weights = None
        if self.published_version > version and self.weights is not None:
            weights = (self.published_version, self.weights)
        preempt = self.policy.preempts_on_take and epoch < self.preempt_epoch
        return {
            "admit": admit,
            "weights": weights,
            "preempt": preempt,
            "epoch": self.preempt_epoch,
            "stop": self.stopped,
        }

    def _work(self, sid: int, engine: int) -> dict[str, Any]:
        g = sid // self.G
        self.rec.sample_started(sid, engine, self.now())
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
        rec.sample_generated(sid, engine, len(item["tokens"]), item["versions"])
        self.payload[sid] = item
        self.rewards[sid] = float(item["reward"])
        now = self.now()
        if rec.sample_done(sid, item["finish_s"], group_complete_s=now):
            self.open_groups -= 1
            self.buffer.append(sid // self.G)
            rec.queue(now, len(self.buffer))
            if self.policy.preempts_on_take and self._round_complete():
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
                            rec.untake(g)
                        return None
                    self.lock.wait(min(left, 0.05))
                now = self.now()
                dropped = 0
                for _ in range(self.B - len(batch)):
                    g = self.buffer.popleft()
                    version = step * self.M + len(batch) // self.per_minibatch
                    reason = self.policy.drop_reason(version, rec.oldest_version(g), self.run)
                    if reason is not None:
                        rec.drop(g, reason, now)
                        self.dropped += 1
                        dropped += 1
                        for sid in range(g * self.G, (g + 1) * self.G):
                            self.payload.pop(sid, None)
                        continue
                    rec.take(g, now, version, step)
                    batch.append(g)
                rec.queue(now, len(self.buffer))
                if dropped and self.policy.replaces_dropped:
                    self._launch(dropped)
            self.taking = 0
            self.batches_taken = step + 1
            if self.policy.preempts_on_take and self.round_closed < step:
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
                rec.consume(g, row["step"], row["start_s"])
            rec.step_done(
                row["step"],
                row["start_s"],
                row["end_s"],
                row["idle_before_s"],
                row["version_start"],
                row["version_end"],
                row["tokens"],
            )
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
