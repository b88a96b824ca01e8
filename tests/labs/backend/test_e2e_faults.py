"""Every fault, seen on the wire from a real backend process; and the control API."""

import http.client
import json
import socket
import time

import pytest

from .wire import Incomplete, connect, eventually, read_response

pytestmark = pytest.mark.timeout(30)

GET = b"GET /api/x HTTP/1.1\r\nHost: x\r\n\r\n"


def test_hang_never_answers_and_keeps_the_socket_open(backend):
    backend.control({"hang": True})
    with connect(backend.port, timeout=0.3) as sock:
        sock.sendall(GET)
        with pytest.raises(socket.timeout):
            sock.recv(1)  # no answer, and no close either (that would return b"")
        stats = backend.stats()  # the control API is never hung
        assert stats["in_flight"] >= 1 and stats["faults_injected"]["hang"] >= 1
    eventually(lambda: backend.stats()["in_flight"] == 0)  # released when the client leaves
    assert backend.get("/health/live").status == 200


def test_reset_closes_with_rst(backend):
    backend.control({"reset": True})
    with connect(backend.port) as sock:
        sock.sendall(GET)
        with pytest.raises(ConnectionResetError):
            sock.recv(4096)
    assert backend.stats()["faults_injected"]["reset"] >= 1


def test_crash_mid_response_cuts_the_body(backend):
    backend.control({"crash_mid_response": True})
    with connect(backend.port) as sock, sock.makefile("rb") as f:
        sock.sendall(GET)
        with pytest.raises(Incomplete) as info:
            read_response(f)
        assert 0 < len(info.value.partial) < info.value.expected
        assert info.value.partial.startswith(b'{"backend": "t1"')
    conn = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=3)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("X-Backend") == "t1"
        with pytest.raises(http.client.IncompleteRead):
            resp.read()
    finally:
        conn.close()


def test_warmup_answers_503_then_200(backend):
    backend.control({"warmup_s": 0.6})
    r = backend.get("/api/x")
    assert r.status == 503
    assert r.json()["error"] == "warming up" and r.headers["Retry-After"] == "1"
    assert backend.get("/health/ready").status == 503
    assert backend.get("/health").json()["status"] == "warming up"
    assert backend.get("/health/live").status == 200
    assert backend.stats()["warmup_remaining_s"] > 0
    eventually(lambda: backend.get("/api/x").status == 200, timeout=3)
    assert backend.get("/health/ready").status == 200


def test_dependency_down_liveness_says_200_while_requests_fail(backend):
    backend.control({"dependency_down": True})
    live = backend.get("/health/live")
    assert live.status == 200 and live.json() == {"status": "alive", "backend": "t1"}
    ready = backend.get("/health/ready")
    assert ready.status == 503 and ready.json()["checks"] == {"dependency": "down"}
    assert backend.get("/health").status == 503
    assert backend.get("/health/ready/cached").json()["checks"] == {"dependency": "down"}
    for path in ("/", "/api/x", "/work?ms=1"):
        r = backend.get(path)
        assert r.status == 503 and r.json()["error"] == "dependency down", path
    backend.clear_faults()
    assert backend.get("/health/ready").json() == {
        "status": "ready", "backend": "t1", "checks": {"dependency": "ok"}}


def test_error_rate_and_status(backend):
    backend.control({"error_rate": 1, "error_status": 502})
    r = backend.get("/api/x", headers={"X-Request-Id": "e1"})
    assert r.status == 502 and r.headers["X-Backend"] == "t1" and r.headers["X-Request-Id"] == "e1"
    assert r.json() == {"error": "injected error", "backend": "t1", "status": 502}
    assert backend.get("/health/ready").status == 200  # errors are for app requests


def test_latency_and_jitter_delay_app_requests_only(backend):
    backend.control({"latency_ms": 150, "jitter_ms": 50})
    started = time.monotonic()
    assert backend.get("/x").status == 200
    assert time.monotonic() - started >= 0.15
    with pytest.raises(socket.timeout):
        backend.get("/x", timeout=0.05)
    assert backend.get("/health/live", timeout=0.5).status == 200


def test_slow_and_failing_health(backend):
    backend.control({"health_latency_ms": 400})
    with pytest.raises(socket.timeout):
        backend.get("/health/ready", timeout=0.1)
    with pytest.raises(socket.timeout):
        backend.get("/health", timeout=0.1)
    assert backend.get("/health/live", timeout=0.5).status == 200
    assert backend.get("/x", timeout=0.5).status == 200
    backend.control({"health_latency_ms": 0, "health_fail": True})
    r = backend.get("/health/ready")
    assert r.status == 503 and r.json()["reason"] == "health_fail fault is set"
    assert backend.get("/health/live").status == 200
    backend.control({"live_fail": True, "live_latency_ms": 10})
    assert backend.get("/health/live").status == 503


