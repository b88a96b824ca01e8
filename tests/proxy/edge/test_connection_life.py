"""A real proxy at the edges of a connection's life: retries on a lost fresh connection,
the HTTP/2 preface on an HTTP/1.1 listener, an upgrade with a body, and a listener
flipped between L7 and L4 under open connections."""
from __future__ import annotations

import socket
import struct
import threading
import time

import h2.config
import h2.connection
import pytest

from tests.proxy.edge.harness import (
    EdgeProxy,
    RecordingBackend,
    exchange,
    proxy_config,
    read_replies,
)

pytestmark = pytest.mark.timeout(120)


def lose(how: str):
    """A backend reply hook: requests whose target names `lose` get a reset or an EOF."""
    def reply(target: bytes, conn: socket.socket):
        if b"lose" not in target:
            return None
        if how == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        return b""
    return reply


# ---------------------------------------------------------------- retry on a fresh connection

@pytest.mark.parametrize("how", ["reset", "eof"])
def test_an_idempotent_request_lost_on_a_fresh_connection_is_retried(how):
    bad = RecordingBackend(reply=lose(how))
    good = RecordingBackend()
    config = proxy_config([bad.address, good.address],
                          pool={"retries": 1, "balancer": {"algorithm": "round_robin"}})
    try:
        with EdgeProxy(config) as proxy:
            gets = [exchange(proxy.port(), f"GET /lose/{i} HTTP/1.1\r\nHost: h\r\n"
                             f"X-Request-Id: get-{how}-{i}\r\n\r\n".encode(), count=1)[0]
                    for i in range(4)]
            assert [r[0].status for r in gets] == [200] * 4
            retried = [e for e in proxy.requests() if e.retries]
            assert retried, "round robin sent none of the GETs to the failing backend"
            for event in retried:
                assert event.backend == "b2" and event.status == 200
                assert event.retries[0]["backend"] == "b1"
                assert "new connection to b1" in event.retries[0]["error"]
            # A POST is not idempotent: it is never sent twice.
            posts = [exchange(proxy.port(), f"POST /lose/{i} HTTP/1.1\r\nHost: h\r\n"
                              "Content-Length: 2\r\n\r\nhi".encode(), count=1)[0]
                     for i in range(4)]
            statuses = sorted(r[0].status for r in posts)
            assert 502 in statuses and 200 in statuses
            lost = [r[0] for r in posts if r[0].status == 502]
            assert all(r.headers["x-lblab-error"] == "backend-closed" for r in lost)
    finally:
        bad.close()
        good.close()


def test_no_retry_when_retries_is_zero():
    bad = RecordingBackend(reply=lose("reset"))
    try:
        with EdgeProxy(proxy_config([bad.address], pool={"retries": 0})) as proxy:
            replies, _ = exchange(proxy.port(), b"GET /lose HTTP/1.1\r\nHost: h\r\n\r\n",
                                  count=1)
            assert replies[0].status == 502
            assert replies[0].headers["x-lblab-error"] == "backend-closed"
    finally:
        bad.close()


# ---------------------------------------------------------------- HTTP/2 preface, upgrade with body

@pytest.fixture(scope="module")
def plain():
    backend = RecordingBackend()
    with EdgeProxy(proxy_config([backend.address])) as proxy:
        yield proxy, backend
    backend.close()


def test_an_http2_prior_knowledge_client_gets_505_as_documented(plain):
    proxy, backend = plain
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    stream = client.get_next_available_stream_id()
    client.send_headers(stream, [(":method", "GET"), (":path", "/"), (":scheme", "http"),
                                 (":authority", "h")], end_stream=True)
    mark = backend.mark()
    replies, closed = exchange(proxy.port(), client.data_to_send(), count=None)
    assert [r.status for r in replies] == [505] and closed
    assert replies[0].headers["x-lblab-error"] == "http-version"
    assert b"HTTP/1.1 only" in replies[0].body
    assert backend.since(mark) == []
    event = proxy.requests()[-1]
    assert event.status == 505 and event.termination == "PR"


def test_an_upgrade_request_with_a_body_is_refused_at_once(plain):
    proxy, backend = plain
    mark = backend.mark()
    started = time.monotonic()
    replies, closed = exchange(
        proxy.port(), b"POST /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
        b"Connection: upgrade\r\nContent-Length: 5\r\n\r\nhello", count=None)
    assert [r.status for r in replies] == [400] and closed
    assert b"upgrade request" in replies[0].body
    assert backend.since(mark) == []  # no backend connection was held for it
    assert time.monotonic() - started < 5  # not a gateway timeout later


# ---------------------------------------------------------------- L7 <-> L4 flip

def flipped(config: dict, protocol: str) -> dict:
    out = {**config, "listeners": {"web": dict(config["listeners"]["web"])}}
    web = out["listeners"]["web"]
    if protocol == "tcp":
        web.pop("routes", None)
        web.update(protocol="tcp", pool="p")
    else:
        web.pop("pool", None)
        web.update(protocol="http", routes=["all"])
    return out


