"""One timer for every active health check.

Theory of operation
-------------------
Health checks need two kinds of deadline per backend: "the next probe is due"
and "the probe in flight times out". The obvious asyncio shape (a task per
backend sleeping in `asyncio.sleep`, each probe under `asyncio.timeout`)
costs two event-loop timers, a task wake-up and a coroutine per probe, and on
uvloop every timer is a libuv handle allocated and freed. With 50 backends
probed every 100 ms those wake-ups are most of what checking costs.

`Scheduler` keeps every deadline in one heap and arms a single loop timer for
the earliest. Cancelling an entry only marks it (lazy deletion): a probe that
answers in 1 ms does not touch the heap to drop its 500 ms timeout.

Wake-ups are batched: the timer never fires less than `tick` after the
previous firing, and each firing runs every entry due by then. So with many
backends the loop wakes at most 1/tick times a second and the probes due in
the same tick start together, while a lone backend is still probed on time.
The price is that a probe (or a timeout) may start up to `tick` late; the
checker schedules the next probe from when this one was *due*, not from when
it ran, so the late starts do not add up and the interval stays exact on
average. `tick` (5 ms) is small next to any sensible interval, and to the
1 ms resolution of uvloop's own timers it adds at most a few milliseconds.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import logging

log = logging.getLogger("proxy.health")

# The loop wakes for health checks at most once per this many seconds.
TICK = 0.005
# Entries due this close to "now" run in this firing (loop timers round to 1 ms).
EPSILON = 0.001


class Entry:
    """A scheduled call; `cancel()` marks it dead (the heap drops it when it surfaces)."""

    __slots__ = ("when", "callback")

    def __init__(self, when: float, callback):
        self.when = when
        self.callback = callback

    def cancel(self) -> None:
        self.callback = None

    @property
    def cancelled(self) -> bool:
        return self.callback is None


class Scheduler:
    """A heap of deadlines on one event loop, driven by one timer (see module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, tick: float = TICK):
        self.loop = loop or asyncio.get_running_loop()
        self.tick = tick
        self.heap: list[tuple[float, int, Entry]] = []  # (when, seq, entry)
        self._seq = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = 0.0
        self._last_fire = float("-inf")
        self._firing = False
        self.fired = 0  # timer firings (for measurements)
        self._poller = None

    @property
    def poller(self):
        """The probes' socket readiness (`Poller`), made on first use."""
        if self._poller is None:
            self._poller = make_poller(self.loop)
        return self._poller

    def time(self) -> float:
        return self.loop.time()

    def call_at(self, when: float, callback) -> Entry:
        entry = Entry(when, callback)
        heapq.heappush(self.heap, (when, next(self._seq), entry))
        if not self._firing and (self._handle is None or when < self._armed_at):
            self._arm()  # (while firing, _fire arms once at the end)
        return entry

    def call_later(self, delay: float, callback) -> Entry:
        return self.call_at(self.loop.time() + delay, callback)

    def close(self) -> None:
        """Drop every entry and the timer."""
        for _, _, entry in self.heap:
            entry.callback = None
        self.heap.clear()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._poller is not None:
            self._poller.close()
            self._poller = None

    def __len__(self) -> int:
        return sum(1 for _, _, e in self.heap if e.callback is not None)

    def _arm(self) -> None:
        heap = self.heap
        while heap and heap[0][2].callback is None:
            heapq.heappop(heap)
        if not heap:
            if self._handle is not None:
                self._handle.cancel()
                self._handle = None
            return
        when = max(heap[0][0], self._last_fire + self.tick)
        if self._handle is not None:
            if self._armed_at <= when:
                return  # fires early enough already; it re-arms when it fires
            self._handle.cancel()
        self._armed_at = when
        self._handle = self.loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self.fired += 1
        now = self.loop.time()
        self._last_fire = now
        limit = now + EPSILON
        heap = self.heap
        self._firing = True
        try:
            while heap and heap[0][0] <= limit:
                entry = heapq.heappop(heap)[2]
                callback = entry.callback
                if callback is None:
                    continue
                entry.callback = None
                try:
                    callback()
                except Exception:  # one broken check must not stop the others
                    log.exception("health check callback %r failed", callback)
        finally:
            self._firing = False
        self._arm()