def test_cpu_burn_blocks_the_backend(backend):
    backend.control({"cpu_ms": 150})
    # Two requests on two connections at once: the second waits for the first's CPU burn.
    a, b = connect(backend.port), connect(backend.port)
    with a, b, a.makefile("rb") as fa, b.makefile("rb") as fb:
        started = time.monotonic()
        a.sendall(GET)
        b.sendall(GET)
        assert read_response(fa).status == 200 and read_response(fb).status == 200
        assert time.monotonic() - started >= 0.3


def test_control_is_never_faulted(backend):
    backend.control({"hang": True, "reset": True, "warmup_s": 60, "latency_ms": 1000, "cpu_ms": 500})
    started = time.monotonic()
    stats = backend.stats()
    assert stats["faults"]["hang"] is True
    assert backend.faults()["latency_ms"] == 1000
    assert time.monotonic() - started < 0.5  # no latency or CPU burn on /_control
    assert backend.clear_faults()["hang"] is False


@pytest.mark.parametrize("body, message", [
    (b'{"error_rate": 1.5}', "error_rate must be between 0 and 1, got 1.5"),
    (b'{"latency_ms": -1}', "latency_ms must be >= 0, got -1"),
    (b'{"hang": "yes"}', 'hang must be true or false, got "yes"'),
    (b'{"error_status": 200}', "error_status must be an integer HTTP status between 400 and 599, got 200"),
    (b'{"latency_ms": 5, "nope": true}', "unknown fault 'nope'"),
    (b'[1]', 'faults must be a JSON object like {"latency_ms": 200}, got list'),
    (b'{"latency_ms": ', "malformed JSON (Expecting value: line 1 column 16 (char 15))"),
    (b'', "empty body"),
    (b'\xff\xfe', "malformed JSON"),
])
def test_bad_control_requests_get_400_and_change_nothing(backend, body, message):
    backend.control({"latency_ms": 7, "health_fail": True})
    before = backend.faults()
    r = backend.request("PUT", "/_control/faults", body=body)
    assert r.status == 400, r.body
    assert message in r.json()["error"]
    assert r.headers["X-Backend"] == "t1"
    assert backend.faults() == before


def test_control_update_is_partial_and_delete_clears(backend):
    r = backend.request("PUT", "/_control/faults", body={"latency_ms": 5})
    assert r.status == 200 and r.json()["changed"] == {"latency_ms": 5}
    r = backend.request("POST", "/_control/faults", body={"error_rate": 0.5})
    assert r.json()["faults"]["latency_ms"] == 5 and r.json()["faults"]["error_rate"] == 0.5
    r = backend.request("DELETE", "/_control/faults")
    assert r.status == 200 and r.json()["cleared"] is True
    assert r.json()["faults"]["latency_ms"] == 0 and r.json()["faults"]["error_rate"] == 0


def test_control_unknown_endpoint_and_method(backend):
    r = backend.get("/_control/nope")
    assert r.status == 404 and "/_control/faults" in r.json()["endpoints"]
    r = backend.request("PATCH", "/_control")
    assert r.status == 405 and r.headers["Allow"] == "GET"
    r = backend.get("/_control/crash")
    assert r.status == 405 and r.headers["Allow"] == "POST"


def test_stats_count_requests_by_status(backend):
    backend.reset_stats()
    backend.get("/a")
    backend.get("/health/live")
    backend.control({"error_rate": 1})
    backend.get("/b")
    stats = backend.stats()
    assert stats["name"] == "t1" and stats["port"] == backend.port
    assert stats["requests_total"] == 3
    assert stats["requests_by_status"] == {"200": 2, "500": 1}
    assert stats["requests_by_kind"] == {"app": 2, "health": 1}
    assert stats["in_flight"] == 0 and stats["session_store"] == "memory"
    assert stats["faults"]["error_rate"] == 1
    assert stats["uptime_s"] > 0 and stats["pid"] == backend.pid
    assert json.dumps(stats)  # plain JSON all the way down


def test_max_in_flight_sheds_the_next_request_with_retry_after(backend):
    backend.control({"max_in_flight": 1, "latency_ms": 800, "shed": "429",
                     "shed_retry_after_s": 3})
    with connect(backend.port, timeout=5) as slow:
        slow.sendall(GET)  # takes the one slot for 800 ms
        eventually(lambda: backend.stats()["in_flight"] == 1)
        r = backend.get("/api/x")
        assert r.status == 429 and r.headers.get("retry-after") == "3"
        assert r.json()["error"] == "overloaded" and r.json()["in_flight"] == 1
        with slow.makefile("rb") as f:
            assert read_response(f).status == 200  # the one in the slot is served
    assert backend.stats()["faults_injected"]["shed"] >= 1
    backend.control({"shed": "reset", "latency_ms": 300})
    with connect(backend.port, timeout=5) as slow, connect(backend.port) as dropped:
        slow.sendall(GET)
        eventually(lambda: backend.stats()["in_flight"] == 1)
        dropped.sendall(GET)
        with pytest.raises(ConnectionResetError):
            dropped.recv(4096)
