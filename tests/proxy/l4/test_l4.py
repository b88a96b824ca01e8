"""TCP (L4) listeners end to end: real proxy process, real toy game backends, real sockets.

What is checked: one pick per connection (round_robin, least_connections), bytes both
ways with back-pressure, half-close, the idle timeout, draining to the deadline, PROXY
protocol headers as a backend sees them, connect retries, and what the admin API and the
events say about live and closed connections.
"""
from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
import zlib

import pytest

from tests.proxy.e2e.support import dead_port
from tests.proxy.l4.support import (
    ThreadServer,
    backend_of,
    connection_events,
    echo,
    game,
    game_backends,
    live_connections,
    pattern,
    recent_events,
    reply_after_eof,
    tcp_config,
    wait_for,
)


def _pool(handles, algorithm="round_robin", **extra):
    return {"balancer": {"algorithm": algorithm}, "backends": game_backends(handles), **extra}


# ---------------------------------------------------------------- balancing per connection

def test_round_robin_picks_once_per_connection(proxy_factory, games):
    handles = [games["g1"], games["g2"], games["g3"]]
    proxy = proxy_factory(tcp_config({"g": _pool(handles)}))
    port = proxy.port("game")
    seen = []
    for _ in range(6):
        with game(port) as g:
            name = backend_of(g)
            # Every line of one connection goes to the backend the connection landed on.
            for _ in range(3):
                assert g.command("PING") == f"PONG {name}"
            seen.append(name)
    assert sorted(seen) == ["g1", "g1", "g2", "g2", "g3", "g3"]
    assert seen[:3] == seen[3:], "round robin cycles through the backends in order"
    # Events are published when a connection ends; a loaded machine may notice two ends
    # out of order, so put them back in the order the connections opened.
    events = sorted(connection_events(proxy, count=6),
                    key=lambda e: e["ts"] - e["duration_ms"] / 1000)
    assert [e["backend"] for e in events] == seen
    assert [e["inputs"]["index"] for e in events] == [0, 1, 2, 0, 1, 2]
    for e in events:
        assert e["algorithm"] == "round_robin" and e["kind"] == "tcp"
        assert e["closed_by"] == "client" and e["error"] is None
        assert e["bytes_in"] == len("PING\r\n") * 3
        assert e["bytes_out"] > 0 and e["duration_ms"] >= 0 and e["connect_ms"] is not None
        assert {c["name"] for c in e["candidates"]} == {"g1", "g2", "g3"}


def test_least_connections_counts_open_connections(proxy_factory, games):
    handles = [games["g1"], games["g2"], games["g3"]]
    proxy = proxy_factory(tcp_config({"g": _pool(handles, "least_connections")}))
    port = proxy.port("game")
    clients = [game(port) for _ in range(3)]
    try:
        names = [backend_of(c) for c in clients]
        assert sorted(names) == ["g1", "g2", "g3"], "each open connection went to the emptiest"
        state = {b["name"]: b for b in proxy.admin("GET", "/state")[1]["pools"]["g"]["backends"]}
        assert all(state[n]["active_connections"] == 1 for n in names)
        # Close the one on g2: the next connection goes there, the only backend with none.
        on_g2 = clients.pop(names.index("g2"))
        on_g2.close()
        connection_events(proxy, count=1, backend="g2")
        with game(port) as again:
            assert backend_of(again) == "g2"
        events = connection_events(proxy, count=2, backend="g2")
        # The algorithm's inputs, as the page shows them: the open connections it compared.
        assert events[-1]["inputs"]["counts"] == {"g1": 1, "g2": 0, "g3": 1}
    finally:
        for c in clients:
            c.close()


# ---------------------------------------------------------------- bytes

def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_large_transfer_both_ways_with_back_pressure(proxy_factory):
    """192 MiB through an echo backend while the client first reads nothing.

    Loopback sockets autotune their buffers to tens of MB, so the transfer is larger
    than everything the kernel can hold on the way: the sender must stall, and the
    proxy must pause reading rather than keep the bytes itself (RSS stays flat).
    """
    block = pattern(1024 * 1024)
    blocks = 192
    size = blocks * len(block)
    with ThreadServer(echo) as server:
        proxy = proxy_factory(tcp_config(
            {"e": {"backends": [{"name": "echo", "address": server.address}]}}))
        sock = socket.create_connection(("127.0.0.1", proxy.port("game")), timeout=60)
        sent = threading.Event()
        errors = []

        def send():
            try:
                for _ in range(blocks):
                    sock.sendall(block)
                sock.shutdown(socket.SHUT_WR)
            except OSError as exc:
                errors.append(exc)
            sent.set()

        rss_before = _rss_kb(proxy.pid)
        writer = threading.Thread(target=send, daemon=True)
        writer.start()
        # Nobody reads the echo for a while: everything must stall, not pile up in the proxy.
        time.sleep(2.0)
        assert not sent.is_set(), f"{size >> 20} MiB went to a client that reads nothing"
        growth_mb = (_rss_kb(proxy.pid) - rss_before) / 1024
        assert growth_mb < 32, f"the proxy kept {growth_mb:.0f} MB instead of pausing"
        crc = 0
        got = 0
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            crc = zlib.crc32(chunk, crc)
            got += len(chunk)
        sock.close()
        writer.join(60)
        assert not errors and sent.is_set()
        expected = 0
        for _ in range(blocks):
            expected = zlib.crc32(block, expected)
        assert got == size and crc == expected
        event = connection_events(proxy, count=1)[0]
        assert event["bytes_in"] == size and event["bytes_out"] == size
        assert not server.errors


