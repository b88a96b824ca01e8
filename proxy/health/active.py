"""Active health checks: the proxy asks each backend, on a timer, whether it is fine.

Theory of operation
-------------------
One `BackendChecker` per backend, driven by the shared `Scheduler`
(proxy.health.scheduler: one loop timer for every check, no task per
backend). When a probe is due it runs one probe (HTTP or TCP) bounded by
`timeout`, counts the result with `table.apply_probe` and, when a threshold is
crossed, moves the backend's observed health through `PoolRuntime.set_health`
(which publishes the StateChange and stamps `healthy_since` for slow start).

Schedule (pure functions below, so tests need no clock):

* the first probe of a backend the checker has just met waits `grace`
  (the backend may still be booting), then a random 0..`jitter`;
* after that, probes *start* every `interval` (or `unhealthy_interval` while
  the backend is unhealthy), each plus a random 0..`jitter`, so checks of many
  backends spread out instead of arriving in bursts. A probe slower than the
  interval delays the next one; probes of one backend never overlap.
* the scheduler wakes at most once per tick (5 ms), so a probe may start up
  to a tick late; the next one is timed from when this one was *due*, so the
  interval stays exact on average.

The HTTP probe is one connection per probe with `Connection: close`, so a
probe also proves that the backend still accepts connections, the thing a
crashed process stops doing first. It passes when the status is in
`expect_status` (and the body holds `body_contains`, when set: only then is
the body read). The TCP probe only connects. `SocketProbe` runs both on a raw
non-blocking socket with callbacks: the request is encoded once per backend,
only the status line is parsed unless the body is needed, and the timeout is
a scheduler entry, so a probe costs no task, coroutine, transport or timer of
its own. `probe_http` / `probe_tcp` are the same probes as coroutines, used
for a backend named by host name (resolved at each probe).

`reuse_connection: true` (HTTP only, off by default) keeps the connection open
and sends each GET on it: cheaper (no connect, accept and close per probe),
equally quick to see a dead backend (a kept connection found closed is
retried on a new one within the same timeout; only that fresh attempt's
verdict counts), but blind to a backend that stops accepting *new*
connections while it keeps serving old ones. See `SocketProbe`.

TLS: the http and grpc checks of a backend the pool speaks TLS to
(`pools.NAME.tls` or the backend's own `tls`) speak TLS too, with the
pool's settings for that backend (the same `proxy.tls.ClientTLS`: CA,
server name sent as SNI and checked, verify, minimum version), offering
ALPN http/1.1 (http) or h2 (grpc), when the check targets the traffic
port; a check on another `health.port` is cleartext unless `health.tls:
true` (and `health.tls: false` keeps a traffic-port check cleartext). See
`check_speaks_tls`. A TLS check connects in two steps, TCP then the
handshake, so a handshake that fails is a failed probe whose detail says
so ("TLS handshake failed: certificate verify failed: ..."). TLS checks
run as coroutine probes (`probe_http` / the grpc prober with `tls=`), not
on `SocketProbe`, which speaks only cleartext.

Events: every probe is a HealthProbe, but a healthy backend probed every
100 ms would flood the stream with identical lines, so `Coalescer` publishes
every failing probe and every probe that changes state at once, and folds the
passing probes of a steadily healthy backend into at most one event per
second carrying `count=N` (the most recent probe's detail, the mean latency).
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import random
import re
import socket
import ssl
from dataclasses import dataclass
from typing import Awaitable, Callable

import httptools

from proxy.config import HealthCheckConfig
from proxy.events import EventBus, HealthProbe, Warning  # noqa: A004
from proxy.health.scheduler import ERROR, READ, WRITE, Scheduler
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


def http_request(host: str, port: int, path: str, keep_alive: bool = False) -> bytes:
    """The probe's request, encoded once per checker (`keep_alive`: no `Connection: close`)."""
    host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    connection = "" if keep_alive else "Connection: close\r\n"
    return (f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: {USER_AGENT}\r\n"
            f"Accept: */*\r\n{connection}\r\n").encode("latin-1")


