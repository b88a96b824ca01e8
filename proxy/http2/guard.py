"""Flood protections for HTTP/2 clients, as pure logic (no sockets, no h2).

Theory of operation
-------------------
The 2023-2024 HTTP/2 advisories share one shape: a client sends frames that
are cheap for it and costly for the server, and stays within the protocol.

- Rapid reset (CVE-2023-44487): open a stream, reset it at once, repeat. The
  stream limit never binds (reset streams do not count), yet each HEADERS
  starts a request upstream.
- CONTINUATION flood (CVE-2024-27316 and friends, April 2024): a HEADERS
  without END_HEADERS followed by endless CONTINUATION frames; the server
  buffers the header block until it ends, which it never does.
- SETTINGS and PING floods (CVE-2019-9515, -9512): each one obliges the
  server to queue an ACK.
- HPACK and header-list size: a small compressed block that decodes to a huge
  header list.
- Streams over SETTINGS_MAX_CONCURRENT_STREAMS: each one is refused alone
  (RST_STREAM REFUSED_STREAM, RFC 9113 section 5.1.2) but still costs a
  header-block decode; a client that keeps doing it is cut
  (`FrameGuard.refused_stream()`, counted by the server when it refuses one).

`FrameGuard.feed(data)` reads only the 9-byte frame headers of the bytes a
client sent (before h2 parses them) and counts what the caps are about. It
returns None while the client is within bounds, or a `Breach(why)` the first
time it is not; the connection then answers GOAWAY ENHANCE_YOUR_CALM and
closes. Rates are counted in fixed windows of `period` seconds (`RateCap`):
cheap, and a client that keeps within the cap per window is never cut.
The decoded header-list size is enforced by h2 itself (its hpack decoder
refuses a list above MAX_HEADER_LIST_SIZE, which the proxy advertises).
"""
from __future__ import annotations

import dataclasses

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 section 6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
FLAG_ACK = 0x1
FLAG_END_HEADERS = 0x4


@dataclasses.dataclass(frozen=True)
class Breach:
    """Why a client is cut: `kind` (rapid-reset, continuation-flood, settings-flood,
    ping-flood, header-block-size) and a sentence saying which limit to raise."""

    kind: str
    message: str


class RateCap:
    """At most `limit` events per fixed window of `period` seconds."""

    __slots__ = ("limit", "period", "window_start", "count")

    def __init__(self, limit: int, period: float):
        self.limit = limit
        self.period = period
        self.window_start = 0.0
        self.count = 0

    def hit(self, now: float) -> bool:
        """Count one event; True when it goes over the cap in this window."""
        if now - self.window_start >= self.period:
            self.window_start = now
            self.count = 0
        self.count += 1
        return self.count > self.limit


class FrameGuard:
    """Counts a client's frames from their 9-byte headers, across reads."""

    def __init__(self, *, max_resets: int, max_control_frames: int, period: float,
                 max_header_block: int, max_continuations: int, clock, preface: bool = True,
                 max_refused: int = 100):
        self.resets = RateCap(max_resets, period)
        self.refused = RateCap(max_refused, period)
        self.settings = RateCap(max_control_frames, period)
        self.pings = RateCap(max_control_frames, period)
        self.period = period
        self.max_header_block = max_header_block
        self.max_continuations = max_continuations
        self.clock = clock
        self.skip_preface = len(PREFACE) if preface else 0
        self._head = b""  # a frame header split across reads
        self._payload_left = 0  # bytes of the current frame's payload still to come
        self._block = 0  # header block bytes so far (HEADERS + CONTINUATION)
        self._continuations = 0
        self._in_block = False

    def feed(self, data: bytes) -> Breach | None:
        view = memoryview(data)
        pos = 0
        n = len(data)
        if self.skip_preface:
            take = min(self.skip_preface, n)
            self.skip_preface -= take
            pos = take
        while pos < n:
            if self._payload_left:
                take = min(self._payload_left, n - pos)
                self._payload_left -= take
                pos += take
                continue
            need = 9 - len(self._head)
            piece = bytes(view[pos:pos + need])
            pos += len(piece)
            self._head += piece
            if len(self._head) < 9:
                break
            head, self._head = self._head, b""
            length = int.from_bytes(head[0:3], "big")
            breach = self._frame(head[3], head[4], length)
            if breach is not None:
                return breach
            self._payload_left = length
        return None

    def _frame(self, ftype: int, flags: int, length: int) -> Breach | None:
        now = self.clock()
        if ftype == HEADERS:
            self._in_block = not flags & FLAG_END_HEADERS
            self._block = length
            self._continuations = 0
            return self._block_size()
        if ftype == CONTINUATION:
            self._continuations += 1
            self._block += length
            if flags & FLAG_END_HEADERS:
                self._in_block = False
            if self._continuations > self.max_continuations:
                return Breach("continuation-flood", (
                    f"a header block went on for more than {self.max_continuations} "
                    "CONTINUATION frames (http2.max_continuation_frames)"))
            return self._block_size()
        if ftype == RST_STREAM and self.resets.hit(now):
            return Breach("rapid-reset", (
                f"the client reset more than {self.resets.limit} streams within "
                f"{self.period:g}s (http2.max_resets per http2.period): rapid reset, "
                "CVE-2023-44487"))
        if ftype == SETTINGS and not flags & FLAG_ACK and self.settings.hit(now):
            return Breach("settings-flood", (
                f"more than {self.settings.limit} SETTINGS frames within {self.period:g}s "
                "(http2.max_control_frames per http2.period)"))
        if ftype == PING and not flags & FLAG_ACK and self.pings.hit(now):
            return Breach("ping-flood", (
                f"more than {self.pings.limit} PING frames within {self.period:g}s "
                "(http2.max_control_frames per http2.period)"))
        return None

    def refused_stream(self, limit: int) -> Breach | None:
        """One stream refused for going over `limit` concurrent streams; a Breach when
        this client does it more than the cap allows in one window."""
        if not self.refused.hit(self.clock()):
            return None
        return Breach("refused-streams", (
            f"the client opened more than {self.refused.limit} streams within "
            f"{self.period:g}s beyond SETTINGS_MAX_CONCURRENT_STREAMS {limit} "
            "(http2.max_refused_streams per http2.period; each was refused with "
            "RST_STREAM REFUSED_STREAM)"))

    def _block_size(self) -> Breach | None:
        if self._block > self.max_header_block:
            return Breach("header-block-size", (
                f"a compressed header block of more than {self.max_header_block} bytes "
                "(limits.max_header_bytes)"))
        return None
