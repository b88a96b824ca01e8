"""Slow clients against a real proxy: body tricklers, body deadlines, header slowloris.

The starvation test measures what a normal client sees while forty clients
trickle request bodies at a byte a second into a pool whose backend takes at
most two requests at a time (max_connections_per_backend: 2). Before the fix
each trickler held a backend slot for as long as it liked, and a normal
client's success rate fell to a few per cent. The rate is printed (`-s`).
"""
from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.proxy.edge.harness import EdgeProxy, RecordingBackend, exchange, proxy_config, read_replies

pytestmark = pytest.mark.timeout(120)

TRICKLERS = 40


class Tricklers:
    """`n` connections that send a POST head, then one body byte per second each."""

    def __init__(self, port: int, n: int, content_length: int = 1000, first: bytes = b""):
        self.socks = []
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"POST /upload HTTP/1.1\r\nHost: h\r\nX-Request-Id: trickle-%d\r\n"
                      b"Content-Length: %d\r\n\r\n%b" % (i, content_length, first))
            self.socks.append(s)
        self.stop = threading.Event()
        self.closed_by_proxy = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            for s in list(self.socks):
                try:
                    s.sendall(b"x")
                except OSError:
                    self.socks.remove(s)
                    self.closed_by_proxy += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for s in self.socks:
            s.close()


def normal_client_success(port: int, requests: int) -> float:
    ok = 0
    for i in range(requests):
        if i % 2:
            data = b"GET /page/%d HTTP/1.1\r\nHost: h\r\n\r\n" % i
        else:
            data = (b"POST /form/%d HTTP/1.1\r\nHost: h\r\nContent-Length: 300\r\n\r\n" % i
                    + b"f" * 300)
        replies, _ = exchange(port, data, count=1, timeout=3)
        ok += bool(replies) and replies[0].status == 200
    return ok / requests


def test_forty_body_tricklers_do_not_starve_normal_clients():
    backend = RecordingBackend()
    config = proxy_config([backend.address], pool={"max_connections_per_backend": 2},
                          listener={"timeouts": {"request_body": "30s"}})
    try:
        with EdgeProxy(config) as proxy:
            attack = Tricklers(proxy.port(), TRICKLERS)
            try:
                time.sleep(1.5)  # every trickler has sent its head and a byte or two
                rate = normal_client_success(proxy.port(), 60)
                state = proxy.server.runtime.pools["p"].backends["b1"]
                # The last normal reply can reach us a moment before the proxy's thread
                # releases its slot; a trickler's slot would stay held for 30 s.
                deadline = time.monotonic() + 2.0
                while state.outstanding and time.monotonic() < deadline:
                    time.sleep(0.02)
                held = state.outstanding
            finally:
                attack.close()
            print(f"\n[edge] slow-clients: normal client success rate {rate:.0%} "
                  f"(60 requests) under {TRICKLERS} body tricklers")
            assert rate == 1.0
            assert held == 0  # no trickler holds a backend slot
    finally:
        backend.close()


def test_a_body_over_the_total_deadline_gets_408_and_frees_its_slot():
    backend = RecordingBackend()
    config = proxy_config([backend.address], pool={"max_connections_per_backend": 1},
                          listener={"timeouts": {"request_body": "10s",
                                                 "request_body_total": "1s"}})
    try:
        with EdgeProxy(config) as proxy:
            # Larger than what the proxy reads before picking a backend: it holds a slot.
            with socket.create_connection(("127.0.0.1", proxy.port()), timeout=5) as s:
                s.sendall(b"POST /big HTTP/1.1\r\nHost: h\r\nX-Request-Id: total-1\r\n"
                          b"Content-Length: 200000\r\n\r\n" + b"b" * 70_000)
                for _ in range(4):
                    time.sleep(0.4)
                    try:
                        s.sendall(b"b")
                    except OSError:
                        break
                replies, closed = read_replies(s, None, timeout=5)
            assert [r.status for r in replies] == [408] and closed
            assert replies[0].headers["x-lblab-error"] == "body-too-slow"
            assert b"request_body_total" in replies[0].body
            (event,) = proxy.requests("total-1")
            assert event.termination == "PR" and event.status == 408
            assert proxy.server.runtime.pools["p"].backends["b1"].outstanding == 0
            # The slot is free again for everyone else.
            assert exchange(proxy.port(), b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
                            count=1)[0][0].status == 200
    finally:
        backend.close()


