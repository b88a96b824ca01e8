"""TCP (L4) listeners: one backend per connection, bytes relayed both ways.

Theory of operation
-------------------
An `L4Connection` (asyncio Protocol) is one client connection of a tcp
listener, and an `L4Upstream` its connection to the backend. At L4 the
proxy sees bytes, never requests, so it balances *connections*: a new
connection is one pick, and every byte of it goes to that backend.

    accept -> [passthrough: read the ClientHello, route on its server name]
           -> pick (the pool's balancer) -> connect (retry elsewhere on failure)
           -> [PROXY protocol header] -> relay both ways -> close -> one event

Phases: HELLO (tls passthrough only: bytes are kept until the ClientHello is
complete, `proxy.sni` reads the name, nothing is decrypted), CONNECTING
(client bytes are buffered, up to BUFFER_HIGH, then reading pauses), RELAY,
DONE. Every byte is written as it arrives; when one side's kernel buffer is
full (`pause_writing`), reading from the other side pauses until it drains
(`resume_writing`): back-pressure end to end, memory stays bounded.

Half-close: a side that shuts its sending half (FIN: `eof_received`) has it
passed on (`write_eof` to the other side), and the other direction keeps
flowing; the connection ends when both directions are shut, or when either
side resets (the reset is passed on: abort). `closed_by` in the event is the
side that ended first. An idle connection (no byte either way for
listeners.NAME.timeouts.tunnel_idle) is closed by the proxy.

Counters and drain: an open connection counts in the backend's
`active_connections` and `outstanding` (so least_connections,
least_outstanding_requests, power_of_two_choices and bounded hashing see
connections), and is tracked in `server.inflight(backend)`: when a drain
reaches its deadline, `cut(reason)` closes it and the event says why. At L4
the "response time" that least_response_time averages is the TCP connect time.

Events: `ConnectionOpen` once the backend is connected (pool, candidates, the
balancer's inputs, the server name), one `ConnectionEvent` when it ends
(bytes each way, duration, who closed, why, retries).

Per-connection cost (a new client connection per request is the L4 proxy's
hardest load, bench/l4.py --workloads churn): no Task for the connect (a
ConnectAttempt steps `create_connection` itself) and no timer of its own (the
connect timeout is the connection's Deadline, waiting on the loop's
DeadlineQueue for that duration, and the same Deadline keeps the idle timeout);
both events are lazy (proxy/events.py: what metrics, drains and sampled
subscriptions count is set at once, the client text, candidates, inputs and
TLS are built from decision-time values if something reads them); nothing is
asked of the kernel that the transport already did (TCP_NODELAY is set by
asyncio's and uvloop's transports; the local address is read only for a PROXY
header); rarely used state (retries, failed backends, buffered bytes) starts as
shared empty class defaults and is made per connection only when used.

PROXY protocol (`proxy_protocol: v1|v2` on the pool or backend): the backend
connection starts with a header naming the real client and the address it
connected to, which L4 otherwise hides (the backend sees the proxy as its
peer). v2 also carries the TLS server name (PP2_TYPE_AUTHORITY) in passthrough.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import dataclasses
import struct
import time
from types import MappingProxyType

from proxy.balancers.base import PickContext
from proxy.events import ConnectionEvent, lazy_connection, lazy_connection_open
from proxy.io import Deadline, deadline_queue
from proxy.sni import MAX_HELLO, NotTLS, match_name, parse_client_hello

log = logging.getLogger("proxy.l4")

BUFFER_HIGH = 256 * 1024  # client bytes held while no backend is connected yet
LINGER = 5.0  # a graceful close that cannot flush in this long is aborted

HELLO, CONNECTING, RELAY, DONE = "hello", "connecting", "relay", "done"
PAUSE_BUFFER = 1  # bytes buffered while connecting
PAUSE_UPSTREAM = 2  # the backend's socket buffer is full

# An L4 pick has no headers or cookies: one read-only empty mapping for every one.
_NO_FIELDS = MappingProxyType({})
# _route builds its PickContext with positional arguments (keywords cost about as
# much as the rest of the pick's setup); they follow this order.
_CONTEXT_FIELDS = ("client_ip", "now", "method", "path", "headers", "cookies", "sni", "tls",
                   "zone")
if tuple(f.name for f in dataclasses.fields(PickContext)) != _CONTEXT_FIELDS:
    raise ImportError("proxy.balancers.base.PickContext's fields changed: update "
                      "_CONTEXT_FIELDS and L4Connection._route in proxy/io/l4.py")


# ====================================================================== PROXY protocol

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
PP2_TYPE_AUTHORITY = 0x02


def proxy_header_v1(src: tuple[str, int], dst: tuple[str, int]) -> bytes:
    """`PROXY TCP4 <src ip> <dst ip> <src port> <dst port>\\r\\n` (haproxy.org/download/2.9/doc/proxy-protocol.txt)."""
    family = "TCP6" if ipaddress.ip_address(src[0]).version == 6 else "TCP4"
    return f"PROXY {family} {src[0]} {dst[0]} {src[1]} {dst[1]}\r\n".encode("ascii")


def proxy_header_v2(src: tuple[str, int], dst: tuple[str, int],
                    authority: str | None = None) -> bytes:
    """The binary v2 header: signature, PROXY command, TCP over IPv4/IPv6, addresses, TLVs."""
    s_ip, d_ip = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    if s_ip.version != d_ip.version:  # v4-mapped v6 etc.: say both as v6
        s_ip = ipaddress.IPv6Address(f"::ffff:{s_ip}") if s_ip.version == 4 else s_ip
        d_ip = ipaddress.IPv6Address(f"::ffff:{d_ip}") if d_ip.version == 4 else d_ip
    fam = 0x11 if s_ip.version == 4 else 0x21  # AF_INET|STREAM, AF_INET6|STREAM
    body = s_ip.packed + d_ip.packed + struct.pack("!HH", src[1], dst[1])
    if authority:
        value = authority.encode("ascii", "replace")
        body += struct.pack("!BH", PP2_TYPE_AUTHORITY, len(value)) + value
    return V2_SIGNATURE + bytes([0x21, fam]) + struct.pack("!H", len(body)) + body


def pool_proxy_protocols(config) -> dict[str, str | None]:
    """{backend name: PROXY header version} of a pool config; {} when none sends one."""
    if config.proxy_protocol is None and not any(b.proxy_protocol for b in config.backends):
        return {}
    return {bc.name: config.backend_proxy_protocol(bc) for bc in config.backends}


# Per pool config, by identity (configs are frozen: a reload makes new ones), so a
# connection does not scan the pool's backends: {id: (config, versions)}.
_PP_VERSIONS: dict[int, tuple] = {}


def proxy_protocols_of(config) -> dict[str, str | None]:
    entry = _PP_VERSIONS.get(id(config))
    if entry is None or entry[0] is not config:
        if len(_PP_VERSIONS) > 256:  # old configs after many reloads
            _PP_VERSIONS.clear()
        entry = _PP_VERSIONS[id(config)] = (config, pool_proxy_protocols(config))
    return entry[1]


# ====================================================================== backend side

class L4Upstream(asyncio.Protocol):
    __slots__ = ("conn", "transport")

    def __init__(self, conn: "L4Connection"):
        self.conn = conn
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.conn.upstream_data(data)

    def eof_received(self) -> bool:
        self.conn.upstream_eof()
        return True  # keep our sending half open: the other direction may still flow

    def connection_lost(self, exc) -> None:
        conn = self.conn
        # Nothing calls a protocol after its connection_lost: letting go of the
        # connection breaks the cycle with it (conn.upstream), so both are freed by
        # their reference counts when the connection ends (see L4Connection.end).
        self.conn = None
        if conn.upstream is self:  # not an attempt abandoned by a connect timeout
            conn.upstream_lost(exc)

    def pause_writing(self) -> None:
        self.conn.pause(PAUSE_UPSTREAM)

    def resume_writing(self) -> None:
        self.conn.resume(PAUSE_UPSTREAM)


# ====================================================================== client side

class L4Connection(asyncio.Protocol):
    """One client connection of a tcp listener."""

    # Defaults shared by every connection until one sets its own (an assignment
    # makes an instance attribute): a new connection pays only for what it uses.
    # buf and retries start as the empty tuple and become lists when first used.
    transport = None
    upstream: L4Upstream | None = None
    kind = "tcp"
    phase = HELLO
    client_addr: tuple[str, int] | None = None  # the peer; None when the OS gave none
    opened = 0.0  # loop time of accept
    pool = None
    pool_name = None
    ctx = None
    choice = None
    backend = None
    acquired = False
    failed: set | None = None
    retries: tuple | list[dict] = ()  # a list from the first retry on
    buf: tuple | list[bytes] = ()  # shared empty default; a list once bytes wait
    buf_bytes = 0
    hello = None
    tls: dict | None = None
    proxy_protocol: str | None = None
    bytes_in = 0
    bytes_out = 0
    connect_ms: float | None = None
    connect_started = 0.0
    client_eof = False
    upstream_eof_seen = False
    first_eof: str | None = None
    paused = 0
    client_write_paused = False
    done = False
    counted = False
    attempt: "ConnectAttempt | None" = None  # the connect in progress

    def __init__(self, server, bound):
        self.server = server
        self.bound = bound
        config = self.config = bound.config
        loop = self.loop = server.loop
        self.connection_id = ""
        self.idle = config.timeouts.tunnel_idle
        self.deadline = Deadline(loop, self._on_timer)

    # ------------------------------------------------------------ accept

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.opened = self.server.clock()
        self.connection_id = self.server.request_ids.next()
        peer = transport.get_extra_info("peername")
        if peer:
            self.client_addr = (peer[0], peer[1])
        self.server.connections.add(self)
        self.bound.active += 1
        self.counted = True
        limit = self.config.limits.max_connections
        if self.bound.active > limit:
            self.end("proxy", f"listener {self.bound.name} is at limits.max_connections "
                              f"({limit})", abort=True)
            return
        tls = self.config.tls
        if tls is not None and tls.mode == "passthrough":
            self.kind = "tls-passthrough"
            self.phase = HELLO
            self.deadline.after(self.config.timeouts.tls_handshake)
            return
        self._route(self.config.pool, None)

    # ------------------------------------------------------------ client callbacks

    def data_received(self, data: bytes) -> None:
        phase = self.phase
        if phase == RELAY:
            self.bytes_in += len(data)
            self.deadline.when = self.loop.time() + self.idle
            try:
                self.upstream.transport.write(data)
            except RuntimeError:  # closed under us: its connection_lost is on its way
                pass
            return
        if phase == DONE:
            return
        if self.buf:
            self.buf.append(data)
        else:
            self.buf = [data]
        self.buf_bytes += len(data)
        if phase == HELLO:
            self._read_hello()
        elif self.buf_bytes > BUFFER_HIGH:
            self.pause(PAUSE_BUFFER)

    def eof_received(self) -> bool:
        if self.done:
            return False
        if self.client_eof:  # read again after a pause: the same EOF
            return True
        self.client_eof = True
        if self.first_eof is None:
            self.first_eof = "client"
        if self.phase == HELLO:
            self.end("client", "the client closed before a complete TLS ClientHello")
            return False
        if self.phase == RELAY:
            _shut_write(self.upstream.transport)
            if self.upstream_eof_seen:
                self.end(self.first_eof or "client", None)
                return False
        # CONNECTING: the EOF is passed on once the backend is connected.
        return True

    def connection_lost(self, exc) -> None:
        if self.done:
            return
        if exc is not None:
            self.end("client", f"the client reset the connection ({_why(exc)})", abort=True)
        else:
            self.end("client", None)

    def pause_writing(self) -> None:
        # The client reads slower than the backend sends: stop reading the backend.
        self.client_write_paused = True
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self.client_write_paused = False
        upstream = self.upstream
        if (upstream is not None and upstream.transport is not None and not self.done
                and not self.upstream_eof_seen):
            upstream.transport.resume_reading()

    # ------------------------------------------------------------ backend callbacks

    def upstream_data(self, data: bytes) -> None:
        if self.done:
            return
        self.bytes_out += len(data)
        self.deadline.when = self.loop.time() + self.idle
        try:
            self.transport.write(data)
        except RuntimeError:  # closed under us: its connection_lost is on its way
            pass

    def upstream_eof(self) -> None:
        if self.done or self.upstream_eof_seen:
            return
        self.upstream_eof_seen = True
        if self.first_eof is None:
            self.first_eof = "backend"
        _shut_write(self.transport)
        if self.client_eof:
            self.end(self.first_eof or "backend", None)

    def upstream_lost(self, exc) -> None:
        if self.done or self.phase != RELAY:
            return
        if exc is not None:
            self.end("backend", f"the backend reset the connection ({_why(exc)})", abort=True)
        else:
            self.end("backend", None)

    # ------------------------------------------------------------ flow control

    def pause(self, reason: int) -> None:
        if self.done:
            return
        if not self.paused:
            try:
                self.transport.pause_reading()
            except RuntimeError:
                return
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if not self.paused & reason:
            return
        self.paused &= ~reason
        if not self.paused and not self.done and not self.client_eof:
            try:
                self.transport.resume_reading()
            except RuntimeError:  # the transport closed meanwhile: nothing to resume
                pass

    # ------------------------------------------------------------ passthrough: the hello

    def _read_hello(self) -> None:
        data = b"".join(self.buf) if len(self.buf) > 1 else self.buf[0]
        self.buf = [data]
        try:
            hello = parse_client_hello(data)
        except NotTLS as exc:
            self.end("proxy", f"not a TLS ClientHello on a passthrough listener: {exc}")
            return
        if hello is None:
            if len(data) > MAX_HELLO:
                self.end("proxy", f"ClientHello larger than {MAX_HELLO} bytes")
            return
        self.hello = hello
        self.tls = {"mode": "passthrough", **hello.to_dict()}
        tls = self.config.tls
        pattern = match_name(hello.sni, tls.sni)
        if pattern is not None:
            self.tls["matched"] = "exact" if pattern == hello.sni else f"wildcard {pattern}"
            self._route(tls.sni[pattern], hello.sni)
            return
        if tls.unknown_sni == "refuse" or self.config.pool is None:
            what = f"server name {hello.sni!r}" if hello.sni else "a ClientHello without a server name"
            self.tls["matched"] = "refused"
            self.end("proxy", f"no pool for {what} in listeners.{self.bound.name}.tls.sni "
                              "(tls.unknown_sni: refuse)")
            return
        self.tls["matched"] = "default"
        self._route(self.config.pool, hello.sni)

    # ------------------------------------------------------------ pick

    def _route(self, pool_name: str | None, sni: str | None) -> None:
        self.phase = CONNECTING
        self.deadline.clear()
        pool = self.server.runtime.pools.get(pool_name) if pool_name else None
        if pool is None:
            self.end("proxy", f"listener {self.bound.name} sends to pool {pool_name!r}, "
                              "which does not exist")
            return
        self.pool = pool
        self.pool_name = pool_name
        addr = self.client_addr
        # (_choose sets `now`.)
        self.ctx = PickContext(addr[0] if addr else "0.0.0.0", 0.0, None, None, _NO_FIELDS,
                               _NO_FIELDS, sni, False, self.bound.config.zone)
        self._choose()

    def _choose(self) -> None:
        pool = self.pool
        ctx = self.ctx
        ctx.now = self.server.clock()
        full = pool.full_backends()
        exclude = full
        if self.failed:
            exclude = self.failed | full if full else self.failed
        choice = pool.choose(ctx, exclude) if exclude else pool.choose(ctx)
        if choice.backend is None and self.failed:
            choice = pool.choose(ctx, full) if full else pool.choose(ctx)
        self.choice = choice
        backend = choice.backend
        if backend is None:
            if full and any(b.is_eligible(ctx.now) for b in full):
                why = (f"every eligible backend of pool {pool.name} is at its connection "
                       "limit (max_connections): " + ", ".join(
                           f"{b.name} {b.outstanding}/{b.max_connections}"
                           for b in sorted(full, key=lambda b: b.name)))
            else:
                why = choice.reason or f"no eligible backend in pool {pool.name}"
            self.end("proxy", why)
            return
        self.backend = backend
        backend.request_started()
        backend.active_connections += 1
        pool.balancer.acquire(backend)
        self.acquired = True
        self.server.track(self, backend)
        # The connect timeout is this connection's Deadline (see _on_timer): one
        # Task per attempt, and no wait_for with a Task and a timer of its own;
        # and the Deadline waits on the loop's queue for this duration, not a timer.
        timeout = self.pool.config.timeouts.connect
        if timeout > 0:
            self.deadline.after_in(deadline_queue(self.loop, timeout))
        self.connect_started = self.server.clock()
        # Not a Task (see ConnectAttempt); stopping the server aborts the
        # connection, which cancels the attempt (end()).
        attempt = self.attempt = ConnectAttempt(self, backend)
        attempt.step()

    # ------------------------------------------------------------ connect

    def connected(self, attempt: "ConnectAttempt", transport, upstream: L4Upstream) -> None:
        if self.done or self.attempt is not attempt:  # given up meanwhile
            transport.abort()
            return
        self.attempt = None
        if transport.is_closing():  # the backend closed at once
            self._connect_failed(attempt.backend, "the backend closed the connection at once")
            return
        self._attach(upstream, (self.server.clock() - self.connect_started))

    def connect_failed(self, attempt: "ConnectAttempt", exc: Exception) -> None:
        if self.done or self.attempt is not attempt:
            return
        self.attempt = None
        if isinstance(exc, OSError):
            self._connect_failed(attempt.backend, _why(exc))
            return
        # A bug: this connection only.
        log.error("L4 connect failed unexpectedly", exc_info=exc)
        self.end("proxy", f"internal proxy error: {type(exc).__name__}: {exc}", abort=True)

    def _connect_timed_out(self) -> None:
        """timeouts.connect passed: give up this attempt (its cancellation closes
        its half-open socket) and retry elsewhere, as a refused connect."""
        attempt = self.attempt
        self.attempt = None
        if attempt is not None:
            attempt.cancel()
        self._connect_failed(self.backend, f"timed out after "
                                           f"{self.pool.config.timeouts.connect:g}s "
                                           "(timeouts.connect)")

    def _connect_failed(self, backend, why: str) -> None:
        self._release(failed=True)
        if self.failed is None:
            self.failed = set()
        self.failed.add(backend)
        error = f"cannot connect to {backend.name} ({backend.address}): {why}"
        if len(self.retries) < self.pool.config.retries:
            self.retries = [*self.retries, {"backend": backend.name, "error": error}]
            self._choose()
            return
        self.end("proxy", error)

    def _attach(self, upstream: L4Upstream, connect_s: float) -> None:
        self.upstream = upstream
        transport = upstream.transport
        # No TCP_NODELAY here: asyncio's and uvloop's TCP transports set it already.
        backend = self.backend
        self.connect_ms = round(connect_s * 1000, 3)
        backend.record_latency(connect_s * 1000.0, self.server.clock())
        version = self.proxy_protocol = self._proxy_protocol_version()
        if version is not None:
            transport.write(self._proxy_header(version))
        if self.buf:
            data = b"".join(self.buf)
            self.buf = ()
            self.buf_bytes = 0
            self.bytes_in += len(data)
            transport.write(data)
        if self.client_eof:
            _shut_write(transport)
        if self.client_write_paused:
            transport.pause_reading()
        self.phase = RELAY
        self.deadline.after(self.idle)
        self._publish_open()
        self.resume(PAUSE_BUFFER)

    def _proxy_protocol_version(self) -> str | None:
        config = self.pool.config
        versions = proxy_protocols_of(config)
        return versions.get(self.backend.name, config.proxy_protocol) if versions else None

    def _proxy_header(self, version: str) -> bytes:
        """The PROXY header naming the client and the address it connected to."""
        local = self.transport.get_extra_info("sockname")
        local_addr = (local[0], local[1]) if local else ("0.0.0.0", 0)
        client_addr = self.client_addr or ("0.0.0.0", 0)
        if version == "v1":
            return proxy_header_v1(client_addr, local_addr)
        sni = self.hello.sni if self.hello is not None else None
        return proxy_header_v2(client_addr, local_addr, sni)

    # ------------------------------------------------------------ timers, drain, stop

    def _on_timer(self) -> None:
        if self.done:
            return
        if self.phase == HELLO:
            self.end("proxy", f"no complete TLS ClientHello within "
                              f"{self.config.timeouts.tls_handshake:g}s "
                              "(timeouts.tls_handshake)")
        elif self.phase == RELAY:
            self.end("proxy", f"idle for {self.idle:g}s: no byte either way "
                              "(timeouts.tunnel_idle)")
        elif self.phase == CONNECTING and self.attempt is not None:
            self._connect_timed_out()

    def cut(self, reason: str = "drain deadline") -> None:
        """Close now (a drain reached its deadline); the event says why."""
        if not self.done:
            self.end("proxy", reason if reason.startswith("cut") else f"cut by {reason}")

    def shutdown(self) -> None:
        """Server stopping: an L4 connection may finish within the grace period."""

    def abort(self) -> None:
        if not self.done:
            self.end("proxy", "the proxy is stopping", abort=True)

    # ------------------------------------------------------------ the end

    def _release(self, failed: bool = False) -> None:
        if not self.acquired:
            return
        self.acquired = False
        backend = self.backend
        backend.outstanding -= 1
        backend.active_connections -= 1
        if failed:
            backend.failures += 1
        self.pool.balancer.release(backend)
        self.server.untrack(self, backend)

    def end(self, closed_by: str, error: str | None, abort: bool = False) -> None:
        """Release everything, publish the ConnectionEvent, close both sides (once)."""
        if self.done:
            return
        self.done = True
        was = self.phase
        self.phase = DONE
        self.deadline.close()  # no cycle left through its callback: freed on its last use
        attempt = self.attempt
        if attempt is not None:
            self.attempt = None
            attempt.cancel()
        self._release(failed=False)
        self.server.connections.discard(self)
        if self.counted:
            self.counted = False
            self.bound.active -= 1
        try:
            self.server.bus.publish(self._event(closed_by, error, was))
        except Exception:
            log.exception("publishing connection event %s failed", self.connection_id)
        for transport in (self.transport,
                          self.upstream.transport if self.upstream is not None else None):
            if transport is None or transport.is_closing():
                continue
            if abort:
                transport.abort()
                continue
            pending = transport.get_write_buffer_size()
            transport.close()  # after what is already written
            if pending:
                # A peer that never reads must not keep the socket forever.
                self.loop.call_later(LINGER, _abort, transport)

    # The events are lazy (proxy/events.py): what metrics, drains and sampled
    # subscriptions count is set now; the rest (client, candidates, inputs, TLS...)
    # is built only if something reads it, from the values passed here, which no
    # longer change (the Choice and its raw candidate snapshot are decision-time).

    def _event(self, closed_by: str, error: str | None, phase: str) -> ConnectionEvent:
        return lazy_connection(
            (_closed_fields, self.client_addr, self.kind, self.choice, self.retries, self.tls,
                             self.proxy_protocol),
            time.time(), self.connection_id, self.bound.name, self.pool_name,
            self.backend.name if self.backend is not None else None,
            self.bytes_in, self.bytes_out, round((self.server.clock() - self.opened) * 1000, 3),
            self.connect_ms, closed_by, error)

    def _publish_open(self) -> None:
        backend = self.backend
        try:
            self.server.bus.publish(lazy_connection_open(
                (_open_fields, self.client_addr, self.kind, self.choice, self.tls,
                               self.proxy_protocol, backend.zone),
                time.time(), self.connection_id, self.bound.name, self.pool_name, backend.name))
        except Exception:
            log.exception("publishing connection_open %s failed", self.connection_id)

    # ------------------------------------------------------------ views

    @property
    def client(self) -> str:
        return format_client(self.client_addr)

    def live(self, now: float | None = None) -> dict:
        """This connection for GET /connections (`now` on the server's clock)."""
        now = self.server.clock() if now is None else now
        when = self.deadline.when
        idle_s = None
        if self.phase == RELAY and when is not None:
            idle_s = round(max(0.0, self.loop.time() - (when - self.idle)), 3)
        return {
            "connection_id": self.connection_id, "kind": self.kind,
            "listener": self.bound.name, "client": self.client, "pool": self.pool_name,
            "backend": self.backend.name if self.backend is not None else None,
            "phase": self.phase, "age_s": round(now - self.opened, 3), "idle_s": idle_s,
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
            "sni": self.hello.sni if self.hello is not None else None,
            "half_closed": self.first_eof, "proxy_protocol": self.proxy_protocol,
        }

    def __repr__(self) -> str:
        return (f"<L4Connection {self.connection_id} {self.client} -> "
                f"{self.backend.name if self.backend else None} {self.phase}>")


class ConnectAttempt:
    """One connect to a backend: `loop.create_connection`, stepped by hand.

    What a Task does for a coroutine (send; wait on the future it yields; send
    again when that is done), for this one coroutine, without what a Task adds
    per connection: registration in the loop's set of tasks, a first step
    scheduled for the next loop iteration, a context copy. The connection hears
    the outcome: `connected` or `connect_failed`. `cancel()` is Task.cancel's
    way: the awaited future is cancelled, and the coroutine, resumed, closes
    its half-open socket and raises CancelledError, which ends the attempt.
    """

    __slots__ = ("conn", "backend", "coro", "waiting", "finished")

    def __init__(self, conn: L4Connection, backend):
        self.conn = conn
        self.backend = backend
        self.waiting: asyncio.Future | None = None
        self.finished = False
        self.coro = conn.loop.create_connection(self._protocol, backend.host, backend.port)

    def _protocol(self) -> L4Upstream:
        return L4Upstream(self.conn)

    def step(self, _done: asyncio.Future | None = None) -> None:
        if self.finished:  # closed by cancel() while a step was scheduled
            return
        self.waiting = None
        try:
            future = self.coro.send(None)
        except StopIteration as done:
            self.finished = True
            transport, upstream = done.value
            self.conn.connected(self, transport, upstream)
            return
        except asyncio.CancelledError:
            self.finished = True
            return
        except Exception as exc:  # OSError: refused, unreachable...; anything else: a bug
            self.finished = True
            self.conn.connect_failed(self, exc)
            return
        if future is None:  # a bare yield (asyncio.sleep(0)): again on the next iteration
            self.conn.loop.call_soon(self.step)
        else:
            self.waiting = future
            future.add_done_callback(self.step)

    def cancel(self) -> None:
        if self.finished:
            return
        future = self.waiting
        if future is not None:
            future.cancel()  # step() runs once more, and the coroutine ends
        else:
            self.finished = True
            self.coro.close()


def format_client(addr: tuple[str, int] | None) -> str:
    """`ip:port`, `[v6]:port`, or `?` when the OS gave no peer address."""
    if not addr:
        return "?"
    ip, port = addr
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _open_fields(client_addr, kind, choice, tls, proxy_protocol, backend_zone) -> dict:
    """The rich part of a connection_open event (built on its first read)."""
    return {"client": format_client(client_addr), "kind": kind, "algorithm": choice.algorithm,
            "candidates": choice.candidates, "inputs": choice.inputs, "sticky": choice.sticky,
            "tls": tls, "proxy_protocol": proxy_protocol, "backup": choice.backup,
            "zone": dict(choice.zone, backend_zone=backend_zone) if choice.zone else None}


def _closed_fields(client_addr, kind, choice, retries, tls, proxy_protocol) -> dict:
    """The rich part of a connection event (built on its first read)."""
    fields = {"client": format_client(client_addr), "kind": kind, "retries": list(retries),
              "tls": tls, "proxy_protocol": proxy_protocol}
    if choice is not None:
        fields.update(algorithm=choice.algorithm, candidates=choice.candidates,
                      inputs=choice.inputs, sticky=choice.sticky)
    return fields


def _shut_write(transport) -> None:
    """Pass a FIN on (after what is buffered): half-close."""
    try:
        if transport.can_write_eof():
            transport.write_eof()
    except (RuntimeError, OSError):  # already closed: its connection_lost is on its way
        pass


def _abort(transport) -> None:
    try:
        transport.abort()  # a no-op once the close has completed
    except Exception:  # noqa: BLE001 - already gone
        log.debug("abort after linger failed", exc_info=True)


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
