"""Trusted client addresses: the PROXY protocol accepted from trusted networks only,
and X-Forwarded-For / Forwarded believed only from trusted proxies."""
from __future__ import annotations

import socket

import pytest

from proxy import proxyproto, trust
from proxy.config import ConfigError, parse_config
from tests.proxy.anchors.support import backend_entry, config, event, wait_for
from tests.proxy.edge.harness import EdgeProxy, RecordingBackend, parse_strict, read_replies

pytestmark = pytest.mark.timeout(60)

NETS = trust.networks(("10.0.0.0/8",))


# ---------------------------------------------------------------- the rule (pure)

def test_an_untrusted_peer_is_the_client_and_its_headers_are_dropped():
    view = trust.believe("198.51.100.7", ["6.6.6.6"], ["for=6.6.6.6"], NETS, 0)
    assert view["ip"] == "198.51.100.7" and view["trusted_peer"] is False
    assert view["dropped"] == ["X-Forwarded-For", "Forwarded"]


def test_trusted_networks_walk_from_the_right_past_trusted_proxies():
    view = trust.believe("10.0.0.5", ["6.6.6.6, 203.0.113.9", "10.1.2.3"], [], NETS, 0)
    assert view["ip"] == "203.0.113.9" and view["from"] == "x-forwarded-for"
    # Every entry trusted: the leftmost.
    assert trust.believe("10.0.0.5", ["10.9.9.9"], [], NETS, 0)["ip"] == "10.9.9.9"
    # No X-Forwarded-For: Forwarded's for= nodes (quoted IPv6 with a port, too).
    view = trust.believe("10.0.0.5", [], ['for=1.2.3.4, for="[2001:db8::1]:4711";proto=https'],
                         NETS, 0)
    assert view["ip"] == "2001:db8::1" and view["from"] == "forwarded"
    # Garbage where an address should be: the peer.
    assert trust.believe("10.0.0.5", ["not-an-ip"], [], NETS, 0)["ip"] == "10.0.0.5"


def test_trusted_hops_count_entries_from_the_right():
    assert trust.believe("192.0.2.1", ["6.6.6.6, 203.0.113.9"], [], (), 1)["ip"] == "203.0.113.9"
    assert trust.believe("192.0.2.1", ["6.6.6.6, 203.0.113.9"], [], (), 2)["ip"] == "6.6.6.6"
    short = trust.believe("192.0.2.1", ["203.0.113.9"], [], (), 3)
    assert short["ip"] == "203.0.113.9" and "the leftmost" in short["reason"]


def test_ipv4_mapped_peers_match_ipv4_networks():
    assert trust.is_trusted("::ffff:10.1.1.1", NETS)
    assert not trust.is_trusted("11.0.0.1", NETS)


def test_trust_config_is_validated():
    base = {"routes": {"all": {"forward": "p"}}, "pools": {"p": {}}}
    with pytest.raises(ConfigError) as err:
        parse_config({**base, "listeners": {"web": {
            "bind": "127.0.0.1:0", "routes": ["all"],
            "proxy_protocol": {"trusted": ["10.0.0.0/33"]},
            "forwarded": {"trusted_networks": ["10.0.0.0/8"], "trusted_hops": 1}}}})
    messages = dict(err.value.errors)
    assert "is not a network" in messages["listeners.web.proxy_protocol.trusted[0]"]
    assert "not both" in messages["listeners.web.forwarded"]
    with pytest.raises(ConfigError) as err:
        parse_config({**base, "listeners": {"t": {
            "bind": "127.0.0.1:0", "protocol": "tcp", "pool": "p",
            "forwarded": {"trusted_hops": 1}}}})
    assert [p for p, _ in err.value.errors] == ["listeners.t.forwarded"]
    ok = parse_config({**base, "listeners": {"web": {
        "bind": "127.0.0.1:0", "routes": ["all"], "proxy_protocol": {"trusted": ["127.0.0.3"]}}}})
    assert ok.listeners["web"].proxy_protocol.trusted == ["127.0.0.3/32"]