def test_a_body_below_the_minimum_rate_gets_408():
    backend = RecordingBackend()
    config = proxy_config([backend.address],
                          listener={"timeouts": {"request_body": "1s", "min_body_rate": 100}})
    try:
        with EdgeProxy(config) as proxy:
            with socket.create_connection(("127.0.0.1", proxy.port()), timeout=5) as s:
                s.sendall(b"POST /slow HTTP/1.1\r\nHost: h\r\nX-Request-Id: rate-1\r\n"
                          b"Content-Length: 5000\r\n\r\n")
                for _ in range(12):  # a byte every 0.25 s: never a 1 s pause
                    try:
                        s.sendall(b"r")
                    except OSError:
                        break
                    time.sleep(0.25)
                replies, closed = read_replies(s, None, timeout=5)
            assert [r.status for r in replies] == [408] and closed
            assert replies[0].headers["x-lblab-error"] == "body-too-slow"
            assert b"min_body_rate" in replies[0].body
            assert proxy.requests("rate-1")[0].termination == "PR"
    finally:
        backend.close()


def test_a_fast_enough_body_passes_the_limits():
    backend = RecordingBackend()
    config = proxy_config([backend.address],
                          listener={"timeouts": {"request_body": "1s", "min_body_rate": 100,
                                                 "request_body_total": "5s"}})
    try:
        with EdgeProxy(config) as proxy:
            with socket.create_connection(("127.0.0.1", proxy.port()), timeout=5) as s:
                s.sendall(b"POST /ok HTTP/1.1\r\nHost: h\r\nContent-Length: 400\r\n\r\n")
                for _ in range(4):  # 100 bytes every 0.5 s: 200 bytes/s
                    time.sleep(0.5)
                    s.sendall(b"o" * 100)
                replies, _ = read_replies(s, 1)
            assert [r.status for r in replies] == [200]
    finally:
        backend.close()


def test_header_slowloris_still_gets_408():
    backend = RecordingBackend()
    config = proxy_config([backend.address], listener={"timeouts": {"client_header": "1s"}})
    try:
        with EdgeProxy(config) as proxy:
            with socket.create_connection(("127.0.0.1", proxy.port()), timeout=5) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n")
                for i in range(8):  # a header line every 0.3 s, never the blank line
                    time.sleep(0.3)
                    try:
                        s.sendall(b"X-%d: y\r\n" % i)
                    except OSError:
                        break
                replies, closed = read_replies(s, None, timeout=5)
            assert [r.status for r in replies] == [408] and closed
            assert replies[0].headers["x-lblab-error"] == "header-timeout"
    finally:
        backend.close()


def test_expect_100_continue_is_answered_by_the_proxy_while_it_reads_the_body():
    backend = RecordingBackend()
    try:
        with EdgeProxy(proxy_config([backend.address])) as proxy:
            mark = backend.mark()
            with socket.create_connection(("127.0.0.1", proxy.port()), timeout=5) as s:
                s.sendall(b"POST /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                          b"Content-Length: 4\r\n\r\n")
                s.settimeout(3)
                assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
                s.sendall(b"body")
                replies, _ = read_replies(s, 1)
            assert [r.status for r in replies] == [200]
            (got,) = backend.since(mark)
            assert got.endswith(b"\r\n\r\nbody") and b"expect" not in got.lower()
    finally:
        backend.close()
