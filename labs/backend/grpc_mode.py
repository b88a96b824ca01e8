"""``--mode grpc``: a toy gRPC server written on h2, with the HTTP mode's fault knobs.

Theory of operation
-------------------
gRPC is HTTP/2 with a convention: a POST to ``/package.Service/Method`` with
``content-type: application/grpc``, each message framed as 1 byte (compressed?
always 0 here) + 4-byte big-endian length + the protobuf bytes, and the
outcome in trailers (``grpc-status``, ``grpc-message``). The messages here are
tiny, so they are encoded by hand (a string field is its tag byte, a varint
length, the bytes; see ``field_string``) and the runtime needs no grpcio.

Services (the protobuf, for clients that want to generate code)::

    package lblab.toy;
    message WhoamiRequest { string text = 1; uint32 count = 2; }
    message WhoamiReply   { string backend = 1; string text = 2; uint32 index = 3; }
    service Echo {
      rpc Whoami (WhoamiRequest) returns (WhoamiReply);          // unary
      rpc Stream (WhoamiRequest) returns (stream WhoamiReply);   // `count` replies (default 3)
    }
    // and the standard grpc.health.v1.Health/Check (services "" and lblab.toy.Echo)

Faults, asked per call from the same ``FaultState`` as HTTP requests:
warm-up -> UNAVAILABLE (14) "warming up"; reset -> the TCP connection is reset;
hang -> no answer ever; latency/jitter -> the answer is late (each streamed
reply too); cpu_ms -> CPU burnt; dependency_down -> UNAVAILABLE; error_rate ->
the status for error_status (503 -> UNAVAILABLE, 500 and others -> INTERNAL);
crash_mid_response -> the response head and half a message, then a reset. The
health check follows the readiness knobs (warm-up, health_fail,
dependency_down -> NOT_SERVING; health_latency_ms delays it).
"""
from __future__ import annotations

import asyncio
import itertools
import math
import socket
import struct

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from .app import BackendApp, burn_cpu

OK, INTERNAL, UNIMPLEMENTED, UNAVAILABLE, NOT_FOUND, INVALID_ARGUMENT = 0, 13, 12, 14, 5, 3
SERVING, NOT_SERVING, SERVICE_UNKNOWN = 1, 2, 3
HEALTH = "/grpc.health.v1.Health/Check"
WHOAMI = "/lblab.toy.Echo/Whoami"
STREAM = "/lblab.toy.Echo/Stream"
KNOWN_SERVICES = ("", "lblab.toy.Echo")
MAX_MESSAGE = 1024 * 1024

_ids = itertools.count(1)


# ---------------------------------------------------------------- protobuf by hand

def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_string(number: int, text: str) -> bytes:
    data = text.encode("utf-8")
    return bytes([number << 3 | 2]) + varint(len(data)) + data


def field_varint(number: int, value: int) -> bytes:
    return bytes([number << 3 | 0]) + varint(value)


def parse_fields(data: bytes) -> dict[int, object]:
    """Field number -> last value (bytes for length-delimited, int for varint).

    Raises ValueError on bytes that are not a protobuf message."""
    out: dict[int, object] = {}
    pos = 0
    n = len(data)

    def read_varint() -> int:
        nonlocal pos
        shift = value = 0
        while True:
            if pos >= n or shift > 63:
                raise ValueError("truncated varint")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    while pos < n:
        key = read_varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            out[number] = read_varint()
        elif wire == 2:
            length = read_varint()
            if pos + length > n:
                raise ValueError("truncated field")
            out[number] = data[pos:pos + length]
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"wire type {wire} not supported")
    return out


def frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message (not compressed)."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def unframe(data: bytes) -> list[bytes]:
    """The messages in a request body; ValueError when it is not gRPC framing."""
    out = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 5:
            raise ValueError("truncated gRPC message header")
        if data[pos] != 0:
            raise ValueError("compressed messages are not supported")
        length = struct.unpack(">I", data[pos + 1:pos + 5])[0]
        if pos + 5 + length > len(data):
            raise ValueError("truncated gRPC message")
        out.append(data[pos + 5:pos + 5 + length])
        pos += 5 + length
    return out