def slow_reply(target: bytes, conn: socket.socket):
    if b"slow" in target:
        time.sleep(0.6)
    return None


def test_flipping_to_l4_closes_idle_and_drains_busy_http_connections():
    backend = RecordingBackend(reply=slow_reply)
    config = proxy_config([backend.address])
    try:
        with EdgeProxy(config) as proxy:
            port = proxy.port()
            idle = socket.create_connection(("127.0.0.1", port), timeout=5)
            busy = socket.create_connection(("127.0.0.1", port), timeout=5)
            idle.sendall(b"GET /first HTTP/1.1\r\nHost: h\r\n\r\n")
            assert [r.status for r in read_replies(idle, 1)[0]] == [200]
            busy.sendall(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
            time.sleep(0.2)  # the slow request is at the backend now
            proxy.apply(flipped(config, "tcp"))
            # The idle keep-alive connection is closed, never answered 404.
            idle.settimeout(5)
            assert idle.recv(100) == b""
            # The request in flight gets its response, then the connection closes.
            replies, closed = read_replies(busy, None)
            assert [r.status for r in replies] == [200] and closed
            assert replies[0].headers.get("connection") == "close"
            assert not [e for e in proxy.requests() if e.status == 404]
            # New connections get the new mode: bytes relayed as they are (L4).
            replies, _ = exchange(port, b"GET /via-l4 HTTP/1.1\r\nHost: h\r\n\r\n", count=1)
            assert replies[0].body == b"ok /via-l4" and "x-request-id" not in replies[0].headers
            # And back to L7: an L4 connection opened before keeps its relay (drain).
            relay = socket.create_connection(("127.0.0.1", port), timeout=5)
            relay.sendall(b"GET /l4-before HTTP/1.1\r\nHost: h\r\n\r\n")
            assert read_replies(relay, 1)[0][0].body == b"ok /l4-before"
            proxy.apply(config)
            relay.sendall(b"GET /l4-after HTTP/1.1\r\nHost: h\r\n\r\n")
            assert read_replies(relay, 1)[0][0].body == b"ok /l4-after"
            replies, _ = exchange(port, b"GET /via-l7 HTTP/1.1\r\nHost: h\r\n\r\n", count=1)
            assert replies[0].status == 200 and "x-request-id" in replies[0].headers
            for sock in (idle, busy, relay):
                sock.close()
    finally:
        backend.close()


def test_a_kept_alive_connection_never_sees_404_during_repeated_flips():
    backend = RecordingBackend()
    config = proxy_config([backend.address])
    try:
        with EdgeProxy(config) as proxy:
            port = proxy.port()
            stop = threading.Event()
            statuses: list[int] = []

            def client():
                while not stop.is_set():
                    try:
                        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
                            for i in range(20):
                                s.sendall(f"GET /k{i} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
                                replies, closed = read_replies(s, 1, timeout=3)
                                statuses.extend(r.status for r in replies)
                                if closed or not replies:
                                    break
                    except OSError:
                        pass

            threads = [threading.Thread(target=client) for _ in range(3)]
            for t in threads:
                t.start()
            for _ in range(6):
                time.sleep(0.15)
                proxy.apply(flipped(config, "tcp"))
                time.sleep(0.15)
                proxy.apply(config)
            stop.set()
            for t in threads:
                t.join(10)
            assert statuses and 404 not in statuses
            assert set(statuses) == {200}
    finally:
        backend.close()


def test_a_request_whose_body_is_still_coming_at_the_flip_is_finished_not_404():
    backend = RecordingBackend()
    config = proxy_config([backend.address])
    try:
        with EdgeProxy(config) as proxy:
            with socket.create_connection(("127.0.0.1", proxy.port()), timeout=5) as s:
                s.sendall(b"POST /form HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nhalf")
                time.sleep(0.2)
                proxy.apply(flipped(config, "tcp"))
                s.sendall(b"-done")
                s.sendall(b"!")
                replies, closed = read_replies(s, None)
            assert [r.status for r in replies] == [200] and closed
            assert replies[0].body == b"ok /form"
            assert replies[0].headers.get("connection") == "close"
    finally:
        backend.close()


def test_a_slow_pipelined_head_does_not_cost_the_response_before_it():
    backend = RecordingBackend(reply=slow_reply)
    config = proxy_config([backend.address], listener={"timeouts": {"client_header": "300ms"}})
    try:
        with EdgeProxy(config) as proxy:
            with socket.create_connection(("127.0.0.1", proxy.port()), timeout=5) as s:
                # The second head never completes; its 408 comes after the first answer.
                s.sendall(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\nGET /next HTTP/1.1\r\nHo")
                replies, closed = read_replies(s, None)
            assert [r.status for r in replies] == [200, 408] and closed
            assert replies[0].body == b"ok /slow"
            assert replies[1].headers["x-lblab-error"] == "header-timeout"
    finally:
        backend.close()
