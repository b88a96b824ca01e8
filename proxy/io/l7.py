"""The HTTP/1.1 reverse proxy: client connections and the exchanges they carry.

Theory of operation
-------------------
One `L7Connection` (an asyncio Protocol, no streams: callbacks are the fast
path) per client connection. Its RequestReader (proxy.http1.parse) calls back
with each request head, body piece and end. Every request becomes an
`Exchange`, which walks through small named steps, like Go's
httputil.ReverseProxy:

    route -> pick -> connect (pooled or new) -> send head + body
          -> relay response head -> relay body -> finish (one RequestEvent)

Nothing waits in a coroutine except a new backend connection: with a pooled
connection a request goes from client bytes to backend write inside one
callback, and the response is relayed from the backend connection's own
callbacks (proxy.io.upstream). Bodies stream both ways and are never held
whole: request pieces go to the backend as they come (buffered only until a
backend is connected, and then at most BUFFER_HIGH bytes before reading
pauses), response pieces go to the client as they come; when either side's
kernel buffer is full, the other side's reading pauses (back-pressure).

A request with a body waits in step 0 (`Exchange.go`) until its body is in,
or PREBUFFER bytes of it: a client that trickles a small body holds no backend
connection and no max_connections_per_backend slot meanwhile (nginx's request
buffering; the proxy answers `Expect: 100-continue` itself then). Head and
buffered body then go to the backend in one write.

Failures become the proxy's error responses (proxy/errors.py) and a
termination code. An attempt is retried on another backend only when that is
safe (see `Exchange._retryable_loss` and docs/errors.md).

Keep-alive: requests on one connection are answered in order; a pipelined
request waits (and reading pauses) until the one before it is done. A request
the reader refuses is answered in its turn too: the ones before it get their
responses first, then it gets its error and the connection closes (its
`refusal`, or a RefusedExchange queued behind them). Client timeouts use one
lazily moved Deadline per connection, whose meaning depends on the phase:
HEAD (client_header, from the head's first byte or from accept), BODY (the
earliest of: request_body since the last body byte, request_body_total since
the head, and the min_body_rate schedule; time the proxy paused reading is
not counted), WAIT (none: the backend's timeouts apply) and IDLE (client_idle
between requests).

A listener flipped to L4 at run time (server._on_apply) shuts its HTTP
connections down: idle ones close at once, busy ones after their response
(`Connection: close`); a request read after the flip is not answered (the
connection closes), never given a 404 for routes that are gone.

An upgrade (WebSocket) that the backend accepts with 101 turns both
connections into a byte `Tunnel` until either side closes or it idles for
tunnel_idle. A tunnel is announced by a ConnectionOpen event (kind
websocket, connection_id = the request id), listed by GET /connections, and
stays in `server.inflight(backend)` until its request event: a drain that
reaches its deadline cuts it.

TLS (proxy/tls.py): on a listener that terminates TLS, `conn.tls` describes
the connection (server name, version, certificate served, client
certificate) and goes into every request event; with mTLS the backend gets
X-Client-Verify and X-Client-Cert-Subject (a client's own copies are
dropped). Towards a pool with `tls`, new connections are TLS
(`UpstreamPool.connect(..., tls)`); a failed handshake is 502 `backend-tls`,
and a connection that is not verified publishes a Warning event.
"""
from __future__ import annotations

import asyncio
import collections
import logging
from time import time as _time

from proxy import trust
from proxy.balancers.base import PickContext
from proxy.errors import ERRORS
from proxy.events import ConnectionOpen, RequestEvent, Warning as WarningEvent, lazy_request
from proxy.http1 import chunked as framing
from proxy.http1.chunked import LAST_CHUNK, chunk
from proxy.http1.headers import (
    CONNECTION_OPTIONS,
    LazyCookies,
    LazyHeaders,
    forwarded_element,
    host_name,
    sane_request_id,
)
from proxy.http1.parse import DISCARD, RequestError, RequestHead, RequestReader, ResponseHead
from proxy.http1.responses import CONTINUE_100, error_response, render, status_line
from proxy.io import Deadline
from proxy.io.writes import BatchedWrites, write_batch
from proxy.io.upstream import TLSHandshakeError
from proxy.model import Intent
from proxy.routing import FORWARD, REDIRECT, RESPOND, RouteRequest


log = logging.getLogger("proxy.l7")

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
REPLAY_LIMIT = 64 * 1024  # request body bytes kept to resend on a retry
PREBUFFER = 64 * 1024  # a body up to this size is read whole before picking a backend
BUFFER_HIGH = 256 * 1024  # request body buffered before a backend is attached
LINGER = 2.0  # seconds to read and discard after refusing a request mid-body
EMPTY: dict = {}
# An enum member read through its class costs ~30x a global (EnumType lookup).
_ACTIVE = Intent.ACTIVE

# Why reading from the client is paused (bits; reading resumes when all clear).
PAUSE_PIPELINE = 1  # a pipelined request waits for the one before it
PAUSE_BUFFER = 2  # body buffered while no backend is attached yet
PAUSE_UPSTREAM = 4  # the backend's socket buffer is full
PAUSE_UPGRADE = 8  # after an upgrade request: bytes are the tunnel's, not HTTP

# Client-side phases (what the connection's Deadline means).
HEAD, BODY, WAIT, IDLE = "head", "body", "wait", "idle"

# What happens to each request header on its way to the backend
# (lower-case name -> action); every other header passes unchanged.
_DROP, _XFF, _FWD, _UPGRADE, _EXPECT = 1, 2, 3, 4, 5
_UPSTREAM_SPECIAL = {
    b"connection": _DROP, b"keep-alive": _DROP, b"proxy-connection": _DROP, b"te": _DROP,
    b"trailer": _DROP, b"transfer-encoding": _DROP, b"content-length": _DROP,
    b"host": _DROP, b"x-forwarded-proto": _DROP, b"x-forwarded-host": _DROP,
    b"x-request-id": _DROP, b"upgrade": _UPGRADE, b"x-forwarded-for": _XFF,
    b"forwarded": _FWD, b"expect": _EXPECT,
    # Only the proxy may say what the client's certificate was (mTLS).
    b"x-client-verify": _DROP, b"x-client-cert-subject": _DROP,
}
# Response headers the proxy drops or rewrites (framing and its own id).
_RESPONSE_DROP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"content-length", b"upgrade", b"x-request-id",
})
_METHOD_BYTES: dict[str, bytes] = {}
# Header names as sent (any case) -> what to do with them, worked out once per
# spelling: a lower() and a few lookups per header per request add up.
_PASS, _PROXY_NAME = 0, 6
_REQUEST_ACTIONS: dict[bytes, int] = {}
_RESPONSE_KEEP: dict[bytes, bool] = {}
_NAME_CACHE_MAX = 4096  # bounded: random names cannot grow it


def _request_action(name: bytes) -> int:
    lname = name.lower()
    action = _UPSTREAM_SPECIAL.get(lname)
    if action is None:
        action = _PROXY_NAME if lname.startswith(b"proxy-") else _PASS
    if len(_REQUEST_ACTIONS) >= _NAME_CACHE_MAX:
        _REQUEST_ACTIONS.clear()
    _REQUEST_ACTIONS[name] = action
    return action


def _response_keeps(name: bytes) -> bool:
    lname = name.lower()
    keep = not (lname in _RESPONSE_DROP or lname.startswith(b"proxy-"))
    if len(_RESPONSE_KEEP) >= _NAME_CACHE_MAX:
        _RESPONSE_KEEP.clear()
    _RESPONSE_KEEP[name] = keep
    return keep


def _method_bytes(method: str) -> bytes:
    b = _METHOD_BYTES.get(method)
    if b is None:
        b = _METHOD_BYTES[method] = method.encode("ascii")
    return b


# ====================================================================== exchange

# The retries of every exchange that has none, and of its event: one list kept by
# the request store for all of them, not one each. Never appended to (a retry
# makes the exchange a new list); an event is frozen, its readers only read.
_NO_RETRIES: list = []


