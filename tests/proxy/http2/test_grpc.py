"""gRPC through the proxy with the real grpcio client: proxy/examples/grpc.yaml on free
ports. Per-call balancing on the L7 listener against per-connection on the L4 one, trailers
and grpc-status relayed and in the events, and the grpc.health.v1 active check."""
from __future__ import annotations

import collections
import pathlib
import time

import grpc
import pytest
import yaml

from labs.backend.grpc_mode import field_string, field_varint, parse_fields

EXAMPLE = pathlib.Path(__file__).resolve().parents[3] / "proxy" / "examples" / "grpc.yaml"
IDENTITY = {"request_serializer": lambda m: m, "response_deserializer": lambda m: m}


def example_on_free_ports(grpc_backends) -> dict:
    """grpc.yaml as shipped, with port 0 binds and the test's backends."""
    config = yaml.safe_load(EXAMPLE.read_text())
    config["admin"]["listen"] = "127.0.0.1:0"
    for listener in config["listeners"].values():
        listener["bind"] = "127.0.0.1:0"
    ports = {f"127.0.0.1:{9000 + i}": f"127.0.0.1:{grpc_backends[f'g{i}'].port}"
             for i in range(1, 5)}
    for backend in config["pools"]["grpc"]["backends"]:
        backend["address"] = ports[backend["address"]]
    config["pools"]["grpc"]["health"]["interval"] = "300ms"
    return config


@pytest.fixture(scope="module")
def proxy(proxy_factory, grpc_backends):
    proc = proxy_factory(example_on_free_ports(grpc_backends))
    wait_health(proc, {"b1": "healthy", "b2": "healthy", "b3": "healthy", "b4": "healthy"})
    return proc


@pytest.fixture(autouse=True)
def _clear(grpc_backends):
    yield
    for handle in grpc_backends.values():
        handle.clear_faults()


def wait_health(proc, want: dict, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got = {b: proc.backend_state("grpc", b)["health"] for b in want}
        if got == want:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"health {got}, expected {want}")
        time.sleep(0.1)


def whoami(channel):
    return channel.unary_unary("/lblab.toy.Echo/Whoami", **IDENTITY)


def test_l7_spreads_the_calls_of_one_channel_l4_pins_them(proxy):
    with grpc.insecure_channel(f"127.0.0.1:{proxy.port('grpc-l7')}") as channel:
        call = whoami(channel)
        l7 = collections.Counter(parse_fields(call(b"", timeout=5))[1] for _ in range(100))
    with grpc.insecure_channel(f"127.0.0.1:{proxy.port('grpc-l4')}") as channel:
        call = whoami(channel)
        l4 = collections.Counter(parse_fields(call(b"", timeout=5))[1] for _ in range(100))
    # Names: the toy backends g1..g4 behind the pool's b1..b4.
    assert l7 == {b"g1": 25, b"g2": 25, b"g3": 25, b"g4": 25}  # round robin, per call
    assert len(l4) == 1 and sum(l4.values()) == 100  # one connection, one backend


def test_grpc_status_is_relayed_and_in_the_event(proxy):
    with grpc.insecure_channel(f"127.0.0.1:{proxy.port('grpc-l7')}") as channel:
        reply = parse_fields(whoami(channel)(field_string(1, "hello"), timeout=5))
        assert reply[2] == b"hello"
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/lblab.toy.Nope/Missing", **IDENTITY)(b"", timeout=5)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "not implemented" in info.value.details()
    ok = proxy.wait_events(lambda e: e.get("type") == "request"
                           and e["path"] == "/lblab.toy.Echo/Whoami" and e.get("grpc"))
    assert ok[-1]["grpc"] == {"status": 0, "message": None} and ok[-1]["status"] == 200
    missing = proxy.wait_events(lambda e: e.get("type") == "request"
                                and e["path"] == "/lblab.toy.Nope/Missing")
    assert missing[-1]["grpc"]["status"] == 12


def test_server_streaming_through_the_proxy(proxy):
    with grpc.insecure_channel(f"127.0.0.1:{proxy.port('grpc-l7')}") as channel:
        stream = channel.unary_stream("/lblab.toy.Echo/Stream", **IDENTITY)
        replies = [parse_fields(m) for m in stream(field_varint(2, 5), timeout=5)]
    assert [r[3] for r in replies] == [1, 2, 3, 4, 5]
    assert len({r[1] for r in replies}) == 1  # one call: one backend