async def await_answer(open_transport: Callable[[], Awaitable], done, timeout: float,
                       clock: Clock, started: float, silent: str = "timeout after",
                       opener: "Opener | None" = None):
    """Open a transport (``await open_transport()``) and wait for the future ``done``, all
    within ``timeout``; the transport is closed whatever happens.

    The one place that turns a silent or refusing peer into a failed probe, for every probe
    kind: returns ``(answer, None)``, or ``(None, ProbeResult)`` on a timeout (``silent``
    words it) or a socket error. ``done`` may be None: opening is then the whole answer.
    ``opener``: the `Opener` behind ``open_transport`` when the probe may speak TLS, so that
    a failed or silent handshake is worded as one."""
    transport = None
    try:
        async with asyncio.timeout(timeout):
            transport = await open_transport()
            return (await done if done is not None else None), None
    except TimeoutError:
        if opener is not None and opener.handshaking:
            silent = "TLS handshake timeout after"
        return None, ProbeResult(False, f"{silent} {_ms(timeout)}", (clock() - started) * 1000)
    except TLSCheckFailed as exc:
        return None, ProbeResult(False, f"TLS handshake failed: {exc}",
                                 (clock() - started) * 1000)
    except OSError as exc:
        return None, ProbeResult(False, _os_error(exc), (clock() - started) * 1000)
    finally:
        if transport is not None:
            transport.close()


# ---------------------------------------------------------------- TLS for checks

@dataclass(frozen=True, slots=True)
class CheckTLS:
    """How one check speaks TLS: the pool's context for its backend (ALPN already set
    to what the check speaks) and the name sent as SNI and checked."""

    context: ssl.SSLContext
    server_name: str
    alpn: str  # "http/1.1" (http checks) or "h2" (grpc): what the backend must choose


class TLSCheckFailed(Exception):
    """The handshake of a check failed; the message is the reason."""


def check_speaks_tls(config: HealthCheckConfig, backend_port: int, backend_tls: bool) -> bool:
    """Whether a check of this backend speaks TLS (pure).

    `health.tls` decides when given; by default a check speaks TLS when the pool speaks
    TLS to this backend (`backend_tls`) and the check targets the traffic port (no
    `health.port`, or the same port): a separate health port is usually a cleartext
    admin port. tcp and udp checks never do (a tcp check only connects)."""
    if config.type not in ("http", "grpc"):
        return False
    if config.tls is not None:
        return config.tls
    return backend_tls and (config.port is None or config.port == backend_port)


def check_tls(config: HealthCheckConfig, client) -> CheckTLS:
    """The CheckTLS of a `proxy.tls.ClientTLS` for this check's type."""
    if config.type == "grpc":
        return CheckTLS(client.h2_context, client.server_name, "h2")
    return CheckTLS(client.context, client.server_name, "http/1.1")


_OPENSSL_NOISE = re.compile(r"^\[[^\]]*\]\s*|\s*\(_?\s*ssl\.c:\d+\)$", re.IGNORECASE)


def handshake_reason(exc: BaseException, alpn: str) -> str:
    """The words after "TLS handshake failed: " (proxy.tls.ssl_reason, without OpenSSL's
    "[SSL: ...]" prefix and "(_ssl.c:NNN)" suffix), saying what a refused ALPN means."""
    from proxy.tls import ssl_reason

    reason = _OPENSSL_NOISE.sub("", ssl_reason(exc)).strip() or type(exc).__name__
    if "no application protocol" in reason:
        reason += (f": the backend refused ALPN {alpn}"
                   + (" (a gRPC check needs HTTP/2 over TLS)" if alpn == "h2" else ""))
    return reason


