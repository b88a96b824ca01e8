"""HTTP/2 from clients: one connection, many streams, each stream one request.

Theory of operation
-------------------
`H2Connection` (an asyncio Protocol) owns one client connection and an
`h2.connection.H2Connection` (python-hyper, sans-I/O) that turns bytes into
events and frames back into bytes. Before h2 sees a byte, `FrameGuard`
(proxy/http2/guard.py) counts the client's frames: over a cap (rapid reset,
CONTINUATION flood, SETTINGS or PING flood, a header block too large) the
connection gets GOAWAY ENHANCE_YOUR_CALM and closes, and a `connection`
event (kind h2) says which cap and how to raise it.

Each request stream becomes an `H2Exchange`: the HTTP/1.1 `Exchange` of
proxy.io.l7 (route, pick, connect, retries, timeouts, the 502/503/504
contract, one RequestEvent), with only the client-facing output replaced:
headers, DATA and END_STREAM frames instead of HTTP/1.1 bytes. The
exchange sees an `H2Stream` where it expects an L7Connection; the stream
answers for the client (address, TLS, scheme) and for flow control. So one
connection's requests are balanced one by one: with round robin, N streams
on one connection spread over N backends.

Flow control, both ways:
- request bodies: DATA is acknowledged (WINDOW_UPDATE) as soon as it is handed
  on, unless the exchange paused the stream (backend not connected yet and
  BUFFER_HIGH buffered, or the backend's socket full); then the client's
  window closes and it stops sending, on that stream only;
- responses: DATA goes out as the client's windows allow; what does not fit
  waits per stream, and past OUT_HIGH the backend connection's reading
  pauses until the client opens its window again.

Timeouts: a stream whose request body stalls for timeouts.request_body (while
its window is open: a paused stream is the proxy's doing) gets 408
body-timeout; the backend's timeouts apply per stream as for HTTP/1.1.

Stream limits: SETTINGS_MAX_CONCURRENT_STREAMS (http2.max_concurrent_streams)
and SETTINGS_MAX_HEADER_LIST_SIZE (limits.max_header_bytes), both enforced
by h2 itself; a stream over the first is refused alone (RST_STREAM
REFUSED_STREAM, RFC 9113 section 5.1.2, see `_ServerH2`) with a warning event
the first time on a connection, and more than http2.max_refused_streams per
period end the connection as the other floods do. Drain and shutdown send GOAWAY with the last stream id: the
streams already started finish, the client opens new ones on a new
connection. An idle connection (no stream for timeouts.client_idle) gets
GOAWAY and closes.
"""
from __future__ import annotations

import asyncio
import collections
import logging

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from hpack import NeverIndexedHeaderTuple

from proxy.errors import ERRORS
from proxy.events import ConnectionEvent, Warning as WarningEvent, with_lazy_fields
from proxy.http1 import chunked as framing
from proxy.http1.headers import CONNECTION_OPTIONS, forwarded_element
from proxy.http1.parse import RequestError, RequestHead, ResponseHead, split_target
from proxy.http1.responses import error_body
from proxy.http2.guard import FrameGuard
from proxy.http2.upstream import UpstreamH2Mixin
from proxy.io import Deadline
from proxy.io.l7 import Exchange

log = logging.getLogger("proxy.http2")

OUT_HIGH = 256 * 1024  # response bytes queued on a stream before the backend is paused
OUT_LOW = 64 * 1024
END = object()  # marker in Exchange.out: end the stream

# Headers that mean something only on one HTTP/1.1 connection: never sent in
# HTTP/2 (RFC 9113 8.2.2), plus the framing and id the proxy writes itself.
_RESPONSE_DROP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"content-length", b"upgrade", b"x-request-id",
})
_CONNECTION_SPECIFIC = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade",
})
# Response fields whose values (almost) never repeat, sent HPACK "never indexed"
# (RFC 7541 6.2.3): added to the dynamic table, each would only push out an entry
# that does repeat, and the encoder scans that table on every field it sends.
# set-cookie also carries session secrets, which RFC 7541 7.1.3 keeps out of it.
_NOT_INDEXED = frozenset({b"date", b"set-cookie"})


class ResponseHeaders:
    """A response head for the h2 client (in Exchange.out)."""

    __slots__ = ("headers",)

    def __init__(self, headers: list[tuple[bytes, bytes]]):
        self.headers = headers