def test_half_close_client_still_gets_the_reply(proxy_factory):
    """The client shuts its sending side; the backend answers only after that EOF."""
    with ThreadServer(reply_after_eof) as server:
        proxy = proxy_factory(tcp_config(
            {"r": {"backends": [{"name": "late", "address": server.address}]}}))
        payload = pattern(1024 * 1024)
        with socket.create_connection(("127.0.0.1", proxy.port("game")), timeout=10) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        digest = hashlib.sha256(payload).hexdigest()
        assert reply == f"got {len(payload)} bytes sha256 {digest}\n".encode()
        event = connection_events(proxy, count=1)[0]
        assert event["closed_by"] == "client" and event["error"] is None
        assert event["bytes_in"] == len(payload) and event["bytes_out"] == len(reply)


# ---------------------------------------------------------------- timeouts and draining

def test_idle_timeout_closes_a_silent_connection(proxy_factory, games):
    proxy = proxy_factory(tcp_config({"g": _pool([games["g1"]])},
                                     listener={"timeouts": {"tunnel_idle": "1s"}}))
    port = proxy.port("game")
    with game(port) as busy:
        # A connection that keeps talking is not idle.
        for _ in range(5):
            time.sleep(0.4)
            assert busy.command("PING") == "PONG g1"
    with game(port) as quiet:
        started = time.monotonic()
        with pytest.raises(EOFError):
            quiet.readline()
        waited = time.monotonic() - started
    assert 0.5 < waited < 8, waited
    event = connection_events(proxy, count=2)[-1]
    assert event["closed_by"] == "proxy"
    assert "idle for 1s" in event["error"] and "timeouts.tunnel_idle" in event["error"]


def test_drain_keeps_connections_to_the_deadline_then_cuts_each(proxy_factory, games):
    handles = [games["g1"], games["g2"]]
    proxy = proxy_factory(tcp_config({"g": _pool(handles, deregistration_delay="2s")}))
    port = proxy.port("game")
    clients = [game(port) for _ in range(3)]  # round robin: g1, g2, g1
    try:
        on_g1 = [c for c in clients if backend_of(c) == "g1"]
        assert len(on_g1) == 2
        for i, c in enumerate(on_g1):
            assert c.command(f"JOIN p{i}").startswith(f"WELCOME p{i} on g1")
        started = time.monotonic()
        status, body = proxy.admin("POST", "/pools/g/backends/g1/drain")
        assert status == 202, body
        with game(port) as fresh:
            assert backend_of(fresh) == "g2", "a draining backend gets no new connection"
        time.sleep(0.5)
        for c in on_g1:  # established connections keep working during the delay
            assert c.command("PING") == "PONG g1"
        for c in on_g1:
            with pytest.raises(EOFError):
                while True:
                    c.readline()
        elapsed = time.monotonic() - started
        assert 1.9 < elapsed < 15, elapsed  # deregistration_delay is 2s
        cut = connection_events(proxy, count=2, backend="g1", closed_by="proxy")
        assert all(e["error"] == "cut by drain deadline" for e in cut)
        ids = {e["connection_id"] for e in cut}
        drains = recent_events(proxy, "drain")
        assert {e["request_id"] for e in drains if e["what"] == "cut"} == ids
        assert any(e["what"] == "completed" and "cut 2" in e["detail"] for e in drains)
    finally:
        for c in clients:
            c.close()


# ---------------------------------------------------------------- PROXY protocol

def test_proxy_protocol_v1_and_v2_tell_the_backend_the_client(proxy_factory, pp_games):
    pp1, pp2 = pp_games["pp1"], pp_games["pp2"]
    backends = game_backends([pp1, pp2])
    backends[1]["proxy_protocol"] = "v2"  # per backend, over the pool's v1
    proxy = proxy_factory(tcp_config({"pp": {"proxy_protocol": "v1", "backends": backends}}))
    port = proxy.port("game")
    views = {}
    for _ in range(2):
        with game(port, source="127.0.0.7") as g:
            view = json.loads(g.command("WHOAMI"))
            views[view["backend"]] = (view, g.sock.getsockname())
    for name, version in (("pp1", 1), ("pp2", 2)):
        view, (ip, cport) = views[name]
        header = view["proxy_protocol"]
        assert header["version"] == version, view
        assert header["source"] == f"{ip}:{cport}" == view["client"], view
        assert ip == "127.0.0.7"
        assert header["destination"] == f"127.0.0.1:{port}", view  # what the client dialled
        assert view["peer"].startswith("127.0.0.1:"), "the socket peer is the proxy"
    events = connection_events(proxy, count=2)
    assert sorted(e["proxy_protocol"] for e in events) == ["v1", "v2"]


