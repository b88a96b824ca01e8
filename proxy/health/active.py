"""Active health checks: the proxy asks each backend, on a timer, whether it is fine.

Theory of operation
-------------------
One asyncio task per backend (`BackendChecker.run`). Each round it sleeps until
the next probe is due, runs one probe (HTTP or TCP) bounded by `timeout`,
counts the result with `table.apply_probe` and, when a threshold is crossed,
moves the backend's observed health through `PoolRuntime.set_health` (which
publishes the StateChange and stamps `healthy_since` for slow start).

Schedule (pure functions below, so tests need no clock):

* the first probe of a backend the checker has just met waits `grace`
  (the backend may still be booting), then a random 0..`jitter`;
* after that, probes *start* every `interval` (or `unhealthy_interval` while
  the backend is unhealthy), each plus a random 0..`jitter`, so checks of many
  backends spread out instead of arriving in bursts. A probe slower than the
  interval delays the next one; probes of one backend never overlap.

The HTTP probe is a raw asyncio client (httptools parses the response): one
connection per probe with `Connection: close`, so a probe also proves that
the backend still accepts connections, the thing a crashed process stops doing
first. The TCP probe only connects.

Events: every probe is a HealthProbe, but a healthy backend probed every
100 ms would flood the stream with identical lines, so `Coalescer` publishes
every failing probe and every probe that changes state at once, and folds the
passing probes of a steadily healthy backend into at most one event per
second carrying `count=N` (the most recent probe's detail, the mean latency).
"""
from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Awaitable, Callable

import httptools

from proxy.config import HealthCheckConfig
from proxy.events import EventBus, HealthProbe
from proxy.health.table import Counters, Step, apply_probe, fmt_seconds
from proxy.model import BackendState, Health

log = logging.getLogger("proxy.health")

Clock = Callable[[], float]

# Coalesce the passing probes of a steady healthy backend into one event per this many seconds.
COALESCE_EVERY = 1.0
# Keep at most this much of a response body to look for body_contains.
MAX_BODY = 64 * 1024
USER_AGENT = "LBLab-HealthCheck/1"


# ---------------------------------------------------------------- schedule (pure)

def base_interval(health: Health | str, config: HealthCheckConfig) -> float:
    """`unhealthy_interval` while the backend is down (when set), else `interval`."""
    health = getattr(health, "value", health)
    if health == Health.UNHEALTHY.value and config.unhealthy_interval:
        return config.unhealthy_interval
    return config.interval


def jitter_delay(config: HealthCheckConfig, rng: random.Random) -> float:
    """A random 0..jitter (0 when jitter is off: no draw, so seeded runs stay aligned)."""
    if config.jitter <= 0:
        return 0.0
    return rng.uniform(0.0, config.jitter)


def next_delay(health: Health | str, config: HealthCheckConfig, rng: random.Random) -> float:
    """Seconds from one probe's start to the next one's start."""
    return base_interval(health, config) + jitter_delay(config, rng)


def first_delay(config: HealthCheckConfig, rng: random.Random, new: bool) -> float:
    """Before the first probe: the grace period for a backend just met, then jitter.

    A checker restarted for a backend it already knew (its pool's settings
    changed) waits one interval instead, since that backend is not booting.
    """
    wait = config.grace if new else config.interval
    return wait + jitter_delay(config, rng)


# ---------------------------------------------------------------- probes

@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    detail: str  # "200 in 12 ms", "timeout after 500 ms", "connection refused"
    latency_ms: float


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _os_error(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    return exc.strerror or str(exc) or type(exc).__name__


class _HttpProbe(asyncio.Protocol):
    """Send one request, parse one response; resolve `done` with (status, body, error)."""

    def __init__(self, request: bytes, want_body: bool, done: asyncio.Future):
        self.request = request
        self.want_body = want_body
        self.done = done
        self.parser = httptools.HttpResponseParser(self)
        self.status: int | None = None
        self.body = bytearray()
        self.transport: asyncio.Transport | None = None

    def _finish(self, error: str | None = None) -> None:
        if not self.done.done():
            self.done.set_result((self.status, bytes(self.body), error))
        if self.transport is not None:
            self.transport.close()

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data):
        if self.done.done():
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._finish(f"malformed response: {exc}")

    def connection_lost(self, exc):
        if self.done.done():
            return
        if self.status is not None:
            # Body delimited by the close: what arrived is the body.
            self._finish()
        elif isinstance(exc, ConnectionResetError):
            self._finish("connection reset before a response")
        else:
            self._finish("connection closed before a response")

    # httptools callbacks
    def on_headers_complete(self):
        self.status = self.parser.get_status_code()
        if not self.want_body:
            self._finish()

    def on_body(self, body: bytes):
        if len(self.body) < MAX_BODY:
            self.body += body[: MAX_BODY - len(self.body)]

    def on_message_complete(self):
        self._finish()