class Opener:
    """Opens a probe's connection: plain TCP, or TCP then a TLS handshake (two steps, so
    that a refused connect and a failed handshake are told apart)."""

    def __init__(self, host: str, port: int, tls: CheckTLS | None):
        self.host = host
        self.port = port
        self.tls = tls
        self.handshaking = False

    async def open(self, factory: Callable[[], asyncio.Protocol]) -> asyncio.Transport:
        loop = asyncio.get_running_loop()
        if self.tls is None:
            transport, _ = await loop.create_connection(factory, self.host, self.port)
            return transport
        sock = await self._connect_tcp(loop)
        self.handshaking = True
        try:
            # Handshake first, then connection_made (nothing is sent in cleartext, and
            # the backend's first bytes, e.g. its HTTP/2 SETTINGS, reach a ready protocol).
            transport, _ = await loop.create_connection(
                factory, sock=sock, ssl=self.tls.context, server_hostname=self.tls.server_name)
        except asyncio.CancelledError:
            sock.close()
            raise
        except (OSError, ConnectionError, EOFError) as exc:  # ssl.SSLError is an OSError
            sock.close()
            raise TLSCheckFailed(handshake_reason(exc, self.tls.alpn)) from None
        self.handshaking = False
        sslobj = transport.get_extra_info("ssl_object")
        chosen = sslobj.selected_alpn_protocol() if sslobj is not None else None
        if self.tls.alpn == "h2" and chosen != "h2":
            transport.abort()
            raise TLSCheckFailed(f"the backend chose {chosen or 'no protocol'} by ALPN, "
                                 "a gRPC check needs h2")
        return transport

    async def _connect_tcp(self, loop) -> socket.socket:
        infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
        except BaseException:
            sock.close()
            raise
        return sock


async def probe_http(host: str, port: int, config: HealthCheckConfig, clock: Clock,
                     tls: CheckTLS | None = None) -> ProbeResult:
    """GET config.path (over TLS with `tls`); pass when the status is expected (and the
    body contains the text)."""
    loop = asyncio.get_running_loop()
    started = clock()
    done = loop.create_future()
    want_body = config.body_contains is not None
    opener = Opener(host, port, tls)
    request_host = tls.server_name if tls is not None else host

    async def connect():
        return await opener.open(
            lambda: _HttpProbe(http_request(request_host, port, config.path), want_body, done))

    answer, failed = await await_answer(connect, done, config.timeout, clock, started,
                                        opener=opener)
    if failed is not None:
        return failed
    status, body, error = answer
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

    async def connect():
        transport, _ = await loop.create_connection(asyncio.Protocol, host, port)
        return transport

    _, failed = await await_answer(connect, None, config.timeout, clock, started,
                                   silent="connect timeout after")
    if failed is not None:
        return failed
    latency = clock() - started
    return ProbeResult(True, f"connected in {_ms(latency)}", latency * 1000)


Prober = Callable[[str, int, HealthCheckConfig, Clock], Awaitable[ProbeResult]]
PROBERS: dict[str, Prober] = {"http": probe_http, "tcp": probe_tcp}
# Probes living beside the protocol they speak (imported when first used).
EXTRA_PROBERS = {"grpc": ("proxy.http2.health", "probe_grpc"),
                 "udp": ("proxy.io.udp", "probe_udp")}


def extra_prober(kind: str) -> Prober:
    import importlib

    module, name = EXTRA_PROBERS[kind]
    prober = PROBERS.get(kind)
    if prober is None:
        prober = PROBERS[kind] = getattr(importlib.import_module(module), name)
    return prober


# ---------------------------------------------------------------- probes without tasks

_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?: |\r\n)")


def _errno_text(err: int) -> str:
    """The same words `_os_error` gives for the exception this errno would raise."""
    if err == errno.ECONNREFUSED:
        return "connection refused"
    if err == errno.ECONNRESET:
        return "connection reset"
    return os.strerror(err)


