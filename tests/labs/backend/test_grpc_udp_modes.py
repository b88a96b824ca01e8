"""--mode grpc (with the real grpcio client) and --mode udp (Python UDP sockets), with
the fault knobs, and the hand-made protobuf encoding checked on its own."""
from __future__ import annotations

import socket
import subprocess
import sys

import grpc
import pytest

from labs.backend.grpc_mode import field_string, field_varint, frame, parse_fields, unframe, \
    varint
from labs.backend.testing import REPO_ROOT, start_backend

IDENTITY = {"request_serializer": lambda m: m, "response_deserializer": lambda m: m}
HEALTH = "/grpc.health.v1.Health/Check"


@pytest.fixture(scope="module")
def g1():
    with start_backend("g1", None, "127.0.0.1", "--mode", "grpc") as handle:
        yield handle


@pytest.fixture(scope="module")
def u1():
    with start_backend("u1", None, "127.0.0.1", "--mode", "udp") as handle:
        yield handle


@pytest.fixture(autouse=True)
def _clear(request):
    yield
    for name in ("g1", "u1"):
        if name in request.fixturenames:
            request.getfixturevalue(name).clear_faults()


@pytest.fixture
def channel(g1):
    with grpc.insecure_channel(f"127.0.0.1:{g1.port}") as ch:
        yield ch


# ---------------------------------------------------------------- protobuf by hand

def test_encoding_matches_protobuf_wire_format():
    assert field_string(1, "b1") == b"\x0a\x02b1"  # tag 0x0a, length, bytes
    assert varint(300) == b"\xac\x02"
    assert field_varint(2, 5) == b"\x10\x05"
    assert parse_fields(field_string(1, "é" * 100) + field_varint(3, 300)) == \
        {1: ("é" * 100).encode(), 3: 300}
    assert unframe(frame(b"abc") + frame(b"")) == [b"abc", b""]
    with pytest.raises(ValueError):
        unframe(b"\x00\x00\x00\x00\x09abc")


# ---------------------------------------------------------------- grpc mode

def test_whoami_carries_the_name_as_field_1(g1, channel):
    reply = channel.unary_unary("/lblab.toy.Echo/Whoami", **IDENTITY)(field_string(1, "hi"),
                                                                       timeout=5)
    assert parse_fields(reply) == {1: b"g1", 2: b"hi"}
    assert g1.scheme == "grpc" and g1.control_port


def test_server_streaming(channel):
    stream = channel.unary_stream("/lblab.toy.Echo/Stream", **IDENTITY)
    replies = [parse_fields(m) for m in stream(field_varint(2, 4), timeout=5)]
    assert [(r[1], r[3]) for r in replies] == [(b"g1", 1), (b"g1", 2), (b"g1", 3), (b"g1", 4)]


def test_health_service_follows_the_readiness_knobs(g1, channel):
    check = channel.unary_unary(HEALTH, **IDENTITY)
    assert parse_fields(check(b"", timeout=5)) == {1: 1}  # SERVING
    assert parse_fields(check(field_string(1, "lblab.toy.Echo"), timeout=5)) == {1: 1}
    g1.control({"health_fail": True})
    assert parse_fields(check(b"", timeout=5)) == {1: 2}  # NOT_SERVING
    with pytest.raises(grpc.RpcError) as info:
        check(field_string(1, "no.such.Service"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("faults,code,details", [
    ({"error_rate": 1.0, "error_status": 503}, grpc.StatusCode.UNAVAILABLE, "injected error"),
    ({"error_rate": 1.0, "error_status": 500}, grpc.StatusCode.INTERNAL, "injected error"),
    ({"dependency_down": True}, grpc.StatusCode.UNAVAILABLE, "dependency down"),
    ({"warmup_s": 30}, grpc.StatusCode.UNAVAILABLE, "warming up, retry in 30 s"),
])
def test_faults_become_grpc_statuses(g1, channel, faults, code, details):
    g1.control(faults)
    with pytest.raises(grpc.RpcError) as info:
        channel.unary_unary("/lblab.toy.Echo/Whoami", **IDENTITY)(b"", timeout=5)
    assert info.value.code() == code and info.value.details() == details


def test_hang_is_a_deadline_and_reset_is_unavailable(g1, channel):
    call = channel.unary_unary("/lblab.toy.Echo/Whoami", **IDENTITY)
    g1.control({"hang": True})
    with pytest.raises(grpc.RpcError) as info:
        call(b"", timeout=0.5)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    g1.control({"hang": False, "reset": True})
    with pytest.raises(grpc.RpcError) as info:
        call(b"", timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_unknown_method_is_unimplemented(channel):
    with pytest.raises(grpc.RpcError) as info:
        channel.unary_unary("/lblab.toy.Echo/Nope", **IDENTITY)(b"", timeout=5)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_tls_is_refused_in_grpc_mode():
    done = subprocess.run([sys.executable, "-m", "labs.backend", "--name", "x", "--port", "0",
                           "--mode", "grpc", "--tls"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2 and "--tls is not available with --mode grpc" in done.stderr


# ---------------------------------------------------------------- udp mode

def ask(port: int, payload: bytes, timeout: float = 3.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(payload, ("127.0.0.1", port))
        try:
            return s.recv(2048)
        except socket.timeout:
            return None


def test_udp_answers_name_space_payload(u1):
    assert ask(u1.port, b"hello world") == b"u1 hello world"
    assert u1.scheme == "udp"
    assert u1.stats()["udp"]["datagrams"] >= 1


def test_udp_faults(u1):
    u1.control({"error_rate": 1.0})
    assert ask(u1.port, b"x") == b"ERR injected error"
    u1.clear_faults()
    u1.control({"hang": True})
    assert ask(u1.port, b"x", timeout=0.5) is None  # dropped: silence
