"""The wait queue in front of a pool's backends (HAProxy's maxconn + queue).

Theory of operation
-------------------
A backend with a connection limit (`backends[].max_connections`, or the
pool's `max_connections_per_backend`) takes at most that many requests at
once. When every eligible backend of a pool is at its limit, a request of a
pool with `queue:` waits here, first come first served, instead of being
answered 503 at once: a short burst is absorbed and served at the rate the
backends can take, which is what HAProxy does with `maxconn` on each server
and a `timeout queue`.

The queue is bounded twice: at most `queue.max_length` requests wait (one more
is answered 503 `queue-full` at once: a queue that grows without bound only
turns overload into timeouts for everyone), and none waits longer than
`queue.timeout` (then 503 `queue-timeout`, termination `sQ`).

Each time a request releases a backend slot the pool wakes the request at the
head of the queue, which picks again among all eligible backends (so the
balancer and stickiness still decide, and a backend that freed up is
found). A woken request that still finds no free slot goes back to the head
of the queue, keeping its place and its original deadline.

A slot is not the only thing that can end a wait. Whenever the pool changes -
a backend recovers (health, an ejection that ends), a backend is drained or
removed, a config change raises `max_connections` or adds a backend, or the
pool itself goes away - the runtime calls `kick()`, and soon after
`reconsider()` wakes the waiters in order, each picking again, until one
finds no free slot (it goes back to the head, and the rest keep waiting
behind it). So a raised limit or a recovered backend serves the queue at
once, and a pool left with no eligible backend at all answers its waiters
503 no-backend at once (event outcome `refused`) instead of at their
timeout.

This module holds only the bookkeeping (no clock, no I/O): the data plane
arms the timers and does the picking. `kick` is its one tie to the event
loop: it schedules `reconsider` with call_soon, so a change made inside a
health check's or an admin verb's callback is finished before anyone picks.
"""
from __future__ import annotations

import asyncio
import collections
from typing import Any


class WaitQueue:
    """The requests waiting for a slot in one pool, oldest first."""

    __slots__ = ("waiters", "queued", "served", "timeouts", "full", "left", "refused",
                 "kicked")

    def __init__(self) -> None:
        self.waiters: collections.deque = collections.deque()
        self.kicked = False  # a reconsider() is scheduled
        # Counts since start (GET /state); the metrics count from events.
        self.queued = 0
        self.served = 0
        self.timeouts = 0
        self.full = 0
        self.left = 0
        self.refused = 0  # woken, and the pool had no eligible backend any more

    def __len__(self) -> int:
        return len(self.waiters)

    def admit(self, waiter: Any, max_length: int, front: bool = False) -> int | None:
        """Queue `waiter`; its 1-based position, or None when the queue is full.

        `front`: a request woken that found no free slot after all goes back
        where it was (it is not a new arrival, so the bound does not refuse it)."""
        if front:
            self.waiters.appendleft(waiter)
            return 1
        if len(self.waiters) >= max_length:
            self.full += 1
            return None
        self.waiters.append(waiter)
        self.queued += 1
        return len(self.waiters)

    def pop(self) -> Any | None:
        """The oldest waiter (taken out of the queue), or None."""
        return self.waiters.popleft() if self.waiters else None

    def remove(self, waiter: Any) -> bool:
        """Take a waiter out (it timed out or its client left); False if not queued."""
        try:
            self.waiters.remove(waiter)
        except ValueError:
            return False
        return True

    def kick(self) -> None:
        """The pool changed: reconsider the waiters soon (once, however many changes)."""
        if not self.waiters or self.kicked:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no data plane running here (the runtime alone): nobody waits
        self.kicked = True
        loop.call_soon(self.reconsider)

    def reconsider(self) -> None:
        """Wake the waiters oldest first while they find a slot (or fail for good).

        Each waiter's `unqueue()` picks again: it is served, or finished (no
        eligible backend, its pool gone), or back at the head of the queue -
        then no slot is free and the others keep waiting behind it."""
        self.kicked = False
        while self.waiters:
            waiter = self.waiters.popleft()
            waiter.unqueue()
            if self.waiters and self.waiters[0] is waiter:
                return

    def snapshot(self, max_length: int | None, timeout: float | None) -> dict:
        return {"depth": len(self.waiters), "max_length": max_length, "timeout": timeout,
                "queued": self.queued, "served": self.served, "timeouts": self.timeouts,
                "full": self.full, "left": self.left, "refused": self.refused}


def backend_full(backend, limit: int | None) -> bool:
    """The backend has `limit` requests (L7) or connections (L4) in flight already."""
    return limit is not None and backend.outstanding >= limit
