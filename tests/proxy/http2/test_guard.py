"""FrameGuard (proxy/http2/guard.py) without sockets: real frames from hyperframe."""
from __future__ import annotations

from hyperframe.frame import (ContinuationFrame, DataFrame, HeadersFrame, PingFrame,
                              RstStreamFrame, SettingsFrame)

from proxy.http2.guard import PREFACE, FrameGuard, RateCap


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def guard(clock=None, **kw) -> FrameGuard:
    settings = dict(max_resets=3, max_control_frames=3, period=10.0, max_header_block=1000,
                    max_continuations=4)
    settings.update(kw)
    return FrameGuard(clock=clock or Clock(), **settings)


def headers(sid: int, block: bytes, end_headers: bool = True) -> bytes:
    f = HeadersFrame(sid, block)
    if end_headers:
        f.flags.add("END_HEADERS")
    return f.serialize()


def continuation(sid: int, block: bytes, end: bool = False) -> bytes:
    f = ContinuationFrame(sid, block)
    if end:
        f.flags.add("END_HEADERS")
    return f.serialize()


def rst(sid: int) -> bytes:
    return RstStreamFrame(sid, error_code=8).serialize()


def test_ordinary_traffic_passes():
    g = guard()
    data = PREFACE + SettingsFrame(0).serialize() + headers(1, b"x" * 50) + \
        DataFrame(1, b"body" * 100).serialize() + headers(3, b"y" * 50)
    assert g.feed(data) is None


def test_rapid_reset_is_caught_on_the_reset_over_the_cap():
    g = guard()
    stream = PREFACE
    for sid in (1, 3, 5):
        stream += headers(sid, b"h") + rst(sid)
    assert g.feed(stream) is None  # three resets: at the cap
    breach = g.feed(headers(7, b"h") + rst(7))
    assert breach.kind == "rapid-reset"
    assert "http2.max_resets" in breach.message and "CVE-2023-44487" in breach.message


def test_resets_spread_over_periods_are_fine():
    clock = Clock()
    g = guard(clock)
    g.feed(PREFACE)
    for round_ in range(5):
        for sid in range(3):
            assert g.feed(rst(2 * (round_ * 3 + sid) + 1)) is None
        clock.now += 10.0  # the next window


def test_continuation_flood_is_caught_by_frame_count():
    g = guard(max_header_block=10**6)
    data = PREFACE + headers(1, b"a", end_headers=False)
    data += b"".join(continuation(1, b"b") for _ in range(4))
    assert g.feed(data) is None
    breach = g.feed(continuation(1, b"b"))
    assert breach.kind == "continuation-flood"
    assert "http2.max_continuation_frames" in breach.message


def test_header_block_size_is_summed_over_continuations():
    g = guard(max_continuations=100)
    data = PREFACE + headers(1, b"a" * 600, end_headers=False)
    assert g.feed(data) is None
    breach = g.feed(continuation(1, b"b" * 600))
    assert breach.kind == "header-block-size"
    assert "limits.max_header_bytes" in breach.message


def test_settings_and_ping_floods():
    g = guard()
    g.feed(PREFACE)
    for _ in range(3):
        assert g.feed(SettingsFrame(0).serialize()) is None
    # ACKs are answers, not requests: never counted.
    ack = SettingsFrame(0)
    ack.flags.add("ACK")
    assert g.feed(ack.serialize() * 20) is None
    assert g.feed(SettingsFrame(0).serialize()).kind == "settings-flood"
    g = guard()
    g.feed(PREFACE)
    assert g.feed(PingFrame(0, b"12345678").serialize() * 3) is None
    assert g.feed(PingFrame(0, b"12345678").serialize()).kind == "ping-flood"


def test_frames_split_anywhere_across_reads():
    """The guard reads frame headers across reads: one byte at a time gives the same verdict."""
    data = PREFACE + b"".join(headers(2 * i + 1, b"h" * 20) + DataFrame(
        2 * i + 1, b"d" * 33).serialize() + rst(2 * i + 1) for i in range(4))
    whole = guard().feed(data)
    g = guard()
    verdicts = [g.feed(data[i:i + 1]) for i in range(len(data))]
    found = [v for v in verdicts if v is not None]
    assert whole is not None and whole.kind == "rapid-reset"
    assert found and found[0].kind == "rapid-reset"


def test_rate_cap_windows():
    cap = RateCap(2, 1.0)
    assert [cap.hit(0.0), cap.hit(0.1), cap.hit(0.2)] == [False, False, True]
    assert cap.hit(1.5) is False  # a new window