# ---------------------------------------------------------------- real sockets

def send(port: int, data: bytes, source: str = "127.0.0.1"):
    with socket.create_connection(("127.0.0.1", port), timeout=10,
                                  source_address=(source, 0)) as sock:
        sock.sendall(data)
        return read_replies(sock, 1, timeout=10)


def seen_headers(backend: RecordingBackend, mark) -> dict:
    data = b"".join(backend.since(mark))
    request = parse_strict(data).requests[-1]
    return {name: request.header(name) for name in ("x-forwarded-for", "forwarded")}


REQUEST = (b"GET /who HTTP/1.1\r\nHost: h\r\nX-Request-Id: %b\r\n"
           b"X-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nConnection: close\r\n\r\n")


def test_by_default_a_clients_forwarding_headers_are_not_believed_nor_passed_on():
    backend = RecordingBackend()
    try:
        with EdgeProxy(config({"p": {"backends": [backend_entry("b1", backend)]}})) as proxy:
            mark = backend.mark()
            replies, _ = send(proxy.port(), REQUEST % b"spoof")
            assert replies[0].status == 200
            headers = seen_headers(backend, mark)
            assert headers["x-forwarded-for"] == ["127.0.0.1"]
            assert headers["forwarded"] == ['for=127.0.0.1;host=h;proto=http']
            ev = event(proxy, "spoof")
            assert ev.client_address["dropped"] == ["X-Forwarded-For", "Forwarded"]
            assert "not a trusted proxy" in ev.client_address["reason"]
    finally:
        backend.close()


def test_trusted_networks_believe_the_proxy_in_front_and_nobody_else():
    backend = RecordingBackend()
    listener = {"forwarded": {"trusted_networks": ["127.0.0.2/32"]}}
    try:
        with EdgeProxy(config({"p": {"backends": [backend_entry("b1", backend)]}},
                              listener=listener)) as proxy:
            mark = backend.mark()
            request = REQUEST.replace(b"6.6.6.6\r\nForwarded", b"6.6.6.6, 203.0.113.9\r\nForwarded")
            replies, _ = send(proxy.port(), request % b"via-trusted", source="127.0.0.2")
            assert replies[0].status == 200
            headers = seen_headers(backend, mark)
            assert headers["x-forwarded-for"] == ["6.6.6.6, 203.0.113.9, 127.0.0.2"]
            ev = event(proxy, "via-trusted")
            assert ev.client_address["ip"] == "203.0.113.9"
            assert ev.client_address["from"] == "x-forwarded-for"
            mark = backend.mark()
            send(proxy.port(), REQUEST % b"not-trusted", source="127.0.0.4")
            assert seen_headers(backend, mark)["x-forwarded-for"] == ["127.0.0.4"]
            assert event(proxy, "not-trusted").client_address["ip"] == "127.0.0.4"
    finally:
        backend.close()