class Trailers(ResponseHeaders):
    """Trailers (gRPC's grpc-status): a HEADERS frame that ends the stream."""

    __slots__ = ()


def response_headers(resp: ResponseHead, drop=_RESPONSE_DROP) -> list[tuple[bytes, bytes]]:
    """A backend's response headers as HTTP/2 fields: lower-case, hop-by-hop gone."""
    out = [(b":status", str(resp.status).encode("ascii"))]
    named = resp.connection_named
    strip = (named - CONNECTION_OPTIONS) if named else None
    for name, value in resp.headers:
        lname = name.lower()
        if lname in drop or (strip and lname in strip) or lname.startswith(b"proxy-"):
            continue
        out.append(NeverIndexedHeaderTuple(lname, value) if lname in _NOT_INDEXED
                   else (lname, value))
    return out


def request_head(headers: list[tuple[bytes, bytes]], end_stream: bool,
                 max_body_bytes: int) -> RequestHead:
    """An HTTP/2 request's fields -> the RequestHead the exchange routes on.

    Raises RequestError when it cannot be proxied (no :path, CONNECT, a body
    announced over the limit)."""
    pseudo = {}
    regular: list[tuple[bytes, bytes]] = []
    cookies: list[str] = []
    for name, value in headers:
        if name.startswith(b":"):
            pseudo[name] = value
        elif name == b"cookie":
            cookies.append(value.decode("latin-1"))
        else:
            regular.append((name, value))
    method_b = pseudo.get(b":method", b"")
    if method_b == b"CONNECT":
        raise RequestError("bad-request", "CONNECT over HTTP/2 is not supported by the proxy")
    path_b = pseudo.get(b":path")
    if not method_b or not path_b:
        raise RequestError("bad-request", "an HTTP/2 request needs :method and :path")
    if cookies:
        # HTTP/2 may split Cookie into many fields; HTTP/1.1 wants one (RFC 9113 8.2.3).
        regular.append((b"cookie", "; ".join(cookies).encode("latin-1")))
    target, path, query, _authority = split_target(path_b)
    head = RequestHead(method_b.decode("ascii", "replace"), target, "2", regular)
    head.path = path
    head.query = query
    head.keep_alive = True
    head.cookies = cookies
    authority = pseudo.get(b":authority")
    for name, value in regular:
        if name == b"host" and authority is None:
            authority = value
        elif name == b"content-length":
            try:
                head.content_length = int(value)
            except ValueError:
                raise RequestError("bad-request", f"content-length {value[:40]!r} is not a "
                                   "number") from None
        elif name == b"x-request-id":
            head.request_id = value
    if authority is not None:
        head.host = authority.decode("latin-1")
    if head.content_length is not None and head.content_length > max_body_bytes:
        raise RequestError("body-too-large", f"content-length {head.content_length} is over "
                           f"{max_body_bytes} bytes (limits.max_body_bytes)")
    if end_stream:
        head.content_length = None
    elif head.content_length is None:
        head.chunked = True  # a body of unknown length: chunked towards HTTP/1.1 backends
    return head


# ====================================================================== exchange

