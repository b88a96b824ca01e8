"""Passive health (outlier detection, as Envoy): eject backends that real traffic shows failing.

Theory of operation
-------------------
Active checks ask a backend's health endpoint; passive health watches what
the backend does to real requests, which can differ (a /health that answers
200 while every order fails). The detector reads the RequestEvents the data
plane publishes (an in-process bus sink) and classifies each outcome for the
backend that served it:

* **5xx**: any response status >= 500, whoever made it;
* **gateway failure**: a 502/503/504 the proxy itself made because of the
  backend (`proxy_error` and the exchange ended in the connect, response-head
  or data phase: refused, reset, timed out), or any exchange the backend
  ended abnormally (termination "S?": closed mid-body, even after a 200 head).
  Each failed attempt listed in `retries` is a gateway failure of the backend
  it was made to, even when the retry elsewhere succeeded: the client never
  saw the failure, the pool did;
* **success**: any status below 500. Client aborts, drain cuts ("PD") and the
  proxy's own refusals (no backend, internal error) count as neither.

Three detectors, each optional (`OutlierConfig`): consecutive 5xx,
consecutive gateway failures, and the failure percentage over a sliding
`failure_window` once at least `failure_min_requests` were seen. A success
resets the consecutive runs.

When one trips, the backend is ejected: `ejected_until = now + duration`, where
duration = `base_ejection` x the backend's ejection number (1st, 2nd...), capped
by `max_ejection`. The number drops by one for every `base_ejection` the
backend spends back in rotation without an ejection, so an old incident does
not keep punishing it (Envoy decrements per interval in the same spirit).
`max_ejection_percent` caps the share of the pool ejected at once: a trip
that would exceed it is refused (reported once as a PoolEvent
"ejection_capped"), since ejecting everyone protects nothing.

Ejection and return are StateChange(kind="ejection") events with their
causes. Return needs no action to take effect (eligibility compares
`ejected_until` with the clock), but it must be *reported*, so `expire(now)`
runs from a timer the manager sets (and on every observed event).
Outcomes for a backend that is currently ejected are ignored (they are
requests that started before the ejection, or panic-mode traffic).
"""
from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field
from typing import Callable

from proxy.config import OutlierConfig
from proxy.events import Event, EventBus, PoolEvent, RequestEvent, StateChange
from proxy.health.table import (
    EJECTED,
    EJECTION,
    INCLUDED,
    cause as table_cause,
    fmt_seconds,
)
from proxy.model import BackendState

log = logging.getLogger("proxy.health")

SUCCESS = "success"
ERROR_5XX = "5xx"  # a 5xx the backend sent
GATEWAY = "gateway"  # a 502/503/504 the proxy made because of the backend (also a 5xx)

GATEWAY_STATUSES = frozenset({502, 503, 504})
GATEWAY_PHASES = frozenset("CHD")  # connect, response headers, data
DRAIN_CUT = "PD"  # the proxy cut the exchange at a drain deadline


def classify(event: RequestEvent) -> list[tuple[str, str]]:
    """(backend name, outcome) pairs one request tells about; pure.

    Termination codes are HAProxy style (proxy.events.RequestEvent): who ended
    it (C client, S server, P proxy, - normal) and in which phase.
    """
    out: list[tuple[str, str]] = []
    for attempt in event.retries or ():
        name = attempt.get("backend") if isinstance(attempt, dict) else None
        if name:
            out.append((name, GATEWAY))
    if event.backend is None or event.status == 0:
        return out
    termination = event.termination or "--"
    who, phase = termination[:1], termination[1:2]
    if who == "C" or termination == DRAIN_CUT:
        return out  # the client left, or a drain cut it: says nothing about the backend
    if event.proxy_error and phase not in GATEWAY_PHASES:
        return out  # the proxy's own refusal or bug, not the backend's doing
    if who == "S" or (event.proxy_error and event.status in GATEWAY_STATUSES):
        # refused, reset, closed early, timed out, or cut off mid-body (a 200
        # whose body never completed is still a failure of the backend)
        out.append((event.backend, GATEWAY))
    elif event.status >= 500:
        out.append((event.backend, ERROR_5XX))
    else:
        out.append((event.backend, SUCCESS))
    return out


