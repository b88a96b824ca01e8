"""A small HTTP/1.1 server on raw asyncio transports, parsed with httptools.

Theory of operation
-------------------
One ``Connection`` (an ``asyncio.Protocol``) per TCP connection. Bytes go into an
``httptools.HttpRequestParser``, whose callbacks build ``Request`` objects. Requests wait in
``pipeline`` in arrival order and are answered strictly in that order (HTTP/1.1 pipelining):
the head of the pipeline is handed to the application with ``app.dispatch(request)``, which
either answers at once (returns None; the fast path, no task) or returns a coroutine the
connection runs as its one task. The next request starts only when the previous one has been
answered.

A request with a body is dispatched as soon as its headers are complete; the body streams
into ``request.body`` (a ``Body``) chunk by chunk while the handler reads it, with
back-pressure (reading from the socket pauses while too much is buffered). A request without
a body is dispatched when its message is complete. If a handler answers before the body has
fully arrived, the rest is read and discarded so the connection stays usable, except when
the client is waiting for ``100 Continue`` that was never sent: then the connection closes.
``100 Continue`` is sent the first time a handler waits for body bytes.

Keep-alive follows the parser (HTTP/1.1 persistent unless ``Connection: close``; HTTP/1.0
only with ``Connection: keep-alive``); an idle keep-alive connection is closed after
``keepalive_timeout`` seconds.

Faults need transport control that frameworks hide, so the connection offers, besides
``send``: ``reset`` (SO_LINGER 0 then abort: the peer sees a TCP RST), ``crash`` (headers
and half the body, then close), and ``hang`` (never answer, ignore further input, keep the
socket open until the peer leaves). When the peer leaves, bodies being read raise
``ClientGone`` and the running handler task is cancelled.

With ``--tls`` the transport is asyncio's TLS transport (``connection_made`` runs after the
handshake); with ``--proxy-protocol`` the header was consumed by ``listen.py`` before this
protocol existed and arrives as ``proxy_header``. Either way ``_describe_extras`` computes,
once per connection, what the echo adds (``tls``, ``peer``, ``proxy_protocol``) and
replaces ``peer`` by the header's source address; a plain connection skips all of it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
import struct
import time
from collections import deque
from http import HTTPStatus
from typing import Any, Coroutine, Protocol as TypingProtocol

import httptools

log = logging.getLogger("labs.backend")

HIGH_WATER = 256 * 1024   # buffered body bytes at which reading from the socket pauses
LOW_WATER = 64 * 1024     # ... and resumes

_STATUS_LINES: dict[int, bytes] = {}


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Status"
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {reason}\r\n".encode("latin-1")
    return line


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_date_cache: list[Any] = [0, b""]


def date_header() -> bytes:
    """The Date header line, formatted at most once per second."""
    now = int(time.time())
    if now != _date_cache[0]:
        t = time.gmtime(now)
        value = (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
                 f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT")
        _date_cache[0] = now
        _date_cache[1] = b"Date: " + value.encode() + b"\r\n"
    return _date_cache[1]


class ClientGone(Exception):
    """The client closed the connection before the request body was complete."""


class BodyTooLarge(Exception):
    pass


class App(TypingProtocol):
    static_headers: bytes

    def dispatch(self, request: "Request") -> Coroutine[Any, Any, None] | None: ...
    def connection_opened(self, conn: "Connection") -> None: ...
    def connection_closed(self, conn: "Connection") -> None: ...


class Body:
    """A request body arriving in chunks; read it with ``async for chunk in body``."""

    __slots__ = ("_conn", "_chunks", "_buffered", "_waiter", "complete", "received",
                 "gone", "_discard", "expect_continue", "continue_sent", "chunked")

    def __init__(self, conn: "Connection", expect_continue: bool, chunked: bool):
        self._conn = conn
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future | None = None
        self.complete = False
        self.received = 0         # bytes that arrived, read or not
        self.gone = False
        self._discard = False
        self.expect_continue = expect_continue
        self.continue_sent = False
        self.chunked = chunked

    # -- fed by the connection ------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self._discard:
            return
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > HIGH_WATER:
            self._conn.pause_reading()
        self._wake()

    def finish(self) -> None:
        self.complete = True
        self._wake()

    def abort(self) -> None:
        self.gone = True
        self._wake()

    def discard_rest(self) -> None:
        """The response has been sent: drop what is buffered and what still arrives."""
        self._discard = True
        self._chunks.clear()
        self._buffered = 0
        self._conn.resume_reading()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- read by handlers -----------------------------------------------------------------

    async def chunk(self) -> bytes | None:
        """Next chunk, or None at the end of the body. Raises ClientGone."""
        while True:
            if self._chunks:
                data = self._chunks.popleft()
                self._buffered -= len(data)
                if self._buffered <= LOW_WATER:
                    self._conn.resume_reading()
                return data
            if self.complete:
                return None
            if self.gone:
                raise ClientGone("client closed the connection mid-body")
            if self.expect_continue and not self.continue_sent:
                self.continue_sent = True
                self._conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    def __aiter__(self):
        return self._iterate()

    async def _iterate(self):
        while (data := await self.chunk()) is not None:
            yield data

    async def read(self, limit: int) -> bytes:
        """The whole body, refusing more than ``limit`` bytes (BodyTooLarge)."""
        parts = []
        size = 0
        while (data := await self.chunk()) is not None:
            size += len(data)
            if size > limit:
                raise BodyTooLarge(f"body larger than {limit} bytes")
            parts.append(data)
        return b"".join(parts)

    async def drain(self) -> int:
        """Read and drop the body; return its size."""
        if self.complete and not self._chunks:
            return self.received
        while await self.chunk() is not None:
            pass
        return self.received


class Request:
    __slots__ = ("conn", "method", "path", "query", "version", "headers", "raw_headers",
                 "keep_alive", "body", "has_body", "started", "done", "number", "kind",
                 "websocket_key")

    def __init__(self, conn, method, path, query, version, headers, raw_headers, keep_alive,
                 body, has_body, number):
        self.conn: Connection = conn
        self.method: str = method
        self.path: str = path
        self.query: str = query
        self.version: str = version
        self.headers: dict[str, str] = headers          # lower-case names, duplicates joined
        self.raw_headers: list[tuple[str, str]] = raw_headers  # as received
        self.keep_alive: bool = keep_alive
        self.body: Body = body
        self.has_body: bool = has_body
        self.started = False
        self.done = False
        self.number: int = number    # 1 for the first request on its connection
        self.kind = ""               # set by the app (for its statistics)
        self.websocket_key: str | None = None  # a WebSocket handshake's Sec-WebSocket-Key


_conn_ids = itertools.count(1)


class Connection(asyncio.Protocol):
    # Set per connection only with --tls / --proxy-protocol (see _describe_extras); the
    # plain path keeps these class defaults and pays nothing for them.
    echo_extra: dict[str, Any] | None = None
    proxy_header = None
    tls = False
    websocket = None            # a WebSocketSession once GET /ws was upgraded
    _ws_tail: bytes | None = None  # bytes after a /ws handshake, kept for the WebSocket

    def __init__(self, app: App, keepalive_timeout: float | None, proxy_header=None,
                 tls: bool = False):
        if proxy_header is not None:
            self.proxy_header = proxy_header
        if tls:
            self.tls = True
        self.app = app
        self.keepalive_timeout = keepalive_timeout
        self.loop = asyncio.get_running_loop()
        self.id = next(_conn_ids)
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.parser = httptools.HttpRequestParser(self)
        self.pipeline: deque[Request] = deque()
        self.receiving: Request | None = None
        self.task: asyncio.Task | None = None
        self.requests = 0
        self.closing = False        # no more responses will be sent
        self.closed = False         # connection_lost has happened
        self.ignore_input = False   # hung, or after a parse error / upgrade
        self.hung = False
        self._paused = False
        self._pumping = False
        self._idle: asyncio.TimerHandle | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            host, port = peer[0], peer[1]
            self.peer = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        else:
            self.peer = str(peer)
        if self.proxy_header is not None or self.tls:
            self._describe_extras(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass  # not TCP (unix socket): nothing to tune
        self.app.connection_opened(self)
        self._arm_idle()

    def _describe_extras(self, transport) -> None:
        """What --tls / --proxy-protocol add to the echo, computed once per connection."""
        extra: dict[str, Any] = {}
        if self.tls:
            from .tls import connection_info
            extra["tls"] = connection_info(transport.get_extra_info("ssl_object"))
        header = self.proxy_header
        if header is not None:
            # The socket peer is the proxy; the client is who the header says (unless the
            # header is LOCAL / UNKNOWN: then the real endpoints are the truth).
            extra["peer"] = self.peer
            extra["proxy_protocol"] = header.describe()
            if header.source is not None:
                from .proxy_protocol import format_address
                self.peer = format_address(header.source)
        self.echo_extra = extra

    def data_received(self, data):
        if self.websocket is not None:
            self.websocket.feed(data)
            return
        if self._ws_tail is not None:
            self._ws_tail += data  # frames sent before our 101: the WebSocket's, later
            return
        if self.ignore_input or self.closing:
            return
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if self.pipeline and self.pipeline[-1].websocket_key is not None:
                # A /ws handshake: the app answers it (101, or an error and a close).
                self._ws_tail = data[upgrade.args[0]:]
                return
            # Other upgrades: we do not switch protocols; the request that asked is
            # answered as plain HTTP and the connection closes after it.
            self.ignore_input = True
            for req in self.pipeline:
                req.keep_alive = False
            if not self.pipeline:  # already answered (fast path): nothing left to say
                self.closing = True
                self.transport.close()
        except httptools.HttpParserError as exc:
            self._bad_request(str(exc))

    def accept_websocket(self, req: Request) -> None:
        """Answer the /ws handshake ``req`` with 101; from now on the bytes are frames."""
        from .websocket import WebSocketSession, handshake_response

        req.done = True
        if self.closing:
            return
        if self.pipeline and self.pipeline[0] is req:
            self.pipeline.popleft()
        self.transport.write(handshake_response(req.websocket_key))
        self.websocket = WebSocketSession(self.transport, getattr(self.app, "name", "backend"))
        tail, self._ws_tail = self._ws_tail, None
        if tail:
            self.websocket.feed(tail)

    def connection_lost(self, exc):
        self.closed = True
        if self.websocket is not None:
            self.websocket.closed = True
        self.closing = True
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self.receiving is not None:
            self.receiving.body.abort()
        for req in self.pipeline:
            req.body.abort()
        if self.task is not None:
            self.task.cancel()
        self.app.connection_closed(self)

    # -- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self):
        self._url = b""
        self._headers = []

    def on_url(self, url: bytes):
        self._url += url

    def on_header(self, name: bytes, value: bytes):
        self._headers.append((name, value))

    def on_headers_complete(self):
        if self.closing:
            return
        parser = self.parser
        url = self._url
        if url[:1] == b"/":
            path, _, query = url.partition(b"?")
        else:  # absolute-form (as sent to a forward proxy), or "*"
            try:
                parsed = httptools.parse_url(url)
                path, query = parsed.path or b"/", parsed.query or b""
            except httptools.HttpParserInvalidURLError:
                path, query = url, b""
        raw = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in self._headers]
        headers: dict[str, str] = {}
        for name, value in raw:
            key = name.lower()
            if key in headers:
                headers[key] += ("; " if key == "cookie" else ", ") + value
            else:
                headers[key] = value
        version = parser.get_http_version()
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length = headers.get("content-length")
        has_body = chunked or (length is not None and length.strip() not in ("", "0"))
        expect = version == "1.1" and headers.get("expect", "").lower() == "100-continue"
        websocket_key = None
        if "upgrade" in headers:
            from .websocket import is_websocket_upgrade
            if is_websocket_upgrade(parser.get_method(), path, headers):
                websocket_key = headers["sec-websocket-key"]
        self.requests += 1
        req = Request(self, parser.get_method().decode("latin-1"), path.decode("latin-1"),
                      query.decode("latin-1"), version, headers, raw, parser.should_keep_alive(),
                      Body(self, expect and has_body, chunked), has_body, self.requests)
        if websocket_key is not None:
            # The app answers it like any request (faults included): accept_websocket
            # (101), or an error after which the connection closes.
            req.websocket_key, req.keep_alive = websocket_key, False
        self.receiving = req
        self.pipeline.append(req)
        if has_body:
            self._pump()

    def on_body(self, body: bytes):
        req = self.receiving
        if req is not None:
            req.body.feed(body)

    def on_message_complete(self):
        req = self.receiving
        if req is None:
            return
        self.receiving = None
        req.body.finish()
        self._pump()

    # -- running requests ----------------------------------------------------------------

    def _pump(self) -> None:
        """Dispatch the head of the pipeline if it is ready and nothing else is running."""
        if self._pumping:
            return
        self._pumping = True
        try:
            while self.pipeline and self.task is None and not self.closing:
                req = self.pipeline[0]
                if req.started or not (req.has_body or req.body.complete):
                    break
                req.started = True
                coro = self.app.dispatch(req)
                if coro is not None:
                    self.task = self.loop.create_task(self._run(req, coro))
                    break
        finally:
            self._pumping = False

    async def _run(self, req: Request, coro) -> None:
        try:
            await coro
        except (asyncio.CancelledError, ClientGone):
            pass  # the connection went away; nobody is left to answer
        except Exception:
            log.exception("unhandled error answering %s %s", req.method, req.path)
            if not req.done and not self.closing:
                self.send(req, 500, b'{"error": "internal error in the toy backend"}')
        finally:
            self.task = None
        if not self.closing:
            self._pump()

    def _finished(self, req: Request, keep_alive: bool) -> None:
        if self.pipeline and self.pipeline[0] is req:
            self.pipeline.popleft()
        if not keep_alive:
            self.closing = True
            self.transport.close()
            return
        if self.pipeline:
            self._pump()
        else:
            self._arm_idle()

    def _arm_idle(self) -> None:
        if self.keepalive_timeout and not self.closing and not self.hung:
            self._idle = self.loop.call_later(self.keepalive_timeout, self._idle_timeout)

    def _idle_timeout(self) -> None:
        self._idle = None
        if not self.pipeline and not self.closing:
            self.closing = True
            self.transport.close()

    # -- answering -----------------------------------------------------------------------

    def _keep_alive_after(self, req: Request) -> bool:
        keep = req.keep_alive and not self.closing
        body = req.body
        if not body.complete and not body.gone:
            if body.expect_continue and not body.continue_sent:
                keep = False  # the client holds its body back, waiting for 100 Continue
            else:
                body.discard_rest()
        return keep

    def _head(self, req: Request, status: int, length: int, extra: bytes, content_type: bytes,
              keep: bool) -> bytes:
        conn_line = b""
        if not keep:
            conn_line = b"Connection: close\r\n"
        elif req.version == "1.0":
            conn_line = b"Connection: keep-alive\r\n"
        return b"".join((
            status_line(status), self.app.static_headers, date_header(),
            b"Content-Type: ", content_type, b"\r\nContent-Length: ", str(length).encode(),
            b"\r\n", conn_line, extra, b"\r\n",
        ))

    def send(self, req: Request, status: int, body: bytes, extra: bytes = b"",
             content_type: bytes = b"application/json") -> None:
        """Answer ``req``; ``extra`` is pre-encoded header lines, each ending in CRLF."""
        if req.done:
            raise RuntimeError(f"request {req.method} {req.path} answered twice")
        req.done = True
        if self.closing:
            return
        keep = self._keep_alive_after(req)
        head = self._head(req, status, len(body), extra, content_type, keep)
        self.transport.write(head if req.method == "HEAD" else head + body)
        self._finished(req, keep)

    def crash(self, req: Request, status: int, body: bytes, extra: bytes = b"",
              content_type: bytes = b"application/json") -> None:
        """Promise the whole body (Content-Length), send only half of it, then close."""
        req.done = True
        if self.closing:
            return
        head = self._head(req, status, len(body), extra, content_type, True)
        self.transport.write(head + body[: len(body) // 2])
        self.closing = True
        self.transport.close()  # FIN after the partial body: the client sees a short read

    def reset(self, req: Request) -> None:
        """Close with a TCP RST (SO_LINGER on, timeout 0) without answering."""
        req.done = True
        if self.closing:
            return
        self.closing = True
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def hang(self, req: Request) -> None:
        """Never answer: ignore further input and keep the socket open until the peer leaves."""
        self.hung = True
        self.ignore_input = True
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def write(self, data: bytes) -> None:
        if not self.closing:
            self.transport.write(data)

    def pause_reading(self) -> None:
        if not self._paused and not self.closing:
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused and not self.closing:
            self._paused = False
            self.transport.resume_reading()

    def _bad_request(self, reason: str) -> None:
        self.ignore_input = True
        if self.receiving is not None:
            # The stream broke inside a request: nothing more can be answered sensibly.
            self.closing = True
            self.transport.close()
            return
        if any(not r.done for r in self.pipeline):
            # Answer what was parsed, then close: the stream after it is garbage.
            for req in self.pipeline:
                req.keep_alive = False
            return
        msg = json.dumps({"error": f"malformed HTTP request: {reason}"}).encode()
        self.transport.write(b"".join((
            status_line(400), self.app.static_headers, date_header(),
            b"Content-Type: application/json\r\nContent-Length: ", str(len(msg)).encode(),
            b"\r\nConnection: close\r\n\r\n", msg,
        )))
        self.closing = True
        self.transport.close()


async def serve(app: App, host: str, port: int, keepalive_timeout: float | None = 60.0,
                backlog: int = 1024, *, ssl=None, proxy_protocol: bool = False,
                on_refused=None):
    """Listen for HTTP/1.1 (over TLS with ``ssl``; after a PROXY header with ``proxy_protocol``).

    Returns an ``asyncio.Server`` or a ``listen.Listener``: both have ``sockets`` and ``close()``.
    """
    loop = asyncio.get_running_loop()
    if proxy_protocol:
        from .listen import listen
        tls = ssl is not None
        return await listen(lambda header: Connection(app, keepalive_timeout, header, tls),
                            host, port, ssl=ssl, on_refused=on_refused or _log_refused,
                            backlog=backlog)
    if ssl is not None:
        return await loop.create_server(lambda: Connection(app, keepalive_timeout, None, True),
                                        host, port, ssl=ssl, backlog=backlog, reuse_address=True)
    return await loop.create_server(lambda: Connection(app, keepalive_timeout), host, port,
                                    backlog=backlog, reuse_address=True)


def _log_refused(peer: str, reason: str) -> None:
    log.warning("refused a connection from %s: %s", peer, reason)