class H2Exchange(UpstreamH2Mixin, Exchange):
    """One stream's request: the HTTP/1.1 pipeline with HTTP/2 output."""

    __slots__ = ()

    # Exchange writes HTTP/1.1 bytes into self.out; here out holds
    # ResponseHeaders, body bytes, Trailers and END, sent by flush().

    def _event(self, now, termination, error, proxy_error):
        # The page labels a stream's request as HTTP/2 with its stream id (given to
        # the lazy builder: the event is still built only if someone reads it).
        event = super()._event(now, termination, error, proxy_error)
        return with_lazy_fields(event, protocol="h2", stream_id=self.conn.stream_id)

    def on_response_interim(self, resp: ResponseHead) -> None:
        return  # 1xx are not relayed over HTTP/2 (h2 sends informational heads rarely)

    def _response_head(self, resp: ResponseHead, how):
        self.down_chunked = False  # HTTP/2 frames the body itself
        headers = response_headers(resp)
        choice = self.choice
        if choice is not None and choice.set_cookie:
            headers.append(NeverIndexedHeaderTuple(b"set-cookie",
                                                   choice.set_cookie.encode("latin-1")))
        # Unique per request: never indexed (see _NOT_INDEXED).
        headers.append(NeverIndexedHeaderTuple(b"x-request-id",
                                               self.request_id.encode("latin-1")))
        if how == framing.LENGTH or (how == framing.NONE and resp.content_length is not None
                                     and resp.status != 204):
            headers.append((b"content-length", b"%d" % resp.content_length))
        self.keep_alive = True
        return ResponseHeaders(headers)

    def on_response_trailers(self, trailers: list[tuple[bytes, bytes]]) -> None:
        self.out.append(Trailers([(n.lower(), v) for n, v in trailers
                                  if n.lower() not in _CONNECTION_SPECIFIC]))

    def on_response_complete(self) -> None:
        if not self.finished:
            self.out.append(END)
        super().on_response_complete()

    def flush(self) -> None:
        out = self.out
        if out:
            items = list(out)
            out.clear()
            self.conn.send(items)

    def _answer(self, status: int, headers, body: bytes) -> None:
        self.status = status
        head_only = self.head.method == "HEAD"
        fields = [(b":status", str(status).encode("ascii"))]
        fields += [(n.lower(), v) for n, v in headers]
        fields.append((b"content-length", b"%d" % len(body)))
        self.out.append(ResponseHeaders(fields))
        if body and not head_only:
            self.out.append(body)
        self.out.append(END)
        self.head_sent = True
        self.bytes_out = 0 if head_only else len(body)
        self._finish("--")

    def _fail(self, code: str, message: str, **extra) -> None:
        if self.finished:
            return
        err = ERRORS[code]
        self._detach_upstream(close=True)
        if self.head_sent:
            self._finish(err.termination, message, proxy_error=True)
            return
        self.status = err.status
        body = error_body(err, message, self.request_id, **extra)
        fields = [(b":status", str(err.status).encode("ascii")),
                  (b"content-type", b"application/json"),
                  (b"x-lblab-error", err.code.encode("ascii")),
                  (b"x-request-id", self.request_id.encode("latin-1")),
                  (b"content-length", b"%d" % len(body))]
        self.out.append(ResponseHeaders(fields))
        if self.head.method != "HEAD":
            self.out.append(body)
        self.out.append(END)
        self.head_sent = True
        self._finish(err.termination, message, proxy_error=True)


# ====================================================================== stream