def test_without_proxy_protocol_the_backend_sees_the_proxy(proxy_factory, games):
    proxy = proxy_factory(tcp_config({"g": _pool([games["g3"]])}))
    with game(proxy.port("game"), source="127.0.0.7") as g:
        view = json.loads(g.command("WHOAMI"))
    assert view["proxy_protocol"] is None
    assert view["client"].startswith("127.0.0.1:"), "at L4 the client address is lost"


# ---------------------------------------------------------------- failures

def test_connect_failure_is_retried_on_another_backend(proxy_factory, games):
    backends = [{"name": "dead", "address": f"127.0.0.1:{dead_port()}"},
                *game_backends([games["g1"]])]
    proxy = proxy_factory(tcp_config({"g": {"backends": backends, "retries": 1}}))
    with game(proxy.port("game")) as g:
        assert backend_of(g) == "g1"
    event = connection_events(proxy, count=1)[0]
    assert event["backend"] == "g1"
    assert [r["backend"] for r in event["retries"]] == ["dead"]
    assert "cannot connect to dead" in event["retries"][0]["error"]


def _unanswering_listener():
    """A listener whose accept queue is full: further connects get no SYN-ACK and hang."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    fillers = []
    for _ in range(4):  # the queue holds backlog + 1; the rest stay in SYN-SENT
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(server.getsockname())
        fillers.append(filler)
    return server, fillers


def test_connect_timeout_is_retried_on_another_backend(proxy_factory, games):
    server, fillers = _unanswering_listener()
    try:
        backends = [{"name": "mute", "address": f"127.0.0.1:{server.getsockname()[1]}"},
                    *game_backends([games["g1"]])]
        proxy = proxy_factory(tcp_config({"g": {
            "backends": backends, "retries": 1, "timeouts": {"connect": "300ms"}}}))
        with game(proxy.port("game")) as g:
            assert backend_of(g) == "g1"
            assert g.command("PING") == "PONG g1", "the retried connection relays"
        event = connection_events(proxy, count=1)[0]
        assert event["backend"] == "g1" and event["error"] is None
        assert event["retries"] == [{"backend": "mute", "error": (
            f"cannot connect to mute (127.0.0.1:{server.getsockname()[1]}): "
            "timed out after 0.3s (timeouts.connect)")}]
    finally:
        for sock in (server, *fillers):
            sock.close()


def test_no_eligible_backend_closes_at_once_and_says_why(proxy_factory, games):
    backends = game_backends([games["g1"]])
    backends[0]["state"] = "maintenance"
    proxy = proxy_factory(tcp_config({"g": {"backends": backends}}))
    with socket.create_connection(("127.0.0.1", proxy.port("game")), timeout=5) as sock:
        assert sock.recv(100) == b""
    event = connection_events(proxy, count=1)[0]
    assert event["closed_by"] == "proxy" and event["backend"] is None
    assert "no eligible backend in pool g" in event["error"] and "maintenance" in event["error"]


# ---------------------------------------------------------------- visibility

def test_live_connections_in_the_admin_api_and_open_events(proxy_factory, games):
    proxy = proxy_factory(tcp_config({"g": _pool([games["g2"]])}))
    with game(proxy.port("game")) as g:
        assert g.command("JOIN viewer").startswith("WELCOME viewer on g2")
        live = wait_for(lambda: live_connections(proxy), what="a live connection")
        assert len(live) == 1
        conn = live[0]
        assert conn["listener"] == "game" and conn["backend"] == "g2" and conn["pool"] == "g"
        assert conn["kind"] == "tcp" and conn["phase"] == "relay"
        assert conn["client"] == "{}:{}".format(*g.sock.getsockname())
        assert conn["bytes_in"] == len("JOIN viewer\r\n") and conn["bytes_out"] > 0
        assert conn["age_s"] >= 0
        state = proxy.admin("GET", "/state")[1]
        assert state["connections"]["by_listener"]["game"] == {"tcp": 1}
        assert state["tls"]["game"] == {"mode": "none"}
        opened = [e for e in recent_events(proxy, "connection_open")
                  if e["connection_id"] == conn["connection_id"]]
        assert opened and opened[0]["backend"] == "g2"
        assert opened[0]["algorithm"] == "round_robin" and opened[0]["candidates"]
    wait_for(lambda: not live_connections(proxy), what="the connection to leave the list")
    closed = connection_events(proxy, count=1)[0]
    assert closed["connection_id"] == conn["connection_id"]
