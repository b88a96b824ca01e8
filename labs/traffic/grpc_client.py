"""A tiny gRPC client on h2 and a blocking socket: the labs' traffic for gRPC backends.

Theory of operation
-------------------
A gRPC client opens one HTTP/2 connection (a *channel*) and sends every call on it as a
stream: HEADERS (``POST /package.Service/Method``, ``content-type: application/grpc``,
``te: trailers``), one DATA frame with the length-prefixed message, then it reads the
response HEADERS, the reply message and the trailers carrying ``grpc-status``. That is
all a lab needs, so the runtime does without grpcio (a dev dependency only): h2 does the
framing, a plain socket the I/O. Under locust the socket module is gevent's, so many
users' channels run side by side in one process.

One call at a time per channel, each read to its end: enough to show where a channel's
calls land, and simple enough to have no state but the h2 connection. Errors a lab must
count (a reset stream, a closed connection, a non-zero ``grpc-status``) come back as
`GrpcError` with what happened; the caller reconnects on its next call.
"""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from labs.backend.grpc_mode import field_string, frame, parse_fields, unframe

WHOAMI = "/lblab.toy.Echo/Whoami"


class GrpcError(Exception):
    """A call that did not end with grpc-status 0 (``status`` None: no status at all)."""

    def __init__(self, message: str, status: int | None = None):
        self.status = status
        super().__init__(message)


@dataclass
class Reply:
    status: int
    messages: list[bytes]
    headers: dict[str, str]

    def backend(self) -> str | None:
        """Field 1 of the first reply message (the toy Echo service's backend name)."""
        if not self.messages:
            return None
        value = parse_fields(self.messages[0]).get(1)
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else None


class Channel:
    """One HTTP/2 connection to ``host:port`` (cleartext, prior knowledge)."""

    def __init__(self, host: str, port: int, source: str | None = None, timeout: float = 5.0):
        self.host, self.port, self.source, self.timeout = host, port, source, timeout
        self.sock: socket.socket | None = None
        self.conn: h2.connection.H2Connection | None = None
        self.connects = 0

    @property
    def open(self) -> bool:
        return self.sock is not None

    def connect(self) -> None:
        self.sock = socket.create_connection(
            (self.host, self.port), timeout=self.timeout,
            source_address=(self.source, 0) if self.source else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self._flush()
        self.connects += 1

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.conn.close_connection()
                self._flush()
            except (OSError, h2.exceptions.ProtocolError):
                pass
            self.sock.close()
        self.sock = self.conn = None

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def unary(self, path: str, message: bytes, deadline_s: float | None = None) -> Reply:
        """Send one call and read its reply; GrpcError on any outcome but status 0."""
        if self.sock is None:
            self.connect()
        try:
            return self._unary(path, message, deadline_s or self.timeout)
        except (OSError, h2.exceptions.ProtocolError) as exc:
            self.close()
            raise GrpcError(f"connection lost: {type(exc).__name__}: {exc}") from None
        except GrpcError as exc:
            if exc.status is None:
                self.close()
            raise

    def _unary(self, path: str, message: bytes, deadline_s: float) -> Reply:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [
            (":method", "POST"), (":scheme", "http"), (":path", path),
            (":authority", f"{self.host}:{self.port}"), ("content-type", "application/grpc"),
            ("te", "trailers")])
        self.conn.send_data(sid, frame(message), end_stream=True)
        self._flush()
        headers: dict[str, str] = {}
        body = bytearray()
        end = time.monotonic() + deadline_s
        while True:
            left = end - time.monotonic()
            if left <= 0:
                self.conn.reset_stream(sid, 8)  # CANCEL: the deadline passed
                self._flush()
                raise GrpcError(f"deadline of {deadline_s:g}s exceeded", status=4)
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise GrpcError("the server closed the connection mid-call")
            for event in self.conn.receive_data(data):
                if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)) \
                        and event.stream_id == sid:
                    headers.update(dict(event.headers))
                elif isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                        event.stream_id)
                    if event.stream_id == sid:
                        body += event.data
                elif isinstance(event, h2.events.StreamReset) and event.stream_id == sid:
                    self._flush()
                    raise GrpcError(f"stream reset (HTTP/2 error {event.error_code})",
                                    status=14)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    raise GrpcError(f"GOAWAY (HTTP/2 error {event.error_code})")
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == sid:
                    self._flush()
                    return self._reply(headers, bytes(body))
            self._flush()

    @staticmethod
    def _reply(headers: dict[str, str], body: bytes) -> Reply:
        if "grpc-status" not in headers:
            raise GrpcError(f"no grpc-status (HTTP status {headers.get(':status', '?')})")
        status = int(headers["grpc-status"])
        if status != 0:
            raise GrpcError(f"grpc-status {status}: {headers.get('grpc-message', '')}",
                            status=status)
        try:
            messages = unframe(body)
        except ValueError as exc:
            raise GrpcError(f"bad reply framing: {exc}", status=13) from None
        return Reply(status, messages, headers)


def whoami_request(text: str = "") -> bytes:
    return field_string(1, text) if text else b""