def numeric_family(host: str) -> int | None:
    """AF_INET / AF_INET6 for a literal address, None for a name (resolved the slow way)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return family
    return None


class SocketProbe:
    """The probes of one backend, driven by callbacks on a raw non-blocking socket.

    What a probe does and how it is judged is exactly `probe_http` /
    `probe_tcp` above (connect, send GET, read the status line, the body only
    when `body_contains` needs it; the same details and the same timeout), but
    without a coroutine, a task, a transport or a timer of its own: the
    request bytes are encoded once, the timeout is an entry in the shared
    `Scheduler`, and `done(result)` is called when the verdict is known.

    `reuse_connection` (HTTP only) keeps the connection open between probes
    and sends the next GET on it. A kept connection that the backend closed
    (idle timeout, restart) is not a failure by itself: the probe reconnects
    once and its verdict is that of the fresh connection, so a dead backend is
    seen as fast as without reuse (refused, reset or timed out within the
    same `timeout`). What reuse cannot see is a backend that keeps serving
    its open connections but no longer accepts new ones (it closed its
    listening socket to drain, or its accept backlog is full): that is why it
    is off by default, as in HAProxy and Envoy.
    """

    def __init__(self, host: str, port: int, family: int, config: HealthCheckConfig,
                 clock: Clock, scheduler, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.scheduler = scheduler
        self.poller = scheduler.poller
        self.clock = clock
        self.family = family
        self.addr = (host, port) if family == socket.AF_INET else (host, port, 0, 0)
        self.tcp = config.type == "tcp"
        self.reuse = bool(getattr(config, "reuse_connection", False)) and not self.tcp
        self.timeout = config.timeout
        self.request = None if self.tcp else http_request(host, port, config.path, self.reuse)
        self.expect_status = frozenset(config.expect_status)
        self.expected_text = ", ".join(str(s) for s in config.expect_status)
        self.body_contains = config.body_contains
        self.needle = config.body_contains.encode() if config.body_contains is not None else None
        self.timeout_detail = (f"connect timeout after {_ms(config.timeout)}" if self.tcp
                               else f"timeout after {_ms(config.timeout)}")
        # one probe in flight
        self.done: Callable[[ProbeResult], None] | None = None
        self.deadline = None
        self.started = 0.0
        self.sock: socket.socket | None = None
        self.fd = -1
        self.registered = False  # fd is in the poller
        self.connecting = False
        self.pending = b""  # request bytes not yet sent
        self.buf = bytearray()  # response bytes (minimal parse)
        self.parser = None  # httptools parser (body_contains or reuse)
        self.status: int | None = None
        self.body = bytearray()
        self.complete = False
        self.keep_alive = False
        self.on_kept = False  # this attempt uses a kept-alive connection
        self.got_bytes = False
        self.idle = False  # a kept connection between probes
        self.probes = 0
        self.reconnects = 0  # kept connections found closed (reuse only)

    # -- one probe -----------------------------------------------------------------------

    def start(self, done: Callable[[ProbeResult], None]) -> None:
        self.done = done
        self.started = self.clock()
        self.probes += 1
        self.deadline = self.scheduler.call_later(self.timeout, self._on_timeout)
        if self.sock is not None and self.idle:
            self.idle = False
            self.on_kept = True
            self._send_request()
        else:
            self._connect()

    def abort(self) -> None:
        """Stop the probe in flight (if any) and close every socket; no verdict."""
        self.done = None
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        self._close()

    def _connect(self) -> None:
        self.on_kept = False
        try:
            sock = socket.socket(self.family, socket.SOCK_STREAM)
        except OSError as exc:
            self._fail(_os_error(exc))
            return
        sock.setblocking(False)
        self.sock, self.fd = sock, sock.fileno()
        err = sock.connect_ex(self.addr)
        if err == 0:
            self._connected()
        elif err in (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK):
            # Writable when connected; watch reads too, at once, so that the
            # socket is registered once for its whole life (a failed connect
            # reports both; _on_events knows it is still connecting).
            self.connecting = True
            self.registered = True
            self.poller.register(self.fd, WRITE if self.tcp else WRITE | READ, self._on_events)
        else:
            self._fail(_errno_text(err))

    def _on_events(self, events: int) -> None:
        if self.connecting:
            self._on_connect()
            return
        if events & WRITE and self.pending:
            self._on_writable()
            if self.sock is None or not events & (READ | ERROR):
                return
        self._on_read()

    def _on_connect(self) -> None:
        self.connecting = False
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._fail(_errno_text(err))
        else:
            self._connected()

    def _connected(self) -> None:
        if self.tcp:
            latency = self.clock() - self.started
            self._finish(ProbeResult(True, f"connected in {_ms(latency)}", latency * 1000))
            return
        if self.reuse or self.needle is not None:
            self.parser = httptools.HttpResponseParser(self)
        if not self.registered:
            self.registered = True
            self.poller.register(self.fd, READ, self._on_events)
        else:
            self.poller.modify(self.fd, READ)
        self._send_request()

    def _send_request(self) -> None:
        self.status = None
        self.complete = False
        self.keep_alive = False
        self.got_bytes = False
        self.buf.clear()
        self.body.clear()
        self._write(self.request)

    def _write(self, data: bytes) -> None:
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self.pending = b""
            self._lost(exc)
            return
        was_pending = bool(self.pending)
        self.pending = data[sent:]
        if self.pending and not was_pending:
            self.poller.modify(self.fd, READ | WRITE)
        elif was_pending and not self.pending:
            self.poller.modify(self.fd, READ)

    def _on_writable(self) -> None:
        self._write(self.pending)

    def _on_read(self) -> None:
        if self.done is None:
            # A kept connection between probes became readable: the backend
            # closed it (or spoke out of turn). Drop it; the next probe connects.
            self._close()
            return
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        if not data:
            self._lost(None)
            return
        self.got_bytes = True
        if self.parser is None:
            self._minimal(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail("malformed response: unexpected upgrade")
            return
        except httptools.HttpParserError as exc:
            self._fail(f"malformed response: {exc}")
            return
        if self.done is None:
            return  # already judged (on_headers_complete without body_contains)
        if self.complete:
            self._judge()

    def _minimal(self, data: bytes) -> None:
        """Status line and the end of the headers: all a check without body_contains needs."""
        buf = self.buf
        start = max(0, len(buf) - 3)
        buf += data
        if buf.find(b"\r\n\r\n", start) < 0:
            if len(buf) > MAX_BODY:
                self._fail(f"malformed response: no end of headers in {MAX_BODY} bytes")
            return
        match = _STATUS_LINE.match(buf)
        if match is None:
            line = bytes(buf[:buf.find(b"\r\n")][:80])
            self._fail(f"malformed response: bad status line {line!r}")
            return
        self.status = int(match.group(1))
        self._judge()

    def _lost(self, exc: OSError | None) -> None:
        """The connection closed (exc None: an orderly EOF) or failed while probing."""
        if self.on_kept and not self.got_bytes:
            # The backend closed the kept connection before this probe's request
            # reached it: not the backend's fault by itself; ask on a new one.
            self.reconnects += 1
            self._close()
            self._connect()
            return
        if self.status is not None and self.parser is not None:
            self._judge()  # the body was delimited by the close: what arrived is the body
        elif isinstance(exc, ConnectionResetError):
            self._fail("connection reset before a response")
        elif exc is None or isinstance(exc, (BrokenPipeError, ConnectionError)):
            self._fail("connection closed before a response")
        else:
            self._fail(_os_error(exc))

    def _judge(self) -> None:
        latency = self.clock() - self.started
        latency_ms = latency * 1000
        status = self.status
        keep = self.reuse and self.complete and self.keep_alive
        if status not in self.expect_status:
            result = ProbeResult(False, f"status {status} (expected {self.expected_text}) "
                                        f"in {_ms(latency)}", latency_ms)
        elif self.needle is not None and self.needle not in self.body:
            result = ProbeResult(False, f"status {status} but body lacks "
                                        f"{self.body_contains!r}", latency_ms)
        else:
            result = ProbeResult(True, f"{status} in {_ms(latency)}", latency_ms)
        self._finish(result, keep)

    def _on_timeout(self) -> None:
        self.deadline = None
        self._finish(ProbeResult(False, self.timeout_detail,
                                 (self.clock() - self.started) * 1000))

    def _fail(self, detail: str) -> None:
        self._finish(ProbeResult(False, detail, (self.clock() - self.started) * 1000))

    def _finish(self, result: ProbeResult, keep: bool = False) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        if keep:
            self.idle = True  # the reader stays on: it notices the backend closing it
        else:
            self._close()
        done, self.done = self.done, None
        if done is not None:
            done(result)

    def _close(self) -> None:
        self.idle = False
        self.connecting = False
        self.parser = None
        self.pending = b""
        sock, self.sock = self.sock, None
        if sock is None:
            return
        if self.registered:
            self.poller.forget(self.fd)  # (closing the fd takes it out of the epoll set)
            self.registered = False
        self.fd = -1
        sock.close()

    # -- httptools callbacks -------------------------------------------------------------

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if self.needle is None and not self.reuse:
            self._judge()

    def on_body(self, body: bytes) -> None:
        if self.needle is not None and len(self.body) < MAX_BODY:
            self.body += body[: MAX_BODY - len(self.body)]

    def on_message_complete(self) -> None:
        self.complete = True
        # (asked here: the parser forgets the message's headers once it is complete)
        self.keep_alive = self.parser.should_keep_alive()


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
    """Probes one backend until stopped, or until the backend leaves its pool.

    No task of its own: the shared `Scheduler` calls `_due` when a probe is
    due, the probe calls `_finished` with its verdict, which schedules the
    next one. The built-in probes run on `SocketProbe` (callbacks only); a
    prober given as a coroutine function (tests, a backend named by host name
    rather than address) runs as a task for that one probe.
    """

    def __init__(self, pool_name: str, backend: BackendState, config: HealthCheckConfig,
                 pool_getter: PoolGetter, bus: EventBus, clock: Clock, rng: random.Random,
                 counters: Counters | None = None, new: bool = True,
                 prober: Prober | None = None, scheduler=None,
                 tls_getter: Callable[[], object] | None = None):
        self.pool_name = pool_name
        self.backend = backend
        self.config = config
        self.pool_getter = pool_getter
        self.bus = bus
        self.clock = clock
        self.rng = rng
        self.counters = counters or Counters()
        self.new = new
        self.prober = prober  # None: the built-in probe of config.type
        self.scheduler = scheduler
        # Returns the backend's proxy.tls.ClientTLS (looked up at each probe: a config
        # apply replaces it after the checkers are synced); None: the check is cleartext.
        self.tls_getter = tls_getter
        self.coalescer = Coalescer()
        self.last: ProbeResult | None = None
        self.last_at: float | None = None
        self.next_at: float | None = None
        self.probes = 0
        self.running = False
        self._own_scheduler = False
        self._entry = None  # the scheduled next probe
        self._due_at = 0.0  # loop time the probe in flight was due
        self._socket_probe: SocketProbe | None = None
        self._task: asyncio.Task | None = None  # a coroutine prober in flight
        self._warned_tls = None  # the unverified TLS settings already warned about

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def probe_port(self) -> int:
        """health.port when set (a check beside the traffic port), else the backend's."""
        return self.config.port or self.backend.port

    @property
    def task(self):
        """Truthy while the checker runs (kept for callers of the task-per-backend days)."""
        return self if self.running else None

    def start(self, scheduler=None) -> None:
        loop = asyncio.get_running_loop()
        if scheduler is not None:
            self.scheduler = scheduler
        if self.scheduler is None or self.scheduler.loop is not loop:
            self.scheduler, self._own_scheduler = Scheduler(loop), True
        if self.prober is None and self.config.type in EXTRA_PROBERS:
            self.prober = extra_prober(self.config.type)  # grpc, udp: coroutine probes
        if self.prober is None and self.tls_getter is not None:
            self.prober = PROBERS[self.config.type]  # TLS: SocketProbe is cleartext only
        if self.prober is None:
            family = numeric_family(self.backend.host)
            if family is not None:
                self._socket_probe = SocketProbe(self.backend.host, self.probe_port, family,
                                                 self.config, self.clock, self.scheduler, loop)
            else:
                self.prober = PROBERS[self.config.type]  # a host name: resolve per probe
        self.running = True
        self._schedule(self.scheduler.time() + first_delay(self.config, self.rng, self.new))

    async def stop(self) -> None:
        task = self._task
        self.cancel()
        if task is not None:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._publish(self.coalescer.flush())

    def cancel(self) -> None:
        """Stop without waiting (from a synchronous hook)."""
        self.running = False
        if self._entry is not None:
            self._entry.cancel()
            self._entry = None
        if self._socket_probe is not None:
            self._socket_probe.abort()
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._own_scheduler and self.scheduler is not None:
            self.scheduler.close()

    # -- the loop ------------------------------------------------------------------------

    def _current_pool(self):
        pool = self.pool_getter()
        if pool is None or pool.backends.get(self.backend.name) is not self.backend:
            return None
        return pool

    def _schedule(self, due: float) -> None:
        self._due_at = due
        now = self.scheduler.time()
        self.next_at = self.clock() + max(0.0, due - now)
        self._entry = self.scheduler.call_at(due, self._due)

    def _leave(self) -> None:
        log.info("health checker for %s/%s stops: the backend left its pool",
                 self.pool_name, self.backend.name)
        self.cancel()

    def _due(self) -> None:
        self._entry = None
        if not self.running:
            return
        if self._current_pool() is None:
            self._leave()
            return
        if self._socket_probe is not None:
            self._socket_probe.start(self._finished)
        else:
            self._task = asyncio.get_running_loop().create_task(
                self._run_prober(), name=f"health {self.pool_name}/{self.backend.name}")

    async def _run_prober(self) -> None:
        try:
            if self.tls_getter is None:
                result = await self.prober(self.backend.host, self.probe_port,
                                           self.config, self.clock)
            else:
                result = await self._probe_tls()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in a prober must not stop checking silently
            log.exception("health probe of %s/%s crashed", self.pool_name, self.backend.name)
            result = ProbeResult(False, f"probe error: {type(exc).__name__}: {exc}", 0.0)
        self._task = None
        self._finished(result)

    async def _probe_tls(self) -> ProbeResult:
        client = self.tls_getter()
        if client is None:  # health.tls: true on a backend without TLS settings (config refuses it)
            return ProbeResult(False, "TLS check but no TLS settings for this backend", 0.0)
        self._warn_unverified(client)
        return await self.prober(self.backend.host, self.probe_port, self.config, self.clock,
                                 tls=check_tls(self.config, client))

    def _warn_unverified(self, client) -> None:
        """A check that verifies nothing says so, as the data plane's connections do: once per
        TLS settings (a config apply brings new ones), not once per probe."""
        if getattr(client, "verify", True) or self._warned_tls is client:
            return
        self._warned_tls = client
        self.bus.publish(Warning(
            source="tls", pool=self.pool_name, backend=self.backend.name,
            message=(f"the {self.config.type} health check of backend {self.backend.name} "
                     f"({self.backend.host}:{self.probe_port}) of pool {self.pool_name} does "
                     "NOT verify the certificate (tls.verify: false): an impostor there "
                     "would pass it; set verify: true with the lab CA")))

    def _finished(self, result: ProbeResult) -> None:
        if not self.running:
            return
        pool = self._current_pool()
        if pool is None:
            self._leave()
            return
        try:
            self.observe(result, pool)
        finally:
            # From when this probe was *due*: batched (late) starts do not add up.
            # A probe slower than the interval delays the next one.
            due = self._due_at + next_delay(self.backend.health, self.config, self.rng)
            now = self.scheduler.time()
            self._schedule(due if due > now else now)

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
        tls = None
        if self.tls_getter is not None:
            client = self.tls_getter()
            tls = {"server_name": getattr(client, "server_name", None),
                   "verify": getattr(client, "verify", None)}
        return {
            "type": self.config.type,
            "tls": tls,  # None: the check is cleartext
            "target": (f"{self.config.path}" if self.config.type == "http"
                       else f"{self.backend.host}:{self.probe_port}"),
            "health": self.backend.health.value,
            "health_reason": self.backend.health_reason,
            "consecutive_passes": self.counters.passes,
            "consecutive_fails": self.counters.fails,
            "probes": self.probes,
            "last_probe": last,
            "next_probe_in_s": (round(max(0.0, self.next_at - now), 3)
                                if self.next_at is not None and self.running else None),
            "interval": fmt_seconds(base_interval(self.backend.health, self.config)),
        }