def whoami_reply(name: str, text: str = "", index: int = 0) -> bytes:
    msg = field_string(1, name)
    if text:
        msg += field_string(2, text)
    if index:
        msg += field_varint(3, index)
    return msg


# ---------------------------------------------------------------- server

class GrpcServer:
    """Holds the app (name, faults, stats) and makes one protocol per connection."""

    def __init__(self, app: BackendApp):
        self.app = app
        self.calls = {"whoami": 0, "stream": 0, "health": 0, "unknown": 0}
        self.connections = 0

    def protocol(self) -> "GrpcConnection":
        return GrpcConnection(self)

    def snapshot(self) -> dict:
        return {"grpc": {"calls": dict(self.calls), "connections_open": self.connections}}


class GrpcConnection(asyncio.Protocol):
    def __init__(self, server: GrpcServer):
        self.server = server
        self.app = server.app
        self.transport = None
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding=None))
        self.bodies: dict[int, bytearray] = {}
        self.paths: dict[int, str] = {}
        self.tasks: set[asyncio.Task] = set()
        self.hung = False
        self.id = next(_ids)
        self.peer = "?"
        self.waiters: dict[int, asyncio.Future] = {}

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.server.connections += 1
        self.app.stats.connections_total += 1
        self.h2.initiate_connection()
        self._write()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._write()
            self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                headers = dict(event.headers)
                self.paths[event.stream_id] = headers.get(b":path", b"").decode("latin-1")
                self.bodies[event.stream_id] = bytearray()
                if event.stream_ended is not None:
                    self._start(event.stream_id)
            elif isinstance(event, h2.events.DataReceived):
                body = self.bodies.get(event.stream_id)
                if body is not None:
                    body += event.data
                    if len(body) > MAX_MESSAGE:
                        self.h2.reset_stream(event.stream_id)
                        self.bodies.pop(event.stream_id, None)
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                if event.stream_id in self.bodies:
                    self._start(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self.bodies.pop(event.stream_id, None)
            elif isinstance(event, h2.events.WindowUpdated):
                for waiter in self.waiters.values():
                    if not waiter.done():
                        waiter.set_result(None)
        self._write()

    def connection_lost(self, exc) -> None:
        self.server.connections -= 1
        for task in self.tasks:
            task.cancel()

    def _write(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _start(self, stream_id: int) -> None:
        body = bytes(self.bodies.pop(stream_id, b""))
        path = self.paths.pop(stream_id, "")
        task = asyncio.get_running_loop().create_task(self._call(stream_id, path, body))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # ------------------------------------------------------------ calls

    async def _call(self, sid: int, path: str, body: bytes) -> None:
        app = self.app
        app.stats.requests_total += 1
        try:
            messages = unframe(body)
            request = parse_fields(messages[0]) if messages else {}
        except ValueError as exc:
            self._status_only(sid, INVALID_ARGUMENT, f"bad request: {exc}")
            return
        if path == HEALTH:
            await self._health(sid, request)
            return
        if path not in (WHOAMI, STREAM):
            self.server.calls["unknown"] += 1
            self._status_only(sid, UNIMPLEMENTED, f"method {path} not implemented by "
                              f"{app.name}; try {WHOAMI}, {STREAM} or {HEALTH}")
            return
        app.stats.by_kind["app"] += 1
        text = _text(request.get(1, b""))
        status = await self._faults(sid)
        if status is False:
            return  # reset, hung or crashed: no orderly answer
        if status is not None:
            self._status_only(sid, *status)
            return
        if path == WHOAMI:
            self.server.calls["whoami"] += 1
            self._send(sid, [whoami_reply(app.name, text)], OK, None)
            return
        self.server.calls["stream"] += 1
        count = request.get(2, 3)
        count = count if isinstance(count, int) else 3
        self._headers(sid)
        for i in range(1, min(count, 10_000) + 1):
            if i > 1:
                delay = app.faults.settings["latency_ms"] / 1000.0
                if delay:
                    await app.sleep(delay)
            if not await self._data(sid, frame(whoami_reply(app.name, text, i))):
                return
        self._trailers(sid, OK, None)

    async def _health(self, sid: int, request: dict) -> None:
        app = self.app
        app.stats.by_kind["health"] += 1
        self.server.calls["health"] += 1
        service = _text(request.get(1, b""))
        d = app.faults.decide_ready(app.clock())
        if d.delay_s:
            await app.sleep(d.delay_s)
        if service not in KNOWN_SERVICES:
            self._status_only(sid, NOT_FOUND, f"unknown service {service!r}")
            return
        serving = not (d.warming_up or d.fail or d.dependency_down)
        if not serving:
            app.stats.injected["health_fail" if d.fail else
                               "warming_up" if d.warming_up else "dependency_down"] += 1
        self._send(sid, [field_varint(1, SERVING if serving else NOT_SERVING)], OK, None)

    async def _faults(self, sid: int):
        """None: answer normally; (status, message): answer that; False: no answer."""
        app = self.app
        now = app.clock()
        if app.faults.app_quiet(now):
            return None
        d = app.faults.decide_app(now, app.rng)
        injected = app.stats.injected
        if d.warming_up:
            injected["warming_up"] += 1
            return UNAVAILABLE, f"warming up, retry in {max(1, math.ceil(d.warming_up))} s"
        if d.reset:
            injected["reset"] += 1
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()
            return False
        if d.hang:
            injected["hang"] += 1
            return False
        if d.delay_s:
            await app.sleep(d.delay_s)
        if d.cpu_ms:
            burn_cpu(d.cpu_ms)
        if d.dependency_down:
            injected["dependency_down"] += 1
            return UNAVAILABLE, "dependency down"
        if d.error_status is not None:
            injected["error"] += 1
            return (UNAVAILABLE if d.error_status == 503 else INTERNAL), "injected error"
        if d.crash:
            injected["crash_mid_response"] += 1
            self._headers(sid)
            whole = frame(whoami_reply(app.name))
            self.h2.send_data(sid, whole[: len(whole) // 2])
            self._write()
            self.transport.abort()
            return False
        return None

    # ------------------------------------------------------------ writing

    def _headers(self, sid: int) -> None:
        self.h2.send_headers(sid, [(b":status", b"200"), (b"content-type", b"application/grpc"),
                                   (b"x-backend", self.app.name.encode())])

    def _trailers(self, sid: int, status: int, message: str | None) -> None:
        fields = [(b"grpc-status", str(status).encode())]
        if message:
            fields.append((b"grpc-message", message.encode("utf-8")))
        self.h2.send_headers(sid, fields, end_stream=True)
        self._write()

    def _status_only(self, sid: int, status: int, message: str) -> None:
        """A trailers-only response: one HEADERS with the status, ending the stream."""
        if self.transport is None or self.transport.is_closing():
            return
        self.h2.send_headers(sid, [
            (b":status", b"200"), (b"content-type", b"application/grpc"),
            (b"x-backend", self.app.name.encode()), (b"grpc-status", str(status).encode()),
            (b"grpc-message", message.encode("utf-8"))], end_stream=True)
        self._write()

    def _send(self, sid: int, messages: list[bytes], status: int, message: str | None) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self._headers(sid)
        data = b"".join(frame(m) for m in messages)
        # Small replies: they fit the default windows (checked, else trailers wait).
        if len(data) <= self.h2.local_flow_control_window(sid):
            self.h2.send_data(sid, data)
            self._trailers(sid, status, message)
            return
        task = asyncio.get_running_loop().create_task(self._send_slow(sid, data, status, message))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send_slow(self, sid, data, status, message) -> None:
        if await self._data(sid, data):
            self._trailers(sid, status, message)

    async def _data(self, sid: int, data: bytes) -> bool:
        """Send DATA as windows allow; False when the stream or connection went away."""
        while data:
            if self.transport is None or self.transport.is_closing():
                return False
            try:
                window = min(self.h2.local_flow_control_window(sid),
                             self.h2.max_outbound_frame_size)
            except (h2.exceptions.StreamClosedError, KeyError):
                return False
            if window <= 0:
                waiter = asyncio.get_running_loop().create_future()
                self.waiters[sid] = waiter
                try:
                    await waiter
                finally:
                    self.waiters.pop(sid, None)
                continue
            try:
                self.h2.send_data(sid, data[:window])
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                return False
            data = data[window:]
            self._write()
        return True


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else ""
