"""UDP listeners end to end: real datagrams from Python sockets (127.x addresses as
different clients), toy UDP backends, a real proxy process and its events."""
from __future__ import annotations

import socket
import time

import pytest

from proxy.config import ConfigError, parse_config

TIMEOUT = 3.0


def udp_config(backends, *, health=None, flow_idle="500ms", max_flows=3,
               algorithm="round_robin") -> dict:
    pool = {"balancer": {"algorithm": algorithm},
            "backends": [{"name": n, "address": f"127.0.0.1:{h.port}"}
                         for n, h in backends.items()]}
    if health is not None:
        pool["health"] = health
    return {"admin": {"listen": "127.0.0.1:0"},
            "listeners": {"dns": {"bind": "127.0.0.1:0", "protocol": "udp", "pool": "game",
                                  "udp": {"flow_idle": flow_idle, "max_flows": max_flows}}},
            "pools": {"game": pool}}


def client(ip: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(TIMEOUT)
    s.bind((ip, 0))
    return s


def ask(sock: socket.socket, port: int, payload: bytes) -> bytes | None:
    sock.sendto(payload, ("127.0.0.1", port))
    try:
        return sock.recv(2048)
    except socket.timeout:
        return None


def flow_events(proxy, **match):
    return proxy.wait_events(lambda e: e.get("type") == "connection" and e.get("kind") == "udp"
                             and all(e.get(k) == v for k, v in match.items()))


def test_flows_pin_to_a_backend_and_spread(proxy_factory, udp_backends):
    proxy = proxy_factory(udp_config(udp_backends, max_flows=10, flow_idle="5s"))
    port = proxy.port("dns")
    clients = [client() for _ in range(3)]
    first = [ask(c, port, b"hello") for c in clients]
    names = [reply.split(b" ")[0] for reply in first]
    assert sorted(names) == [b"u1", b"u2", b"u3"]  # round robin over new flows
    for c, name in zip(clients, names):
        for i in range(3):  # every datagram of a flow goes to its backend
            assert ask(c, port, b"again %d" % i) == name + b" again %d" % i
    for c in clients:
        c.close()


def test_idle_flow_ends_with_an_event_and_a_new_one_starts(proxy_factory, udp_backends):
    proxy = proxy_factory(udp_config(udp_backends, flow_idle="300ms"))
    port = proxy.port("dns")
    c = client("127.0.0.7")
    assert ask(c, port, b"one").endswith(b" one")
    ended = flow_events(proxy, closed_by="idle")
    event = ended[0]
    assert event["client"].startswith("127.0.0.7:") and event["bytes_in"] == 3
    assert event["backend"] in ("u1", "u2", "u3") and event["algorithm"] == "round_robin"
    assert "udp.flow_idle" in event["error"]
    assert {c["name"] for c in event["candidates"]} == {"u1", "u2", "u3"}
    assert ask(c, port, b"two").endswith(b" two")  # a new flow
    assert len(flow_events(proxy, closed_by="idle")) >= 1
    c.close()


def test_flow_limit_drops_new_clients(proxy_factory, udp_backends):
    proxy = proxy_factory(udp_config(udp_backends, max_flows=2, flow_idle="10s"))
    port = proxy.port("dns")
    a, b, c = client(), client(), client()
    assert ask(a, port, b"a") and ask(b, port, b"b")
    c.settimeout(0.5)
    assert ask(c, port, b"c") is None  # dropped: over udp.max_flows
    dropped = flow_events(proxy, backend=None, closed_by="proxy")
    assert "datagram dropped" in dropped[0]["error"] and "udp.max_flows" in dropped[0]["error"]
    assert ask(a, port, b"still") == ask(a, port, b"still")  # old flows go on
    for s in (a, b, c):
        s.close()


def test_client_ip_hash_keeps_an_address_on_one_backend(proxy_factory, udp_backends):
    proxy = proxy_factory(udp_config(udp_backends, algorithm="ip_hash", max_flows=100,
                                     flow_idle="10s"))
    port = proxy.port("dns")
    for ip in ("127.0.0.11", "127.0.0.12", "127.0.0.13"):
        names = {ask(client(ip), port, b"x").split(b" ")[0] for _ in range(4)}
        assert len(names) == 1, f"{ip} spread over {names}"


def test_udp_health_check_takes_a_silent_backend_out(proxy_factory, udp_backends):
    proxy = proxy_factory(udp_config(
        udp_backends, max_flows=100, flow_idle="10s",
        health={"type": "udp", "send": "ping", "expect": "ping", "interval": "200ms",
                "timeout": "200ms", "unhealthy_threshold": 2, "healthy_threshold": 1}))
    udp_backends["u2"].control({"hang": True})  # datagrams dropped: no reply
    deadline = time.monotonic() + 10
    while proxy.backend_state("game", "u2")["health"] != "unhealthy":
        assert time.monotonic() < deadline, proxy.backend_state("game", "u2")
        time.sleep(0.1)
    assert "no reply" in proxy.backend_state("game", "u2")["health_reason"]
    port = proxy.port("dns")
    names = {ask(client(), port, b"x").split(b" ")[0] for _ in range(6)}
    assert names == {b"u1", b"u3"}


def test_http_check_on_another_port(proxy_factory, udp_backends):
    """A UDP pool checked over HTTP on the backend's control port (health.port)."""
    u1 = udp_backends["u1"]
    backends = {"u1": u1}
    proxy = proxy_factory(udp_config(backends, health={
        "type": "http", "path": "/health", "port": u1.control_port, "interval": "200ms"}))
    deadline = time.monotonic() + 10
    while proxy.backend_state("game", "u1")["health"] != "healthy":
        assert time.monotonic() < deadline, proxy.backend_state("game", "u1")
        time.sleep(0.1)
    u1.control({"health_fail": True})
    while proxy.backend_state("game", "u1")["health"] != "unhealthy":
        assert time.monotonic() < deadline + 10, proxy.backend_state("game", "u1")
        time.sleep(0.1)


def test_draining_backend_takes_no_new_flows(proxy_factory, udp_backends):
    proxy = proxy_factory(udp_config(udp_backends, max_flows=100, flow_idle="10s"))
    status, body = proxy.admin("POST", "/pools/game/backends/u1/drain")
    assert status in (200, 202), body
    port = proxy.port("dns")
    names = {ask(client(), port, b"x").split(b" ")[0] for _ in range(6)}
    assert b"u1" not in names


@pytest.mark.parametrize("listener,pool,message", [
    ({"routes": ["r"]}, {}, "udp listener balances datagrams per flow"),
    ({"tls": {"mode": "passthrough"}}, {}, "does not speak TLS"),
    ({}, {"health": {"type": "grpc"}}, "cannot answer gRPC"),
    ({}, {"sticky": {"mode": "cookie"}}, "sees datagrams only"),
])
def test_config_refuses_what_udp_cannot_do(listener, pool, message):
    data = {"listeners": {"u": {"bind": "127.0.0.1:0", "protocol": "udp", "pool": "p",
                                **listener}},
            "routes": {"r": {"forward": "p"}},
            "pools": {"p": {"backends": [{"name": "a", "address": "127.0.0.1:1"}], **pool}}}
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert any(message in m for _, m in info.value.errors), info.value.errors


def test_switching_a_listener_to_udp_at_run_time(proxy_factory, udp_backends):
    """PUT /config turning a tcp listener into a udp one on the same address: the new
    config gets a UDP socket (the TCP one is closed), and datagrams are answered."""
    from labs.backend.testing import free_port

    port = free_port()
    config = udp_config(udp_backends, max_flows=100, flow_idle="10s")
    config["listeners"]["dns"] = {"bind": f"127.0.0.1:{port}", "protocol": "tcp",
                                  "pool": "game"}
    proxy = proxy_factory(config)
    config["listeners"]["dns"] = {"bind": f"127.0.0.1:{port}", "protocol": "udp",
                                  "pool": "game"}
    status, body = proxy.admin("PUT", "/config", config)
    assert status == 200, body
    reply = ask(client(), port, b"after")
    assert reply is not None and reply.endswith(b" after")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_open_flows_are_listed_by_the_admin_api(proxy_factory, udp_backends):
    proxy = proxy_factory(udp_config(udp_backends, max_flows=100, flow_idle="10s"))
    c = client("127.0.0.21")
    assert ask(c, proxy.port("dns"), b"hi")
    status, body = proxy.admin("GET", "/connections")
    assert status == 200
    flows = [f for f in body["connections"] if f["kind"] == "udp"]
    assert len(flows) == 1
    flow = flows[0]
    assert flow["client"].startswith("127.0.0.21:") and flow["datagrams_in"] == 1
    assert flow["datagrams_out"] == 1 and flow["backend"] in ("u1", "u2", "u3")
    status, state = proxy.admin("GET", "/state")
    assert state["connections"]["by_kind"].get("udp") == 1, state["connections"]
    c.close()