def http_request(host: str, port: int, path: str) -> bytes:
    host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return (f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: {USER_AGENT}\r\n"
            "Accept: */*\r\nConnection: close\r\n\r\n").encode("latin-1")


async def probe_http(host: str, port: int, config: HealthCheckConfig, clock: Clock) -> ProbeResult:
    """GET config.path; pass when the status is expected (and the body contains the text)."""
    loop = asyncio.get_running_loop()
    started = clock()
    done = loop.create_future()
    transport = None
    want_body = config.body_contains is not None
    try:
        async with asyncio.timeout(config.timeout):
            transport, _ = await loop.create_connection(
                lambda: _HttpProbe(http_request(host, port, config.path), want_body, done),
                host, port)
            status, body, error = await done
    except TimeoutError:
        return ProbeResult(False, f"timeout after {_ms(config.timeout)}",
                           (clock() - started) * 1000)
    except OSError as exc:
        return ProbeResult(False, _os_error(exc), (clock() - started) * 1000)
    finally:
        if transport is not None:
            transport.close()
    latency = clock() - started
    latency_ms = latency * 1000
    if error is not None:
        return ProbeResult(False, error, latency_ms)
    if status not in config.expect_status:
        expected = ", ".join(str(s) for s in config.expect_status)
        return ProbeResult(False, f"status {status} (expected {expected}) in {_ms(latency)}",
                           latency_ms)
    if want_body and config.body_contains.encode() not in body:
        return ProbeResult(False, f"status {status} but body lacks {config.body_contains!r}",
                           latency_ms)
    return ProbeResult(True, f"{status} in {_ms(latency)}", latency_ms)


async def probe_tcp(host: str, port: int, config: HealthCheckConfig, clock: Clock) -> ProbeResult:
    """Pass when a TCP connection is accepted within the timeout."""
    loop = asyncio.get_running_loop()
    started = clock()
    transport = None
    try:
        async with asyncio.timeout(config.timeout):
            transport, _ = await loop.create_connection(asyncio.Protocol, host, port)
    except TimeoutError:
        return ProbeResult(False, f"connect timeout after {_ms(config.timeout)}",
                           (clock() - started) * 1000)
    except OSError as exc:
        return ProbeResult(False, _os_error(exc), (clock() - started) * 1000)
    finally:
        if transport is not None:
            transport.close()
    latency = clock() - started
    return ProbeResult(True, f"connected in {_ms(latency)}", latency * 1000)


Prober = Callable[[str, int, HealthCheckConfig, Clock], Awaitable[ProbeResult]]
PROBERS: dict[str, Prober] = {"http": probe_http, "tcp": probe_tcp}


# ---------------------------------------------------------------- coalescing (pure)

@dataclass(frozen=True, slots=True)
class Published:
    """One HealthProbe to publish (fields of the event)."""

    ok: bool
    detail: str
    latency_ms: float
    count: int = 1


class Coalescer:
    """Decides which probe results become events (see the module docstring)."""

    def __init__(self, every: float = COALESCE_EVERY):
        self.every = every
        self.last_published: float | None = None
        self.pending = 0
        self.pending_latency = 0.0
        self.pending_detail = ""

    def _flush(self) -> list[Published]:
        if not self.pending:
            return []
        out = Published(True, self.pending_detail,
                        round(self.pending_latency / self.pending, 3), self.pending)
        self.pending = 0
        self.pending_latency = 0.0
        return [out]

    def offer(self, result: ProbeResult, steady: bool, now: float) -> list[Published]:
        """`steady`: a pass by a backend that was healthy and stays healthy."""
        if not steady:
            out = self._flush()
            out.append(Published(result.ok, result.detail, round(result.latency_ms, 3)))
            self.last_published = now
            return out
        self.pending += 1
        self.pending_latency += result.latency_ms
        self.pending_detail = result.detail
        if self.last_published is None or now - self.last_published >= self.every:
            self.last_published = now
            return self._flush()
        return []

    def flush(self) -> list[Published]:
        return self._flush()


