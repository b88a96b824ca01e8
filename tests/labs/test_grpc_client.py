"""labs/traffic/grpc_client.py against a real toy gRPC backend: replies, errors, reconnects."""
from __future__ import annotations

import pytest

from labs.backend.testing import start_backend
from labs.traffic.grpc_client import WHOAMI, Channel, GrpcError, whoami_request


@pytest.fixture(scope="module")
def g1():
    with start_backend("g1", None, "127.0.0.1", "--mode", "grpc") as handle:
        yield handle


def test_calls_share_one_connection_and_name_the_backend(g1):
    ch = Channel("127.0.0.1", g1.port)
    try:
        names = [ch.unary(WHOAMI, whoami_request("hi")).backend() for _ in range(5)]
    finally:
        ch.close()
    assert names == ["g1"] * 5
    assert ch.connects == 1
    assert g1.stats()["grpc"]["calls"]["whoami"] >= 5


def test_a_grpc_error_status_is_raised_and_the_channel_stays(g1):
    g1.control({"error_rate": 1.0, "error_status": 503})
    ch = Channel("127.0.0.1", g1.port)
    try:
        with pytest.raises(GrpcError) as err:
            ch.unary(WHOAMI, b"")
        assert err.value.status == 14  # UNAVAILABLE
        assert ch.open
        g1.clear_faults()
        assert ch.unary(WHOAMI, b"").backend() == "g1"
        assert ch.connects == 1
    finally:
        g1.clear_faults()
        ch.close()


def test_a_reset_connection_is_an_error_then_a_new_connection(g1):
    g1.control({"reset": True})
    ch = Channel("127.0.0.1", g1.port, timeout=2.0)
    try:
        with pytest.raises(GrpcError):
            ch.unary(WHOAMI, b"")
        assert not ch.open
        g1.clear_faults()
        assert ch.unary(WHOAMI, b"").backend() == "g1"
        assert ch.connects == 2
    finally:
        g1.clear_faults()
        ch.close()
