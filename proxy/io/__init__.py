"""The proxy's sockets: L7 clients (`l7`), backend connections (`upstream`), L4 (`l4`).

`Deadline` is the one timer primitive they share. Timeouts move on every
request and every body chunk; cancelling and re-creating a timer each time
would cost more than the request. A Deadline keeps one armed timer and a
`when` that can be moved by plain assignment: when the timer fires early
(the deadline moved later), it re-arms itself for the new time; only a
deadline moved *earlier* than the armed timer re-arms at once.
"""
from __future__ import annotations

import asyncio
from typing import Callable


class Deadline:
    __slots__ = ("_loop", "_callback", "_handle", "_armed_at", "when")

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

    def clear(self) -> None:
        self.when = None

    def cancel(self) -> None:
        self.when = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

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
