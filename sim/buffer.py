"""The buffer: completed groups waiting for the learner.

Groups carry a key; the learner takes the lowest key first and, within a key, the group that
completed first. Every group has key 0 (plain first in, first out) unless the mode bounds
staleness by consumption deadlines: then the key is the last version allowed to consume the
group, and :meth:`Buffer.deadlines_hold` says whether the learner may take its next chunk
now without making some group miss its deadline.
"""

from __future__ import annotations

from collections import deque

import simpy
from stalesim.sim.trace import TraceRecorder


class Buffer:
    """Completed groups by key, each key in completion order; waiters are woken when enough
    have arrived."""

    def __init__(self, env: simpy.Environment, rec: TraceRecorder) -> None:
        self.env = env
        self.rec = rec
        self.by_key: dict[int, deque[int]] = {}
        self.size = 0
        self._waiters: list[tuple[int, simpy.Event]] = []
        rec.queue(0.0, 0)

    def __len__(self) -> int:
        return self.size

    def put(self, group: int, now: float, key: int = 0) -> None:
        queue = self.by_key.get(key)
        if queue is None:
            queue = self.by_key[key] = deque()
        queue.append(group)
        self.size += 1
        self.rec.queue(now, self.size)
        if self._waiters:
            ready = [w for w in self._waiters if self.size >= w[0]]
            for waiter in ready:
                self._waiters.remove(waiter)
                waiter[1].succeed()

    def wait_for(self, count: int) -> simpy.Event:
        """An event that fires once at least ``count`` groups are waiting."""
        event = self.env.event()
        if self.size >= count:
            event.succeed()
        else:
            self._waiters.append((count, event))
        return event

    def take(self, count: int, now: float) -> list[int]:
        """Remove ``count`` groups, lowest key first, oldest first within a key."""
        taken: list[int] = []
        for key in sorted(self.by_key):
            queue = self.by_key[key]
            while queue and len(taken) < count:
                taken.append(queue.popleft())
            if not queue:
                del self.by_key[key]
            if len(taken) == count:
                break
        self.size -= len(taken)
        self.rec.queue(now, self.size)
        return taken

    def deadlines_hold(
        self, count: int, version: int, chunk: int, in_flight: dict[int, int]
    ) -> bool:
        """Whether taking ``count`` groups (earliest deadline first) for ``version`` leaves a
        schedule in which every group still meets its deadline.

        Keys are deadlines (the last version that may consume a group); ``in_flight`` counts
        the unfinished groups by a lower bound of their deadline. Versions ``version+1 ..
        d`` can consume ``(d - version) * chunk`` groups, so after this take no more than that
        may be due by ``d``, for every ``d``. Earliest deadline first leaves the fewest groups
        due by every ``d``, so no other choice of groups could pass where it fails.
        """
        left = count
        remaining: dict[int, int] = dict(in_flight)
        for key in sorted(self.by_key):
            n = len(self.by_key[key])
            used = min(n, left)
            left -= used
            if n - used:
                remaining[key] = remaining.get(key, 0) + n - used
        due = 0
        for deadline in sorted(remaining):
            due += remaining[deadline]
            if due > max(0, deadline - version) * chunk:
                return False
        return True
