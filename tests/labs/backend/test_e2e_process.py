"""The backend as a process: CLI faults, seeded randomness, crash, start failures."""

import socket

import pytest

from labs.backend.testing import BackendError, free_port, start_backend, start_backends

from .wire import read_response

pytestmark = pytest.mark.timeout(30)


def test_cli_fault_flags_apply_from_the_start():
    with start_backend("w1", None, "127.0.0.1", "--warmup", "30", "--latency-ms", "5") as b:
        r = b.get("/")
        assert r.status == 503 and r.json()["error"] == "warming up"
        assert b.get("/health/ready").status == 503
        assert b.get("/health/live").status == 200
        faults = b.faults()
        assert faults["warmup_s"] == 30 and faults["latency_ms"] == 5
        b.control({"warmup_s": 0})
        assert b.get("/").status == 200


def test_same_seed_same_error_sequence():
    backends = start_backends(["s1", "s2"], "--error-rate", "0.5", "--seed", "7")
    try:
        sequences = [[b.get("/").status for _ in range(30)] for b in backends]
    finally:
        for b in backends:
            b.stop()
    assert sequences[0] == sequences[1]
    assert set(sequences[0]) == {200, 500}


def test_fixed_port_and_host():
    port = free_port("127.0.0.2")
    with start_backend("h1", port, "127.0.0.2") as b:
        assert b.port == port and b.url == f"http://127.0.0.2:{port}"
        # Another loopback address stands in for another client IP.
        with socket.create_connection(("127.0.0.2", port), timeout=3,
                                      source_address=("127.0.0.3", 0)) as sock:
            local = sock.getsockname()[1]
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            with sock.makefile("rb") as f:
                echo = read_response(f).json()
        assert echo["client"] == f"127.0.0.3:{local}"


def test_crash_endpoint_exits_the_process():
    b = start_backend("c1")
    try:
        assert b.crash(code=3) == 3
        assert not b.alive
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", b.port), timeout=1).close()
    finally:
        b.stop()


def test_stop_is_graceful():
    b = start_backend("g1")
    assert b.stop() == 0


def test_bad_flags_fail_fast_with_the_reason():
    with pytest.raises(BackendError, match="error_rate must be between 0 and 1, got 2"):
        start_backend("bad", None, "127.0.0.1", "--error-rate", "2")


def test_port_in_use_is_reported():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BackendError, match="cannot listen"):
            start_backend("busy", port)


def test_helper_starts_a_backend_whose_liveness_fails_and_reports_refused_control():
    with start_backend("lf", None, "127.0.0.1", "--live-fail") as b:
        assert b.get("/health/live").status == 503
        with pytest.raises(BackendError, match="error_rate must be between 0 and 1, got 3"):
            b.control({"error_rate": 3})
        assert "listening on" in b.output()
