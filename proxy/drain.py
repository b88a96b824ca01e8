"""Connection draining (deregistration delay): take a backend out without breaking requests.

Theory of operation
-------------------
Draining is an *intent* (proxy.health.table): the operator says "stop sending
new work here"; the backend's observed health is untouched. `start(pool, name)`

1. sets intent DRAINING (first on the live state, with the table's cause, then
   in the config through `Runtime.set_backend_state` so a reload keeps it):
   balancers stop seeing the backend at once;
2. publishes DrainEvent "started" with the deregistration delay;
3. closes the idle pooled keep-alive connections to it (`server.close_pooled`),
   which would otherwise sit there until the backend's idle timeout;
4. watches the work still in flight (`outstanding` requests plus
   `active_connections`, both kept by the data plane) and completes as soon
   as it reaches zero, or at the deadline (start + `deregistration_delay`)
   cuts what is left (`server.inflight(backend)`, each `.cut("drain deadline")`,
   one DrainEvent "cut" per request) and completes;
5. when the drain was a removal (`remove=True`), removes the backend from the
   pool (`Runtime.remove_backend`); otherwise it stays in the pool, draining,
   taking no new work, until an operator activates or removes it.

If the intent changes during the drain (activated again, put in maintenance)
or the backend is removed by someone else, the drain stops there and says so.

`Drain` is the decision logic (deadline arithmetic, what to do when) as a
plain object tested with a fake clock; `DrainManager` is the asyncio edge: a
task per drain that waits for the next decision, woken early whenever a
request or connection of that backend finishes (a bus sink), so completion
is prompt without polling fast.
"""
from __future__ import annotations

import asyncio
import collections
import inspect
import logging
from dataclasses import dataclass

from proxy.events import ConnectionEvent, DrainEvent, Event, RequestEvent, StateChange
from proxy.events import Warning as WarningEvent
from proxy.health.table import DRAINING, INTENT, REMOVED, cause as table_cause, fmt_seconds
from proxy.model import BackendState, Intent

log = logging.getLogger("proxy.drain")

# Longest wait between two looks at the in-flight counters (a finishing
# request wakes the watcher earlier).
POLL = 0.1
CUT_REASON = "drain deadline"


@dataclass(frozen=True, slots=True)
class Action:
    kind: str  # "wait" | "complete" | "cut"
    wait: float = 0.0  # for "wait": seconds until the next look
    detail: str = ""


@dataclass(slots=True)
class Drain:
    """One drain's decisions; no I/O, time passed in."""

    pool: str
    backend: str
    started: float
    delay: float  # the deregistration delay, seconds
    remove: bool = False
    poll: float = POLL

    @property
    def deadline(self) -> float:
        return self.started + self.delay

    def remaining(self, now: float) -> float:
        return max(0.0, self.deadline - now)

    def decide(self, now: float, in_flight: int) -> Action:
        """Complete when nothing is in flight; cut at the deadline; otherwise wait."""
        elapsed = fmt_seconds(max(0.0, now - self.started))
        if in_flight <= 0:
            return Action("complete", detail=f"nothing in flight after {elapsed}")
        if now >= self.deadline:
            return Action("cut", detail=(f"deregistration delay {fmt_seconds(self.delay)} "
                                         f"elapsed with {in_flight} in flight"))
        return Action("wait", wait=min(self.poll, self.deadline - now))

    def view(self, now: float, requests: int, connections: int) -> dict:
        return {
            "pool": self.pool,
            "backend": self.backend,
            "remove": self.remove,
            "deregistration_delay": fmt_seconds(self.delay),
            "elapsed_s": round(now - self.started, 3),
            "deadline_in_s": round(self.remaining(now), 3),
            "in_flight": {"requests": requests, "connections": connections},
        }


def in_flight(backend: BackendState) -> int:
    """Work still running on the backend: 0 only when no request and no connection is left.

    An L7 request counts in `outstanding` and its upstream connection in
    `active_connections`; an L4 connection only in the latter. The larger of
    the two is the number of things a deadline would cut.
    """
    return max(0, backend.outstanding, backend.active_connections)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


