"""Streams over SETTINGS_MAX_CONCURRENT_STREAMS (RFC 9113 section 5.1.2): the stream is
refused alone (RST_STREAM REFUSED_STREAM) while the others go on; a client that keeps
doing it gets GOAWAY ENHANCE_YOUR_CALM like the other floods.

A well-behaved h2 client never opens a stream over the limit (the `h2` library refuses
to), so the client here writes its frames with hyperframe and hpack by hand, on the h2
library's own encoder rules (the dynamic table is used: a proxy that skipped a refused
stream's header block would decode the next one wrong). Real proxy in-process, real toy
backends.
"""
from __future__ import annotations

import socket
import time

import hpack
import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import (DataFrame, Frame, GoAwayFrame, HeadersFrame, RstStreamFrame,
                              SettingsFrame, WindowUpdateFrame)

from proxy.http2.guard import PREFACE, FrameGuard
from tests.proxy.anchors.support import wait_for
from tests.proxy.e2e.support import backend_entry
from tests.proxy.edge.harness import EdgeProxy

pytestmark = pytest.mark.timeout(60)


class RawH2:
    """A client that writes any frame it likes and reads the proxy's frame by frame."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.buf = b""
        self.sock.sendall(PREFACE + SettingsFrame(0).serialize())
        self.settings: dict = {}
        self.statuses: dict[int, bytes] = {}
        self.ended: set[int] = set()
        self.resets: dict[int, int] = {}
        self.goaway: GoAwayFrame | None = None
        self.closed = False

    def get(self, sid: int, path: str) -> None:
        block = self.encoder.encode([(b":method", b"GET"), (b":path", path.encode()),
                                     (b":scheme", b"http"), (b":authority", b"lab.test"),
                                     (b"x-request-id", f"sl-{sid}".encode())])
        frame = HeadersFrame(sid, block)
        frame.flags.add("END_HEADERS")
        frame.flags.add("END_STREAM")
        self.sock.sendall(frame.serialize())

    def _frame(self) -> Frame | None:
        while True:
            if len(self.buf) >= 9:
                frame, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
                if len(self.buf) >= 9 + length:
                    frame.parse_body(memoryview(self.buf[9:9 + length]))
                    self.buf = self.buf[9 + length:]
                    return frame
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                data = b""
            if not data:
                self.closed = True
                return None
            self.buf += data

    def read_until(self, done, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline and not self.closed, (
                f"statuses {self.statuses}, resets {self.resets}, goaway {self.goaway}")
            frame = self._frame()
            if frame is None:
                continue
            if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
                self.settings.update(frame.settings)
                ack = SettingsFrame(0)
                ack.flags.add("ACK")
                self.sock.sendall(ack.serialize())
            elif isinstance(frame, HeadersFrame):
                headers = dict(self.decoder.decode(frame.data, raw=True))
                if b":status" in headers:
                    self.statuses[frame.stream_id] = headers[b":status"]
                if "END_STREAM" in frame.flags:
                    self.ended.add(frame.stream_id)
            elif isinstance(frame, DataFrame):
                if frame.flow_controlled_length:
                    self.sock.sendall(WindowUpdateFrame(0, frame.flow_controlled_length)
                                      .serialize())
                if "END_STREAM" in frame.flags:
                    self.ended.add(frame.stream_id)
            elif isinstance(frame, RstStreamFrame):
                self.resets[frame.stream_id] = frame.error_code
            elif isinstance(frame, GoAwayFrame):
                self.goaway = frame

    def close(self) -> None:
        self.sock.close()


def config(backends, **http2) -> dict:
    return {"listeners": {"web": {"bind": "127.0.0.1:0", "routes": ["all"], "http2": http2}},
            "routes": {"all": {"forward": "p"}},
            "pools": {"p": {"backends": [backend_entry(backends["b1"])]}}}


def test_a_stream_over_the_limit_is_refused_alone(backends):
    with EdgeProxy(config(backends, max_concurrent_streams=2)) as proxy:
        client = RawH2(proxy.port())
        client.read_until(lambda: 0x3 in client.settings)  # MAX_CONCURRENT_STREAMS
        assert client.settings[0x3] == 2
        client.get(1, "/work?ms=1500")
        client.get(3, "/work?ms=1500")
        client.get(5, "/work?ms=1500")  # the third at once: over the limit
        client.read_until(lambda: 5 in client.resets)
        assert client.resets[5] == ErrorCodes.REFUSED_STREAM
        # The other two were served, and the connection goes on.
        client.read_until(lambda: {1, 3} <= client.ended)
        assert client.statuses[1] == client.statuses[3] == b"200"
        async def live():
            return proxy.server.live_connections()
        h2conns = [c for c in proxy.call(live()) if c["kind"] == "h2"]
        assert h2conns[0]["refused_streams"] == 1  # GET /connections
        client.get(7, "/after")  # its header block leans on the refused one's table entries
        client.read_until(lambda: 7 in client.ended)
        assert client.statuses[7] == b"200" and client.goaway is None
        assert {e.request_id for e in proxy.requests()} >= {"sl-1", "sl-3", "sl-7"}
        assert not proxy.requests("sl-5")  # refused before it became a request
        warning = wait_for(lambda: [e for e in proxy.events if type(e).__name__ == "Warning"
                                    and e.source == "http2"], what="the warning")[0]
        assert "opened stream 5 with 2 open" in warning.message
        assert "SETTINGS_MAX_CONCURRENT_STREAMS 2" in warning.message
        assert "REFUSED_STREAM" in warning.message
        client.close()


def test_repeated_streams_over_the_limit_get_goaway(backends):
    with EdgeProxy(config(backends, max_concurrent_streams=1, max_refused_streams=3)) as proxy:
        client = RawH2(proxy.port())
        client.read_until(lambda: 0x3 in client.settings)
        client.get(1, "/work?ms=3000")
        for sid in (3, 5, 7):  # at the cap: each refused, the connection stays
            client.get(sid, "/x")
        client.read_until(lambda: {3, 5, 7} <= set(client.resets))
        assert client.goaway is None
        client.get(9, "/x")  # the fourth: over http2.max_refused_streams
        client.read_until(lambda: client.goaway is not None)
        assert client.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        assert b"max_refused_streams" in client.goaway.additional_data
        event = wait_for(lambda: [e for e in proxy.events if type(e).__name__ ==
                                  "ConnectionEvent" and e.kind == "h2"], what="h2 event")[0]
        assert event.error.startswith("refused-streams: ") and event.closed_by == "proxy"
        assert "SETTINGS_MAX_CONCURRENT_STREAMS 1" in event.error
        client.close()


def test_guard_counts_refused_streams_per_period():
    now = [100.0]
    guard = FrameGuard(max_resets=10, max_control_frames=10, period=10.0,
                       max_header_block=1000, max_continuations=4, clock=lambda: now[0],
                       max_refused=2)
    assert guard.refused_stream(5) is None and guard.refused_stream(5) is None
    breach = guard.refused_stream(5)
    assert breach.kind == "refused-streams" and "http2.max_refused_streams" in breach.message
    now[0] += 10.0  # a new window
    assert guard.refused_stream(5) is None