def test_proxy_protocol_v1_and_v2_from_trusted_sources_set_the_client():
    backend = RecordingBackend()
    listener = {"proxy_protocol": {"trusted": ["127.0.0.3/32"]}}
    try:
        with EdgeProxy(config({"p": {"backends": [backend_entry("b1", backend)]}},
                              listener=listener)) as proxy:
            port = proxy.port()
            plain = b"GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: %b\r\nConnection: close\r\n\r\n"
            mark = backend.mark()
            header = proxyproto.v1(("198.51.100.7", 5555), ("127.0.0.1", port))
            replies, _ = send(port, header + plain % b"pp1", source="127.0.0.3")
            assert replies[0].status == 200
            assert seen_headers(backend, mark)["x-forwarded-for"] == ["198.51.100.7"]
            ev = event(proxy, "pp1")
            assert ev.client == "198.51.100.7:5555"
            assert ev.client_address["from"] == "proxy_protocol"
            assert ev.client_address["proxy_protocol"]["version"] == 1
            assert ev.client_address["proxy_protocol"]["via"].startswith("127.0.0.3:")
            header = proxyproto.v2(("2001:db8::7", 6000), ("::1", port))
            replies, _ = send(port, header + plain % b"pp2", source="127.0.0.3")
            assert replies[0].status == 200
            assert event(proxy, "pp2").client == "[2001:db8::7]:6000"
            # A LOCAL header (the balancer's own health check) keeps the real peer.
            replies, _ = send(port, proxyproto.v2_local() + plain % b"local", source="127.0.0.3")
            assert event(proxy, "local").client.startswith("127.0.0.3:")
            # Not trusted: refused before any byte is read.
            replies, closed = send(port, header + plain % b"intruder", source="127.0.0.1")
            assert replies == [] and closed
            # Trusted, but no header: refused too.
            replies, closed = send(port, plain % b"bare", source="127.0.0.3")
            assert replies == [] and closed
            warnings = wait_for(lambda: [e.message for e in proxy.events
                                         if type(e).__name__ == "Warning"
                                         and e.source == "proxy_protocol"] or None,
                                what="proxy_protocol warnings")
            assert any("not in listeners.web.proxy_protocol.trusted" in m for m in warnings)
            assert not proxy.requests("intruder") and not proxy.requests("bare")
    finally:
        backend.close()


def test_proxy_protocol_on_a_tcp_listener_names_the_client_in_its_events():
    backend = RecordingBackend()
    cfg = {"admin": {"listen": "127.0.0.1:0"},
           "listeners": {"web": {"bind": "127.0.0.1:0", "protocol": "tcp", "pool": "p",
                                 "proxy_protocol": {"trusted": ["127.0.0.3/32"]}}},
           "pools": {"p": {"backends": [backend_entry("b1", backend)]}}}
    try:
        with EdgeProxy(cfg) as proxy:
            port = proxy.port()
            header = proxyproto.v2(("198.51.100.9", 7000), ("127.0.0.1", port))
            replies, _ = send(port, header + b"GET /l4 HTTP/1.1\r\nHost: h\r\n"
                              b"Connection: close\r\n\r\n", source="127.0.0.3")
            assert replies[0].status == 200 and replies[0].body == b"ok /l4"
            opened = wait_for(lambda: [e for e in proxy.events
                                       if type(e).__name__ == "ConnectionOpen"],
                              what="connection_open")
            assert opened[0].client == "198.51.100.9:7000"
    finally:
        backend.close()


def test_proxy_protocol_before_http2_prior_knowledge():
    import h2.config
    import h2.connection

    from tests.proxy.http2.h2client import H2Client

    backend = RecordingBackend()
    listener = {"http2": True, "proxy_protocol": {"trusted": ["127.0.0.3/32"]}}
    try:
        with EdgeProxy(config({"p": {"backends": [backend_entry("b1", backend)]}},
                              listener=listener)) as proxy:
            port = proxy.port()
            client = H2Client.__new__(H2Client)  # its own socket: the header goes first
            client.sock = socket.create_connection(("127.0.0.1", port), timeout=10,
                                                   source_address=("127.0.0.3", 0))
            client.sock.sendall(proxyproto.v1(("198.51.100.7", 5555), ("127.0.0.1", port)))
            client.conn = h2.connection.H2Connection(h2.config.H2Configuration(
                client_side=True, header_encoding=None))
            client.conn.initiate_connection()
            client.events, client.closed = [], False
            client.flush()
            mark = backend.mark()
            sid = client.get("/h2", extra=[(b"x-request-id", b"pp-h2"),
                                           (b"x-forwarded-for", b"6.6.6.6")])
            headers, body = client.response(sid)
            assert headers[b":status"] == b"200" and body == b"ok /h2"
            assert seen_headers(backend, mark)["x-forwarded-for"] == ["198.51.100.7"]
            ev = event(proxy, "pp-h2")
            assert ev.client == "198.51.100.7:5555"
            assert ev.client_address["dropped"] == ["X-Forwarded-For"]
            client.sock.close()
    finally:
        backend.close()