# ---------------------------------------------------------------- one backend

PoolGetter = Callable[[], object]  # returns the current PoolRuntime of the pool, or None


class BackendChecker:
    """Probes one backend until stopped, or until the backend leaves its pool."""

    def __init__(self, pool_name: str, backend: BackendState, config: HealthCheckConfig,
                 pool_getter: PoolGetter, bus: EventBus, clock: Clock, rng: random.Random,
                 counters: Counters | None = None, new: bool = True,
                 prober: Prober | None = None):
        self.pool_name = pool_name
        self.backend = backend
        self.config = config
        self.pool_getter = pool_getter
        self.bus = bus
        self.clock = clock
        self.rng = rng
        self.counters = counters or Counters()
        self.new = new
        self.prober = prober or PROBERS[config.type]
        self.coalescer = Coalescer()
        self.last: ProbeResult | None = None
        self.last_at: float | None = None
        self.next_at: float | None = None
        self.probes = 0
        self.task: asyncio.Task | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        delay = first_delay(self.config, self.rng, self.new)
        self.next_at = self.clock() + delay
        self.task = asyncio.get_running_loop().create_task(
            self.run(delay), name=f"health {self.pool_name}/{self.backend.name}")

    async def stop(self) -> None:
        task, self.task = self.task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        self._publish(self.coalescer.flush())

    def cancel(self) -> None:
        """Stop without waiting (from a synchronous hook)."""
        if self.task is not None:
            self.task.cancel()
            self.task = None

    # -- the loop ------------------------------------------------------------------------

    def _current_pool(self):
        pool = self.pool_getter()
        if pool is None or pool.backends.get(self.backend.name) is not self.backend:
            return None
        return pool

    async def run(self, delay: float | None = None) -> None:
        if delay is None:
            delay = first_delay(self.config, self.rng, self.new)
        while True:
            self.next_at = self.clock() + delay
            await asyncio.sleep(delay)
            if self._current_pool() is None:
                log.info("health checker for %s/%s stops: the backend left its pool",
                         self.pool_name, self.backend.name)
                return
            started = self.clock()
            try:
                result = await self.prober(self.backend.host, self.backend.port,
                                           self.config, self.clock)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug in a prober must not stop checking silently
                log.exception("health probe of %s/%s crashed", self.pool_name, self.backend.name)
                result = ProbeResult(False, f"probe error: {type(exc).__name__}: {exc}", 0.0)
            pool = self._current_pool()
            if pool is None:
                return
            self.observe(result, pool)
            due = started + next_delay(self.backend.health, self.config, self.rng)
            delay = max(0.0, due - self.clock())

    def observe(self, result: ProbeResult, pool) -> Step | None:
        """Count one result, publish its event(s) and move health if a threshold is crossed."""
        now = self.clock()
        self.probes += 1
        self.last = result
        self.last_at = now
        before = self.backend.health
        self.counters, step = apply_probe(
            self.counters, before, result.ok, result.detail,
            self.config.healthy_threshold, self.config.unhealthy_threshold)
        steady = result.ok and step is None and before is Health.HEALTHY
        self._publish(self.coalescer.offer(result, steady, now))
        if step is not None:
            pool.set_health(self.backend, Health(step.target), step.cause)
        return step

    def _publish(self, items: list[Published]) -> None:
        for item in items:
            self.bus.publish(HealthProbe(pool=self.pool_name, backend=self.backend.name,
                                         ok=item.ok, detail=item.detail,
                                         latency_ms=item.latency_ms, count=item.count))

    # -- view ----------------------------------------------------------------------------

    def state(self) -> dict:
        now = self.clock()
        last = None
        if self.last is not None:
            last = {"ok": self.last.ok, "detail": self.last.detail,
                    "latency_ms": round(self.last.latency_ms, 3),
                    "ago_s": round(now - self.last_at, 3)}
        return {
            "type": self.config.type,
            "target": (f"{self.config.path}" if self.config.type == "http"
                       else f"{self.backend.address}"),
            "health": self.backend.health.value,
            "health_reason": self.backend.health_reason,
            "consecutive_passes": self.counters.passes,
            "consecutive_fails": self.counters.fails,
            "probes": self.probes,
            "last_probe": last,
            "next_probe_in_s": (round(max(0.0, self.next_at - now), 3)
                                if self.next_at is not None and self.task is not None else None),
            "interval": fmt_seconds(base_interval(self.backend.health, self.config)),
        }