class H2Stream:
    """What an exchange sees as its client connection: one stream of an H2Connection."""

    __slots__ = ("h2conn", "stream_id", "exchange", "paused", "unacked", "pending",
                 "pending_bytes", "end_pending", "ended", "out_paused", "closing",
                 "body_deadline")

    def __init__(self, h2conn: "H2Connection", stream_id: int):
        self.h2conn = h2conn
        self.stream_id = stream_id
        self.exchange: H2Exchange | None = None
        self.paused = 0  # why request DATA is not acknowledged (l7's PAUSE_* bits)
        self.unacked = 0  # flow-controlled bytes received and not yet acknowledged
        self.pending: collections.deque = collections.deque()  # response bytes waiting
        self.pending_bytes = 0
        self.end_pending: object = None  # END or Trailers, once everything is sent
        self.ended = False  # END_STREAM sent (or the stream was reset)
        self.out_paused = False
        self.closing = False
        # timeouts.request_body while the request body streams (None: no body expected).
        self.body_deadline: Deadline | None = None

    # The client, as an L7Connection would describe it.
    @property
    def server(self):
        return self.h2conn.server

    @property
    def bound(self):
        return self.h2conn.bound

    # The routes the connection was last served with (see l7.Exchange._route): a
    # listener flipped away from HTTP finishes what it accepted under them.
    @property
    def router(self):
        return self.h2conn.router

    @router.setter
    def router(self, value):
        self.h2conn.router = value

    @property
    def client_ip(self):
        return self.h2conn.client_ip

    @property
    def client_ip_b(self):
        return self.h2conn.client_ip_b

    @property
    def client(self):
        return self.h2conn.client

    @property
    def scheme_b(self):
        return self.h2conn.scheme_b

    @property
    def tls(self):
        return self.h2conn.tls

    @property
    def proxied(self):
        return self.h2conn.proxied

    @property
    def client_cert_headers(self):
        return self.h2conn.client_cert_headers

    @property
    def closed(self) -> bool:
        return self.h2conn.closed

    @property
    def write_paused(self) -> bool:
        return self.h2conn.write_paused or self.out_paused

    def forwarded_element(self, host):
        return self.h2conn.forwarded_element(host)

    def pause(self, reason: int) -> None:
        self.paused |= reason
        if self.body_deadline is not None:
            self.body_deadline.clear()  # we are slow (its window is closed), not the client

    def resume(self, reason: int) -> None:
        if not self.paused & reason:
            return
        self.paused &= ~reason
        if not self.paused:
            self.h2conn.acknowledge(self)
            self.body_wait()

    def body_wait(self) -> None:
        """(Re)start the request_body clock: the client owes the next DATA frame."""
        deadline = self.body_deadline
        if deadline is not None and not self.paused:
            deadline.after(self.h2conn.bound.config.timeouts.request_body)

    def body_done(self) -> None:
        if self.body_deadline is not None:
            self.body_deadline.cancel()
            self.body_deadline = None

    def _body_timeout(self) -> None:
        ex = self.exchange
        if ex is None or ex.finished or ex.request_done:
            return
        seconds = self.h2conn.bound.config.timeouts.request_body
        ex.on_client_error(RequestError(
            "body-timeout", f"no request body byte for {seconds:g}s on HTTP/2 stream "
            f"{self.stream_id} (timeouts.request_body)"))

    def send(self, items: list) -> None:
        self.h2conn.send(self, items)

    def write(self, data: bytes) -> None:  # nothing in the h2 path writes raw bytes
        raise RuntimeError("H2Stream.write: raw HTTP/1.1 bytes on an HTTP/2 stream")

    def exchange_done(self, ex: Exchange, keep_alive: bool) -> None:
        self.h2conn.stream_done(self)

    def take_upgrade_tail(self):
        return None


# ====================================================================== connection

class RefusedStream:
    """Not one of h2's events: a stream the client opened over our
    SETTINGS_MAX_CONCURRENT_STREAMS, already answered RST_STREAM REFUSED_STREAM."""

    __slots__ = ("stream_id", "open", "limit")

    def __init__(self, stream_id: int, open_streams: int, limit: int):
        self.stream_id = stream_id
        self.open = open_streams
        self.limit = limit


class _ServerH2(h2.connection.H2Connection):
    """h2's connection, with RFC 9113 section 5.1.2 for a stream over the limit.

    h2 raises TooManyStreamsError, a connection error, for the HEADERS that
    opens one stream too many; the RFC makes it a stream error (REFUSED_STREAM
    or PROTOCOL_ERROR), so the client's other streams go on. The header block
    is still decoded, as h2 would (HPACK state belongs to the connection:
    skipping one block would garble every later one), the stream is opened and
    reset at once, and the caller gets a `RefusedStream` in place of the
    request. Later frames on it are frames on a stream we reset, which h2
    already ignores (giving DATA's window back). `_receive_headers_frame` is
    h2's own (private) step, pinned with h2 in requirements.lock; the
    frame-level tests (tests/proxy/http2/test_stream_limit.py) say if it moves.
    """

    _admit = False  # True while the refused stream's HEADERS is processed

    @property
    def open_inbound_streams(self) -> int:
        return 0 if self._admit else super().open_inbound_streams

    def _receive_headers_frame(self, frame):
        try:
            return super()._receive_headers_frame(frame)
        except h2.exceptions.TooManyStreamsError:
            pass
        open_now = super().open_inbound_streams
        limit = self.local_settings.max_concurrent_streams
        self._admit = True
        try:
            frames, _events = super()._receive_headers_frame(frame)
        finally:
            self._admit = False
        self.reset_stream(frame.stream_id, ErrorCodes.REFUSED_STREAM)
        return frames, [RefusedStream(frame.stream_id, open_now, limit)]


