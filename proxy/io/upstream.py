"""Connections to backends: one protocol object per TCP connection, pooled for reuse.

Theory of operation. An `UpstreamConnection` carries one request/response at a
time for the `Exchange` attached to it (proxy.io.l7). Its ResponseReader calls
the exchange directly (`on_response_head`, `on_response_body`,
`on_response_complete`); after each read it calls `exchange.flush()` so a
response head and the body bytes that came with it reach the client in one
write. Nothing is pipelined towards backends.

When a response ends cleanly on a keep-alive connection, the exchange gives
the connection back to the `UpstreamPool`, keyed by (host, port). Idle
connections are kept LIFO (the most recently used is the least likely to have
been closed by the backend) and closed after the pool's `backend_idle`
timeout: on take, and by a sweep every second. A backend that closes an idle
connection is noticed by `connection_lost` and forgotten at once; the race
where it closes just as a request is written is the one the exchange retries.

Back-pressure: when the kernel buffer towards the backend is full
(`pause_writing`) the exchange stops reading the client; when the client is
slow, the exchange pauses reading this connection (`transport.pause_reading`).

TLS to backends (re-encryption, proxy/tls.py): `connect(key, timeout, tls)`
connects in two steps, TCP then `start_tls` with the pool's `ClientTLS`, so a
refused connection (OSError) and a failed handshake (`TLSHandshakeError`)
stay apart. A connection remembers the ClientTLS it was made with; `take`
only reuses one made with the same.
"""
from __future__ import annotations

import asyncio
import logging
import socket

from proxy.http1.parse import DISCARD, ResponseError, ResponseReader
from proxy.io import Deadline
from proxy.io.writes import BatchedWrites, write_batch

log = logging.getLogger("proxy.upstream")

Key = tuple[str, int]


