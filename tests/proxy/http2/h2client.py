"""A frame-level HTTP/2 client for tests: h2 (python-hyper) over a blocking socket."""
from __future__ import annotations

import socket
import time

import h2.config
import h2.connection
import h2.events

TIMEOUT = 10.0


class H2Client:
    def __init__(self, port: int, host: str = "127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        self.flush()
        self.events: list = []
        self.closed = False

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def send_raw(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            self.closed = True

    def read(self, until, timeout: float = TIMEOUT) -> list:
        """Read events until until(event) is true; returns every event read so far."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if until(event):
                    return self.events
            if self.closed or time.monotonic() > deadline:
                raise AssertionError(f"not seen; events: {self.events[-5:]}")
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                data = b""
            if not data:
                self.closed = True
                continue
            try:
                self.events += self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                self.closed = True
            try:
                self.flush()
            except OSError:
                self.closed = True

    def get(self, path: str = "/", extra=()) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(b":method", b"GET"), (b":path", path.encode()),
                                     (b":scheme", b"http"), (b":authority", b"lab.test"),
                                     *extra], end_stream=True)
        self.flush()
        return sid

    def response(self, sid: int) -> tuple[dict, bytes]:
        self.read(lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == sid)
        head = next(e for e in self.events
                    if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid)
        body = b"".join(e.data for e in self.events
                        if isinstance(e, h2.events.DataReceived) and e.stream_id == sid)
        return dict(head.headers), body

    def goaway(self) -> h2.events.ConnectionTerminated:
        self.read(lambda e: isinstance(e, h2.events.ConnectionTerminated))
        return next(e for e in self.events if isinstance(e, h2.events.ConnectionTerminated))

    def close(self) -> None:
        self.sock.close()