class _Running:
    __slots__ = ("drain", "backend", "task", "wake")

    def __init__(self, drain: Drain, backend: BackendState):
        self.drain = drain
        self.backend = backend
        self.task: asyncio.Task | None = None
        self.wake = asyncio.Event()


class DrainManager:
    """Drains in progress, one asyncio task each; `state()` for the admin API."""

    def __init__(self, server, poll: float = POLL):
        self.server = server
        self.runtime = server.runtime
        self.bus = server.bus
        self.clock = self.runtime.clock
        self.poll = poll
        self.running: dict[tuple[str, str], _Running] = {}
        self.finished: collections.deque[dict] = collections.deque(maxlen=50)
        self._sink_added = False

    # ------------------------------------------------------------ lifecycle

    def start(self, pool: str | None = None, backend_name: str | None = None,
              remove: bool = False):
        """Two uses, one name (both contracts ask for it):

        * `await drains.start()`: the server starting the manager;
        * `drains.start(pool, name, remove=False) -> dict`: begin a drain (= `drain`).
        """
        if pool is None and backend_name is None:
            return self._startup()
        if pool is None or backend_name is None:
            raise TypeError("start(pool, backend_name) needs both names")
        return self.drain(pool, backend_name, remove=remove)

    async def _startup(self) -> None:
        # The sink (which wakes a drain's watcher when a request or connection of
        # its backend ends) is added by the first drain and removed after the
        # last: every request is published through it otherwise.
        return None

    async def stop(self) -> None:
        if self._sink_added:
            self.bus.remove_sink(self._sink)
            self._sink_added = False
        tasks = [r.task for r in self.running.values() if r.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.running.clear()

    def _add_sink(self) -> None:
        if not self._sink_added:
            self.bus.add_sink(self._sink)
            self._sink_added = True

    # ------------------------------------------------------------ the verb

    def drain(self, pool: str, backend_name: str, remove: bool = False) -> dict:
        """Begin draining `backend_name`; returns the drain's view. Idempotent.

        Raises proxy.config.ConfigError when there is no such pool or backend.
        """
        loop = asyncio.get_running_loop()  # before changing anything: the watcher needs it
        backend = self.runtime.backend(pool, backend_name)  # ConfigError when unknown
        key = (pool, backend_name)
        now = self.clock()
        existing = self.running.get(key)
        if existing is not None and existing.backend is backend:
            existing.drain.remove = existing.drain.remove or remove
            return self._view(existing, now)
        self._add_sink()
        delay = self.runtime.pools[pool].config.deregistration_delay
        old_intent = backend.intent
        self.runtime.pools[pool].set_intent(
            backend, Intent.DRAINING,
            table_cause(INTENT, old_intent.value, "drain", delay=fmt_seconds(delay))
            if old_intent is not Intent.DRAINING else "already draining")
        try:
            self.runtime.set_backend_state(pool, backend_name, Intent.DRAINING.value)
        except Exception as exc:
            self.runtime.pools[pool].set_intent(backend, old_intent, f"drain refused: {exc}")
            raise
        drain = Drain(pool, backend_name, now, delay, remove=remove, poll=self.poll)
        run = _Running(drain, backend)
        self.running[key] = run
        requests, connections = backend.outstanding, backend.active_connections
        self.bus.publish(DrainEvent(
            pool=pool, backend=backend_name, what="started",
            detail=(f"deregistration delay {fmt_seconds(delay)}; in flight: "
                    f"{_n(requests, 'request')}, {_n(connections, 'connection')}"
                    + ("; the backend is removed when done" if remove else ""))))
        self._close_pooled(run)
        run.task = loop.create_task(
            self._watch(run), name=f"drain {pool}/{backend_name}")
        return self._view(run, now)

    # ------------------------------------------------------------ watching

    def _close_pooled(self, run: _Running, report_zero: bool = True) -> None:
        close = getattr(self.server, "close_pooled", None)
        if close is None:
            return
        closed = close(run.backend)
        if closed is not None and (closed or report_zero):
            self.bus.publish(DrainEvent(pool=run.drain.pool, backend=run.drain.backend,
                                        what="closed_keepalive",
                                        detail=f"closed {_n(closed, 'idle pooled connection')}"))

    def _why_stopped(self, run: _Running) -> str | None:
        """None while the drain should go on; else why it ends early."""
        pool = self.runtime.pools.get(run.drain.pool)
        if pool is None or pool.backends.get(run.drain.backend) is not run.backend:
            return "removed"
        if run.backend.intent is not Intent.DRAINING:
            return f"intent changed to {run.backend.intent.value}"
        return None

    async def _watch(self, run: _Running) -> None:
        key = (run.drain.pool, run.drain.backend)
        try:
            while True:
                why = self._why_stopped(run)
                if why == "removed":
                    self._finish(run, "completed", "the backend was removed from the pool")
                    return
                if why is not None:
                    self._finish(run, "cancelled", why)
                    return
                action = run.drain.decide(self.clock(), in_flight(run.backend))
                if action.kind == "wait":
                    run.wake.clear()
                    try:
                        await asyncio.wait_for(run.wake.wait(), action.wait)
                    except TimeoutError:  # nothing woke us: re-check on the poll interval
                        pass
                    continue
                if action.kind == "cut":
                    cut = await self._cut(run)
                    self._complete(run, f"{action.detail}: cut {cut}")
                else:
                    self._complete(run, action.detail)
                return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("drain of %s/%s failed", *key)
            self.bus.publish(WarningEvent(source="drain",
                                          message=f"drain of {key[0]}/{key[1]} failed: {exc}"))
        finally:
            if self.running.get(key) is run:
                del self.running[key]
            if not self.running and self._sink_added:
                self.bus.remove_sink(self._sink)
                self._sink_added = False

    async def _cut(self, run: _Running) -> int:
        inflight = getattr(self.server, "inflight", None)
        exchanges = list(inflight(run.backend)) if inflight is not None else []
        for exchange in exchanges:
            result = exchange.cut(CUT_REASON)
            if inspect.isawaitable(result):
                await result
            self.bus.publish(DrainEvent(
                pool=run.drain.pool, backend=run.drain.backend, what="cut",
                detail=f"{CUT_REASON}: deregistration delay {fmt_seconds(run.drain.delay)} elapsed",
                request_id=getattr(exchange, "request_id", None)
                or getattr(exchange, "connection_id", None)))
        return len(exchanges)

    def _complete(self, run: _Running, detail: str) -> None:
        drain = run.drain
        # Connections released to the pool during the drain: close them too.
        self._close_pooled(run, report_zero=False)
        if drain.remove:
            detail += "; removed from the pool"
        self._finish(run, "completed", detail)
        if drain.remove:
            elapsed = fmt_seconds(max(0.0, self.clock() - drain.started))
            self.bus.publish(StateChange(
                pool=drain.pool, backend=drain.backend, kind="intent", old=DRAINING,
                new=REMOVED, cause=table_cause(INTENT, DRAINING, "drain_completed",
                                               elapsed=elapsed, detail=detail)))
            self.runtime.remove_backend(drain.pool, drain.backend)

    def _finish(self, run: _Running, what: str, detail: str) -> None:
        drain = run.drain
        now = self.clock()
        self.bus.publish(DrainEvent(pool=drain.pool, backend=drain.backend, what=what,
                                    detail=detail))
        view = self._view(run, now)
        view.update(outcome=what, detail=detail)
        self.finished.append(view)

    def _sink(self, event: Event) -> None:
        if not self.running or type(event) not in (RequestEvent, ConnectionEvent):
            return
        run = self.running.get((event.pool, event.backend))
        if run is not None:
            run.wake.set()

    # ------------------------------------------------------------ view

    def _view(self, run: _Running, now: float) -> dict:
        return run.drain.view(now, run.backend.outstanding, run.backend.active_connections)

    def state(self) -> dict:
        now = self.clock()
        return {
            "drains": [self._view(r, now) for r in self.running.values()],
            "recent": list(self.finished)[-20:],
        }
