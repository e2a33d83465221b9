"""The assembled cluster: workload source, rollout pool, buffer and the learner process.

Mode controllers (:mod:`stalesim.sim.modes`) decide when groups are launched and when engines
take new weights; everything else is the same in every mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator

import numpy as np
import simpy
from stalesim.sim.buffer import Buffer
from stalesim.sim.derived import Derived
from stalesim.sim.engine import RolloutPool
from stalesim.sim.lengths import sample_group_lengths
from stalesim.sim.scenario import Scenario
from stalesim.sim.trace import TraceRecorder

Progress = Callable[[int, int], None]
CHUNK_GROUPS = 1024


class GroupSource:
    """Prompts and their ``G`` response lengths, drawn a chunk at a time from one generator."""

    def __init__(self, scenario: Scenario, rng: np.random.Generator) -> None:
        self.work = scenario.workload
        self.rng = rng
        self._prompts: list[int] = []
        self._responses: list[list[int]] = []
        self._next = 0

    def _refill(self) -> None:
        w = self.work
        prompts = sample_group_lengths(
            w.prompt_tokens, self.rng, CHUNK_GROUPS, 1, 0.0, w.max_prompt_tokens
        )
        responses = sample_group_lengths(
            w.response_tokens,
            self.rng,
            CHUNK_GROUPS,
            w.group_size,
            w.group_correlation,
            w.max_response_tokens,
        )
        self._prompts = prompts[:, 0].tolist()
        self._responses = responses.tolist()
        self._next = 0

    def next(self) -> tuple[int, list[int]]:
        if self._next == len(self._prompts):
            self._refill()
        i = self._next
        self._next += 1
        return self._prompts[i], self._responses[i]


class Cluster:
    """Rollout engines, buffer and learner wired together on one SimPy environment."""

    def __init__(
        self,
        scenario: Scenario,
        derived: Derived,
        steps: int,
        seed: int,
        progress: Progress | None = None,
    ) -> None:
        self.scenario = scenario
        self.derived = derived
        self.steps = steps
        self.progress = progress
        self.env = simpy.Environment()
        work, algo = scenario.workload, scenario.algorithm
        self.B = work.prompts_per_step
        self.G = work.group_size
        self.M = algo.minibatches_per_step
        self.rec = TraceRecorder(group_size=self.G)
        self.source = GroupSource(scenario, np.random.default_rng(seed))
        self.buffer = Buffer(self.env, self.rec)
        self.pool = RolloutPool(
            self.env,
            self.rec,
            engines=scenario.cluster.rollout_engines,
            slots=scenario.cluster.max_num_seqs,
            kv_tokens=derived.kv_tokens_per_engine,
            time_model=derived.time_model,
            inflight=algo.inflight_updates,
            on_group_complete=self._group_complete,
            round_budget=algo.round_token_budget if algo.mode == "partial_rollout" else None,
        )
        self.trained = [self.env.event() for _ in range(steps)]
        self.batch_ready = [self.env.event() for _ in range(steps)]
        self.launched = 0
        self.dropped = 0
        self.on_drop: Callable[[float, int], None] | None = None
        self.after_step: Callable[[int, float], None] | None = None
        self._all_complete: simpy.Event | None = None
        bounds = []
        if algo.mode == "async":
            bounds.append((algo.max_staleness, "max_staleness"))
        if algo.staleness_filter is not None:
            bounds.append((algo.staleness_filter, "staleness_filter"))
        self.bound = min(bounds) if bounds else None
        self.blocking = scenario.weight_sync.pause_policy == "blocking"

    # -- groups ---------------------------------------------------------------------------
    def launch(self, count: int, now: float) -> None:
        """Launch ``count`` new groups: their samples join the pool's queue."""
        rec, pool, source = self.rec, self.pool, self.source
        for _ in range(count):
            prompt, responses = source.next()
            pool.add_group(rec.add_group(now, prompt, responses))
        self.launched += count

    def _group_complete(self, group: int, now: float) -> None:
        self.buffer.put(group, now)
        if self._all_complete is not None and self.pool.open_groups == 0:
            event, self._all_complete = self._all_complete, None
            event.succeed()

    def all_complete(self) -> simpy.Event:
        """Fires when every launched group has completed."""
        event = self.env.event()
        if self.pool.open_groups == 0:
            event.succeed()
        else:
            self._all_complete = event
        return event

    # -- weights --------------------------------------------------------------------------
    def load_between_batches(self, version: int, trained_at: float) -> Generator:
        """Load ``version`` into idle engines: a blocking transfer stalls them; an overlapped
        one ran in the background since ``trained_at`` and is waited for only if unfinished."""
        env, sync_s = self.env, self.derived.sync_s
        if self.blocking:
            self.pool.load_all(version, env.now, sync_s)
        else:
            staged = trained_at + sync_s
            if staged > env.now:
                yield env.timeout(staged - env.now)
            self.pool.load_all(version, env.now, 0.0)

    # -- learner --------------------------------------------------------------------------
    def learner(self) -> Generator:
        """Take ``B`` groups, then per mini-batch one optimizer step (each one a version) with
        its phases (old-policy and reference forward passes, update), then publish the
        weights; a colocated learner first switches the GPUs from generating to training."""
        env, rec, buffer = self.env, self.rec, self.buffer
        B, G, M = self.B, self.G, self.M
        per_minibatch = B // M
        cost, sync_s = self.derived.learner, self.derived.sync_s
        s_prompt, s_len = rec.s_prompt, rec.s_len
        free_since = 0.0
        for step in range(self.steps):
            batch: list[int] = []
            while len(batch) < B:
                need = B - len(batch)
                if len(buffer) < need:
                    yield buffer.wait_for(need)
                dropped = 0
                for g in buffer.take(need, env.now):
                    rec.g_removed_s[g] = env.now
                    version = step * M + len(batch) // per_minibatch
                    if self.bound is not None and version - rec.g_vmin[g] > self.bound[0]:
                        rec.g_drop[g] = self.bound[1]
                        self.dropped += 1
                        dropped += 1
                        continue
                    rec.g_step[g] = step
                    rec.g_version[g] = version
                    batch.append(g)
                if dropped and self.on_drop is not None:
                    self.on_drop(env.now, dropped)
            self.batch_ready[step].succeed()
            start = env.now
            work_mb = []
            for m in range(M):
                total = sq = 0
                for g in batch[m * per_minibatch : (m + 1) * per_minibatch]:
                    first = g * G
                    prompt = s_prompt[first]
                    for length in s_len[first : first + G]:
                        total += prompt + length
                        sq += (prompt + length) * (prompt + length)
                    rec.g_consumed_s[g] = start
                work_mb.append((total, sq))
            tokens = sum(total for total, _ in work_mb)
            if cost.switch_s > 0:
                rec.busy("learner", 0, "switch", env.now, env.now + cost.switch_s)
                yield env.timeout(cost.switch_s)
            for total, sq in work_mb:
                for phase, seconds in cost.step_phases(total, sq):
                    rec.busy("learner", 0, phase, env.now, env.now + seconds)
                    yield env.timeout(seconds)
            end = env.now
            rec.step_start.append(start)
            rec.step_end.append(end)
            rec.step_idle.append(start - free_since)
            rec.step_v0.append(step * M)
            rec.step_v1.append((step + 1) * M)
            rec.step_tokens.append(tokens)
            self.trained[step].succeed(end)
            if self.after_step is not None:
                self.after_step(step, end)
            if self.progress is not None:
                self.progress(step + 1, self.steps)
            rec.busy("learner", 0, "sync", end, end + sync_s)
            if self.blocking and step + 1 < self.steps:
                yield env.timeout(sync_s)
            free_since = env.now

    def groups_in_flight_target(self, overprovision: float) -> int:
        return math.ceil(self.B * (1.0 + overprovision))