class TLSHandshakeError(Exception):
    """The TCP connection was made but the TLS handshake with the backend failed."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class UpstreamConnection(BatchedWrites, asyncio.Protocol):
    def __init__(self, pool: "UpstreamPool", key: Key):
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.out: list | None = None
        self.batch = write_batch(pool.loop)
        self.reader = ResponseReader()
        self.exchange = None  # the Exchange using this connection, None while idle
        self.tunnel = None  # set when upgraded: an object with upstream_data/upstream_closed
        self.responses = 0  # responses completed here (> 0 means a reused connection)
        self.closed = False
        self.write_closed = False  # = closed (BatchedWrites reads this name)
        self.idle_since = 0.0
        self.idle_limit = 30.0
        self.write_paused = False
        self.deadline = Deadline(pool.loop, self._on_deadline)
        self.tls = None  # the proxy.tls.ClientTLS it speaks TLS with, None for plain
        self.tls_info: dict | None = None  # for request events: server_name, verified...

    # ------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.upstream_data(data)
            return
        exchange = self.exchange
        if exchange is None:
            # Bytes on an idle connection: the backend answered something we
            # did not ask. Its framing cannot be trusted any more.
            log.debug("unsolicited %d bytes from %s:%s; closing", len(data), *self.key)
            self.close()
            return
        if self.deadline.when is not None:
            # Silence limit while a response streams (see timeouts.response_header).
            self.deadline.when = self.pool.loop.time() + exchange.read_timeout
        try:
            tail = self.reader.feed(data)
        except ResponseError as exc:
            exchange.on_upstream_error(str(exc))
            return
        except Exception as exc:  # a bug while relaying: one request lost, not the proxy
            exchange._internal_error(exc)
            self.close()
            return
        if tail is not None and self.tunnel is not None and tail:
            self.tunnel.upstream_data(tail)
        exchange.flush()

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self.write_closed = True
        self.deadline.close()  # no cycle through its callback (see Deadline.close)
        self.pool.forget(self)
        try:
            tunnel = self.tunnel
            if tunnel is not None:
                self.tunnel = None
                tunnel.upstream_closed(exc)
                return
            exchange = self.exchange
            if exchange is None:
                return
            if exc is None and self.reader.eof():
                # A body that ends with the connection ended just now.
                exchange.on_response_complete()
                return
            exchange.on_upstream_lost(exc)
        finally:
            self.reader.close()

    def pause_writing(self) -> None:
        self.write_paused = True
        target = self.tunnel or self.exchange
        if target is not None:
            target.upstream_pause_writing()

    def resume_writing(self) -> None:
        self.write_paused = False
        target = self.tunnel or self.exchange
        if target is not None:
            target.upstream_resume_writing()

    # ------------------------------------------------------------ use

    @property
    def reused(self) -> bool:
        return self.responses > 0

    def _on_deadline(self) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.on_upstream_timeout()

    def close(self) -> None:
        """Close now (buffered writes are dropped: only used when the exchange is over)."""
        if not self.closed:
            self.closed = self.write_closed = True
            self.deadline.cancel()
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.abort()

    def __repr__(self) -> str:
        return f"<UpstreamConnection {self.key[0]}:{self.key[1]} responses={self.responses}>"


class UpstreamPool:
    """Idle keep-alive connections per backend address, reused LIFO."""

    SWEEP_EVERY = 1.0

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None,
                 max_idle_per_backend: int = 512):
        self.loop = loop or asyncio.get_event_loop()
        self.max_idle = max_idle_per_backend
        self.idle: dict[Key, list[UpstreamConnection]] = {}
        self.opened = 0  # connections made (for tests and the state view)
        self.reused = 0
        self._sweeper: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ take / put

    def take(self, key: Key, tls=None) -> UpstreamConnection | None:
        stack = self.idle.get(key)
        if not stack:
            return None
        now = self.loop.time()
        while stack:
            conn = stack.pop()
            if conn.closed:
                continue
            if conn.tls is not tls:  # made for other TLS settings (a config change)
                conn.close()
                continue
            if now - conn.idle_since > conn.idle_limit:
                conn.close()
                continue
            self.reused += 1
            return conn
        return None

    def put(self, conn: UpstreamConnection, idle_limit: float) -> None:
        if conn.closed:
            return
        if idle_limit <= 0:
            conn.close()
            return
        conn.exchange = None
        conn.reader.sink = DISCARD
        conn.idle_since = self.loop.time()
        conn.idle_limit = idle_limit
        stack = self.idle.get(conn.key)
        if stack is None:  # (not setdefault: that makes a list on every call)
            stack = self.idle[conn.key] = []
        if len(stack) >= self.max_idle:
            stack.pop(0).close()
        stack.append(conn)
        if conn.transport is not None:
            # Reading must be on while idle so a close by the backend is
            # noticed (a slow client may have paused it).
            conn.transport.resume_reading()
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self.SWEEP_EVERY, self._sweep)

    def forget(self, conn: UpstreamConnection) -> None:
        stack = self.idle.get(conn.key)
        if stack and conn in stack:
            stack.remove(conn)

    async def connect(self, key: Key, timeout: float, tls=None) -> UpstreamConnection:
        """A new connection, or OSError / TimeoutError (TCP), or TLSHandshakeError."""
        host, port = key
        coro = self.loop.create_connection(lambda: UpstreamConnection(self, key), host, port)
        if timeout > 0:
            _transport, conn = await asyncio.wait_for(coro, timeout)
        else:
            _transport, conn = await coro
        sock = _transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # not a TCP socket (or already closed): Nagle stays as it is
                pass
        if tls is not None:
            await self._start_tls(conn, _transport, tls, timeout)
        self.opened += 1
        return conn

    async def _start_tls(self, conn: UpstreamConnection, transport, tls, timeout: float) -> None:
        from proxy.tls import ssl_reason

        try:
            tls_transport = await self.loop.start_tls(
                transport, conn, tls.context, server_hostname=tls.server_name,
                ssl_handshake_timeout=timeout if timeout > 0 else None)
        except asyncio.CancelledError:
            transport.abort()
            raise
        except (OSError, TimeoutError, ConnectionError) as exc:  # ssl.SSLError is an OSError
            transport.abort()
            raise TLSHandshakeError(ssl_reason(exc)) from exc
        conn.transport = tls_transport
        conn.tls = tls
        conn.tls_info = tls.info(tls_transport.get_extra_info("ssl_object"))

    # ------------------------------------------------------------ closing

    def close_idle(self, key: Key) -> int:
        stack = self.idle.pop(key, [])
        for conn in stack:
            conn.close()
        return len(stack)

    def close_all(self) -> None:
        for key in list(self.idle):
            self.close_idle(key)
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def idle_count(self, key: Key | None = None) -> int:
        if key is not None:
            return sum(1 for c in self.idle.get(key, []) if not c.closed)
        return sum(len(s) for s in self.idle.values())

    def _sweep(self) -> None:
        self._sweeper = None
        now = self.loop.time()
        any_left = False
        for key, stack in list(self.idle.items()):
            keep = []
            for conn in list(stack):
                if conn.closed:
                    continue
                if now - conn.idle_since > conn.idle_limit:
                    conn.close()
                else:
                    keep.append(conn)
            if keep:
                self.idle[key] = keep
                any_left = True
            else:
                del self.idle[key]
        if any_left:
            self._sweeper = self.loop.call_later(self.SWEEP_EVERY, self._sweep)
