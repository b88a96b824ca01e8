"""The proxy's sockets: L7 clients (`l7`), backend connections (`upstream`), L4 (`l4`).

`Deadline` is the one timer primitive they share. Timeouts move on every
request and every body chunk; cancelling and re-creating a timer each time
would cost more than the request. A Deadline keeps one armed timer and a
`when` that can be moved by plain assignment: when the timer fires early
(the deadline moved later), it re-arms itself for the new time; only a
deadline moved *earlier* than the armed timer re-arms at once.

`DeadlineQueue` spares even that one timer where many deadlines have the same
duration (the connect timeout of every L4 connection to a pool): deadlines
of one duration set one after the other expire in the order they were set, so
a FIFO with a single timer, armed for its oldest entry, serves them all. A
Deadline on a queue (`after_in`) is a deque entry instead of an event-loop
timer (a timer costs as much as a tenth of a short L4 connection); cancelling
it leaves the entry, skipped when its time comes. The queue holds its
deadlines weakly, so a finished connection is not kept for the duration. Its
timer fires at most every `window` (a twentieth of the duration, at most 50 ms)
and serves every entry due by then: a deadline on a queue may fire up to one
window late, never early.
"""
from __future__ import annotations

import asyncio
import collections
import weakref
from typing import Callable


class _OnQueue:
    """A Deadline's `_handle` while it waits on a DeadlineQueue: nothing to cancel
    (the queue skips an entry whose deadline no longer points at it)."""

    __slots__ = ()

    def cancel(self) -> None:
        pass


_ON_QUEUE = _OnQueue()


def _nothing() -> None:
    pass


class Deadline:
    __slots__ = ("_loop", "_callback", "_handle", "_armed_at", "when", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]):
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = 0.0
        self.when: float | None = None  # loop time, or None for "no deadline"

    def set(self, when: float | None) -> None:
        self.when = when
        if when is None:
            return
        handle = self._handle
        if handle is None or when < self._armed_at:
            if handle is not None:
                handle.cancel()
            self._armed_at = when
            self._handle = self._loop.call_at(when, self._fire)

    def after(self, seconds: float) -> None:
        self.set(self._loop.time() + seconds)

    def after_in(self, queue: "DeadlineQueue") -> None:
        """As after(queue.seconds), on the queue's timer rather than one of its own."""
        when = self._loop.time() + queue.seconds
        self.when = when
        if self._handle is None:
            self._armed_at = when
            self._handle = _ON_QUEUE
            queue.push(self, when)
        elif when < self._armed_at:
            self.set(when)

    def clear(self) -> None:
        self.when = None

    def cancel(self) -> None:
        self.when = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def close(self) -> None:
        """Cancel for good and let go of the callback: its owner (whose bound method it
        is) and this deadline then form no reference cycle, so the owner is freed the
        moment it is done with, not by a later pass of the cyclic GC. Setting the
        deadline again afterwards is harmless: it fires into nothing."""
        self.cancel()
        self._callback = _nothing

    def _fire(self) -> None:
        self._handle = None
        when = self.when
        if when is None:
            return
        # The loop may wake a hair early (clock granularity): 1 ms slack.
        if self._loop.time() + 0.001 < when:
            self._armed_at = when
            self._handle = self._loop.call_at(when, self._fire)
            return
        self.when = None
        self._callback()


class DeadlineQueue:
    """Deadlines of one duration, on one timer (see the module's docstring)."""

    __slots__ = ("_loop", "seconds", "window", "_entries", "_handle")

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float):
        self._loop = loop
        self.seconds = seconds
        self.window = min(0.05, seconds / 20)
        self._entries: collections.deque = collections.deque()  # (when, weakref to a Deadline)
        self._handle: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def push(self, deadline: Deadline, when: float) -> None:
        self._entries.append((when, weakref.ref(deadline)))
        if self._handle is None:
            self._handle = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle = None
        entries = self._entries
        # The same 1 ms of slack as Deadline._fire.
        now = self._loop.time() + 0.001
        while entries:
            when, ref = entries[0]
            if when > now:
                self._handle = self._loop.call_at(when + self.window, self._fire)
                return
            entries.popleft()
            deadline = ref()
            # Still waiting on this entry (not cancelled, moved or re-armed since)?
            if deadline is not None and deadline._handle is _ON_QUEUE and \
                    deadline._armed_at == when:
                deadline._handle = None
                deadline._fire()  # fires, or arms its own timer for a `when` moved later


# One queue per event loop and duration (loops are weakly held: tests make many).
_QUEUES: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict]" = \
    weakref.WeakKeyDictionary()


_last: DeadlineQueue | None = None  # the one asked for last: nearly always the one wanted


def deadline_queue(loop: asyncio.AbstractEventLoop, seconds: float) -> DeadlineQueue:
    """The loop's DeadlineQueue for deadlines `seconds` away."""
    global _last
    queue = _last
    if queue is not None and queue.seconds == seconds and queue._loop is loop:
        return queue
    queues = _QUEUES.get(loop)
    if queues is None:
        queues = _QUEUES[loop] = {}
    queue = queues.get(seconds)
    if queue is None:
        if len(queues) > 64:  # durations of old configs after many reloads
            queues.clear()
        queue = queues[seconds] = DeadlineQueue(loop, seconds)
    _last = queue
    return queue
