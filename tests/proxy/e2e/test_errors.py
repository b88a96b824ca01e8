"""The error contract end to end: bad input, failing backends, timeouts, retries.

Every error the proxy makes must carry X-LBLab-Error, and its request event
(read from the access log) must say proxy_error and the termination code.
After each bad input the proxy must still serve.
"""
from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.proxy.e2e.support import (
    RawConn,
    backend_entry,
    base_config,
    dead_port,
    parse_response,
    raw,
    request,
)

pytestmark = pytest.mark.timeout(60)


class GarbageServer(threading.Thread):
    """Answers every request with bytes that are not HTTP."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop_flag = threading.Event()

    def run(self):
        while not self.stop_flag.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(65536)
                    conn.sendall(b"this is not http at all\r\n\r\n")
                except OSError:
                    pass

    def stop(self):
        self.stop_flag.set()
        self.join(2)
        self.sock.close()


@pytest.fixture(scope="module")
def garbage():
    server = GarbageServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(backends, proxy_factory, garbage):
    b1, b2, b3 = backends["b1"], backends["b2"], backends["b3"]
    dead = f"127.0.0.1:{dead_port()}"
    pools = {
        "good": {"backends": [backend_entry(b1, "g-b1")]},
        "empty": {"backends": []},
        "maint": {"backends": [backend_entry(b2, "m-b2", state="maintenance")]},
        "retry": {"retries": 1, "backends": [
            {"name": "dead1", "address": dead}, backend_entry(b3, "r-b3")]},
        "alldead": {"retries": 1, "timeouts": {"connect": "500ms"}, "backends": [
            {"name": "dead2", "address": dead}, {"name": "dead3", "address": dead}]},
        "garbage": {"backends": [{"name": "junk", "address": f"127.0.0.1:{garbage.port}"}]},
        "slow": {"timeouts": {"response_header": "500ms"}, "backends": [backend_entry(b2, "s-b2")]},
        "crashy": {"backends": [backend_entry(b3, "c-b3")]},
        "limited": {"max_connections_per_backend": 1, "backends": [backend_entry(b1, "l-b1")]},
    }
    routes = {name: {"match": {"path_prefix": f"/{name}"}, "forward": name} for name in pools}
    routes["tight_all"] = {"forward": "good"}
    listeners = {
        "web": {"bind": "127.0.0.1:0", "routes": [r for r in routes if r != "tight_all"]},
        "tight": {"bind": "127.0.0.1:0", "routes": ["tight_all"],
                  "limits": {"max_header_bytes": 4096, "max_body_bytes": 1000},
                  "timeouts": {"client_header": "500ms", "request_body": "500ms"}},
    }
    return proxy_factory(base_config(pools, routes, listeners))


def check_proxy_error(proxy, resp, status: int, code: str, termination: str) -> dict:
    assert resp.status == status, resp
    assert resp.headers.get("x-lblab-error") == code, resp.headers
    assert resp.json()["error"] == code
    event = proxy.event(resp.request_id)
    assert event["status"] == status
    assert event["proxy_error"] is True
    assert event["termination"] == termination, event
    assert event["error"]
    return event


def still_serving(proxy, listener="web"):
    path = "/good/alive" if listener == "web" else "/alive"
    resp = request(proxy.port(listener), path=path)
    assert resp.status == 200 and resp.backend == "b1"


# ---------------------------------------------------------------- malformed requests

@pytest.mark.parametrize("data, code", [
    (b"GARBAGE\r\n\r\n", "bad-request"),
    (b"GET / HTTP/1.1\r\nHost: h\r\nBad Header: x\r\n\r\n", "bad-request"),
    (b"GET / HTTP/1.1\r\nHost h\r\n\r\n", "bad-request"),
    (b"GET /good HTTP/1.1\r\n\r\n", "bad-request"),  # no Host
])
def test_malformed_request_is_400_and_closed(proxy, data, code):
    with RawConn(proxy.port()) as conn:
        conn.send(data)
        resp = parse_response(conn.rest())
    check_proxy_error(proxy, resp, 400, code, "PR")
    still_serving(proxy)


def test_header_block_too_large_is_431(proxy):
    data = b"GET /x HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 6000 + b"\r\n\r\n"
    resp = parse_response(raw(proxy.port("tight"), data))
    check_proxy_error(proxy, resp, 431, "headers-too-large", "PR")
    still_serving(proxy, "tight")


def test_body_over_limit_by_content_length_is_413_up_front(proxy, backends):
    before = backends["b1"].stats()["requests_total"]
    resp = request(proxy.port("tight"), "POST", "/x", body=b"b" * 2000)
    check_proxy_error(proxy, resp, 413, "body-too-large", "PR")
    assert backends["b1"].stats()["requests_total"] == before  # nothing reached it
    still_serving(proxy, "tight")


def test_chunked_body_over_limit_is_413_while_streaming(proxy):
    with RawConn(proxy.port("tight")) as conn:
        conn.send(b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(4):
            conn.send(b"190\r\n" + b"c" * 400 + b"\r\n")
        resp = parse_response(conn.rest())
    check_proxy_error(proxy, resp, 413, "body-too-large", "PR")
    still_serving(proxy, "tight")


@pytest.mark.parametrize("data", [
    b"POST /good HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST /good HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 30\r\n\r\n"
    b"hello",
])
def test_ambiguous_length_is_400_and_closed(proxy, backends, data):
    before = backends["b1"].stats()["requests_total"]
    with RawConn(proxy.port()) as conn:
        conn.send(data)
        out = conn.rest()
    assert out.count(b"HTTP/1.1 ") == 1  # one answer: the smuggled request is never read
    resp = parse_response(out)
    check_proxy_error(proxy, resp, 400, "ambiguous-length", "PR")
    assert resp.headers["connection"] == "close"
    assert backends["b1"].stats()["requests_total"] == before  # nothing was forwarded
    still_serving(proxy)


def test_bad_chunk_size_is_400_and_closed(proxy):
    with RawConn(proxy.port()) as conn:
        conn.send(b"POST /good/upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5\r\nhello\r\nzz\r\nxx\r\n0\r\n\r\n")
        out = conn.rest()
    resp = parse_response(out)
    check_proxy_error(proxy, resp, 400, "bad-chunk", "PR")
    still_serving(proxy)


def test_slow_headers_get_408(proxy):
    with RawConn(proxy.port("tight")) as conn:
        conn.send(b"GET /x HTTP/1.1\r\nHost: h\r\n")  # never finished
        started = time.monotonic()
        resp = parse_response(conn.rest())
        waited = time.monotonic() - started
    check_proxy_error(proxy, resp, 408, "header-timeout", "PR")
    assert waited < 5  # client_header is 500 ms: the client could not hold the proxy
    still_serving(proxy, "tight")


def test_idle_connection_without_a_request_is_closed_silently(proxy):
    with RawConn(proxy.port("tight")) as conn:
        assert conn.closed_by_peer(timeout=5)
        assert conn.buf == b""


def test_slow_body_gets_408(proxy):
    with RawConn(proxy.port("tight")) as conn:
        conn.send(b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
        resp = parse_response(conn.rest())
    check_proxy_error(proxy, resp, 408, "body-timeout", "PR")
    still_serving(proxy, "tight")


# ---------------------------------------------------------------- failing backends

def test_backend_garbage_is_502(proxy):
    resp = request(proxy.port(), path="/garbage/x")
    event = check_proxy_error(proxy, resp, 502, "bad-response", "SH")
    assert event["backend"] == "junk"
    still_serving(proxy)


def test_backend_reset_before_response_is_502(proxy, backends):
    backends["b3"].control({"reset": True})
    resp = request(proxy.port(), "POST", "/crashy/x", body=b"{}")
    check_proxy_error(proxy, resp, 502, "backend-closed", "SH")
    still_serving(proxy)


def test_backend_crash_mid_response_closes_the_client(proxy, backends):
    backends["b3"].control({"crash_mid_response": True})
    with RawConn(proxy.port()) as conn:
        conn.send(b"GET /crashy/x HTTP/1.1\r\nHost: h\r\nX-Request-Id: crash-1\r\n\r\n")
        out = conn.rest()
    head, _, body = out.partition(b"\r\n\r\n")
    resp = parse_response(out)
    assert resp.status == 200  # the head went out before the backend died ...
    assert len(body) < int(resp.headers["content-length"])  # ... the body never completed
    event = proxy.event("crash-1")
    assert event["termination"] == "SD" and event["backend"] == "c-b3"
    assert "middle of the response body" in event["error"]
    still_serving(proxy)


def test_hanging_backend_is_504(proxy, backends):
    backends["b2"].control({"hang": True})
    started = time.monotonic()
    resp = request(proxy.port(), path="/slow/x")
    assert time.monotonic() - started < 5
    event = check_proxy_error(proxy, resp, 504, "response-timeout", "PH")
    assert event["backend"] == "s-b2"
    state = proxy.backend_state("slow", "s-b2")
    assert state["outstanding"] == 0
    still_serving(proxy)


def test_empty_pool_is_503(proxy):
    resp = request(proxy.port(), path="/empty/x")
    check_proxy_error(proxy, resp, 503, "no-backend", "PQ")
    assert "has no backends" in resp.json()["message"]


def test_no_eligible_backend_is_503_with_the_reason(proxy):
    resp = request(proxy.port(), path="/maint/x")
    check_proxy_error(proxy, resp, 503, "no-backend", "PQ")
    assert "m-b2 maintenance" in resp.json()["message"]


def test_connection_limit_is_503(proxy, backends):
    backends["b1"].control({"latency_ms": 800})
    results = []

    def slow_request():
        results.append(request(proxy.port(), path="/limited/slow"))

    first = threading.Thread(target=slow_request)
    first.start()
    deadline = time.monotonic() + 5
    while proxy.backend_state("limited", "l-b1")["outstanding"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    refused = request(proxy.port(), path="/limited/second")
    first.join(10)
    check_proxy_error(proxy, refused, 503, "backend-limit", "PQ")
    assert results and results[0].status == 200


def test_connect_failure_is_retried_on_another_backend(proxy):
    statuses = []
    with_retry = []
    for i in range(10):
        resp = request(proxy.port(), path=f"/retry/{i}")
        statuses.append(resp.status)
        event = proxy.event(resp.request_id)
        assert event["backend"] == "r-b3"
        if event["retries"]:
            with_retry.append(event)
    assert statuses == [200] * 10  # none lost
    assert with_retry, "round robin must have picked the dead backend at least once"
    retry = with_retry[0]["retries"][0]
    assert retry["backend"] == "dead1" and "cannot connect" in retry["error"]
    assert with_retry[0]["termination"] == "--" and not with_retry[0]["proxy_error"]


def test_connect_failure_everywhere_is_503(proxy):
    resp = request(proxy.port(), path="/alldead/x")
    event = check_proxy_error(proxy, resp, 503, "connect-failed", "PC")
    assert len(event["retries"]) == 1  # bounded by pools.alldead.retries
    assert {event["retries"][0]["backend"], event["backend"]} == {"dead2", "dead3"}


# ---------------------------------------------------------------- clients that leave

def wait_outstanding_zero(proxy, pool, name, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        state = proxy.backend_state(pool, name)
        if state["outstanding"] == 0:
            return state
        assert time.monotonic() < deadline, state
        time.sleep(0.02)


def test_client_vanishing_mid_request_frees_the_slot(proxy):
    with RawConn(proxy.port()) as conn:
        conn.send(b"POST /good/upload HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n"
                  b"X-Request-Id: vanish-1\r\n\r\n" + b"v" * 70_000)
        # (over the 64 KiB the proxy reads before it picks a backend)
        deadline = time.monotonic() + 5
        while proxy.backend_state("good", "g-b1")["outstanding"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    event = proxy.event("vanish-1")
    assert event["termination"] == "CR" and not event["proxy_error"]
    state = wait_outstanding_zero(proxy, "good", "g-b1")
    assert state["active_connections"] == 0
    still_serving(proxy)


def test_client_leaving_while_waiting_frees_the_slot(proxy, backends):
    backends["b2"].control({"latency_ms": 2000})
    with RawConn(proxy.port()) as conn:
        conn.send(b"GET /slow/wait HTTP/1.1\r\nHost: h\r\nX-Request-Id: vanish-2\r\n\r\n")
        deadline = time.monotonic() + 5
        while proxy.backend_state("slow", "s-b2")["outstanding"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    event = proxy.event("vanish-2")
    assert event["termination"] == "CH"
    wait_outstanding_zero(proxy, "slow", "s-b2")


def test_backend_5xx_passes_through_without_the_proxy_header(proxy, backends):
    backends["b1"].control({"error_rate": 1.0, "error_status": 503})
    resp = request(proxy.port(), path="/good/x")
    assert resp.status == 503
    assert "x-lblab-error" not in resp.headers
    event = proxy.event(resp.request_id)
    assert event["proxy_error"] is False and event["termination"] == "--"