@dataclass(slots=True)
class BackendStats:
    backend: BackendState
    consecutive_5xx: int = 0
    consecutive_gateway: int = 0
    window: collections.deque = field(default_factory=collections.deque)  # (t, failed)
    window_failures: int = 0
    ejections: int = 0  # the multiplier of base_ejection
    ejected: bool = False
    ejected_for: float = 0.0
    last_return: float | None = None
    capped_reported: bool = False

    def reset_runs(self) -> None:
        self.consecutive_5xx = 0
        self.consecutive_gateway = 0
        self.window.clear()
        self.window_failures = 0


@dataclass(frozen=True, slots=True)
class Ejection:
    backend: str
    duration: float
    number: int
    cause: str


class OutlierDetector:
    """Outlier detection for one pool. `pool` is the current PoolRuntime (replaced on reload)."""

    def __init__(self, pool, config: OutlierConfig, bus: EventBus, clock: Callable[[], float],
                 call_later: Callable[[float, Callable[[], None]], object] | None = None):
        self.pool = pool
        self.config = config
        self.bus = bus
        self.clock = clock
        self.call_later = call_later
        self.stats: dict[str, BackendStats] = {}

    @property
    def name(self) -> str:
        return self.pool.name

    def update(self, pool, config: OutlierConfig) -> None:
        """A reload: keep the stats of backends that kept their state object."""
        self.pool = pool
        self.config = config
        for name in list(self.stats):
            backend = pool.backends.get(name)
            if backend is None or backend is not self.stats[name].backend:
                del self.stats[name]

    def _stats(self, name: str) -> BackendStats | None:
        backend = self.pool.backends.get(name)
        if backend is None:
            return None
        stats = self.stats.get(name)
        if stats is None or stats.backend is not backend:
            stats = self.stats[name] = BackendStats(backend)
        return stats

    # -- observing -------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        if isinstance(event, RequestEvent) and event.pool == self.pool.name:
            now = self.clock()
            self.expire(now)
            for name, outcome in classify(event):
                self.record(name, outcome, now)

    def record(self, name: str, outcome: str, now: float) -> Ejection | None:
        """Count one outcome for backend `name`; eject it if a detector trips."""
        stats = self._stats(name)
        if stats is None or stats.ejected:
            return None
        cfg = self.config
        failed = outcome != SUCCESS
        if failed:
            stats.consecutive_5xx += 1
            stats.consecutive_gateway = stats.consecutive_gateway + 1 if outcome == GATEWAY else 0
        else:
            stats.consecutive_5xx = 0
            stats.consecutive_gateway = 0
            stats.capped_reported = False
        window = stats.window
        if cfg.failure_percentage:  # the window costs memory: keep it only when used
            window.append((now, failed))
            stats.window_failures += failed
            horizon = now - cfg.failure_window
            while window and window[0][0] <= horizon:
                _, old_failed = window.popleft()
                stats.window_failures -= old_failed
        if not failed:
            return None
        trip = None
        if cfg.consecutive_5xx and stats.consecutive_5xx >= cfg.consecutive_5xx:
            trip = ("consecutive_5xx", {"count": stats.consecutive_5xx})
        elif (cfg.consecutive_gateway_failure
              and stats.consecutive_gateway >= cfg.consecutive_gateway_failure):
            trip = ("consecutive_gateway_failure", {"count": stats.consecutive_gateway})
        elif cfg.failure_percentage and len(window) >= cfg.failure_min_requests:
            percent = 100.0 * stats.window_failures / len(window)
            if percent >= cfg.failure_percentage:
                trip = ("failure_percentage", {
                    "percent": percent, "window": fmt_seconds(cfg.failure_window),
                    "minimum": cfg.failure_min_requests})
        if trip is None:
            return None
        return self._eject(stats, trip[0], trip[1], now)

    # -- ejecting and returning ------------------------------------------------------------

    def ejection_duration(self, number: int) -> float:
        return min(self.config.base_ejection * number, self.config.max_ejection)

    def _decayed(self, stats: BackendStats, now: float) -> int:
        base = self.config.base_ejection
        if stats.last_return is None or base <= 0:
            return stats.ejections
        clean = int((now - stats.last_return) // base)
        return max(0, stats.ejections - clean)

    def _cap_allows(self, now: float) -> tuple[bool, int, int]:
        backends = list(self.pool.backends.values())
        ejected = sum(1 for b in backends if b.ejected_until > now)
        allowed = (ejected + 1) * 100 <= self.config.max_ejection_percent * len(backends)
        return allowed, ejected, len(backends)

    def _eject(self, stats: BackendStats, detector: str, values: dict,
               now: float) -> Ejection | None:
        backend = stats.backend
        allowed, ejected, total = self._cap_allows(now)
        if not allowed:
            if not stats.capped_reported:
                stats.capped_reported = True
                reason = table_cause(EJECTION, INCLUDED, detector, duration="-", number="-",
                                     **values).split(":")[0]
                self.bus.publish(PoolEvent(
                    pool=self.pool.name, what="ejection_capped", eligible=total - ejected,
                    total=total,
                    detail=(f"{backend.name} not ejected ({reason}): {ejected}/{total} already "
                            f"ejected and max_ejection_percent is "
                            f"{self.config.max_ejection_percent:g}%")))
            return None
        number = self._decayed(stats, now) + 1
        duration = self.ejection_duration(number)
        text = table_cause(EJECTION, INCLUDED, detector, duration=fmt_seconds(duration),
                           number=number, **values)
        stats.ejections = number
        stats.ejected = True
        stats.ejected_for = duration
        stats.capped_reported = False
        stats.reset_runs()
        backend.ejected_until = now + duration
        self.bus.publish(StateChange(pool=self.pool.name, backend=backend.name, kind="ejection",
                                     old=INCLUDED, new=EJECTED, cause=text))
        self._refresh_panic(now)
        if self.call_later is not None:
            self.call_later(duration, self._timer)
        return Ejection(backend.name, duration, number, text)

    def _refresh_panic(self, now: float | None = None) -> None:
        """An ejection or a return changes how many are eligible: the pool's panic
        flag follows now, not at its next request."""
        refresh = getattr(self.pool, "refresh_panic", None)
        if refresh is not None:
            refresh(now)

    def _timer(self) -> None:
        try:
            self.expire(self.clock())
        except Exception:  # a timer callback must not die silently
            log.exception("outlier return check of pool %s failed", self.pool.name)

    def expire(self, now: float) -> list[str]:
        """Report the return of backends whose ejection time has elapsed."""
        returned = []
        for name, stats in self.stats.items():
            if stats.ejected and stats.backend.ejected_until <= now:
                stats.ejected = False
                stats.last_return = now
                returned.append(name)
                self.bus.publish(StateChange(
                    pool=self.pool.name, backend=name, kind="ejection", old=EJECTED,
                    new=INCLUDED,
                    cause=table_cause(EJECTION, EJECTED, "expired",
                                      duration=fmt_seconds(stats.ejected_for))))
        if returned:
            self._refresh_panic(now)
        return returned

    def release_all(self, why: str) -> None:
        """Outlier detection switched off: return every ejected backend now."""
        for name, stats in self.stats.items():
            if stats.ejected:
                stats.ejected = False
                stats.backend.ejected_until = 0.0
                self.bus.publish(StateChange(pool=self.pool.name, backend=name, kind="ejection",
                                             old=EJECTED, new=INCLUDED, cause=why))
        self.stats.clear()
        self._refresh_panic()

    # -- view ------------------------------------------------------------------------------

    def state(self) -> dict:
        now = self.clock()
        out = {}
        for name, s in self.stats.items():
            out[name] = {
                "consecutive_5xx": s.consecutive_5xx,
                "consecutive_gateway_failures": s.consecutive_gateway,
                "window_requests": len(s.window),
                "window_failures": s.window_failures,
                "ejections": s.ejections,
                "ejected": s.ejected,
                "ejected_for_s": round(max(0.0, s.backend.ejected_until - now), 3)
                if s.ejected else 0.0,
            }
        return out