class H2Connection(asyncio.Protocol):
    """One HTTP/2 client connection (cleartext prior knowledge, or h2 by ALPN)."""

    kind = "h2"  # GET /state connection counts

    def __init__(self, server, bound):
        self.server = server
        self.bound = bound
        self.loop = server.loop
        self.transport = None
        self.h2: h2.connection.H2Connection | None = None
        self.guard: FrameGuard | None = None
        self.streams: dict[int, H2Stream] = {}
        self.closed = False
        self.closing = False
        self.cut = False  # GOAWAY with an error sent: read nothing more
        self.refused = 0  # streams refused over max_concurrent_streams
        self.write_paused = False
        self.client_ip = "?"
        self.client_ip_b = b"?"
        self.client = "?"
        self.scheme_b = b"http"
        self.tls: dict | None = None
        self.client_cert_headers: bytes | None = None
        self.timer = Deadline(self.loop, self._on_idle)
        self.opened = 0.0
        self.stream_count = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.error: str | None = None
        self.closed_by = ""
        self.connection_id = ""
        self._fwd_cache = None
        self._write_queued = False
        self.router = server.routers.get(bound.name)
        # A PROXY header accepted on this connection (proxy/io/accept.py), as on HTTP/1.1:
        # the request events' client_address carries it.
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
        settings = config.http2
        tls = self.tls
        if tls is not None and "client_cert" in tls:
            subject = tls["client_cert"]
            self.client_cert_headers = (
                b"X-Client-Verify: " + (b"SUCCESS" if subject else b"NONE") + b"\r\n"
                + (b"X-Client-Cert-Subject: " + subject.encode("latin-1", "replace") + b"\r\n"
                   if subject else b""))
        self.connection_id = self.server.request_ids.next()
        self.opened = self.server.clock()
        self.server.connections.add(self)
        self.bound.active += 1
        self.guard = FrameGuard(
            max_resets=settings.max_resets, max_control_frames=settings.max_control_frames,
            period=settings.period, max_header_block=config.limits.max_header_bytes,
            max_continuations=settings.max_continuation_frames, clock=self.loop.time,
            max_refused=settings.max_refused_streams)
        self.h2 = _ServerH2(h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=True,
            normalize_inbound_headers=True))
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: settings.max_concurrent_streams,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: settings.initial_window,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: config.limits.max_header_bytes,
        })
        # In force at once, not only once the client acknowledges our SETTINGS: a
        # client may send its first (HPACK-bomb) headers before that.
        self.h2.decoder.max_header_list_size = config.limits.max_header_bytes
        self.h2.initiate_connection()
        self._write()
        if self.bound.active > config.limits.max_connections:
            log.warning("listener %s: over limits.max_connections (%d); closing %s",
                        self.bound.name, config.limits.max_connections, self.client)
            self._goaway(ErrorCodes.REFUSED_STREAM, "over limits.max_connections")
            return
        self.timer.after(config.timeouts.client_idle)

    def data_received(self, data: bytes) -> None:
        if self.closed or self.h2 is None:
            return
        self.bytes_in += len(data)
        breach = self.guard.feed(data)
        if breach is not None:
            self._goaway(ErrorCodes.ENHANCE_YOUR_CALM, breach.message, kind=breach.kind)
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            code = getattr(exc, "error_code", None) or ErrorCodes.PROTOCOL_ERROR
            what = ("header list over limits.max_header_bytes"
                    if isinstance(exc, h2.exceptions.DenialOfServiceError)
                    else f"HTTP/2 protocol error: {exc}")
            self._goaway(code, what)
            return
        for event in events:
            try:
                self._event(event)
            except Exception:  # a bug: this connection ends, the proxy goes on
                log.exception("internal error on HTTP/2 connection from %s", self.client)
                self._goaway(ErrorCodes.INTERNAL_ERROR, "internal proxy error")
                return
            if self.cut:
                return  # GOAWAY sent (a flood): the rest of this read is not served
        self._write()

    def connection_lost(self, exc) -> None:
        if self.closed:
            return
        self.closed = True
        self.timer.close()  # no cycle through its callback (see Deadline.close)
        self.server.connections.discard(self)
        self.bound.active -= 1
        if not self.closed_by:
            self.closed_by = "client"
        for stream in list(self.streams.values()):
            ex = stream.exchange
            if ex is not None and not ex.finished:
                ex.on_client_lost()
        self.streams.clear()
        self._publish()

    def pause_writing(self) -> None:
        self.write_paused = True
        for stream in self.streams.values():
            _pause_upstream(stream.exchange)

    def resume_writing(self) -> None:
        self.write_paused = False
        for stream in list(self.streams.values()):
            if not stream.out_paused:
                _resume_upstream(stream.exchange)

    # ------------------------------------------------------------ h2 events

    def _event(self, event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._request(event)
        elif isinstance(event, RefusedStream):
            self._refused(event)
        elif isinstance(event, h2.events.DataReceived):
            self._data(event)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.body_done()
                if stream.exchange is not None:
                    stream.exchange.on_client_complete()
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.ended = True
                ex = stream.exchange
                if ex is not None and not ex.finished:
                    ex.on_client_lost()
        elif isinstance(event, h2.events.WindowUpdated):
            if event.stream_id:
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    self._pump(stream)
            else:
                for stream in list(self.streams.values()):
                    self._pump(stream)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            for stream in list(self.streams.values()):
                self._pump(stream)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.closing = True
            self.closed_by = "client"
            if not self.streams:
                self._close()

    def _request(self, event) -> None:
        stream_id = event.stream_id
        limits = self.bound.config.limits
        stream = H2Stream(self, stream_id)
        self.streams[stream_id] = stream
        self.stream_count += 1
        self.timer.clear()
        end_stream = event.stream_ended is not None
        t0 = self.server.clock()
        try:
            head = request_head(event.headers, end_stream, limits.max_body_bytes)
        except RequestError as err:
            head = RequestHead("?", b"/", "2", [])
            for name, value in event.headers:
                if name == b":method":
                    head.method = value.decode("ascii", "replace")
                elif name == b":path":
                    head.target = value[:2048]
            ex = H2Exchange(stream, head, t0)
            stream.exchange = ex
            ex.request_done = True
            ex._fail(err.code, err.message)
            return
        ex = H2Exchange(stream, head, t0)
        stream.exchange = ex
        if self.closing:
            # Opened after our GOAWAY: refused, the client may retry it elsewhere.
            self.h2.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            stream.ended = True
            del self.streams[stream_id]
            return
        if not end_stream:
            stream.body_deadline = Deadline(self.loop, stream._body_timeout)
            stream.body_wait()
        ex.start()

    def _refused(self, event: RefusedStream) -> None:
        """A stream over the limit was refused (RST_STREAM sent); say why once per
        connection, and cut a client that keeps doing it."""
        self.refused += 1
        if self.refused == 1:
            try:
                self.server.bus.publish(WarningEvent(
                    source="http2", connection_id=self.connection_id, message=(
                        f"listener {self.bound.name}: client {self.client} opened stream "
                        f"{event.stream_id} with {event.open} open, over "
                        f"SETTINGS_MAX_CONCURRENT_STREAMS {event.limit} "
                        "(http2.max_concurrent_streams): refused with RST_STREAM "
                        "REFUSED_STREAM, the client may retry it (RFC 9113 section 5.1.2); "
                        "the connection's other streams go on")))
            except Exception:
                log.exception("publishing a refused-stream warning failed")
        breach = self.guard.refused_stream(event.limit)
        if breach is not None:
            self._goaway(ErrorCodes.ENHANCE_YOUR_CALM, breach.message, kind=breach.kind)

    def _data(self, event) -> None:
        stream = self.streams.get(event.stream_id)
        size = event.flow_controlled_length
        if stream is None or stream.exchange is None or stream.exchange.finished:
            # Nobody wants it any more: give the window back at once.
            self._ack(event.stream_id, size)
            return
        stream.unacked += size
        ex = stream.exchange
        if ex.bytes_in + len(event.data) > self.bound.config.limits.max_body_bytes:
            ex.on_client_error(RequestError(
                "body-too-large", f"request body over {self.bound.config.limits.max_body_bytes} "
                "bytes (limits.max_body_bytes)"))
            return
        ex.on_client_body(event.data)
        if not stream.paused:
            self.acknowledge(stream)
            stream.body_wait()

    def _ack(self, stream_id: int, size: int) -> None:
        if size <= 0 or self.closed:
            return
        try:
            self.h2.acknowledge_received_data(size, stream_id)
        except (h2.exceptions.StreamClosedError, KeyError):
            # The stream is gone; its bytes still count for the connection window.
            self.h2.increment_flow_control_window(size)
        except h2.exceptions.ProtocolError:
            return

    def acknowledge(self, stream: H2Stream) -> None:
        size, stream.unacked = stream.unacked, 0
        if size:
            self._ack(stream.stream_id, size)
            self._write()

    # ------------------------------------------------------------ responses

    def send(self, stream: H2Stream, items: list) -> None:
        """Queue what the exchange produced (headers, body, trailers, END) and send."""
        if self.closed or stream.ended:
            return
        h2c = self.h2
        for i, item in enumerate(items):
            if isinstance(item, Trailers):
                stream.end_pending = item
            elif isinstance(item, ResponseHeaders):
                # A head with nothing after it ends the stream in the same frame: that
                # is how gRPC's trailers-only responses (an error status) must look.
                alone = i + 1 < len(items) and items[i + 1] is END and not stream.pending
                try:
                    h2c.send_headers(stream.stream_id, item.headers, end_stream=alone)
                    if alone:
                        stream.ended = True
                        break
                except (h2.exceptions.ProtocolError, KeyError) as exc:
                    log.debug("stream %d: cannot send headers: %s", stream.stream_id, exc)
                    stream.ended = True
                    return
            elif item is END:
                if stream.end_pending is None:
                    stream.end_pending = END
            elif item:
                stream.pending.append(item)
                stream.pending_bytes += len(item)
        self._pump(stream)
        if stream.pending_bytes > OUT_HIGH and not stream.out_paused:
            stream.out_paused = True
            _pause_upstream(stream.exchange)
        self._write_soon()

    def _pump(self, stream: H2Stream) -> None:
        """Send as much queued body as the windows allow, then the end when all is out."""
        if stream.ended or self.closed:
            return
        h2c = self.h2
        sid = stream.stream_id
        pending = stream.pending
        try:
            while pending:
                window = min(h2c.local_flow_control_window(sid), h2c.max_outbound_frame_size)
                if window <= 0:
                    break
                piece = pending[0]
                if len(piece) > window:
                    pending[0] = piece[window:]
                    piece = piece[:window]
                else:
                    pending.popleft()
                stream.pending_bytes -= len(piece)
                self.bytes_out += len(piece)
                if not pending and stream.end_pending is END:
                    # The last piece carries the end: one DATA frame, not two.
                    h2c.send_data(sid, piece, end_stream=True)
                    stream.ended = True
                    break
                h2c.send_data(sid, piece)
            if not pending and stream.end_pending is not None and not stream.ended:
                end = stream.end_pending
                if isinstance(end, Trailers):
                    h2c.send_headers(sid, end.headers, end_stream=True)
                else:
                    h2c.end_stream(sid)
                stream.ended = True
        except (h2.exceptions.ProtocolError, KeyError) as exc:
            log.debug("stream %d: cannot send: %s", sid, exc)
            stream.ended = True
            return
        if stream.out_paused and stream.pending_bytes < OUT_LOW:
            stream.out_paused = False
            if not self.write_paused:
                _resume_upstream(stream.exchange)
        if stream.ended and stream.exchange is not None and stream.exchange.finished:
            self._forget(stream)

    def stream_done(self, stream: H2Stream) -> None:
        """The exchange finished (event published). A stream whose response did not end
        cleanly (cut, backend died mid-body) is reset, so the client knows."""
        stream.body_done()
        if self.closed:
            return
        if not stream.ended and stream.end_pending is None:
            ex = stream.exchange
            code = ErrorCodes.CANCEL if ex is not None and ex.head_sent else \
                ErrorCodes.INTERNAL_ERROR
            try:
                self.h2.reset_stream(stream.stream_id, code)
            except (h2.exceptions.ProtocolError, KeyError):
                pass  # already closed by the client: nothing to reset
            stream.ended = True
            self._write()
        # Ack what was buffered for a body nobody will read, so the window stays open.
        if stream.unacked:
            self.acknowledge(stream)
        if stream.ended:
            self._forget(stream)

    def _forget(self, stream: H2Stream) -> None:
        if self.streams.pop(stream.stream_id, None) is None:
            return
        # Its exchange is finished and the stream ended: nothing reaches either
        # again. The exchange holds the stream as its connection; letting go here
        # frees both by reference counting, not by the cyclic GC.
        stream.exchange = None
        if not self.streams:
            if self.closing:
                self._close()
            else:
                self.timer.after(self.bound.config.timeouts.client_idle)

    # ------------------------------------------------------------ writing / closing

    def _write(self) -> None:
        if self.closed or self.h2 is None:
            return
        self._write_queued = False
        data = self.h2.data_to_send()
        if data:
            self.transport.write(data)

    def _write_soon(self) -> None:
        """Write at the end of this loop iteration. Responses of many streams come from
        many backend connections' callbacks in one iteration: one write (one syscall)
        for all of them instead of one each. h2 keeps the frames in order meanwhile."""
        if not self._write_queued:
            self._write_queued = True
            self.loop.call_soon(self._write)

    def forwarded_element(self, host):
        cache = self._fwd_cache
        if cache is not None and cache[0] == host:
            return cache[1]
        element = forwarded_element(self.client_ip, host, self.scheme_b.decode()).encode(
            "latin-1", "replace")
        self._fwd_cache = (host, element)
        return element

    def _goaway(self, code, why: str, kind: str | None = None) -> None:
        """Connection error: GOAWAY with `code`, streams in flight end, close."""
        if self.closed:
            return
        self.error = f"{kind}: {why}" if kind else why
        self.cut = True
        self.closed_by = "proxy"
        try:
            self.h2.close_connection(error_code=code, additional_data=why.encode()[:200])
        except h2.exceptions.ProtocolError:
            pass  # h2 already closed the connection state: nothing more to say
        self._write()
        self.closing = True
        for stream in list(self.streams.values()):
            ex = stream.exchange
            stream.ended = True
            if ex is not None and not ex.finished:
                ex.cut(f"HTTP/2 connection closed: {why}")
        self._close()

    def _on_idle(self) -> None:
        if self.closed or self.streams:
            return
        self.closed_by = "proxy"
        self._graceful()

    def _graceful(self) -> None:
        """GOAWAY(NO_ERROR, last stream): finish the streams started, then close."""
        if self.closed:
            return
        if not self.closing:
            self.closing = True
            try:
                self.h2.close_connection(error_code=ErrorCodes.NO_ERROR,
                                         last_stream_id=self.h2.highest_inbound_stream_id)
            except h2.exceptions.ProtocolError:
                pass  # the connection state is closed already
            self._write()
        if not self.streams:
            self._close()

    def _close(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.close()

    def shutdown(self) -> None:
        """Server stopping or listener gone: GOAWAY, close once the streams are done."""
        if not self.closed_by:
            self.closed_by = "proxy"
        self._graceful()

    def abort(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.abort()

    def live(self, now: float) -> dict:
        """This connection and its streams for GET /connections."""
        return {
            "connection_id": self.connection_id, "kind": "h2", "listener": self.bound.name,
            "client": self.client, "pool": None, "backend": None, "phase": "streams",
            "age_s": round(now - self.opened, 3), "idle_s": None,
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
            "refused_streams": self.refused,  # over max_concurrent_streams so far
            "streams": [{"stream_id": s.stream_id,
                         "request_id": s.exchange.request_id if s.exchange else None,
                         "method": s.exchange.head.method if s.exchange else None,
                         "path": s.exchange.head.target_str if s.exchange else None,
                         "backend": (s.exchange.backend.name
                                     if s.exchange is not None and s.exchange.backend else None)}
                        for s in self.streams.values()],
        }

    def _publish(self) -> None:
        try:
            self.server.bus.publish(ConnectionEvent(
                connection_id=self.connection_id, listener=self.bound.name,
                client=self.client, kind="h2", bytes_in=self.bytes_in,
                bytes_out=self.bytes_out,
                duration_ms=round((self.server.clock() - self.opened) * 1000, 3),
                closed_by=self.closed_by or "client", error=self.error, tls=self.tls,
                streams=self.stream_count))
        except Exception:
            log.exception("publishing the event of HTTP/2 connection %s failed",
                          self.connection_id)


def _pause_upstream(ex) -> None:
    upstream = ex.upstream if ex is not None else None
    if upstream is not None and not upstream.closed:
        upstream.transport.pause_reading()


def _resume_upstream(ex) -> None:
    upstream = ex.upstream if ex is not None else None
    if upstream is not None and not upstream.closed:
        upstream.transport.resume_reading()