def test_injected_errors_reach_the_client_as_grpc_status(proxy, grpc_backends):
    for handle in grpc_backends.values():
        handle.control({"error_rate": 1.0, "error_status": 500})
    with grpc.insecure_channel(f"127.0.0.1:{proxy.port('grpc-l7')}") as channel:
        with pytest.raises(grpc.RpcError) as info:
            whoami(channel)(b"", timeout=5)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details() == "injected error"


def test_grpc_health_check_takes_a_not_serving_backend_out(proxy, grpc_backends):
    grpc_backends["g4"].control({"health_fail": True})
    wait_health(proxy, {"b4": "unhealthy", "b1": "healthy"})
    state = proxy.backend_state("grpc", "b4")
    assert "NOT_SERVING" in state["health_reason"]
    with grpc.insecure_channel(f"127.0.0.1:{proxy.port('grpc-l7')}") as channel:
        call = whoami(channel)
        names = {parse_fields(call(b"", timeout=5))[1] for _ in range(20)}
    assert names == {b"g1", b"g2", b"g3"}
    grpc_backends["g4"].clear_faults()
    wait_health(proxy, {"b4": "healthy"})


def test_http11_client_reaches_the_h2_pool(proxy):
    """An HTTP/1.1 client's request goes to the backends over HTTP/2 too; it gets the
    body (no trailers: HTTP/1.1 has no place for them here), the event gets grpc-status."""
    import http.client

    from labs.backend.grpc_mode import frame, unframe

    conn = http.client.HTTPConnection("127.0.0.1", proxy.port("grpc-l7"), timeout=5)
    conn.request("POST", "/lblab.toy.Echo/Whoami", body=frame(field_string(1, "h1")),
                 headers={"Content-Type": "application/grpc", "TE": "trailers"})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status == 200 and resp.getheader("content-type") == "application/grpc"
    reply = parse_fields(unframe(body)[0])
    assert reply[2] == b"h1" and reply[1] in (b"g1", b"g2", b"g3", b"g4")
    event = proxy.event(resp.getheader("x-request-id"))
    assert event["grpc"] == {"status": 0, "message": None}


def test_a_long_server_stream_outlives_the_response_timeout(proxy_factory, grpc_backends):
    """timeouts.response_header is the silence allowed between messages, not a cap on
    the whole stream: 6 replies 250 ms apart pass a 600 ms timeout."""
    config = example_on_free_ports(grpc_backends)
    config["pools"]["grpc"]["timeouts"] = {"response_header": "600ms"}
    del config["pools"]["grpc"]["health"]
    proc = proxy_factory(config)
    grpc_backends["g1"].control({"latency_ms": 250})
    with grpc.insecure_channel(f"127.0.0.1:{proc.port('grpc-l7')}") as channel:
        stream = channel.unary_stream("/lblab.toy.Echo/Stream", **IDENTITY)
        # Round robin starts at b1 (g1, the slow one) on a fresh proxy.
        replies = [parse_fields(m) for m in stream(field_varint(2, 6), timeout=10)]
    assert [r[1] for r in replies] == [b"g1"] * 6
    event = proc.wait_events(lambda e: e.get("path") == "/lblab.toy.Echo/Stream")[-1]
    assert event["termination"] == "--" and event["grpc"]["status"] == 0


def test_idle_backend_connections_close_after_backend_idle(proxy_factory, grpc_backends):
    from labs.backend.testing import start_backend

    config = example_on_free_ports(grpc_backends)
    del config["pools"]["grpc"]["health"]
    # A backend of its own: nobody else (health checks of other proxies) connects to it.
    with start_backend("g5", None, "127.0.0.1", "--mode", "grpc") as g5:
        config["pools"]["grpc"]["timeouts"] = {"backend_idle": "300ms"}
        config["pools"]["grpc"]["backends"] = [{"name": "only-g5",
                                                "address": f"127.0.0.1:{g5.port}"}]
        proc = proxy_factory(config)
        with grpc.insecure_channel(f"127.0.0.1:{proc.port('grpc-l7')}") as channel:
            assert parse_fields(whoami(channel)(b"", timeout=5))[1] == b"g5"
            assert g5.stats()["grpc"]["connections_open"] == 1
            deadline = time.monotonic() + 10
            while g5.stats()["grpc"]["connections_open"] != 0:
                assert time.monotonic() < deadline, "the idle backend connection stayed open"
                time.sleep(0.1)
            # The next call opens a new one.
            assert parse_fields(whoami(channel)(b"", timeout=5))[1] == b"g5"
