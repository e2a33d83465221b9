"""The buffer: completed groups waiting for the learner, first in, first out."""

from __future__ import annotations

from collections import deque

import simpy
from stalesim.sim.trace import TraceRecorder


class Buffer:
    """Completed groups in completion order; waiters are woken when enough have arrived."""

    def __init__(self, env: simpy.Environment, rec: TraceRecorder) -> None:
        self.env = env
        self.rec = rec
        self.groups: deque[int] = deque()
        self._waiters: list[tuple[int, simpy.Event]] = []
        rec.queue(0.0, 0)

    def __len__(self) -> int:
        return len(self.groups)

    def put(self, group: int, now: float) -> None:
        self.groups.append(group)
        self.rec.queue(now, len(self.groups))
        if self._waiters:
            ready = [w for w in self._waiters if len(self.groups) >= w[0]]
            for waiter in ready:
                self._waiters.remove(waiter)
                waiter[1].succeed()

    def wait_for(self, count: int) -> simpy.Event:
        """An event that fires once at least ``count`` groups are waiting."""
        event = self.env.event()
        if len(self.groups) >= count:
            event.succeed()
        else:
            self._waiters.append((count, event))
        return event

    def take(self, count: int, now: float) -> list[int]:
        """Remove the ``count`` oldest groups."""
        taken = [self.groups.popleft() for _ in range(count)]
        self.rec.queue(now, len(self.groups))
        return taken
