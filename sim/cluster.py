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
from stalesim.sim.modes import MODES
from stalesim.sim.modes.asynchronous import groups_ahead
from stalesim.sim.modes.base import Admission, AdmissionState, RunShape
from stalesim.sim.scenario import Scenario
from stalesim.sim.trace import TraceRecorder

Progress = Callable[[int, int], None]
CHUNK_GROUPS = 1024
ZERO_VARIANCE = "zero_variance"
ABORTED = "aborted"  # still generating when the batch was full (slime aborts them)
SURPLUS = "surplus"  # completed beyond a full batch (verl keeps the first B)


class GroupSource:
    """Prompts, their ``G`` response lengths and whether their rewards are all equal.

    Lengths are drawn a chunk at a time from one generator; reward uniformity (dynamic
    sampling) from a second one, so that switching it on leaves the lengths unchanged. With
    ``response_growth_per_step`` the response lengths of a group launched after ``k`` learner
    steps are scaled by ``1 + growth * k`` (reasoning runs lengthen their answers as they train).
    """

    def __init__(self, scenario: Scenario, seed: int) -> None:
        self.work = scenario.workload
        self.rng = np.random.default_rng(seed)
        self.reward_rng = np.random.default_rng([seed, 1])
        self.dynamic_sampling = scenario.algorithm.dynamic_sampling
        self._prompts: list[int] = []
        self._responses: list[list[int]] = []
        self._uniform: list[bool] = []
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
        if self.dynamic_sampling:
            self._uniform = w.pass_rate.sample_uniform(
                self.reward_rng, CHUNK_GROUPS, w.group_size
            ).tolist()
        else:
            self._uniform = [False] * CHUNK_GROUPS
        self._next = 0

    def next(self, steps_done: int = 0) -> tuple[int, list[int], bool]:
        """The next prompt's length, its responses' lengths and whether its rewards are all
        equal, for a group launched after ``steps_done`` learner steps."""
        if self._next == len(self._prompts):
            self._refill()
        i = self._next
        self._next += 1
        responses = self._responses[i]
        growth = self.work.response_growth_per_step
        if growth and steps_done:
            scale, cap = 1.0 + growth * steps_done, self.work.max_response_tokens
            responses = [min(cap, max(1, round(n * scale))) for n in responses]
        return self._prompts[i], responses, self._uniform[i]


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
        self.chunk = self.B // self.M  # groups per optimizer step: the consumption chunk
        self.K = algo.publish_interval or self.M  # optimizer steps between publications
        self.streaming = algo.streaming
        self.rec = TraceRecorder(group_size=self.G)
        spec = MODES[algo.mode]
        self.admission: Admission = spec.admission or Admission()
        self.run = RunShape(
            steps=steps,
            batch_groups=self.B,
            minibatches=self.M,
            groups_ahead=groups_ahead(algo, self.chunk, self.K),
            overprovision=algo.partial_overprovision,
            staleness_filter=algo.staleness_filter,
        )
        self.batches_launched = 0
        self.batches_taken = 0
        self.source = GroupSource(scenario, seed)
        # learner steps vary (stragglers, shared nodes): a lognormal factor of mean 1 per
        # optimizer step, from its own generator so that lengths and rewards stay the same
        cv = scenario.cluster.learner_step_cv
        self.step_sigma = math.sqrt(math.log1p(cv * cv))
        self.step_rng = np.random.default_rng([seed, 2])
        self.buffer = Buffer(self.env, self.rec)
        preempts = spec.preempts
        # resumed partial rollouts recompute by default (their KV left the engine); in-flight
        # updates keep it (PipelineRL)
        kv_policy = algo.kv_cache_on_update or ("recompute" if preempts else "keep")
        self.pool = RolloutPool(
            self.env,
            self.rec,
            engines=scenario.cluster.rollout_engines,
            slots=scenario.cluster.max_num_seqs,
            kv_tokens=derived.kv_tokens_per_engine,
            time_model=derived.time_model,
            inflight=algo.inflight_updates,
            on_group_complete=self._group_complete,
            round_budget=algo.round_token_budget if preempts else None,
            prefix_caching=scenario.cluster.prefix_caching,
            recompute_kv=kv_policy == "recompute",
            max_groups=algo.max_concurrent_rollouts,
            iteration_cv=scenario.cluster.decode_iteration_cv,
            seed=seed,
        )
        self.trained = [self.env.event() for _ in range(steps)]
        self.batch_ready = [self.env.event() for _ in range(steps)]
        self.steps_done = 0
        self.launched = 0
        self.dropped = 0  # groups dropped by the staleness filter or discarded (zero variance)
        self.on_drop: Callable[[float, int], None] | None = None
        self.on_publish: Callable[[int, float], None] | None = None
        self._all_complete: simpy.Event | None = None
        self.dynamic_sampling = algo.dynamic_sampling
        self.uniform_rewards: list[bool] = []
        self.accepted = 0  # groups put into the buffer
        # with a batch-filling sampling policy: groups completing once this many are accepted
        # are surplus, not put into the buffer
        self.accept_limit: int | None = None
        self.on_accept: Callable[[float], None] | None = None
        # kept groups held back from the learner until a whole generation batch is over
        self.held: list[tuple[int, int]] | None = None
        # consumption deadlines (admission limit kept by the learner): the lower bound of each
        # group's deadline, and how many unfinished groups have each lower bound
        self.deadline_slack: int | None = None
        self.g_deadline_floor: list[int] = []
        self.in_flight_deadlines: dict[int, int] = {}
        self.blocking = scenario.weight_sync.pause_policy == "blocking"

    def consume_by_deadline(self, max_staleness: int) -> None:
        """Make the learner consume every group within ``max_staleness`` versions of the
        oldest weights that generated it (called by the mode before anything is launched)."""
        self.deadline_slack = max_staleness

    # -- groups ---------------------------------------------------------------------------
    def admission_state(self) -> AdmissionState:
        """What the mode's admission policy decides from, now."""
        return AdmissionState(
            launched=self.launched,
            dropped=self.dropped,
            open_groups=self.pool.open_groups,
            buffered=len(self.buffer),
            batches_launched=self.batches_launched,
            batches_taken=self.batches_taken,
            trained=self.steps_done,
            min_version=self.pool.min_version,
        )

    def launch_batch(self, now: float) -> None:
        """Launch the next batch (or round) that the mode's controller reached: as many groups
        as the mode's admission policy says. The controller's events and the policy state the
        same rule; a disagreement is a bug in the mode, not something to run through."""
        count = self.admission.batch(self.admission_state(), self.run)
        if count is None:
            raise RuntimeError(
                f"mode {self.scenario.algorithm.mode}: its controller starts batch "
                f"{self.batches_launched} where its admission policy does not allow it"
            )
        self.batches_launched += 1
        self.launch(count, now)

    def launch(self, count: int, now: float) -> None:
        """Launch ``count`` new groups: their samples join the pool's queue."""
        rec, pool, source = self.rec, self.pool, self.source
        slack = self.deadline_slack
        for _ in range(count):
            prompt, responses, uniform = source.next(self.steps_done)
            g = rec.add_group(now, prompt, responses)
            self.uniform_rewards.append(uniform)
            if slack is not None:
                floor = pool.min_version + slack
                self.g_deadline_floor.append(floor)
                self.in_flight_deadlines[floor] = self.in_flight_deadlines.get(floor, 0) + 1
            pool.add_group(g)
        self.launched += count

    def _group_complete(self, group: int, now: float) -> None:
        rec = self.rec
        key = 0
        if self.deadline_slack is not None:
            floor = self.g_deadline_floor[group]
            self.in_flight_deadlines[floor] -= 1
            if not self.in_flight_deadlines[floor]:
                del self.in_flight_deadlines[floor]
            key = rec.oldest_version(group) + self.deadline_slack
        if self.accept_limit is not None and self.accepted >= self.accept_limit:
            rec.drop(group, SURPLUS, now)
            self.dropped += 1
        elif self.dynamic_sampling and self.uniform_rewards[group]:
            rec.drop(group, ZERO_VARIANCE, now)
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop(now, 1)
        else:
            if self.held is None:
                self.buffer.put(group, now, key)
            else:
                self.held.append((group, key))
            self.accepted += 1
            if self.on_accept is not None:
                self.on_accept(now)
        if self._all_complete is not None and self.pool.open_groups == 0:
            event, self._all_complete = self._all_complete, None
            event.succeed()

    def release_held(self, now: float) -> None:
        """Hand the held groups to the learner and stop holding."""
        held, self.held = self.held or [], None
        for group, key in held:
            self.buffer.put(group, now, key)

    def abort_unfinished(self, now: float) -> int:
        """Stop every launched group that has not completed: its sequences leave the engines
        (their tokens were generated for nothing) and waiting ones never start. Returns the
        groups aborted."""
        pool, rec, G = self.pool, self.rec, self.G
        waiting = {sid // G for sid in pool.pending}
        pool.pending.clear()
        groups = sorted({sid // G for sid in pool.preempt_all(now)} | waiting)
        for g in groups:
            rec.drop(g, ABORTED, now)
            if pool.max_groups is not None and rec.has_started(g * G):
                pool.live_groups -= 1
        pool.open_groups -= len(groups)
        self.dropped += len(groups)
        if self._all_complete is not None and pool.open_groups == 0:
            event, self._all_complete = self._all_complete, None
            event.succeed()
        return len(groups)

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
        ws = self.scenario.weight_sync
        sent = trained_at + ws.publish_s  # the transfer starts after the learner's publish
        if self.blocking:
            if sent > env.now:
                yield env.timeout(sent - env.now)
            self.pool.load_all(version, env.now, sync_s + ws.load_s)
        else:
            staged = sent + sync_s
            if staged > env.now:
                yield env.timeout(staged - env.now)
            self.pool.load_all(version, env.now, ws.load_s)

    # -- learner --------------------------------------------------------------------------
    def _take_chunk(self, version: int) -> Generator:
        """Wait for and take the groups that ``version`` (one optimizer step) consumes.

        A drop filter discards groups staler than its bound as they are taken (they are
        replaced by later ones). Under consumption deadlines the learner takes groups earliest
        deadline first and waits while taking now would make a group miss its deadline.
        """
        env, rec, buffer, chunk = self.env, self.rec, self.buffer, self.chunk
        drop_reason, run = self.admission.drop_reason, self.run
        taken: list[int] = []
        while len(taken) < chunk:
            need = chunk - len(taken)
            if len(buffer) < need:
                yield buffer.wait_for(need)
            if self.deadline_slack is not None:
                while not buffer.deadlines_hold(need, version, chunk, self.in_flight_deadlines):
                    yield buffer.wait_for(len(buffer) + 1)
            dropped = 0
            for g in buffer.take(need, env.now):
                reason = drop_reason(version, rec.oldest_version(g), run)
                if reason is not None:
                    rec.drop(g, reason, env.now)
                    dropped += 1
                    continue
                rec.take(g, env.now, version)
                taken.append(g)
            if dropped:
                self.dropped += dropped
                if self.on_drop is not None:
                    self.on_drop(env.now, dropped)
        return taken

    def _chunk_size(self, groups: list[int]) -> tuple[int, int]:
        """Tokens of the chunk's sequences (prompt + response) and the sum of their squares
        (attention work grows with the square of a sequence's length)."""
        G, s_prompt, s_len = self.G, self.rec.prompt_tokens, self.rec.response_tokens
        tokens = sq_context_tokens = 0
        for g in groups:
            first = g * G
            prompt = s_prompt[first]
            lengths = s_len[first : first + G]
            generated = sum(lengths)
            tokens += G * prompt + generated
            # sum of (prompt + n)^2 over the group, expanded
            sq_context_tokens += (
                G * prompt * prompt + 2 * prompt * generated + sum([n * n for n in lengths])
            )
        return tokens, sq_context_tokens

    # ---- cost block: what one optimizer step's work costs, as (busy kind, seconds) --------
    def _chunk_phases(self, tokens: int, sq_context_tokens: int) -> list[tuple[str, float]]:
        """The learner's phases for one consumption chunk (old-policy and reference forward
        passes, then the update that makes a new version, always last)."""
        phases = self.derived.learner.step_phases(tokens, sq_context_tokens)
        if self.step_sigma:
            sigma = self.step_sigma
            factor = float(self.step_rng.lognormal(-0.5 * sigma * sigma, sigma))
            phases = [(kind, seconds * factor) for kind, seconds in phases]
        return phases

    # ---------------------------------------------------------------------------------------

    def learner(self) -> Generator:
        """Consume ``B`` groups per learner step in ``M`` chunks, one optimizer step (one
        version) each, and publish the weights every ``K`` optimizer steps.

        Batch consumption waits for the whole batch, runs the forward passes of every chunk,
        then the updates (verl, AReaL). Streaming consumption takes each chunk as soon as it
        has arrived and trains on it while later groups are still generating (PipelineRL).
        """
        env, M = self.env, self.M
        for step in range(self.steps):
            waited = 0.0
            start = math.nan
            tokens = 0
            unit: list[tuple[list[int], list[tuple[str, float]]]] = []
            for m in range(M):
                since = env.now
                groups = yield from self._take_chunk(step * M + m)
                waited += env.now - since
                size = self._chunk_size(groups)
                tokens += size[0]
                unit.append((groups, self._chunk_phases(*size)))
                if not self.streaming and m < M - 1:
                    continue
                if m == M - 1:
                    self.batches_taken = step + 1
                    self.batch_ready[step].succeed()
                if start != start:
                    start = env.now
                yield from self._train(
                    step, step * M + m + 1 - len(unit), unit, start, waited, tokens
                )
                unit = []

    def _train(
        self,
        step: int,
        first_version: int,
        unit: list[tuple[list[int], list[tuple[str, float]]]],
        start: float,
        waited: float,
        tokens: int,
    ) -> Generator:
        """Run the forward passes of the unit's chunks, then one update per chunk; close the
        learner step after its last update and publish every ``K`` versions."""
        env, rec, M, K = self.env, self.rec, self.M, self.K
        now = env.now
        for groups, _ in unit:
            for g in groups:
                rec.consume(g, step, now)
        switch_s = self.derived.learner.switch_s
        if switch_s > 0 and first_version == step * M:
            # colocated: the GPUs switch from generating to training once per learner step
            rec.busy("learner", 0, "switch", env.now, env.now + switch_s)
            yield env.timeout(switch_s)
        for _, phases in unit:
            for kind, seconds in phases[:-1]:
                if seconds > 0:
                    rec.busy("learner", 0, kind, env.now, env.now + seconds)
                    yield env.timeout(seconds)
        for i, (_, phases) in enumerate(unit):
            kind, seconds = phases[-1]
            rec.busy("learner", 0, kind, env.now, env.now + seconds)
            yield env.timeout(seconds)
            version = first_version + i + 1
            end = env.now
            if version == (step + 1) * M:
                rec.step_done(step, start, end, waited, step * M, version, tokens)
                self.steps_done = step + 1
                self.trained[step].succeed(end)
                if self.progress is not None:
                    self.progress(step + 1, self.steps)
            if version % K == 0:
                yield from self._publish(version, end)

    def _publish(self, version: int, end: float) -> Generator:
        """Publish ``version`` (the learner's own cost), then send it to the engines; a
        blocking transfer holds the learner too."""
        sync_s, publish_s = self.derived.sync_s, self.scenario.weight_sync.publish_s
        last = version >= self.steps * self.M
        if publish_s > 0:
            self.rec.busy("learner", 0, "sync", end, end + publish_s)
            if not last:
                yield self.env.timeout(publish_s)
            end += publish_s
        self.rec.busy("learner", 0, "sync", end, end + sync_s)
        if self.on_publish is not None:
            self.on_publish(version, end)
        if self.blocking and not last:
            yield self.env.timeout(sync_s)
