"""The gRPC health check: grpc.health.v1.Health/Check over HTTP/2 (cleartext, or
over TLS with ALPN h2 when the pool speaks TLS to the backend: see
proxy.health.active `check_speaks_tls`).

One connection per probe (like the HTTP check: it also proves the backend
accepts connections): preface and SETTINGS, one POST with the request
message (field 1: the service name, empty for the whole server), then the
response message (field 1: the status enum) and the trailers. It passes only
when grpc-status is 0 and the status is SERVING (1); NOT_SERVING, an unknown
service (grpc-status 5) or any other status fail, with the reason as detail.
The protobufs are two bytes each, encoded by hand.
"""
from __future__ import annotations

import asyncio
import struct

import h2.config
import h2.connection
import h2.events
import h2.exceptions

PATH = b"/grpc.health.v1.Health/Check"
STATUS_NAMES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def check_request(service: str) -> bytes:
    """The framed HealthCheckRequest."""
    name = service.encode("utf-8")
    message = (b"\x0a" + _varint(len(name)) + name) if name else b""
    return b"\x00" + struct.pack(">I", len(message)) + message


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def serving_status(body: bytes) -> int | None:
    """The status enum in a framed HealthCheckResponse, None when absent or malformed."""
    if len(body) < 5:
        return None
    message = body[5:5 + struct.unpack(">I", body[1:5])[0]]
    if not message:
        return 0  # proto3: a field at its default value is not sent (UNKNOWN)
    if message[0] == 0x08 and len(message) >= 2:
        return message[1]
    return None


class _Check(asyncio.Protocol):
    def __init__(self, authority: bytes, service: str, done: asyncio.Future,
                 scheme: bytes = b"http"):
        self.done = done
        self.scheme = scheme
        self.authority = authority
        self.service = service
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None))
        self.body = b""
        self.fields: dict[bytes, bytes] = {}
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        conn = self.conn
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [
            (b":method", b"POST"), (b":scheme", self.scheme), (b":authority", self.authority),
            (b":path", PATH), (b"content-type", b"application/grpc"), (b"te", b"trailers"),
            (b"user-agent", b"LBLab-HealthCheck/1")])
        conn.send_data(sid, check_request(self.service), end_stream=True)
        transport.write(conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._finish(f"HTTP/2 protocol error: {exc}")
            return
        for event in events:
            if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                self.fields.update(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                self.body += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                    event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self._finish(None)
            elif isinstance(event, h2.events.StreamReset):
                self._finish(f"stream reset by the backend (code {event.error_code})")
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._finish(f"GOAWAY from the backend (code {event.error_code})")
        data = self.conn.data_to_send()
        if data:
            self.transport.write(data)

    def connection_lost(self, exc) -> None:
        self._finish("connection closed before the answer")

    def _finish(self, error: str | None) -> None:
        if not self.done.done():
            self.done.set_result((self.fields, self.body, error))


async def probe_grpc(host: str, port: int, config, clock, tls=None):
    """One Health/Check call; `tls`: a proxy.health.active.CheckTLS (ALPN h2)."""
    from proxy.health.active import Opener, ProbeResult, _ms, await_answer

    loop = asyncio.get_running_loop()
    started = clock()
    done = loop.create_future()
    opener = Opener(host, port, tls)
    authority = f"{tls.server_name if tls is not None else host}:{port}".encode("ascii")
    scheme = b"https" if tls is not None else b"http"

    async def connect():
        return await opener.open(lambda: _Check(authority, config.service, done, scheme))

    answer, failed = await await_answer(connect, done, config.timeout, clock, started,
                                        opener=opener)
    if failed is not None:
        return failed
    fields, body, error = answer
    latency = clock() - started
    ms = latency * 1000
    if error is not None:
        return ProbeResult(False, error, ms)
    http_status = fields.get(b":status", b"?").decode()
    if http_status != "200":
        return ProbeResult(False, f"HTTP status {http_status} (not a gRPC server?)", ms)
    grpc_status = fields.get(b"grpc-status")
    if grpc_status is None:
        return ProbeResult(False, "no grpc-status in the answer", ms)
    if grpc_status != b"0":
        message = fields.get(b"grpc-message", b"").decode("utf-8", "replace")
        return ProbeResult(False, f"grpc-status {grpc_status.decode()}"
                           + (f": {message}" if message else ""), ms)
    status = serving_status(body)
    name = STATUS_NAMES.get(status, str(status))
    if status != 1:
        return ProbeResult(False, f"{name} in {_ms(latency)}", ms)
    return ProbeResult(True, f"SERVING in {_ms(latency)}", ms)