class Exchange:
    """One request and its response, from the client's head to the event."""

    __slots__ = (
        "conn", "server", "head", "t0", "request_id", "route_name", "pool_name", "pool",
        "choice", "backend", "acquired", "attempt_started", "upstream", "reused", "status",
        "bytes_in", "bytes_out", "request_done", "request_sent", "head_sent", "finished",
        "response_complete", "resp_keep_alive", "body_buf", "body_buf_bytes", "replay",
        "replay_bytes", "up_chunked", "down_chunked", "out", "retries", "failed",
        "t_route", "t_pick", "t_connect", "t_first", "keep_alive", "split", "ctx",
        "read_timeout", "sticky_learned", "tunnel", "headers_view", "cookies_view",
        "upstream_tls", "turn", "started", "refusal", "continued", "queue_info",
        "queued_at", "queue_timer", "budget", "counted", "client_view", "grpc",
    )

    def __init__(self, conn: "L7Connection", head: RequestHead, t0: float):
        self.conn = conn
        self.server = conn.server
        self.head = head
        self.t0 = t0
        rid = head.request_id
        if rid is not None and sane_request_id(rid):
            self.request_id = rid.decode("ascii")
        else:
            self.request_id = conn.server.request_ids.next()
        self.route_name = None
        self.pool_name = None
        self.pool = None
        self.choice = None
        self.backend = None
        self.acquired = False
        self.attempt_started = 0.0
        self.upstream = None
        self.reused = False
        self.status = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.request_done = not head.has_body
        self.request_sent = False
        self.head_sent = False
        self.finished = False
        self.response_complete = False
        self.resp_keep_alive = False
        self.body_buf: list[bytes] = []
        self.body_buf_bytes = 0
        self.replay: list[bytes] | None = []
        self.replay_bytes = 0
        self.up_chunked = head.chunked
        self.down_chunked = False
        self.out: list[bytes] = []
        self.retries: list[dict] = _NO_RETRIES
        self.failed: set | None = None
        self.t_route = self.t_pick = self.t_connect = self.t_first = 0.0
        self.keep_alive = head.keep_alive
        self.split = None
        self.ctx = None
        self.read_timeout = 30.0
        self.sticky_learned = None
        self.tunnel = None
        self.headers_view = None
        self.cookies_view = None
        self.upstream_tls = None
        self.turn = False  # the connection says it is this request's turn
        self.started = False  # routed (and on to a backend)
        self.refusal: RequestError | None = None  # answer this error when its turn comes
        self.continued = False  # the proxy sent 100 Continue itself
        # The pool's wait queue (proxy/queueing.py): {position, outcome, waited_ms}
        # for the event once queued; the timer while waiting.
        self.queue_info: dict | None = None
        self.queued_at = 0.0
        self.queue_timer = None
        # The pool's retry budget (proxy/retrybudget.py): the last check, and what
        # this request adds to its counters (1 active, 2 retrying).
        self.budget: dict | None = None
        self.counted = 0
        # The client address believed for this request and why (proxy/trust.py);
        # None when it is simply the connection's peer and nothing was dropped.
        self.client_view: dict | None = None
        # {status, message} from a gRPC backend's trailers (proxy/http2/upstream.py).
        self.grpc: dict | None = None

    # ------------------------------------------------------------ step 0: wait for the body

    def go(self) -> None:
        """Its turn on the connection: answer a refusal, or start once the body is in.

        A body of up to PREBUFFER bytes is read whole before a backend is picked
        (like nginx's request buffering): a client that trickles its body then
        holds no backend connection and no max_connections_per_backend slot.
        Larger bodies stream from PREBUFFER bytes on."""
        self.turn = True
        if self.refusal is not None:
            err, self.refusal = self.refusal, None
            self.keep_alive = False
            self._fail(err.code, err.message)
            return
        if self.request_done or self.body_buf_bytes >= PREBUFFER:
            self.start()
            return
        head = self.head
        if head.expect_continue and head.http11 and not self.body_buf_bytes:
            # The client waits for 100 before sending the body the proxy waits for.
            self.continued = True
            self.conn.write(CONTINUE_100)

    # ------------------------------------------------------------ step 1: route

    def start(self) -> None:
        self.started = True
        try:
            self._route()
        except Exception as exc:  # a bug must cost one request, not the proxy
            self._internal_error(exc)

    def _route(self) -> None:
        head = self.head
        conn = self.conn
        router = self.server.routers.get(conn.bound.name)
        if router is None:
            # The listener stopped serving HTTP (flipped to L4, or removed) while
            # this connection was open: a request it had already accepted is
            # finished under the routes it was accepted with (a drain).
            router = conn.router
        else:
            conn.router = router
        headers = self.headers_view = LazyHeaders(head.headers)
        cookies = self.cookies_view = LazyCookies(head.cookies) if head.cookies else EMPTY
        if router is None:
            self.t_route = self.server.clock()
            self._fail("no-route", f"listener {self.conn.bound.name} has no routes any more")
            return
        decision = router.forward_all  # one catch-all forward: nothing to look at
        if decision is None:
            req = RouteRequest(host_name(head.host), head.path, head.method, headers,
                               head.query, cookies, target=head.target_str)
            decision = router.match(req)
        self.t_route = self.server.clock()
        self.route_name = decision.route
        kind = decision.kind
        if kind == FORWARD:
            self.split = decision.split
            self._pick(decision.pool)
        elif kind == RESPOND:
            self._respond_fixed(decision.respond)
        elif kind == REDIRECT:
            self._redirect(decision.status, decision.location)
        else:
            self._fail("no-route", decision.reason, listener=self.conn.bound.name,
                       host=head.host, path=head.path)

    # ------------------------------------------------------------ step 2: pick

    def _pick(self, pool_name: str) -> None:
        pool = self.server.runtime.pools.get(pool_name)
        if pool is None:
            raise RuntimeError(f"route {self.route_name} names pool {pool_name}, "
                               "which the runtime does not have")
        self.pool = pool
        self.pool_name = pool_name
        pool.retry_budget.active_requests += 1
        self.counted = 1
        self.read_timeout = pool.config.timeouts.response_header
        head = self.head
        client_ip = self.conn.client_ip
        forwarded = self.conn.bound.config.forwarded
        if forwarded.trusted_hops or forwarded.trusted_networks:
            client_ip = self._believe(forwarded)
        self.ctx = PickContext(
            client_ip=client_ip, now=self.server.clock(), method=head.method,
            path=head.target_str, headers=self.headers_view,
            cookies=self.cookies_view, tls=self.conn.tls is not None,
            zone=self.conn.bound.config.zone)
        self._choose()

    def _believe(self, forwarded) -> str:
        """The client address from a trusted proxy's X-Forwarded-For / Forwarded."""
        peer = self.conn.client_ip
        nets = trust.networks(tuple(forwarded.trusted_networks))
        if not trust.peer_trusted(peer, nets, forwarded.trusted_hops):
            return peer  # its headers are dropped in _pass_forwarded
        xff, fwd = [], []
        for name, value in self.head.headers:
            lname = name.lower()
            if lname == b"x-forwarded-for":
                xff.append(value.decode("latin-1"))
            elif lname == b"forwarded":
                fwd.append(value.decode("latin-1"))
        self.client_view = trust.believe(peer, xff, fwd, nets, forwarded.trusted_hops)
        return self.client_view["ip"]

    def _pass_forwarded(self, xff: bytes | None, fwd: bytes | None):
        """The client's X-Forwarded-For / Forwarded, passed on only from a trusted peer
        (listeners.NAME.forwarded); otherwise dropped, and the event says so."""
        if xff is None and fwd is None:
            return None, None
        view = self.client_view
        if view is not None and view["trusted_peer"]:
            return xff, fwd
        if view is None:
            forwarded = self.conn.bound.config.forwarded
            if trust.peer_trusted(self.conn.client_ip,
                                  trust.networks(tuple(forwarded.trusted_networks)),
                                  forwarded.trusted_hops):
                return xff, fwd  # trusted, but the request was not picked through _pick
            self.client_view = trust.believe(
                self.conn.client_ip, [xff.decode("latin-1")] if xff else [],
                [fwd.decode("latin-1")] if fwd else [], (), 0)
        return None, None

    def _choose(self, front: bool = False) -> None:
        pool = self.pool
        ctx = self.ctx
        full = pool.full_backends() if pool.limited else None
        exclude = full
        if self.failed:
            exclude = self.failed | full if full else self.failed
        choice = pool.choose(ctx, exclude) if exclude else pool.choose(ctx)
        if choice.backend is None and self.failed:
            # No other backend: the same one again is better than none.
            choice = pool.choose(ctx, full) if full else pool.choose(ctx)
        now = self.server.clock()
        self.t_pick = now
        self.choice = choice
        backend = choice.backend
        if backend is None:
            if full and any(b.is_eligible(ctx.now) for b in full):
                self._at_limit(full, front)
            else:
                self._refuse_waiter()
                self._fail("no-backend", choice.reason or f"no eligible backend in pool {pool.name}")
            return
        info = self.queue_info
        if info is not None and info["outcome"] == "waiting":
            info["outcome"] = "served"
            info["waited_ms"] = int((now - self.queued_at) * 1e6 + 0.5) / 1000
            pool.queue.served += 1
            if self.queue_timer is not None:
                self.queue_timer.cancel()
                self.queue_timer = None
        self.backend = backend
        backend.request_started()
        balancer = pool.balancer
        if balancer.counts:
            balancer.acquire(backend)
        self.acquired = True
        self.attempt_started = now
        self.server.track(self, backend)
        self._connect()

    # ------------------------------------------------------------ step 2b: queue

    def _at_limit(self, full: set, front: bool) -> None:
        """Every eligible backend is at its limit: wait in the pool's queue, or 503."""
        pool = self.pool
        limits = pool.limits_text(full)
        settings = pool.config.queue
        if settings is None:
            self._refuse_waiter()  # its pool's queue was removed while it waited
            self._fail("backend-limit", (
                f"every eligible backend of pool {pool.name} is at its connection limit "
                f"(in flight/max_connections: {limits}) and the pool has no queue"))
            return
        queue = pool.queue
        position = queue.admit(self, settings.max_length, front)
        if position is None:
            self.queue_info = {"position": None, "outcome": "full", "waited_ms": 0.0,
                               "max_length": settings.max_length}
            self._fail("queue-full", (
                f"every eligible backend of pool {pool.name} is at its connection limit "
                f"({limits}) and {settings.max_length} requests already wait "
                "(queue.max_length)"))
            return
        if self.queue_info is None:
            self.queued_at = self.server.clock()
            self.queue_info = {"position": position, "outcome": "waiting", "waited_ms": 0.0,
                               "max_length": settings.max_length}
            self.queue_timer = self.server.loop.call_later(settings.timeout,
                                                           self._queue_timeout)

    def unqueue(self) -> None:
        """A slot was freed, or the pool changed, and this request is at the head of
        the queue: pick again, in the pool as it is now (a config change since it
        queued built a new one; a pool removed leaves it nothing to wait for)."""
        if self.finished:
            return
        pool = self.server.runtime.pools.get(self.pool_name)
        if pool is None:
            self._refuse_waiter()
            self._fail("no-backend", f"pool {self.pool_name} was removed from the config "
                       "while this request waited in its queue")
            return
        self.pool = pool
        self.ctx.now = self.server.clock()
        try:
            self._choose(front=True)
        except Exception as exc:
            self._internal_error(exc)

    def _refuse_waiter(self) -> None:
        """A waiting request about to be refused: its queue record says so."""
        info = self.queue_info
        if info is None or info["outcome"] != "waiting":
            return
        info["outcome"] = "refused"
        info["waited_ms"] = int((self.server.clock() - self.queued_at) * 1e6 + 0.5) / 1000
        self.pool.queue.refused += 1
        if self.queue_timer is not None:
            self.queue_timer.cancel()
            self.queue_timer = None

    def _queue_timeout(self) -> None:
        self.queue_timer = None
        if self.finished:
            return
        pool = self.pool
        pool.queue.remove(self)
        pool.queue.timeouts += 1
        timeout = pool.config.queue.timeout if pool.config.queue else 0.0
        info = self.queue_info
        info["outcome"] = "timeout"
        info["waited_ms"] = int((self.server.clock() - self.queued_at) * 1e6 + 0.5) / 1000
        self._fail("queue-timeout", (
            f"waited {timeout:g}s in the queue of pool {pool.name} (queue.timeout) and no "
            "backend slot came free: " + pool.limits_text()))

    def _leave_queue(self) -> None:
        """Finished while waiting (the client left, a drain cut it): out of the queue."""
        timer = self.queue_timer
        if timer is None:
            return
        self.queue_timer = None
        timer.cancel()
        if self.pool.queue.remove(self):
            self.pool.queue.left += 1
        info = self.queue_info
        if info is not None and info["outcome"] == "waiting":
            info["outcome"] = "left"
            info["waited_ms"] = int((self.server.clock() - self.queued_at) * 1e6 + 0.5) / 1000

    # ------------------------------------------------------------ step 3: connect

    def _connect(self) -> None:
        if self.pool.config.protocol == "h2":
            h2_class = self.conn.h2_exchange_class
            if h2_class is not None and type(self) is not h2_class:
                # Becomes the exchange that speaks HTTP/2 to the backend now, not
                # from its start: until here they behave alike, and the HTTP/1.1
                # exchange spares every request to an HTTP/1.1 pool four calls.
                self.__class__ = h2_class
                self._connect()
                return
        backend = self.backend
        key = (backend.host, backend.port)
        upstream_tls = self.server.upstream_tls
        tls = upstream_tls.get((self.pool_name, backend.name)) if upstream_tls else None
        conn = self.server.upstreams.take(key, tls)
        if conn is not None:
            self._attach(conn, reused=True)
            return
        self.server.spawn(self._connect_new(key, backend, tls))

    async def _connect_new(self, key, backend, tls=None) -> None:
        try:
            await self._connect_and_attach(key, backend, tls)
        except Exception as exc:  # a bug must cost one request, not leave it hanging
            if not self.finished:
                self._internal_error(exc)

    async def _connect_and_attach(self, key, backend, tls=None) -> None:
        timeout = self.pool.config.timeouts.connect
        try:
            conn = await self.server.upstreams.connect(key, timeout, tls)
        except TLSHandshakeError as exc:
            if self.finished or self.backend is not backend:
                return
            self._attempt_failed(
                "backend-tls",
                f"TLS handshake with {backend.name} ({backend.address}) failed: {exc.reason} "
                f"(checked as {tls.server_name!r} against {tls.ca_label or 'nothing'})",
                retryable=True)
            return
        except OSError as exc:  # refused, unreachable, and TimeoutError too
            if self.finished or self.backend is not backend:
                return
            if isinstance(exc, TimeoutError):
                why = f"timed out after {timeout:g}s (timeouts.connect)"
            else:
                why = exc.strerror or str(exc) or type(exc).__name__
            self._attempt_failed(
                "connect-failed",
                f"cannot connect to {backend.name} ({backend.address}): {why}",
                retryable=True)
            return
        if tls is not None and not tls.verify:
            self.server.bus.publish(WarningEvent(
                source="tls", message=tls.warning(self.pool_name, backend),
                pool=self.pool_name, backend=backend.name))
        if self.finished or self.backend is not backend:
            # The client left (or the request was cut) while connecting: keep
            # the fresh connection for the next request.
            self.server.upstreams.put(conn, self.pool.config.timeouts.backend_idle)
            return
        self._attach(conn, reused=False)

    # ------------------------------------------------------------ step 4: send

    def _attach(self, conn, reused: bool) -> None:
        self.upstream = conn
        self.upstream_tls = conn.tls_info
        self.reused = reused
        conn.exchange = self
        conn.reader.sink = self
        conn.reader.expect(self.head.method)
        self.backend.active_connections += 1
        self.t_connect = self.server.clock()
        if self.conn.write_paused:
            conn.transport.pause_reading()
        parts = [self._request_head()]
        buffered = self.body_buf
        if buffered:
            if self.up_chunked:
                parts += [chunk(piece) for piece in buffered]
            else:
                parts += buffered
            self._remember(buffered, self.body_buf_bytes)
            self.body_buf = []
            self.body_buf_bytes = 0
        if self.request_done and self.up_chunked:
            parts.append(LAST_CHUNK)
        conn.write(b"".join(parts))
        self.request_sent = True
        self.conn.resume(PAUSE_BUFFER)
        if self.request_done:
            conn.deadline.set(self.server.loop.time() + self.read_timeout)

    def _remember(self, pieces: list[bytes], size: int) -> None:
        """Keep sent body bytes while they are few, to resend them on a retry."""
        if self.replay is None:
            return
        if self.replay_bytes + size > REPLAY_LIMIT:
            self.replay = None
            return
        self.replay.extend(pieces)
        self.replay_bytes += size

    def _request_head(self) -> bytes:
        """The request head for the backend: hop-by-hop removed, forwarding added."""
        head = self.head
        conn = self.conn
        parts = [_method_bytes(head.method), b" ", head.target, b" HTTP/1.1\r\n"]
        named = head.connection_named
        strip = (named - CONNECTION_OPTIONS) if named else None
        upgrading = head.upgrade is not None
        host = head.host
        host_b = host.encode("latin-1") if host is not None else (
            f"{self.backend.host}:{self.backend.port}".encode("ascii"))
        parts += (b"Host: ", host_b, b"\r\n")
        xff = fwd = None
        actions = _REQUEST_ACTIONS
        for name, value in head.headers:
            action = actions.get(name)
            if action is None:
                action = _request_action(name)
            if action == _PASS:
                if strip and name.lower() in strip:
                    continue
                parts += (name, b": ", value, b"\r\n")
            elif action == _PROXY_NAME or action == _DROP:
                continue
            elif action == _XFF:
                xff = value if xff is None else xff + b", " + value
            elif action == _FWD:
                fwd = value if fwd is None else fwd + b", " + value
            elif (action == _UPGRADE and upgrading) or (action == _EXPECT
                                                        and not self.continued):
                parts += (name, b": ", value, b"\r\n")
        xff, fwd = self._pass_forwarded(xff, fwd)
        ip = conn.client_ip_b
        parts += (b"X-Forwarded-For: ", xff + b", " + ip if xff else ip, b"\r\n",
                  b"X-Forwarded-Proto: ", conn.scheme_b, b"\r\n")
        if host is not None:
            parts += (b"X-Forwarded-Host: ", host_b, b"\r\n")
        element = conn.forwarded_element(host)
        parts += (b"Forwarded: ", fwd + b", " + element if fwd else element, b"\r\n",
                  b"X-Request-Id: ", self.request_id.encode("latin-1"), b"\r\n")
        if conn.client_cert_headers is not None:
            parts.append(conn.client_cert_headers)
        if head.chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        elif head.content_length is not None:
            parts.append(b"Content-Length: %d\r\n" % head.content_length)
        if upgrading:
            parts.append(b"Connection: upgrade\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    # ------------------------------------------------------------ client body

    def on_client_body(self, data: bytes) -> None:
        if self.finished:
            return
        self.bytes_in += len(data)
        upstream = self.upstream
        if upstream is not None and self.request_sent:
            upstream.write(chunk(data) if self.up_chunked else data)
            if self.replay is not None:
                self._remember([data], len(data))
            return
        self.body_buf.append(data)
        self.body_buf_bytes += len(data)
        if self.body_buf_bytes > BUFFER_HIGH:
            self.conn.pause(PAUSE_BUFFER)
        if not self.started and self.turn and self.body_buf_bytes >= PREBUFFER:
            self.start()

    def on_client_complete(self) -> None:
        self.request_done = True
        if self.finished:
            return
        if not self.started:
            if self.turn:
                self.start()
            return
        upstream = self.upstream
        if upstream is not None and self.request_sent:
            if self.up_chunked:
                upstream.write(LAST_CHUNK)
            if not self.head_sent:
                upstream.deadline.set(self.server.loop.time() + self.read_timeout)

    def on_client_error(self, err: RequestError) -> None:
        """The rest of the request body is refused (bad chunk, too large, too slow)."""
        if self.finished:
            return
        self.keep_alive = False
        if self.head_sent:
            self._finish("PR", err.message, proxy_error=True)
        else:
            self._fail(err.code, err.message)

    def on_client_lost(self) -> None:
        if self.finished:
            return
        self.keep_alive = False
        if not self.request_done:
            term, where = "CR", "while sending the request"
        elif not self.head_sent:
            term, where = "CH", "while waiting for the response"
        else:
            term, where = "CD", "during the response"
        self._finish(term, f"client closed the connection {where}")

    # ------------------------------------------------------------ response (upstream callbacks)

    def on_response_interim(self, resp: ResponseHead) -> None:
        # 100 Continue, 103 Early Hints: only HTTP/1.1 clients may get them.
        if self.head.http11 and not self.head_sent:
            self.out.append(self._response_head(resp, None))

    def on_response_head(self, resp: ResponseHead) -> None:
        self.t_first = self.server.clock()
        status = resp.status
        head = self.head
        if status == 101:
            if head.upgrade is None:
                self.on_upstream_error(f"backend {self.backend.name} switched protocols "
                                       "without an upgrade request")
                return
            self._start_tunnel(resp)
            return
        self.status = status
        self.resp_keep_alive = resp.keep_alive
        how = framing.response_framing(status, head.method, resp.content_length,
                                       resp.chunked, head.http11)
        self.down_chunked = how == framing.CHUNKED
        if (how == framing.CLOSE or not self.request_done or head.upgrade is not None
                or self.conn.closing):
            self.keep_alive = False
        if resp.set_cookies and self.pool.sticky is not None:
            observe = getattr(self.pool.sticky, "observe_response", None)
            if observe is not None:
                self.sticky_learned = observe(self.backend, resp.set_cookies)
        self.out.append(self._response_head(resp, how))
        self.head_sent = True
        if resp.no_body:
            return
        upstream = self.upstream
        if upstream is not None:
            # From now on the deadline is the silence allowed between body bytes.
            upstream.deadline.set(self.server.loop.time() + self.read_timeout)

    def _response_head(self, resp: ResponseHead, how: str | None) -> bytes:
        parts = [status_line(resp.status, resp.reason)]
        named = resp.connection_named
        strip = (named - CONNECTION_OPTIONS) if named else None
        keeps = _RESPONSE_KEEP
        for name, value in resp.headers:
            keep = keeps.get(name)
            if keep is None:
                keep = _response_keeps(name)
            if not keep or (strip and name.lower() in strip):
                continue
            parts += (name, b": ", value, b"\r\n")
        if how is None:  # interim
            parts.append(b"\r\n")
            return b"".join(parts)
        choice = self.choice
        if choice is not None and choice.set_cookie:
            parts += (b"Set-Cookie: ", choice.set_cookie.encode("latin-1"), b"\r\n")
        parts += (b"X-Request-Id: ", self.request_id.encode("latin-1"), b"\r\n")
        if how == framing.LENGTH:
            parts.append(b"Content-Length: %d\r\n" % resp.content_length)
        elif how == framing.CHUNKED:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        elif how == framing.NONE and resp.content_length is not None and resp.status != 204:
            parts.append(b"Content-Length: %d\r\n" % resp.content_length)  # HEAD, 304
        if not self.keep_alive:
            parts.append(b"Connection: close\r\n")
        elif not self.head.http11:
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def on_response_body(self, data: bytes) -> None:
        self.bytes_out += len(data)
        if self.down_chunked:
            self.out.append(chunk(data))
        else:
            self.out.append(data)

    def on_response_complete(self) -> None:
        if self.finished:
            return
        if self.down_chunked:
            self.out.append(LAST_CHUNK)
        self.response_complete = True
        self._finish("--")

    def flush(self) -> None:
        """Write what the last read produced, in one write."""
        out = self.out
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            self.conn.write(data)

    # ------------------------------------------------------------ backend failures

    def on_upstream_lost(self, exc: Exception | None) -> None:
        if self.finished:
            return
        upstream = self.upstream
        started = upstream.reader.started if upstream is not None else True
        self._detach_upstream(close=True)
        name = self.backend.name
        how = "reset" if isinstance(exc, ConnectionResetError) else "closed"
        if self.head_sent:
            self.keep_alive = False
            self._finish("SD", f"backend {name} {how} the connection in the middle of the "
                               "response body")
            return
        if not started and self._retryable_loss():
            what = ("reused keep-alive connection" if self.reused
                    else "new connection")
            self._attempt_failed(
                "backend-closed",
                f"{what} to {name} was {how} before any response byte"
                + (" (keep-alive race)" if self.reused else ""), retryable=True)
            return
        self._attempt_failed("backend-closed",
                             f"backend {name} {how} the connection before a complete "
                             "response head", retryable=False)

    def _retryable_loss(self) -> bool:
        """A request lost before any response byte may be resent when doing it twice
        is harmless (RFC 9110 9.2.2: an idempotent method) and the proxy still holds
        the whole body it sent. On a reused connection this is the keep-alive race;
        on a fresh one, a backend that crashed or restarted under the request."""
        return self.head.method in IDEMPOTENT and self.replay is not None

    def on_upstream_error(self, message: str) -> None:
        if self.finished:
            return
        self._detach_upstream(close=True)
        if self.head_sent:
            self.keep_alive = False
            self._finish("SD", message)
            return
        self._attempt_failed("bad-response", message, retryable=False)

    def on_upstream_timeout(self) -> None:
        if self.finished:
            return
        self._detach_upstream(close=True)
        name = self.backend.name
        if self.head_sent:
            self.keep_alive = False
            self._finish("SD", f"backend {name} sent nothing for {self.read_timeout:g}s in "
                               "the middle of the response body (timeouts.response_header)")
            return
        self._attempt_failed("response-timeout",
                             f"backend {name} sent no response head within "
                             f"{self.read_timeout:g}s (timeouts.response_header)",
                             retryable=False)

    def upstream_pause_writing(self) -> None:
        self.conn.pause(PAUSE_UPSTREAM)

    def upstream_resume_writing(self) -> None:
        self.conn.resume(PAUSE_UPSTREAM)

    def _attempt_failed(self, code: str, message: str, retryable: bool) -> None:
        """This backend failed this request: retry elsewhere when allowed, else answer."""
        backend = self.backend
        self._release_backend(self.server.clock(), failed=True)
        if self.failed is None:
            self.failed = set()
        self.failed.add(backend)
        if (retryable and len(self.retries) < self.pool.config.retries
                and not self.conn.closed and self._budget_allows()):
            self.retries = [*self.retries, {"backend": backend.name, "error": message}]
            if self.replay:
                self.body_buf = self.replay + self.body_buf
                self.body_buf_bytes += self.replay_bytes
                self.replay = []
                self.replay_bytes = 0
            self.request_sent = False
            self.ctx.now = self.server.clock()
            try:
                self._choose()
            except Exception as exc:
                self._internal_error(exc)
            return
        self._fail(code, message)

    def _budget_allows(self) -> bool:
        """The pool's retry budget (if any) has room for this request to retry."""
        settings = self.pool.config.retry_budget
        if settings is None or self.counted == 2:
            return True  # no budget, or already counted as retrying
        budget = self.pool.retry_budget
        self.budget = budget.check(settings.percent, settings.min_concurrent)
        if not self.budget["allowed"]:
            budget.skipped += 1
            return False
        budget.active_retries += 1
        self.counted = 2
        return True

    # ------------------------------------------------------------ local answers

    def _respond_fixed(self, respond) -> None:
        body = respond.body.encode("utf-8")
        headers = [(b"Content-Type", respond.content_type.encode("latin-1")),
                   (b"X-Request-Id", self.request_id.encode("latin-1"))]
        self._answer(respond.status, headers, body)

    def _redirect(self, status: int, location: str) -> None:
        body = f"redirecting to {location}\n".encode("utf-8")
        headers = [(b"Location", location.encode("latin-1", "replace")),
                   (b"Content-Type", b"text/plain; charset=utf-8"),
                   (b"X-Request-Id", self.request_id.encode("latin-1"))]
        self._answer(status, headers, body)

    def _answer(self, status: int, headers, body: bytes) -> None:
        self.status = status
        if not self.request_done:
            self.keep_alive = False
        head_only = self.head.method == "HEAD"
        self.out.append(render(status, headers, body, self.keep_alive, self.head.http11,
                               head_only))
        self.head_sent = True
        self.bytes_out = 0 if head_only else len(body)
        self._finish("--")

    def _fail(self, code: str, message: str, **extra) -> None:
        """Answer with the proxy's own error (proxy/errors.py) and finish."""
        if self.finished:
            return
        err = ERRORS[code]
        self._detach_upstream(close=True)
        if self.head_sent:
            self.keep_alive = False
            self._finish(err.termination, message, proxy_error=True)
            return
        self.status = err.status
        if err.closes or not self.request_done:
            self.keep_alive = False
        self.out.append(error_response(err, message, self.request_id, self.keep_alive,
                                       self.head.http11, self.head.method == "HEAD", **extra))
        self.head_sent = True
        self._finish(err.termination, message, proxy_error=True)

    def _internal_error(self, exc: BaseException) -> None:
        log.exception("internal error on request %s", self.request_id, exc_info=exc)
        if self.finished:
            return
        self.keep_alive = False
        self._fail("internal", f"internal proxy error: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------ drain

    def cut(self, reason: str = "drain deadline") -> None:
        """Abort: 502 if no response head went out yet, else close the client connection.

        The event says `termination: PD`, `error: "cut by <reason>"`."""
        if self.finished:
            return
        if not reason.startswith("cut"):
            reason = f"cut by {reason}"
        self.keep_alive = False
        if self.tunnel is not None:
            self.tunnel.close(reason, "PD")
            return
        if self.head_sent:
            self._finish("PD", reason, proxy_error=True)
        else:
            self._fail("drain-cut", reason)

    # ------------------------------------------------------------ upgrade

    def _start_tunnel(self, resp: ResponseHead) -> None:
        self.status = 101
        parts = [status_line(101, resp.reason)]
        for name, value in resp.headers:
            parts += (name, b": ", value, b"\r\n")
        parts += (b"X-Request-Id: ", self.request_id.encode("latin-1"), b"\r\n\r\n")
        self.out.append(b"".join(parts))
        self.head_sent = True
        self.keep_alive = False
        upstream = self.upstream
        upstream.deadline.cancel()
        self.tunnel = Tunnel(self, self.conn, upstream)
        self.flush()
        self.tunnel.begin(self.conn.take_upgrade_tail())

    def tunnel_done(self, termination: str, error: str | None, bytes_in: int,
                    bytes_out: int) -> None:
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out
        self.response_complete = True
        self._finish(termination, error)

    # ------------------------------------------------------------ finish

    def _detach_upstream(self, close: bool) -> None:
        upstream = self.upstream
        if upstream is None:
            return
        self.upstream = None
        upstream.exchange = None
        upstream.tunnel = None
        upstream.reader.sink = DISCARD
        self.backend.active_connections -= 1
        if close:
            upstream.close()

    def _release_upstream(self) -> None:
        upstream = self.upstream
        if upstream is None:
            return
        reusable = (self.response_complete and self.request_done and self.request_sent
                    and self.resp_keep_alive and not upstream.closed and self.tunnel is None
                    and self.backend.intent is _ACTIVE)
        self._detach_upstream(close=not reusable)
        if reusable:
            upstream.responses += 1
            upstream.deadline.clear()
            self.server.upstreams.put(upstream, self.pool.config.timeouts.backend_idle)

    def _release_backend(self, now: float, failed: bool) -> None:
        if not self.acquired:
            return
        self.acquired = False
        backend = self.backend
        backend.request_finished(now - self.attempt_started, failed, now)
        pool = self.pool
        balancer = pool.balancer
        if balancer.counts:
            balancer.release(backend)
        self.server.untrack(self, backend)
        if pool.queue.waiters:
            # A slot is free: the oldest waiting request picks again, soon (not
            # inside this callback: see L7Connection.exchange_done).
            waiter = pool.wake()
            if waiter is not None:
                self.server.loop.call_soon(waiter.unqueue)

    def _finish(self, termination: str, error: str | None = None,
                proxy_error: bool = False) -> None:
        """The end of every exchange: release everything, publish one RequestEvent."""
        if self.finished:
            return
        self.finished = True
        server = self.server
        now = server.clock()
        if self.queue_timer is not None:
            self._leave_queue()
        if self.counted:
            budget = self.pool.retry_budget
            budget.active_requests -= 1
            if self.counted == 2:
                budget.active_retries -= 1
            self.counted = 0
        self.flush()
        self._release_upstream()
        status = self.status
        failed = ((status >= 500 or termination[0] == "S")
                  and termination[0] != "C" and termination != "PD")
        self._release_backend(now, failed)
        if server.request_events:
            try:
                server.bus.publish(self._event(now, termination, error, proxy_error))
            except Exception:
                log.exception("publishing the event of request %s failed", self.request_id)
        self.conn.exchange_done(self, self.keep_alive)

    def _event(self, now: float, termination: str, error: str | None,
               proxy_error: bool) -> RequestEvent:
        """This request's event: the counted fields now, the rest when first read."""
        choice = self.choice
        backend = self.backend
        conn = self.conn
        head = self.head
        zone = (_zone_view(choice, backend)
                if choice is not None and choice.zone is not None else None)
        return lazy_request(
            (_request_fields, conn.bound.name, conn.client, head.method, head.target, head.host,
             self.route_name, choice, self.split,
             self.sticky_learned, self.t0, self.t_route, self.t_pick, self.t_connect,
             self.t_first, now, conn.tls, self.upstream_tls, self.client_view,
             getattr(conn, "proxied", None), conn.client_ip, self.grpc),
            _time(), self.request_id, self.pool_name,
            backend.name if backend is not None else None, self.status,
            int((now - self.t0) * 1e6 + 0.5) / 1000, self.bytes_in, self.bytes_out,
            termination, proxy_error, error, self.retries, self.budget, zone,
            self.queue_info)

    def _client_address(self) -> dict | None:
        return _client_address(self.client_view, getattr(self.conn, "proxied", None),
                               self.conn.client_ip)

    def __repr__(self) -> str:
        return (f"<Exchange {self.request_id} {self.head.method} {self.head.path} "
                f"backend={self.backend.name if self.backend else None}>")


def _ms(t: float, t0: float) -> float:
    """Milliseconds with 3 decimals (int arithmetic: round() is slow)."""
    return int((t - t0) * 1e6 + 0.5) / 1000


def _request_fields(listener, client, method, target, host, route, choice, split,
                    sticky_learned, t0,
                    t_route, t_pick, t_connect, t_first, now, tls, backend_tls,
                    client_view, proxied, client_ip, grpc=None) -> dict:
    """The rest of a request's event (proxy.events.lazy_request), from values kept
    at its end: built only when someone reads the event."""
    timings = {"accepted": 0.0}
    if t_route:
        timings["route_matched"] = _ms(t_route, t0)
    if t_pick:
        timings["backend_picked"] = _ms(t_pick, t0)
    if t_connect:
        timings["connected"] = _ms(t_connect, t0)
    if t_first:
        timings["first_byte"] = _ms(t_first, t0)
    timings["done"] = _ms(now, t0)
    sticky = choice.sticky if choice is not None else None
    if sticky_learned:
        sticky = dict(sticky or {}, learned=sticky_learned)
    return {
        "listener": listener, "client": client, "method": method,
        "path": target.decode("latin-1"), "host": host, "route": route,
        "algorithm": choice.algorithm if choice is not None else None,
        # The pick itself: its candidates' dicts are made only if the event is built
        # (a line alone takes their JSON, see proxy.events.RequestEvent.to_json).
        "_choice": choice,
        "inputs": choice.inputs if choice is not None else {},
        "sticky": sticky, "split": split, "timings": timings, "tls": tls,
        "backend_tls": backend_tls,
        "backup": choice.backup if choice is not None else None,
        "client_address": _client_address(client_view, proxied, client_ip),
        "grpc": grpc,
    }


def _client_address(view: dict | None, proxied: dict | None, client_ip: str) -> dict | None:
    if proxied is None:
        return view
    view = dict(view) if view is not None else {
        "ip": client_ip, "from": "proxy_protocol",
        "reason": f"PROXY v{proxied['version']} header from trusted {proxied['via']}"}
    if view["from"] == "peer":  # the "peer" here is who the PROXY header named
        view["from"] = "proxy_protocol"
    view["proxy_protocol"] = proxied
    return view


def _zone_view(choice, backend) -> dict | None:
    """The pick's zone view with the zone of the backend it reached."""
    if choice is None or choice.zone is None:
        return None
    return dict(choice.zone, backend_zone=backend.zone if backend is not None else None)


class RefusedExchange(Exchange):
    """A request refused before its head was complete (400, 408, 431...)."""

    __slots__ = ()

    @classmethod
    def refuse(cls, conn: "L7Connection", err: RequestError, t0: float,
               method: str, target: bytes) -> "RefusedExchange":
        head = RequestHead(method, target, "1.1", [])
        head.keep_alive = False
        ex = cls(conn, head, t0)
        ex._fail(err.code, err.message)
        return ex


# ====================================================================== tunnel

class Tunnel:
    """Bytes both ways after a 101, until a side closes or tunnel_idle passes."""

    def __init__(self, exchange: Exchange, client: "L7Connection", upstream):
        self.exchange = exchange
        self.client = client
        self.upstream = upstream
        self.bytes_in = 0
        self.bytes_out = 0
        self.done = False
        self.idle = client.bound.config.timeouts.tunnel_idle
        self.deadline = Deadline(client.loop, self._on_idle)
        self.opened = exchange.server.clock()

    def begin(self, client_tail: bytes | None) -> None:
        self.client.tunnel = self
        self.upstream.tunnel = self
        self.upstream.exchange = None
        self.client.timer.cancel()
        self.deadline.after(self.idle)
        self._announce()
        if client_tail:
            self.client_data(client_tail)
        self.client.resume(PAUSE_UPGRADE)

    def _announce(self) -> None:
        ex = self.exchange
        choice = ex.choice
        try:
            ex.server.bus.publish(ConnectionOpen(
                connection_id=ex.request_id, listener=self.client.bound.name,
                client=self.client.client, kind="websocket", pool=ex.pool_name,
                algorithm=choice.algorithm if choice is not None else None,
                candidates=choice.candidates if choice is not None else [],
                inputs=choice.inputs if choice is not None else {},
                sticky=choice.sticky if choice is not None else None,
                backend=ex.backend.name if ex.backend is not None else None,
                tls=self.client.tls))
        except Exception:
            log.exception("publishing connection_open of tunnel %s failed", ex.request_id)

    def live(self, now: float) -> dict:
        """This tunnel for GET /connections."""
        ex = self.exchange
        when = self.deadline.when
        return {
            "connection_id": ex.request_id, "kind": "websocket",
            "listener": self.client.bound.name, "client": self.client.client,
            "pool": ex.pool_name, "backend": ex.backend.name if ex.backend else None,
            "phase": "relay", "age_s": round(now - self.opened, 3),
            "idle_s": (round(max(0.0, self.client.loop.time() - (when - self.idle)), 3)
                       if when else None),
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
            "path": ex.head.target_str, "sni": (self.client.tls or {}).get("sni"),
        }

    def _touch(self) -> None:
        self.deadline.when = self.client.loop.time() + self.idle

    def client_data(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self._touch()
        self.upstream.write(data)

    def upstream_data(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self._touch()
        self.client.write(data)

    def client_closed(self, exc) -> None:
        self.close(None, "--")

    def upstream_closed(self, exc) -> None:
        self.close(None, "--")

    def client_pause_writing(self) -> None:
        if not self.upstream.closed:
            self.upstream.transport.pause_reading()

    def client_resume_writing(self) -> None:
        if not self.upstream.closed:
            self.upstream.transport.resume_reading()

    def upstream_pause_writing(self) -> None:
        self.client.pause(PAUSE_UPSTREAM)

    def upstream_resume_writing(self) -> None:
        self.client.resume(PAUSE_UPSTREAM)

    def _on_idle(self) -> None:
        self.close(f"tunnel idle for {self.idle:g}s (timeouts.tunnel_idle)", "--")

    def close(self, error: str | None, termination: str) -> None:
        if self.done:
            return
        self.done = True
        self.deadline.cancel()
        self.upstream.tunnel = None
        self.upstream.close()
        self.client.tunnel = None
        self.exchange.tunnel = None
        self.exchange.tunnel_done(termination, error, self.bytes_in, self.bytes_out)


# ====================================================================== client connection

class L7Connection(BatchedWrites, asyncio.Protocol):
    """One client connection of an HTTP listener."""

    # The class of its exchanges, and the one an exchange becomes when its pool
    # speaks HTTP/2 (proxy.http2.serve sets it; None: HTTP/1.1 to every pool).
    exchange_class = Exchange
    h2_exchange_class = None

    def __init__(self, server, bound):
        self.server = server
        self.bound = bound  # the listener slot: .name, .config, .closed
        self.loop = server.loop
        self.transport = None
        self.out: list | None = None
        self.batch = write_batch(self.loop)
        self.reader: RequestReader | None = None
        self.current: Exchange | None = None  # the exchange being answered
        self.parsing: Exchange | None = None  # the exchange whose request is being read
        self.pending: collections.deque | None = None  # pipelined, waiting for current
        self.paused = 0
        self.write_paused = False
        self.closed = False
        self.closing = False  # close after the current exchange (shutdown, refusal)
        self.lingering = False
        self.refused = False  # a request was refused: nothing more is parsed
        self.write_closed = False
        self.tunnel: Tunnel | None = None
        self.phase = HEAD
        self.timer = Deadline(self.loop, self._on_timer)
        self.client_ip = "?"
        self.client_ip_b = b"?"
        self.client = "?"
        self.scheme_b = b"http"
        self.accepted_at = 0.0
        self.head_started = 0.0
        self._upgrade_tail: bytes | None = None
        self.router = None  # the routes this connection was last served with
        # Slow-body limits (timeouts.request_body_total, min_body_rate): when the
        # current body began (loop time, moved on by time spent paused by the
        # proxy), how many bytes came, and when reading was paused.
        self.body_started = 0.0
        self.body_received = 0
        self.body_ref = 0.0  # the last body byte (or start, or resume): the pause limit's base
        self.paused_at = 0.0
        self._fwd_cache: tuple[str | None, bytes] | None = None
        # Set by proxy.tls.TLSAccept before connection_made on a TLS listener.
        self.tls: dict | None = None
        self.client_cert_headers: bytes | None = None
        # A PROXY header accepted on this connection (proxy/io/accept.py):
        # {version, command, via, source}; client_ip is then the address it names.
        self.proxied: dict | None = None

    # ------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            ip, port = peer[0], peer[1]
            self.client_ip = ip
            self.client_ip_b = ip.encode("ascii")
            self.client = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        self.proxied = transport.get_extra_info("proxy_header")
        config = self.bound.config
        tls = self.tls
        if tls is not None and "client_cert" in tls:  # the listener asks for client certs
            subject = tls["client_cert"]
            self.client_cert_headers = (
                b"X-Client-Verify: " + (b"SUCCESS" if subject else b"NONE") + b"\r\n"
                + (b"X-Client-Cert-Subject: " + subject.encode("latin-1", "replace") + b"\r\n"
                   if subject else b""))
        self.reader = RequestReader(self, config.limits.max_header_bytes,
                                    config.limits.max_body_bytes)
        self.accepted_at = self.head_started = self.server.clock()
        self.router = self.server.routers.get(self.bound.name)  # see Exchange._route
        self.server.connections.add(self)
        self.bound.active += 1
        if self.bound.active > config.limits.max_connections:
            log.warning("listener %s: over limits.max_connections (%d); closing %s",
                        self.bound.name, config.limits.max_connections, self.client)
            transport.abort()
            return
        self.timer.after(config.timeouts.client_header)

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.client_data(data)
            return
        if self.lingering or self.refused or self.closed:
            return
        if self._upgrade_tail is not None:
            # After an upgrade request, bytes belong to the tunnel to come.
            self._upgrade_tail += data
            return
        reader = self.reader
        was_in_head = reader.in_head
        if not was_in_head and self.parsing is None:
            self.head_started = self.server.clock()
        try:
            tail = reader.feed(data)
        except RequestError as err:
            self._refuse(err)
            return
        except Exception as exc:  # a bug in a callback: one request lost, not the proxy
            log.exception("internal error reading a request from %s", self.client)
            self._refuse(RequestError("internal", f"internal proxy error: {exc!r}"))
            return
        if tail is not None:
            self._upgrade_tail = tail
            self.pause(PAUSE_UPGRADE)
        if reader.in_head and not was_in_head and reader.messages and self.phase != HEAD:
            # A new request began and its head is not complete yet.
            self._set_phase(HEAD)

    def eof_received(self) -> bool:
        # The client shut its side. Like nginx, the proxy takes it as the
        # client going away: a request in flight ends as "CR"/"CH"/"CD" and
        # frees its backend slot (HTTP clients do not half-close to wait).
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.write_closed = True
        self.timer.close()  # no cycle through its callback (see Deadline.close)
        self.server.connections.discard(self)
        self.bound.active -= 1
        try:
            tunnel = self.tunnel
            if tunnel is not None:
                tunnel.client_closed(exc)
                return
            current = self.current
            if current is not None:
                current.on_client_lost()
            pending = self.pending
            while pending:
                pending.popleft().on_client_lost()
        finally:
            self.reader.close()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.tunnel is not None:
            self.tunnel.client_pause_writing()
            return
        current = self.current
        if current is not None and current.upstream is not None and not current.upstream.closed:
            current.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.tunnel is not None:
            self.tunnel.client_resume_writing()
            return
        current = self.current
        if current is not None and current.upstream is not None and not current.upstream.closed:
            current.upstream.transport.resume_reading()

    # ------------------------------------------------------------ reader callbacks

    def on_request_head(self, head: RequestHead) -> None:
        if self.closing or self.closed:
            # Pipelined after a request that closes the connection: not answered.
            self.parsing = None
            return
        if self.bound.config.protocol != "http":
            # The listener was flipped to L4 while this connection was open (the
            # server shuts such connections down; this covers bytes already read).
            # Its routes are gone: close unanswered, as at shutdown, so the client
            # retries on a new connection that gets the new mode.
            self.parsing = None
            self.closing = True
            if self.current is None:
                self._close(linger=False)
            return
        reader = self.reader
        t0 = self.accepted_at if reader.messages == 1 else self.head_started
        ex = self.exchange_class(self, head, t0)
        self.parsing = ex
        if not ex.request_done:  # the head announces a body (head.has_body)
            self.body_started = self.paused_at = self.loop.time()
            self.body_received = 0
            self._set_phase(BODY)
        else:
            self.phase = WAIT  # no client deadline while the backend works
            self.timer.when = None
        if self.current is None:
            self.current = ex
            ex.go()
        else:
            if self.pending is None:
                self.pending = collections.deque()
            self.pending.append(ex)
            self.pause(PAUSE_PIPELINE)

    def on_request_body(self, data: bytes) -> None:
        ex = self.parsing
        if ex is None:
            return
        self.body_received += len(data)
        if self.timer.when is not None:
            self.timer.when = self._body_deadline(self.bound.config.timeouts)
        ex.on_client_body(data)

    def on_request_complete(self) -> None:
        ex = self.parsing
        if ex is None:
            return
        self.parsing = None
        if self.current is None and not self.pending and not self.closing:
            self._set_phase(IDLE)
        else:
            self.phase = WAIT
            self.timer.when = None
        ex.on_client_complete()

    # ------------------------------------------------------------ exchanges

    def exchange_done(self, ex: Exchange, keep_alive: bool) -> None:
        if ex is self.current:
            self.current = None
        elif self.pending and ex in self.pending:
            self.pending.remove(ex)
            return
        if self.closed:
            return
        if not keep_alive or self.closing or self.bound.closed:
            unread = self.parsing is not None and self.parsing is not ex
            self._close(linger=not ex.request_done or unread or self.refused)
            return
        if self.pending:
            nxt = self.pending.popleft()
            if not self.pending:
                self.resume(PAUSE_PIPELINE)
            self.current = nxt
            # Not from inside this callback: the backend connection that just
            # finished may still be in its own read callback.
            self.loop.call_soon(self._start_next, nxt)
        elif self.parsing is None and not self.reader.in_head:
            self._set_phase(IDLE)

    def _start_next(self, ex: Exchange) -> None:
        if not self.closed and not ex.finished:
            ex.go()

    def take_upgrade_tail(self) -> bytes | None:
        tail, self._upgrade_tail = self._upgrade_tail, None
        return tail

    def _refuse(self, err: RequestError) -> None:
        """The reader refused the request: answer with the error, then close.

        Nothing after a refused request is parsed (its framing cannot be
        trusted: that is how smuggling works)."""
        if self.closed:
            return
        self.refused = True
        self.timer.cancel()
        ex = self.parsing
        current = self.current
        if ex is not None:
            if ex.finished:
                self._close(linger=True)
            elif ex is current:
                ex.on_client_error(err)  # answers if it still can, finishes, closes
                self._close(linger=True)
            else:
                # A pipelined request behind one in flight: the ones before it are
                # answered first, then it gets its error (Exchange.go).
                ex.refusal = err
            return
        method, target = self._partial_request()
        t0 = self.head_started if self.reader.messages else self.accepted_at
        if current is not None:
            # Earlier requests are still being answered: refuse in turn, after them.
            head = RequestHead(method, target, "1.1", [])
            refused = RefusedExchange(self, head, t0)
            refused.refusal = err
            if self.pending is None:
                self.pending = collections.deque()
            self.pending.append(refused)
            return
        RefusedExchange.refuse(self, err, t0, method, target)

    def _partial_request(self) -> tuple[str, bytes]:
        reader = self.reader
        try:
            method = reader.parser.get_method().decode("ascii", "replace")
        except Exception:  # before the method was read
            method = ""
        target = b"".join(reader._url)[:2048]
        return method, target

    # ------------------------------------------------------------ timeouts

    def _body_deadline(self, timeouts) -> float:
        """The body's next deadline: the pause limit, the total, the minimum rate."""
        now = self.body_ref = self.loop.time()
        when = now + timeouts.request_body
        total = timeouts.request_body_total
        if total:
            when = min(when, self.body_started + total)
        rate = timeouts.min_body_rate
        if rate:
            # request_body of grace, then 1/rate seconds per byte received.
            when = min(when, max(now, self.body_started + timeouts.request_body
                                 + self.body_received / rate))
        return when

    def _set_phase(self, phase: str) -> None:
        self.phase = phase
        timeouts = self.bound.config.timeouts
        if phase == HEAD:
            self.timer.after(timeouts.client_header)
        elif phase == BODY:
            if not self.paused:
                self.timer.set(self._body_deadline(timeouts))
        elif phase == IDLE:
            self.timer.after(timeouts.client_idle)
        else:
            self.timer.clear()

    def _on_timer(self) -> None:
        if self.closed or self.tunnel is not None:
            return
        phase = self.phase
        timeouts = self.bound.config.timeouts
        if phase == HEAD:
            if self.reader.in_head:
                self._refuse(RequestError(
                    "header-timeout", f"request head not complete within "
                    f"{timeouts.client_header:g}s (timeouts.client_header)"))
            elif self.current is None:
                self._close(linger=False)  # nothing was sent: no request, no answer
        elif phase == BODY:
            if self.parsing is not None and not self.paused:
                self._refuse(self._body_too_slow(timeouts))
        elif phase == IDLE:
            if self.current is None and not self.reader.in_head:
                self._close(linger=False)

    def _body_too_slow(self, timeouts) -> RequestError:
        """Which of the three body limits ran out (the earliest of them)."""
        grace = timeouts.request_body
        pause_at = self.body_ref + grace
        total = timeouts.request_body_total
        total_at = self.body_started + total if total else pause_at + 1.0
        rate = timeouts.min_body_rate
        rate_at = (self.body_started + grace + self.body_received / rate) if rate else (
            pause_at + 1.0)
        elapsed = self.loop.time() - self.body_started
        if total_at < pause_at and total_at <= rate_at:
            return RequestError(
                "body-too-slow", f"request body not complete within {total:g}s "
                f"({self.body_received} bytes came; timeouts.request_body_total)")
        if rate_at < pause_at:
            return RequestError(
                "body-too-slow", f"request body slower than {rate} bytes/s on average "
                f"({self.body_received} bytes in {elapsed:.1f}s, after {grace:g}s of "
                "grace; timeouts.min_body_rate)")
        return RequestError(
            "body-timeout", f"no request body byte for {timeouts.request_body:g}s "
            "(timeouts.request_body)")

    # ------------------------------------------------------------ reading / writing

    def pause(self, reason: int) -> None:
        if self.closed or self.lingering:
            return
        if not self.paused:
            try:
                self.transport.pause_reading()
            except RuntimeError:  # the transport is already closed
                return
            if self.phase == BODY:
                self.timer.clear()  # we are slow, not the client
                self.paused_at = self.loop.time()
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if not self.paused & reason:
            return
        self.paused &= ~reason
        if not self.paused and not self.closed and not self.lingering:
            try:
                self.transport.resume_reading()
            except RuntimeError:
                return
            if self.phase == BODY:
                # Time paused by the proxy does not count against the client.
                self.body_started += self.loop.time() - self.paused_at
                self.timer.set(self._body_deadline(self.bound.config.timeouts))

    def forwarded_element(self, host: str | None) -> bytes:
        cache = self._fwd_cache
        if cache is not None and cache[0] == host:
            return cache[1]
        element = forwarded_element(self.client_ip, host, self.scheme_b.decode()).encode(
            "latin-1", "replace")
        self._fwd_cache = (host, element)
        return element

    def _close(self, linger: bool) -> None:
        """Close after what is written; `linger` reads and drops what the client still
        sends for a while, so the error response is not destroyed by a TCP reset."""
        if self.closed or self.write_closed:
            return
        self.send_pending()
        self.closing = True
        self.write_closed = True
        self.timer.cancel()
        transport = self.transport
        if linger and transport.can_write_eof():
            self.lingering = True
            try:
                transport.write_eof()
            except OSError:
                transport.close()
                return
            self.paused = 0
            transport.resume_reading()
            self.loop.call_later(LINGER, self._abort)
            return
        transport.close()

    def _abort(self) -> None:
        if not self.closed:
            self.transport.close()

    def live(self, now: float) -> dict | None:
        """An upgraded connection (tunnel) for GET /connections; None for plain HTTP."""
        tunnel = self.tunnel
        return tunnel.live(now) if tunnel is not None else None

    def shutdown(self) -> None:
        """Server stopping: close now when idle, else after the current response."""
        self.closing = True
        if self.current is None and self.tunnel is None:
            self._close(linger=False)

    def abort(self) -> None:
        self.write_closed = True
        self.closing = True
        if not self.closed and self.transport is not None:
            self.transport.abort()
