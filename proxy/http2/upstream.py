"""HTTP/2 towards backends (pools with `protocol: h2`), as gRPC needs.

Theory of operation
-------------------
`H2Upstreams` keeps, per backend address, the open `H2Backend` connections:
cleartext HTTP/2 with prior knowledge ("h2c"), or, when the pool (or backend)
has `tls`, HTTP/2 over TLS: TCP, then `start_tls` offering only `h2` by ALPN
and verifying the backend as the HTTP/1.1 path does (proxy/tls.py ClientTLS);
a failed handshake, or a backend that does not choose h2, is 502
`backend-tls` with the reason. A request takes a connection
with a free stream (under the backend's SETTINGS_MAX_CONCURRENT_STREAMS) or
opens a new one, and gets an `H2BackendStream`: to the exchange it looks like
the HTTP/1.1 `UpstreamConnection` it normally holds (`deadline`, `closed`,
`close()`, `transport.pause_reading()`, `tls_info`), so the exchange's
callbacks (`on_response_head`, `on_response_body`, `on_response_complete`,
`on_upstream_lost`, `on_upstream_timeout`) need no HTTP/2 knowledge.

`UpstreamH2Mixin` is put in front of `proxy.io.l7.Exchange` (for HTTP/1.1
clients) and of `H2Exchange` (HTTP/2 clients): it replaces only the steps
that speak to the backend (connect, send head and body, release) when the
pool says `protocol: h2`, and leaves everything else (route, pick, retries,
the error contract, the event) to the Exchange.

Trailers: an HTTP/2 client gets the backend's trailers as trailers (gRPC's
grpc-status and grpc-message); the request event gets `grpc` = {status,
message} from them (or from a trailers-only response's head). HTTP/1.1
clients do not get trailers (the proxy does not write chunked trailers).

Idle connections (no stream) close after the pool's timeouts.backend_idle (a
sweep once a second while any is idle), and drain closes them at once
(`close_idle`, through `server.close_pooled`).

Flow control: response DATA is acknowledged to the backend as it is handed
to the client, except while the client is slow (the exchange pauses this
stream's `transport`): then the backend's window for this stream closes,
and other streams on the same connection go on. A GOAWAY from the backend
fails the streams it did not process (above its last stream id) as a
connection loss before any response byte, which the exchange may retry.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import socket

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes

from proxy.http1.headers import CONNECTION_OPTIONS
from proxy.http1.parse import ResponseHead
from proxy.io import Deadline
from proxy.events import Warning as WarningEvent
from proxy.io.l7 import Exchange
from proxy.io.upstream import TLSHandshakeError

log = logging.getLogger("proxy.http2.upstream")

SEND_HIGH = 256 * 1024  # request bytes queued for a backend window before the client pauses
WINDOW = 1024 * 1024  # our receive window per stream towards backends
PAUSE_UPSTREAM = 4  # proxy.io.l7's bit: the backend cannot take more now

# Request fields that are never forwarded (hop-by-hop or rewritten by the proxy).
_DROP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade",
    b"host", b"x-forwarded-proto", b"x-forwarded-host", b"x-request-id", b"content-length",
    b"x-client-verify", b"x-client-cert-subject", b"trailer",
})


def grpc_from(headers: list[tuple[bytes, bytes]]) -> dict | None:
    status = message = None
    for name, value in headers:
        if name == b"grpc-status":
            try:
                status = int(value)
            except ValueError:
                status = None
        elif name == b"grpc-message":
            message = value.decode("utf-8", "replace")
    if status is None:
        return None
    return {"status": status, "message": message}


class _Reader:
    """The bits of a ResponseReader the exchange looks at."""

    __slots__ = ("sink", "started")

    def __init__(self):
        self.sink = None
        self.started = False

    def expect(self, method: str) -> None:
        return None


class H2BackendStream:
    """One request to a backend over a shared HTTP/2 connection."""

    def __init__(self, conn: "H2Backend", exchange):
        self.conn = conn
        self.exchange = exchange
        self.tunnel = None
        self.stream_id = 0
        self.closed = False  # reset or done: nothing more goes either way
        self.complete = False  # END_STREAM received
        self.request_ended = False
        self.deadline = Deadline(conn.loop, self._on_deadline)
        self.reader = _Reader()
        self.tls_info = None
        self.transport = self  # pause_reading / resume_reading act on this stream only
        self.read_paused = False
        self.unacked = 0
        self.pending: collections.deque = collections.deque()
        self.pending_bytes = 0
        self.end_pending = False
        self.send_paused = False

    # -------------------------------------------------------------- flow control

    def pause_reading(self) -> None:
        self.read_paused = True

    def resume_reading(self) -> None:
        self.read_paused = False
        self.conn.acknowledge(self)

    # -------------------------------------------------------------- sending

    def send_data(self, data: bytes) -> None:
        if self.closed or not data:
            return
        self.pending.append(data)
        self.pending_bytes += len(data)
        self.conn.pump(self)
        if self.pending_bytes > SEND_HIGH and not self.send_paused and self.exchange:
            self.send_paused = True
            self.exchange.upstream_pause_writing()

    def end(self) -> None:
        if self.closed or self.request_ended:
            return
        self.end_pending = True
        self.conn.pump(self)

    def _on_deadline(self) -> None:
        if self.exchange is not None:
            self.exchange.on_upstream_timeout()

    def close(self) -> None:
        """Done with it: reset when the backend is still busy with it."""
        if self.closed:
            return
        self.closed = True
        self.deadline.cancel()
        self.conn.finish(self, reset=not (self.complete and self.request_ended))


class H2Backend(asyncio.Protocol):
    """One HTTP/2 connection to a backend, carrying many streams."""

    def __init__(self, pool: "H2Upstreams", key):
        self.pool = pool
        self.key = key
        self.loop = pool.loop
        self.transport = None
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_inbound_headers=False))
        self.streams: dict[int, H2BackendStream] = {}
        self.closed = False
        self.going_away = False
        self.idle_since = pool.loop.time()
        self.idle_limit = 30.0  # the pool's timeouts.backend_idle, set by each user
        self.tls = None
        self.tls_info = None
        self.write_paused = False

    def connection_made(self, transport) -> None:
        if self.tls is not None:
            return  # TLS first: H2Upstreams.connect calls begin() with the TLS transport
        self.begin(transport)

    def begin(self, transport) -> None:
        """The connection is ready for HTTP/2: send the preface and our SETTINGS."""
        self.transport = transport
        self.h2.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW,
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
        })
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(WINDOW * 4)
        self._write()

    # -------------------------------------------------------------- capacity

    def has_room(self) -> bool:
        if self.closed or self.going_away:
            return False
        limit = self.h2.remote_settings.max_concurrent_streams
        return self.h2.open_outbound_streams < min(limit, 1000)

    def open_stream(self, exchange, headers: list, end_stream: bool) -> H2BackendStream:
        stream = H2BackendStream(self, exchange)
        sid = self.h2.get_next_available_stream_id()
        stream.stream_id = sid
        self.streams[sid] = stream
        self.h2.send_headers(sid, headers, end_stream=end_stream)
        stream.request_ended = end_stream
        self._write()
        return stream

    # -------------------------------------------------------------- asyncio

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._lost(f"HTTP/2 protocol error from the backend: {exc}")
            return
        touched = set()
        for event in events:
            stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
            ex = stream.exchange if stream is not None else None
            if isinstance(event, h2.events.ResponseReceived):
                if ex is None:
                    continue
                stream.reader.started = True
                ex.on_response_head(_response_head(event.headers, ex.head.method,
                                                   event.stream_ended is not None))
                grpc = grpc_from(event.headers)
                if grpc is not None:
                    ex.grpc = grpc
                touched.add(ex)
            elif isinstance(event, h2.events.InformationalResponseReceived):
                continue
            elif isinstance(event, h2.events.DataReceived):
                if ex is None:
                    self._ack(event.stream_id, event.flow_controlled_length)
                    continue
                if stream.deadline.when is not None:
                    # The silence allowed between body bytes (timeouts.response_header),
                    # as on HTTP/1.1: a long server stream is fine while it flows.
                    stream.deadline.when = self.loop.time() + ex.read_timeout
                ex.on_response_body(event.data)
                stream.unacked += event.flow_controlled_length
                if not stream.read_paused:
                    self.acknowledge(stream, write=False)
                touched.add(ex)
            elif isinstance(event, h2.events.TrailersReceived):
                if ex is None:
                    continue
                grpc = grpc_from(event.headers)
                if grpc is not None:
                    ex.grpc = grpc
                relay = getattr(ex, "on_response_trailers", None)
                if relay is not None:
                    relay(event.headers)
                touched.add(ex)
            elif isinstance(event, h2.events.StreamEnded):
                if stream is None:
                    continue
                stream.complete = True
                if ex is not None:
                    touched.add(ex)
                    ex.on_response_complete()
            elif isinstance(event, h2.events.StreamReset):
                if stream is None:
                    continue
                stream.closed = True
                self.streams.pop(event.stream_id, None)
                if ex is not None and not ex.finished:
                    if event.error_code == ErrorCodes.REFUSED_STREAM:
                        ex.on_upstream_lost(None)  # not processed: retried when allowed
                    else:
                        ex.on_upstream_error(
                            f"backend {ex.backend.name} reset the HTTP/2 stream "
                            f"({_code_name(event.error_code)})")
            elif isinstance(event, h2.events.WindowUpdated):
                targets = ([stream] if stream is not None else list(self.streams.values()))
                for s in targets:
                    self.pump(s)
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                for s in list(self.streams.values()):
                    self.pump(s)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.going_away = True
                last = event.last_stream_id or 0
                for sid, s in list(self.streams.items()):
                    if sid > last and s.exchange is not None and not s.exchange.finished:
                        s.closed = True
                        self.streams.pop(sid, None)
                        s.exchange.on_upstream_lost(None)
        self._write()
        for ex in touched:
            if not ex.finished or ex.out:
                ex.flush()
        if self.going_away and not self.streams:
            self.close()

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.pool.forget(self)
        for stream in list(self.streams.values()):
            stream.closed = True
            stream.deadline.cancel()
            ex = stream.exchange
            if ex is not None and not ex.finished:
                if stream.complete:
                    continue
                ex.on_upstream_lost(exc)
        self.streams.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        for s in self.streams.values():
            if s.exchange is not None:
                s.exchange.upstream_pause_writing()

    def resume_writing(self) -> None:
        self.write_paused = False
        for s in list(self.streams.values()):
            if s.exchange is not None and not s.send_paused:
                s.exchange.upstream_resume_writing()

    # -------------------------------------------------------------- streams

    def pump(self, stream: H2BackendStream) -> None:
        if stream.closed or self.closed:
            return
        h2c = self.h2
        sid = stream.stream_id
        try:
            while stream.pending:
                window = min(h2c.local_flow_control_window(sid), h2c.max_outbound_frame_size)
                if window <= 0:
                    break
                piece = stream.pending[0]
                if len(piece) > window:
                    stream.pending[0] = piece[window:]
                    piece = piece[:window]
                else:
                    stream.pending.popleft()
                stream.pending_bytes -= len(piece)
                h2c.send_data(sid, piece)
            if not stream.pending and stream.end_pending and not stream.request_ended:
                h2c.end_stream(sid)
                stream.request_ended = True
        except (h2.exceptions.ProtocolError, KeyError) as exc:
            log.debug("backend stream %d: cannot send: %s", sid, exc)
        if stream.send_paused and stream.pending_bytes < SEND_HIGH // 4:
            stream.send_paused = False
            if stream.exchange is not None:
                stream.exchange.upstream_resume_writing()
        self._write()

    def acknowledge(self, stream: H2BackendStream, write: bool = True) -> None:
        size, stream.unacked = stream.unacked, 0
        if size:
            self._ack(stream.stream_id, size)
            if write:
                self._write()

    def _ack(self, stream_id: int, size: int) -> None:
        if size <= 0 or self.closed:
            return
        try:
            self.h2.acknowledge_received_data(size, stream_id)
        except (h2.exceptions.StreamClosedError, KeyError):
            self.h2.increment_flow_control_window(size)
        except h2.exceptions.ProtocolError:
            return

    def finish(self, stream: H2BackendStream, reset: bool) -> None:
        self.streams.pop(stream.stream_id, None)
        stream.exchange = None
        if reset and not self.closed:
            try:
                self.h2.reset_stream(stream.stream_id, ErrorCodes.CANCEL)
            except (h2.exceptions.ProtocolError, KeyError):
                pass  # already closed on the backend's side
            self._write()
        if self.acknowledge_pending(stream):
            self._write()
        if not self.streams:
            self.idle_since = self.loop.time()
            if self.going_away:
                self.close()
            else:
                self.pool.watch_idle()

    def acknowledge_pending(self, stream: H2BackendStream) -> bool:
        size, stream.unacked = stream.unacked, 0
        if size and not self.closed:
            self.h2.increment_flow_control_window(size)
            return True
        return False

    def _lost(self, why: str) -> None:
        for stream in list(self.streams.values()):
            ex = stream.exchange
            stream.closed = True
            if ex is not None and not ex.finished:
                ex.on_upstream_error(why)
        self.streams.clear()
        self.close()

    def _write(self) -> None:
        if self.closed or self.transport is None:
            return
        data = self.h2.data_to_send()
        if data:
            self.transport.write(data)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.pool.forget(self)
        try:
            self.h2.close_connection()
            self._write_raw()
        except h2.exceptions.ProtocolError:
            pass  # the connection state is closed already
        if self.transport is not None:
            self.transport.close()

    def _write_raw(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)


def _code_name(code) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return str(code)


def _response_head(headers: list, method: str, ended: bool) -> ResponseHead:
    status = 0
    fields = []
    resp = ResponseHead(0, b"", "2", fields)
    for name, value in headers:
        if name == b":status":
            status = int(value)
        elif name.startswith(b":"):
            continue
        else:
            fields.append((name, value))
            if name == b"content-length":
                try:
                    resp.content_length = int(value)
                except ValueError:
                    resp.content_length = None
            elif name == b"set-cookie":
                resp.set_cookies.append(value)
    resp.status = status
    resp.keep_alive = True
    resp.no_body = method == "HEAD" or status in (204, 304) or ended
    if resp.content_length is None and not resp.no_body:
        resp.chunked = True  # towards an HTTP/1.1 client: chunked, not until-close
    if ended and resp.content_length is None and status not in (204, 304):
        resp.content_length = 0
    return resp


class H2Upstreams:
    """Open HTTP/2 backend connections per (host, port)."""

    SWEEP_EVERY = 1.0

    def __init__(self, loop):
        self.loop = loop
        self.conns: dict[tuple, list[H2Backend]] = {}
        self.opened = 0
        self._sweeper: asyncio.TimerHandle | None = None

    def watch_idle(self) -> None:
        """Close connections without a stream for their idle limit (timeouts.backend_idle),
        checked every second while there are any."""
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self.SWEEP_EVERY, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = self.loop.time()
        idle_left = False
        for conns in list(self.conns.values()):
            for conn in list(conns):
                if conn.streams or conn.closed:
                    continue
                if now - conn.idle_since > conn.idle_limit:
                    conn.close()
                else:
                    idle_left = True
        if idle_left:
            self.watch_idle()

    def take(self, key, tls=None) -> H2Backend | None:
        """An open connection with room for a stream, made with these TLS settings
        (None: cleartext); a config change that altered them never reuses old ones."""
        for conn in self.conns.get(key, ()):
            if conn.tls is tls and conn.has_room():
                return conn
        return None

    async def connect(self, key, timeout: float, tls=None) -> H2Backend:
        """A new connection: OSError / TimeoutError (TCP), or TLSHandshakeError when
        the TLS handshake fails or the backend does not agree to h2 by ALPN."""
        host, port = key

        def make() -> H2Backend:
            conn = H2Backend(self, key)
            conn.tls = tls
            return conn

        coro = self.loop.create_connection(make, host, port)
        transport, conn = await (asyncio.wait_for(coro, timeout) if timeout > 0 else coro)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # not TCP: nothing to tune
                pass
        if tls is not None:
            transport = await self._start_tls(conn, transport, tls, timeout)
            conn.begin(transport)
        self.conns.setdefault(key, []).append(conn)
        self.opened += 1
        self.watch_idle()  # also when the request it was made for is gone by now
        return conn

    async def _start_tls(self, conn: H2Backend, transport, tls, timeout: float):
        """TLS with ALPN h2 only, checked as the HTTP/1.1 path checks (proxy/tls.py
        ClientTLS: the CA, the server name); the TLS transport, or TLSHandshakeError."""
        from proxy.tls import ssl_reason

        try:
            tls_transport = await self.loop.start_tls(
                transport, conn, tls.h2_context, server_hostname=tls.server_name,
                ssl_handshake_timeout=timeout if timeout > 0 else None)
        except asyncio.CancelledError:
            transport.abort()
            raise
        except (OSError, TimeoutError, ConnectionError) as exc:  # ssl.SSLError is an OSError
            transport.abort()
            reason = ssl_reason(exc)
            if "no application protocol" in reason:  # the backend's own ALPN refusal
                reason = f"{reason}: {_NO_H2}"
            raise TLSHandshakeError(reason) from exc
        sslobj = tls_transport.get_extra_info("ssl_object")
        alpn = sslobj.selected_alpn_protocol() if sslobj is not None else None
        if alpn != "h2":
            # A backend without ALPN at all completes the handshake choosing nothing.
            tls_transport.abort()
            raise TLSHandshakeError(f"it chose {alpn or 'no protocol'} by ALPN: {_NO_H2}")
        conn.tls_info = {**tls.info(sslobj), "alpn": alpn}
        return tls_transport

    def forget(self, conn: H2Backend) -> None:
        conns = self.conns.get(conn.key)
        if conns and conn in conns:
            conns.remove(conn)
            if not conns:
                del self.conns[conn.key]

    def close_idle(self, key) -> int:
        n = 0
        for conn in list(self.conns.get(key, ())):
            if not conn.streams:
                conn.close()
                n += 1
            else:
                conn.going_away = True  # no new streams; closes when the last ends
        return n

    def close_all(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conns in list(self.conns.values()):
            for conn in list(conns):
                conn.close()


_NO_H2 = ("the backend did not agree to HTTP/2 (offered h2 by ALPN); use protocol: http1 "
          "for this pool, or enable HTTP/2 over TLS on the backend")


def h2_upstreams(server) -> H2Upstreams:
    ups = getattr(server, "h2_upstreams", None)
    if ups is None:
        ups = server.h2_upstreams = H2Upstreams(server.loop)
    return ups


# ====================================================================== the exchange side

class UpstreamH2Mixin:
    """Exchange steps towards an HTTP/2 backend (see the module docstring)."""

    __slots__ = ()

    def _connect(self) -> None:
        if self.pool.config.protocol != "h2":
            super()._connect()
            return
        backend = self.backend
        key = (backend.host, backend.port)
        upstream_tls = self.server.upstream_tls
        tls = upstream_tls.get((self.pool_name, backend.name)) if upstream_tls else None
        conn = h2_upstreams(self.server).take(key, tls)
        if conn is not None:
            self._attach_h2(conn, reused=True)
            return
        self.server.spawn(self._connect_h2(key, backend, tls))

    async def _connect_h2(self, key, backend, tls=None) -> None:
        timeout = self.pool.config.timeouts.connect
        try:
            conn = await h2_upstreams(self.server).connect(key, timeout, tls)
        except TLSHandshakeError as exc:
            if self.finished or self.backend is not backend:
                return
            self._attempt_failed(
                "backend-tls",
                f"TLS handshake with {backend.name} ({backend.address}) failed: {exc.reason} "
                f"(checked as {tls.server_name!r} against {tls.ca_label or 'nothing'})",
                retryable=True)
            return
        except OSError as exc:
            if self.finished or self.backend is not backend:
                return
            why = (f"timed out after {timeout:g}s (timeouts.connect)"
                   if isinstance(exc, TimeoutError)
                   else exc.strerror or str(exc) or type(exc).__name__)
            self._attempt_failed("connect-failed",
                                 f"cannot connect to {backend.name} ({backend.address}): {why}",
                                 retryable=True)
            return
        except Exception as exc:  # a bug must cost one request, not leave it hanging
            if not self.finished:
                self._internal_error(exc)
            return
        if tls is not None and not tls.verify:
            self.server.bus.publish(WarningEvent(
                source="tls", message=tls.warning(self.pool_name, backend),
                pool=self.pool_name, backend=backend.name))
        if self.finished or self.backend is not backend:
            return  # the connection stays open for the next request
        self._attach_h2(conn, reused=False)

    def _attach_h2(self, conn: H2Backend, reused: bool) -> None:
        self.reused = reused
        conn.idle_limit = self.pool.config.timeouts.backend_idle
        self.backend.active_connections += 1
        self.t_connect = self.server.clock()
        self.upstream_tls = conn.tls_info  # also says :scheme (https over TLS)
        buffered = self.body_buf
        end = self.request_done and not buffered
        try:
            stream = conn.open_stream(self, self._h2_request_headers(), end)
        except (h2.exceptions.ProtocolError, KeyError) as exc:
            self.backend.active_connections -= 1
            self._attempt_failed("backend-closed", f"cannot open an HTTP/2 stream to "
                                 f"{self.backend.name}: {exc}", retryable=True)
            return
        self.upstream = stream
        if self.conn.write_paused:
            stream.pause_reading()
        if buffered:
            self._remember(buffered, self.body_buf_bytes)
            for piece in buffered:
                stream.send_data(piece)
            self.body_buf = []
            self.body_buf_bytes = 0
            if self.request_done:
                stream.end()
        self.request_sent = True
        self.conn.resume(2)  # PAUSE_BUFFER
        if self.request_done:
            stream.deadline.set(self.server.loop.time() + self.read_timeout)

    def _h2_request_headers(self) -> list[tuple[bytes, bytes]]:
        head = self.head
        conn = self.conn
        host = head.host
        host_b = host.encode("latin-1") if host is not None else (
            f"{self.backend.host}:{self.backend.port}".encode("ascii"))
        scheme = b"https" if self.upstream_tls is not None else b"http"
        out = [(b":method", head.method.encode("ascii")), (b":scheme", scheme),
               (b":authority", host_b), (b":path", head.target)]
        named = head.connection_named
        strip = (named - CONNECTION_OPTIONS) if named else None
        xff = fwd = None
        for name, value in head.headers:
            lname = name.lower()
            if lname in _DROP or lname.startswith(b"proxy-") or (strip and lname in strip):
                continue
            if lname == b"te":
                if value.strip().lower() == b"trailers":  # the only TE HTTP/2 allows
                    out.append((b"te", b"trailers"))
                continue
            if lname == b"x-forwarded-for":
                xff = value if xff is None else xff + b", " + value
            elif lname == b"forwarded":
                fwd = value if fwd is None else fwd + b", " + value
            else:
                out.append((lname, value))
        xff, fwd = self._pass_forwarded(xff, fwd)  # only from a trusted peer (proxy/trust.py)
        ip = conn.client_ip_b
        element = conn.forwarded_element(host)
        out += [(b"x-forwarded-for", xff + b", " + ip if xff else ip),
                (b"x-forwarded-proto", conn.scheme_b)]
        if host is not None:
            out.append((b"x-forwarded-host", host_b))
        out += [(b"forwarded", fwd + b", " + element if fwd else element),
                (b"x-request-id", self.request_id.encode("latin-1"))]
        if head.content_length is not None:
            out.append((b"content-length", b"%d" % head.content_length))
        return out

    def on_client_body(self, data: bytes) -> None:
        upstream = self.upstream
        if isinstance(upstream, H2BackendStream) and self.request_sent and not self.finished:
            self.bytes_in += len(data)
            upstream.send_data(data)
            if self.replay is not None:
                self._remember([data], len(data))
            return
        super().on_client_body(data)

    def on_client_complete(self) -> None:
        upstream = self.upstream
        if isinstance(upstream, H2BackendStream) and self.request_sent:
            self.request_done = True
            if self.finished:
                return
            upstream.end()
            if not self.head_sent:
                upstream.deadline.set(self.server.loop.time() + self.read_timeout)
            return
        super().on_client_complete()

    def _detach_upstream(self, close: bool) -> None:
        upstream = self.upstream
        if not isinstance(upstream, H2BackendStream):
            super()._detach_upstream(close)
            return
        self.upstream = None
        self.backend.active_connections -= 1
        upstream.close()

    def _release_upstream(self) -> None:
        if isinstance(self.upstream, H2BackendStream):
            self._detach_upstream(close=True)  # a stream is never reused
            return
        super()._release_upstream()



class H1Exchange(UpstreamH2Mixin, Exchange):
    """An HTTP/1.1 client's request, able to reach `protocol: h2` pools.

    (`grpc`, set from a gRPC backend's trailers, is an Exchange slot: the request
    event takes it from there.)"""

    __slots__ = ()