# ---------------------------------------------------------------- sockets

READ, WRITE = 1, 4  # select.EPOLLIN, select.EPOLLOUT (the same bits on Linux)
ERROR = 8 | 16  # EPOLLERR | EPOLLHUP


class Poller:
    """Readiness of the probes' sockets, for `SocketProbe`.

    `register(fd, events, handler)` / `modify(fd, events)` / `forget(fd)`;
    `handler(events)` is called with READ/WRITE/ERROR bits. The probes' own
    epoll set sits inside the event loop as one readable fd: registering a
    probe socket is one epoll_ctl and closing it none (the kernel drops a
    closed fd from the set), where the loop's add_reader/add_writer (a libuv
    poll handle per socket on uvloop) cost about eight. Each wake-up reads
    every ready probe socket at once. Where there is no epoll, `LoopPoller`
    does the same with the loop's add_reader/add_writer.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        import select

        self.loop = loop
        self.epoll = select.epoll()
        self.handlers: dict[int, tuple[object, int]] = {}  # fd -> (handler, token)
        self._token = itertools.count()
        loop.add_reader(self.epoll.fileno(), self._ready)

    def register(self, fd: int, events: int, handler) -> None:
        self.epoll.register(fd, events)
        self.handlers[fd] = (handler, next(self._token))

    def modify(self, fd: int, events: int) -> None:
        self.epoll.modify(fd, events)

    def forget(self, fd: int) -> None:
        """Call before closing fd (closing removes it from the set)."""
        self.handlers.pop(fd, None)

    def unregister(self, fd: int) -> None:
        """For an fd that stays open."""
        if self.handlers.pop(fd, None) is not None:
            self.epoll.unregister(fd)

    def _ready(self) -> None:
        handlers = self.handlers
        try:
            ready = self.epoll.poll(0)
        except InterruptedError:
            return
        # Look every handler up first: one handler may close its fd and a new
        # socket reuse the number before a stale event for it is dispatched.
        batch = [(fd, handlers.get(fd), events) for fd, events in ready]
        for fd, entry, events in batch:
            if entry is None or handlers.get(fd) is not entry:
                continue
            try:
                entry[0](events)
            except Exception:  # one broken probe must not stop the others
                log.exception("health probe socket handler failed")

    def close(self) -> None:
        if self.epoll.closed:
            return
        self.loop.remove_reader(self.epoll.fileno())
        self.handlers.clear()
        self.epoll.close()


class LoopPoller:
    """`Poller` on the loop's own add_reader/add_writer (no epoll here)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.events: dict[int, int] = {}
        self.handlers: dict[int, object] = {}

    def register(self, fd: int, events: int, handler) -> None:
        self.handlers[fd] = handler
        self.events[fd] = 0
        self.modify(fd, events)

    def modify(self, fd: int, events: int) -> None:
        old = self.events.get(fd, 0)
        handler = self.handlers[fd]
        if events & READ and not old & READ:
            self.loop.add_reader(fd, handler, READ)
        elif old & READ and not events & READ:
            self.loop.remove_reader(fd)
        if events & WRITE and not old & WRITE:
            self.loop.add_writer(fd, handler, WRITE)
        elif old & WRITE and not events & WRITE:
            self.loop.remove_writer(fd)
        self.events[fd] = events

    def forget(self, fd: int) -> None:
        if fd in self.handlers:
            self.modify(fd, 0)
            del self.handlers[fd], self.events[fd]

    unregister = forget

    def close(self) -> None:
        for fd in list(self.handlers):
            self.forget(fd)


def make_poller(loop: asyncio.AbstractEventLoop):
    try:
        return Poller(loop)
    except (ImportError, AttributeError, OSError, NotImplementedError):
        return LoopPoller(loop)
