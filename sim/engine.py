"""Rollout engines: inference servers with continuous batching, timed in closed form.

An engine holds at most ``slots`` live sequences and as many KV-cache tokens as its memory
allows; a sequence reserves its prompt plus its whole response when admitted (an engine that
never has to preempt). Every live sequence gains one token per decode iteration, so each
engine keeps an *iteration clock*: a sequence admitted at iteration ``i`` with ``r`` tokens to
go finishes at iteration ``i + r``. A heap of finish iterations gives the next completion, and
the time to reach it is the closed-form sum of the linear iteration times
(:mod:`stalesim.sim.time_model`): one simulation event per completion, none per token.

New sequences and new weights join at iteration boundaries. Admitting sequences costs their
prefill; with prefix caching the samples of one group on one engine share their prompt's
prefill and KV cache (computed by the first, kept while any of them is live). Loading weights
costs a stall; a sequence that continues on new weights (in-flight update, resumed partial
rollout) either keeps its KV cache as if the new weights had computed it, or recomputes it,
charged as prefill. The :class:`RolloutPool` holds the engines and the FIFO queue of samples
waiting for an engine.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from heapq import heappop, heappush

import numpy as np
import simpy
from stalesim.sim.time_model import DecodeTimeModel
from stalesim.sim.trace import TraceRecorder

NO_VERSION = -1
# an engine's heap holds finish iteration and sample id packed in one int (faster to compare
# than a pair, in the same order); sample ids stay far below 2**40
SID_BITS = 40
SID_MASK = (1 << SID_BITS) - 1


class Engine:
    """One inference server of ``tp`` GPUs."""

    def __init__(self, index: int, pool: RolloutPool) -> None:
        self.index = index
        self.pool = pool
        self.time_model = pool.time_model
        self.prefill_s_per_token = pool.time_model.prefill_s_per_token
        self.t0 = 0.0  # decoding from iteration it0 resumes at t0 (later than now while stalled)
        self.it0 = 0
        self.b = 0
        # context tokens = dsum + b * iteration; dsum sums (tokens at admission - admission iter)
        self.dsum = 0
        # (finish iteration << SID_BITS) | sample id: ordered as the pair, compared as one int
        self.heap: list[int] = []
        self.kv_free = pool.kv_tokens
        self.version = 0
        self.hist_it = [0]
        self.hist_v = [0]
        self.wake: simpy.Event | None = None
        self.span_start = math.nan
        self.next_version = NO_VERSION
        self.switch_stall_until = 0.0
        self.switch_stall_s = 0.0
        self.switch_load_s = 0.0
        self.prefix: dict[int, int] = {}  # group -> its live samples here (shared prompt KV)
        self.speed = 1.0  # the current span's iterations take this multiple of their model time
        self._wake_callback = self._on_wake  # bound once: one per decode span is many

    # -- time ---------------------------------------------------------------------------
    def _iterations_s(self, n: int) -> float:
        b = self.b
        return self.time_model.iterations_s(n, b, self.dsum + b * self.it0) * self.speed

    def _advance(self, now: float, round_up: bool = True) -> bool:
        """Move the state to an iteration boundary near ``now`` (the first one at or after it,
        or with ``round_up=False`` the last one before it). False when that boundary is the
        next completion, which its own event will handle."""
        if self.b == 0 or now <= self.t0:
            self.t0 = max(self.t0, now)
            return True
        n_next = (self.heap[0] >> SID_BITS) - self.it0
        span = (now - self.t0) / self.speed
        context = self.dsum + self.b * self.it0
        if round_up:
            n = self.time_model.iterations_within(span, self.b, context)
            if n >= n_next:
                return False
            self.t0 = max(self.t0 + self._iterations_s(n), now)
        else:
            n = min(self.time_model.iterations_before(span, self.b, context), n_next - 1)
            self.t0 = now
        self.it0 += n
        return True

    def _schedule(self, now: float) -> None:
        if self.b:
            n = (self.heap[0] >> SID_BITS) - self.it0
            if self.pool.iteration_cv:
                self.speed = self.pool.span_factor(n)
            event = self.pool.env.timeout(self.t0 + self._iterations_s(n) - now)
            event.callbacks.append(self._wake_callback)
            self.wake = event
        else:
            self.wake = None

    def _went_idle(self, at: float) -> None:
        """Close the decode span once the live set is empty."""
        if self.span_start == self.span_start:  # an open span (not NaN)
            self.pool.rec.busy("rollout", self.index, "decode", self.span_start, at)
            self.span_start = math.nan
            pool = self.pool
            pool.idle.add(self)
            if (
                pool._drained is not None
                and len(pool.idle) == len(pool.engines)
                and not pool.pending
            ):
                event, pool._drained = pool._drained, None
                event.succeed()

    # -- behaviour versions -------------------------------------------------------------
    def _leave(self, sid: int, end_it: int) -> tuple[int, int, int] | None:
        """Take ``sid`` off the engine at iteration ``end_it``; return the versions of the
        tokens it generated here (lowest, highest, sum over tokens), None if it generated
        none."""
        pool = self.pool
        start_it = pool.admit_it[sid]
        prompt = pool.prompt_tokens[sid]
        done = pool.done[sid]
        self.b -= 1
        self.dsum -= prompt + done - start_it
        self.kv_free += pool.response_tokens[sid]
        if pool.prefix_caching:
            g = sid // pool.group_size
            sharing = self.prefix[g] - 1
            if sharing:
                self.prefix[g] = sharing
            else:
                del self.prefix[g]
                self.kv_free += prompt
        else:
            self.kv_free += prompt
        tokens = end_it - start_it
        pool.done[sid] = done + tokens
        if tokens <= 0:
            return None
        hist_it = self.hist_it
        if hist_it[-1] <= start_it:
            v = self.version
            return v, v, v * tokens
        else:
            i = bisect_right(hist_it, start_it) - 1
            vmin, vmax, vsum = 1 << 60, -1, 0
            last = len(hist_it) - 1
            while i <= last:
                lo = max(hist_it[i], start_it)
                hi = min(hist_it[i + 1], end_it) if i < last else end_it
                if hi > lo:
                    v = self.hist_v[i]
                    vmin = min(vmin, v)
                    vmax = max(vmax, v)
                    vsum += v * (hi - lo)
                if hi >= end_it:
                    break
                i += 1
        return vmin, vmax, vsum

    def _switch(self, version: int, stall_until: float) -> None:
        if stall_until > self.t0:
            rec = self.pool.rec
            if self.b:
                rec.busy("rollout", self.index, "decode", self.span_start, self.t0)
                self.span_start = stall_until
            rec.busy("rollout", self.index, "sync", self.t0, stall_until)
            self.t0 = stall_until
        if self.b and self.pool.recompute_kv:
            self._recompute_kv()
        self.version = version
        self.hist_it.append(self.it0)
        self.hist_v.append(version)
        self.next_version = NO_VERSION
        self.pool.version_changed()

    def _recompute_kv(self) -> None:
        """Recompute the KV cache of every live sequence under new weights: its prompt (once
        per group when shared) and its generated tokens, as prefill."""
        tokens = self.dsum + self.b * self.it0
        if self.pool.prefix_caching:
            g_size, prompts = self.pool.group_size, self.pool.prompt_tokens
            tokens -= sum((n - 1) * prompts[g * g_size] for g, n in self.prefix.items())
        stall = tokens * self.prefill_s_per_token
        self.t0 += stall
        self.pool.prefill_s += stall
        self.pool.recompute_s += stall

    # -- events -------------------------------------------------------------------------
    def _on_wake(self, event: simpy.Event) -> None:
        if event is not self.wake:
            return
        pool = self.pool
        rec = pool.rec
        now = pool.env.now
        heap = self.heap
        finish_it = heap[0] >> SID_BITS
        self.t0 = now
        self.it0 = finish_it
        budgeted = pool.round_budget is not None
        while heap and heap[0] >> SID_BITS == finish_it:
            sid = heappop(heap) & SID_MASK
            stint = self._leave(sid, finish_it)
            if budgeted and pool.done[sid] < pool.response_tokens[sid]:
                if stint is not None:
                    rec.sample_progress(sid, *stint)
                pool.out_of_budget.append(sid)  # used its round's tokens; waits for the next
                continue
            pool.finished_samples += 1
            if rec.sample_done(sid, now, stint):
                pool.group_complete(sid // pool.group_size, now)
        if self.b == 0:
            self._went_idle(now)
        self._boundary(now)

    def _boundary(self, now: float, limit: int = 1 << 30) -> None:
        """At an iteration boundary: take pending weights, admit up to ``limit`` samples,
        schedule the next event."""
        if self.next_version != NO_VERSION:
            # the engine loads the weights once they have arrived (switch_stall_until) or after
            # the transfer that starts when it has drained (switch_stall_s)
            if self.pool.inflight:
                arrived = max(self.t0, self.switch_stall_until)
                self._switch(self.next_version, arrived + self.switch_load_s)
            elif self.b == 0:
                self._switch(self.next_version, self.t0 + self.switch_stall_s + self.switch_load_s)
        if self.next_version == NO_VERSION or self.pool.inflight:
            self.pool.fill(self, now, limit)
        self._schedule(now)

    def kick(self, now: float, limit: int = 1 << 30) -> None:
        """Offer the engine new work or weights now; it takes them at its next boundary."""
        if self.wake is None:
            self.t0 = max(self.t0, now)
            self._boundary(now, limit)
        elif self._advance(now):
            self._boundary(now, limit)

    def admit(self, sid: int, now: float) -> int:
        """Start (or resume) ``sid`` at the current boundary ``it0``; return the tokens whose
        KV cache it computes (the caller charges the prefill once for the whole admission)."""
        pool = self.pool
        prompt, done = pool.prompt_tokens[sid], pool.done[sid]
        context = prompt + done
        shared = False
        if pool.prefix_caching:
            g = sid // pool.group_size
            live = self.prefix.get(g, 0)
            self.prefix[g] = live + 1
            shared = live > 0
        length = pool.response_tokens[sid]
        self.kv_free -= length + (0 if shared else prompt)
        t0, it0 = self.t0, self.it0
        start = t0 if t0 > now else now
        if self.b == 0 and self.span_start != self.span_start:
            self.span_start = start
            pool.idle.discard(self)
        self.b += 1
        self.dsum += context - it0
        pool.admit_it[sid] = it0
        pool.sample_started(sid, self.index, start)
        to_go = length - done
        budget = pool.round_budget
        if budget is not None:
            to_go = min(to_go, budget - (done - pool.round_base[sid]))
        heappush(self.heap, ((it0 + to_go) << SID_BITS) | sid)
        if done and not pool.recompute_kv:
            return 0  # resumed with its KV cache kept
        return done + (0 if shared else prompt)

    def preempt(self, now: float) -> list[int]:
        """Stop every live sequence at the last boundary before ``now``; return them (their
        progress is kept, their KV cache is not)."""
        if self.wake is None:
            return []
        self._advance(now, round_up=False)
        parked = sorted(entry & SID_MASK for entry in self.heap)
        progress = self.pool.rec.sample_progress
        for sid in parked:
            stint = self._leave(sid, self.it0)
            if stint is not None:
                progress(sid, *stint)
        self.heap.clear()
        self.t0 = now
        self._went_idle(now)
        self._schedule(now)
        return parked


class RolloutPool:
    """The rollout engines and the FIFO queue of samples waiting for one."""

    def __init__(
        self,
        env: simpy.Environment,
        rec: TraceRecorder,
        *,
        engines: int,
        slots: int,
        kv_tokens: int,
        time_model: DecodeTimeModel,
        inflight: bool,
        on_group_complete: Callable[[int, float], None],
        round_budget: int | None = None,
        prefix_caching: bool = False,
        recompute_kv: bool = False,
        max_groups: int | None = None,
        iteration_cv: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.env = env
        self.rec = rec
        self.slots = slots
        self.kv_tokens = kv_tokens
        self.time_model = time_model
        self.inflight = inflight
        self.group_size = rec.group_size
        # every sample's sizes (the recorder's, read only) and the engines' working state:
        # tokens generated so far, the iteration it was last admitted at, and the tokens done
        # when its current round began (a round's token budget counts from there)
        self.prompt_tokens = rec.prompt_tokens
        self.response_tokens = rec.response_tokens
        self.sample_started = rec.sample_started
        self.done: list[int] = []
        self.admit_it: list[int] = []
        self.round_base: list[int] = []
        self.on_group_complete = on_group_complete
        self.on_starve: Callable[[float], bool] | None = None
        self.launchable: Callable[[], int] = lambda: 0
        self.on_versions_advanced: Callable[[float], None] | None = None
        self.pending: deque[int] = deque()
        self.round_budget = round_budget
        self.prefix_caching = prefix_caching
        self.recompute_kv = recompute_kv
        self.out_of_budget: list[int] = []
        self._drained: simpy.Event | None = None
        self.engines = [Engine(i, self) for i in range(engines)]
        self.idle: set[Engine] = set(self.engines)
        self.min_version = 0
        self.open_groups = 0
        self.finished_samples = 0
        self.prefill_s = 0.0
        self.recompute_s = 0.0
        self._kick_scheduled = False
        # global cap on groups generating at once (started, not complete), over all engines
        self.max_groups = max_groups
        self.live_groups = 0
        self.iteration_cv = iteration_cv
        self._cv_rng = np.random.default_rng([seed, 3])

    def span_factor(self, n: int) -> float:
        """A lognormal multiple (mean 1) for a span of ``n`` iterations whose times each vary
        with coefficient of variation ``iteration_cv``, independently: the span's CV is
        ``iteration_cv / sqrt(n)``."""
        var = math.log1p(self.iteration_cv * self.iteration_cv / max(n, 1))
        return float(self._cv_rng.lognormal(-0.5 * var, math.sqrt(var)))

    def group_complete(self, g: int, now: float) -> None:
        """Group ``g``'s last sample finished at ``now``."""
        self.open_groups -= 1
        if self.max_groups is not None:
            self.live_groups -= 1
            if self.pending or self.on_starve is not None:
                self.request_kick()  # a place under the cap opened
        self.on_group_complete(g, now)

    def new_round(self, samples: list[int]) -> None:
        """Start a round for ``samples``: their round's token budget counts from here."""
        done, base = self.done, self.round_base
        for sid in samples:
            base[sid] = done[sid]

    def drained(self) -> simpy.Event:
        """Fires once no engine has live sequences and no sample waits for one."""
        event = self.env.event()
        if len(self.idle) == len(self.engines) and not self.pending:
            event.succeed()
        else:
            self._drained = event
        return event

    def add_group(self, g: int) -> None:
        """Queue the samples of group ``g`` (registered with the recorder)."""
        size = self.group_size
        first = g * size
        self.pending.extend(range(first, first + size))
        zeros = [0] * size
        self.done.extend(zeros)
        self.admit_it.extend(zeros)
        self.round_base.extend(zeros)
        self.open_groups += 1

    def fill(self, engine: Engine, now: float, limit: int = 1 << 30) -> None:
        """Admit waiting samples into ``engine`` while it has slots and KV cache."""
        pending = self.pending
        free = min(self.slots - engine.b, limit)
        if free <= 0:
            return
        s_prompt, s_len = self.prompt_tokens, self.response_tokens
        shared = engine.prefix if self.prefix_caching else None
        group_size = self.group_size
        cap = self.max_groups
        started = self.rec.has_started
        prefill_tokens = 0
        launched = False
        while free:
            if not pending:
                if cap is not None and self.live_groups >= cap:
                    break  # a launched group could not start anyway
                if self.on_starve is None or not self.on_starve(now):
                    break
                launched = True
            sid = pending[0]
            # a group's first sample is queued first and starts it (resumed samples have a start)
            starts_group = cap is not None and sid % group_size == 0 and not started(sid)
            if starts_group and self.live_groups >= cap:
                break
            # KV tokens it reserves: its prompt's only when no sample of its group holds them
            need = s_len[sid]
            if shared is None or sid // group_size not in shared:
                need += s_prompt[sid]
            if need > engine.kv_free:
                break
            pending.popleft()
            prefill_tokens += engine.admit(sid, now)
            if starts_group:
                self.live_groups += 1
            free -= 1
        if prefill_tokens:
            stall = prefill_tokens * engine.prefill_s_per_token
            t0 = engine.t0
            engine.t0 = (t0 if t0 >= now else now) + stall
            self.prefill_s += stall
        if launched and pending and self.idle:
            self.request_kick()

    def kick_all(self, now: float) -> None:
        """Share the waiting samples (and those the controller could launch now) evenly over
        the engines with free slots, emptiest first, as a batch is split over data-parallel
        engines."""
        open_engines = [e for e in self.engines if e.b < self.slots]
        if not open_engines:
            return
        open_engines.sort(key=lambda e: e.b)
        work = len(self.pending) + self.launchable() * self.group_size
        share = max(1, math.ceil(work / len(open_engines)))
        for engine in open_engines:
            if not self.pending and self.on_starve is None:
                break
            engine.kick(now, share)

    def request_kick(self) -> None:
        """Kick all engines once, after the current event (never from inside an engine)."""
        if not self._kick_scheduled:
            self._kick_scheduled = True
            event = self.env.timeout(0)
            event.callbacks.append(self._deferred_kick)

    def _deferred_kick(self, _event: simpy.Event) -> None:
        self._kick_scheduled = False
        self.kick_all(self.env.now)

    def version_changed(self) -> None:
        low = min(e.version for e in self.engines)
        if low > self.min_version:
            self.min_version = low
            if self.on_versions_advanced is not None:
                self.on_versions_advanced(self.env.now)

    # -- weights ------------------------------------------------------------------------
    def load_all(self, version: int, now: float, stall_s: float) -> None:
        """Load ``version`` into idle engines, each stalled ``stall_s`` (between batches)."""
        for engine in self.engines:
            if engine.b:
                raise RuntimeError("load_all needs idle engines")
            engine.t0 = max(engine.t0, now)
            engine.next_version = version
            engine._switch(version, engine.t0 + stall_s)

    def publish(
        self, version: int, now: float, *, stall_until: float, stall_s: float, load_s: float = 0.0
    ) -> None:
        """New weights for running engines: in flight, they take them at the next iteration
        boundary after a stall until ``stall_until``; otherwise each stops admitting, drains,
        and waits ``stall_s`` for them; either way loading them stalls it ``load_s`` more."""
        for engine in self.engines:
            engine.next_version = version
            engine.switch_stall_until = stall_until
            engine.switch_stall_s = stall_s
            engine.switch_load_s = load_s
            if engine.wake is None or self.inflight:
                engine.kick(now)

    def preempt_all(self, now: float) -> list[int]:
        parked: list[int] = []
        for engine in self.engines:
            parked.extend(engine.preempt(now))
        return sorted(parked)
