"""Topology and connection diagrams for L4 listeners and TLS modes: plain dicts in, Mermaid out."""
from labs import diagrams

BACKEND = {"address": "127.0.0.1:9001", "weight": 1, "health": "healthy", "intent": "active",
           "eligible": True, "ejected": False, "outstanding": 0}


def backend(name, conns=0, **extra):
    return {**BACKEND, "name": name, "active_connections": conns, **extra}


# GET /state of a proxy with: an L7 listener terminating TLS with mTLS, an L4 listener
# passing TLS through by server name, a plain L4 listener; a pool that re-encrypts, one
# with a PROXY protocol header; the connection counts and TLS views the proxy adds.
STATE = {
    "listeners": {
        "web": {"bind": "127.0.0.1:8443", "protocol": "http", "routes": ["all"], "pool": None},
        "edge": {"bind": "127.0.0.1:9443", "protocol": "tcp", "routes": [], "pool": "www"},
        "game": {"bind": "127.0.0.1:7000", "protocol": "tcp", "routes": [], "pool": "game"},
    },
    "routes": {"all": {"match": {}, "forward": "secure"},
               "old": {"match": {"path_prefix": "/old"}, "forward": "www"}},
    "pools": {
        "secure": {"algorithm": "round_robin", "backends": [backend("s1"), backend("s2")]},
        "www": {"algorithm": "round_robin", "backends": [backend("w1", conns=1)]},
        "api": {"algorithm": "least_connections", "backends": [backend("a1", conns=2),
                                                               backend("a2")]},
        "game": {"algorithm": "least_connections", "backends": [backend("g1", conns=3)]},
    },
    "tls": {
        "web": {"mode": "terminate", "client_auth": "required", "unknown_sni": "default",
                "certificates": [{"label": "www.lab.test", "names": ["www.lab.test"],
                                  "default": True},
                                 {"label": "api.lab.test", "names": ["api.lab.test"],
                                  "default": False}]},
        "edge": {"mode": "passthrough", "sni": {"api.lab.test": "api", "*.api.lab.test": "api"},
                 "default_pool": "www", "unknown_sni": "default"},
        "game": {"mode": "none"},
    },
    "connections": {"total": 7, "by_kind": {},
                    "by_listener": {"edge": {"tls-passthrough": 3},
                                    "game": {"tcp": 3},
                                    "web": {"http": 4, "websocket": 1}}},
    "config": {"pools": {
        "secure": {"tls": {"verify": True}, "backends": [
            {"name": "s1"}, {"name": "s2", "tls": {"verify": False}}]},
        "www": {}, "api": {},
        "game": {"proxy_protocol": "v2", "backends": [{"name": "g1"}]},
    }},
}


def line_with(text: str, needle: str) -> str:
    return next(line for line in text.splitlines() if needle in line)


def test_each_listener_says_its_layer_and_tls_mode():
    text = diagrams.topology(STATE)
    web = line_with(text, "listener web")
    assert "L7 · http · 127.0.0.1:8443" in web
    assert "TLS terminate: www.lab.test, api.lab.test" in web
    assert "mTLS: client certificate required" in web
    assert "open now: 1 WebSocket" in web and "HTTP" not in web  # plain HTTP is not listed
    assert web.endswith(":::listener")
    edge = line_with(text, "listener edge")
    assert "L4 · tcp · 127.0.0.1:9443" in edge and "TLS passthrough" in edge
    assert "open now: 3 TLS passthrough" in edge and edge.endswith(":::listener4")
    game = line_with(text, "listener game")
    assert "L4 · tcp" in game and "no TLS" in game and "open now: 3 TCP" in game


def test_l4_listeners_link_straight_to_pools_by_server_name():
    text = diagrams.topology(STATE)
    lines = [line.strip() for line in text.splitlines()]
    # passthrough: one edge per pool, labelled with its server names; the rest: default pool
    assert 'l1 -->|"SNI api.lab.test, *.api.lab.test"| p2' in lines
    assert 'l1 -->|"other names"| p1' in lines
    assert 'l2 -->|"every connection"| p3' in lines
    assert not any(line.startswith("l1 --> r") or line.startswith("l2 --> r") for line in lines)


def test_l4_pools_count_open_connections_per_backend():
    text = diagrams.topology(STATE, rates={"a1": 50.0, "s1": 20.0})
    assert "L4: 2 open connections" in line_with(text, "pool api")
    assert "weight 1 · 2 open TCP conn" in line_with(text, '["a1 ')
    lines = [line.strip() for line in text.splitlines()]
    assert 'p2 -->|"2 conn"| b2_0' in lines  # L4: the live count, not a request rate
    assert "p2 --> b2_1" in lines  # no connection: no label
    assert 'p0 -->|"20 req/s"| b0_0' in lines  # L7 pools keep their rates
    assert "1 conn" not in line_with(text, '["s1 ')


def test_re_encryption_and_proxy_protocol_are_shown_on_pools_and_backends():
    text = diagrams.topology(STATE)
    assert "re-encrypts to backends (verified)" in line_with(text, "pool secure")
    assert "TLS, NOT verified" in line_with(text, '["s2 ')
    assert "TLS" not in line_with(text, '["s1 ')
    assert "PROXY protocol v2" in line_with(text, "pool game")


def test_a_route_no_listener_uses_is_drawn_apart():
    text = diagrams.topology(STATE)
    old = line_with(text, "route old")
    assert "no listener uses it" in old and old.endswith(":::unused")
    assert "  r1 -.-> p1" in text
    assert "classDef unused " in text and "classDef listener4 " in text


def test_tls_mode_comes_from_the_config_when_the_state_has_no_tls_view():
    # The course draws presets from a config alone: listeners carry their tls block.
    state = {"listeners": {
        "edge": {"bind": "127.0.0.1:8443", "protocol": "tcp", "pool": None,
                 "tls": {"mode": "passthrough", "sni": {"www.lab.test": "www"},
                         "unknown_sni": "refuse"}},
        "web": {"bind": "127.0.0.1:443", "protocol": "http", "routes": [],
                "tls": {"mode": "terminate", "certificates": [{"pki": "shop.lab.test"}],
                        "client_ca": "pki:ca.pem"}}},
        "pools": {"www": {"algorithm": "round_robin", "backends": []}}}
    text = diagrams.topology(state)
    assert "TLS terminate: shop.lab.test" in text and "mTLS: client certificate required" in text
    assert 'l0 -->|"SNI www.lab.test"| p0' in text
    assert 'l0_refuse["other names: refused"]:::terminal' in text


CONNECTION = {
    "type": "connection", "connection_id": "c-7", "listener": "edge",
    "client": "127.0.0.2:50000", "kind": "tls-passthrough", "pool": "api",
    "algorithm": "least_connections",
    "candidates": [{"name": "a1", "eligible": True}, {"name": "a2", "eligible": False,
                                                      "health": "unhealthy"}],
    "inputs": {"connections": {"a1": 0}}, "backend": "a1", "bytes_in": 517, "bytes_out": 4300,
    "duration_ms": 1534.2, "connect_ms": 0.42, "closed_by": "client", "error": None,
    "retries": [], "proxy_protocol": "v2",
    "tls": {"mode": "passthrough", "sni": "api.lab.test", "matched": "exact"},
}


def test_connection_sequence_tells_the_whole_connection():
    text = diagrams.connection_sequence(CONNECTION)
    lines = [line.strip() for line in text.splitlines()]
    assert lines[0] == "sequenceDiagram"
    assert "participant P as proxy · L4 listener edge" in lines
    order = ["C->>P: TCP connect, then TLS ClientHello · SNI api.lab.test",
             "Note over P: reads the name only, decrypts nothing: matched tls.sni exactly "
             "→ pool api",
             "P->>LB: pick a backend for this connection (2 candidates)",
             "Note over LB: a1 ✓, a2 ✗ unhealthy",
             "LB-->>P: a1",
             "P->>S0: TCP connect · 0.42 ms · PROXY v2 header first",
             "C->>S0: 517 B from the client, relayed unread",
             "S0-->>C: 4.3 kB from the backend, relayed back",
             "C-)P: closes",
             "P-)S0: close passed on",
             "Note over C,P: 1.5 s · the client closed it"]
    positions = [lines.index(step) for step in order]
    assert positions == sorted(positions)


def test_connection_sequence_when_the_proxy_closes_or_cannot_connect():
    idle = dict(CONNECTION, kind="tcp", tls=None, closed_by="proxy", proxy_protocol=None,
                error="idle for 5s: no byte either way (timeouts.tunnel_idle)")
    text = diagrams.connection_sequence(idle)
    assert "C->>P: TCP connect" in text
    assert "Note over P: idle for 5s: no byte either way (timeouts.tunnel_idle)" in text
    assert "P-)C: close" in text and "P-)S0: close" in text
    failed = dict(CONNECTION, kind="tcp", tls=None, backend=None, closed_by="proxy",
                  error="cannot connect to a2 (127.0.0.1:1): connection refused",
                  retries=[{"backend": "a1", "error": "cannot connect to a1: refused"}])
    text = diagrams.connection_sequence(failed)
    assert "P->>S0: connect (attempt 1)" in text and "S0--xP: cannot connect to a1: refused" in text
    assert "P--xC: cannot connect to a2 (127.0.0.1:1): connection refused" in text


def test_connection_sequence_escapes_outside_text():
    nasty = 'x"];<b>#60;\nend'
    text = diagrams.connection_sequence(dict(CONNECTION, client=nasty, error=nasty,
                                             closed_by="backend",
                                             tls={"mode": "passthrough", "sni": nasty}))
    body = "\n".join(text.splitlines()[1:])
    assert "<b>" not in body and ";" not in body and "#" not in body and '"' not in body
    assert "S0-)P: closes (reset)" in text


def test_sizes_and_durations_read_well():
    assert diagrams.bytes_text(0) == "0 B" and diagrams.bytes_text(4300) == "4.3 kB"
    assert diagrams.bytes_text(12_500_000) == "12.5 MB"
    assert diagrams.duration_text(999) == "999 ms" and diagrams.duration_text(1534) == "1.5 s"
    assert diagrams.duration_text(125_000) == "2 min 5 s"


def test_connection_sequence_of_a_udp_flow_and_an_http2_connection():
    flow = dict(CONNECTION, kind="udp", tls=None, proxy_protocol=None, connect_ms=None,
                closed_by="idle", bytes_in=11, bytes_out=20,
                error="no datagram either way for 8s (udp.flow_idle)")
    lines = [line.strip() for line in diagrams.connection_sequence(flow).splitlines()]
    order = ["C->>P: first datagram: a new flow (client address and port)",
             "LB-->>P: a1",
             "P->>S0: UDP socket to it (no handshake): the flow's datagrams follow",
             "C->>S0: 11 B from the client, relayed unread",
             "Note over P: no datagram either way for 8s (udp.flow_idle)",
             "Note over C,P: 1.5 s · ended idle: no datagram either way for 8s (udp.flow_idle)"]
    assert [lines.index(step) for step in order] == sorted(lines.index(s) for s in order)
    assert not any("TCP" in line for line in lines)
    h2 = {"type": "connection", "connection_id": "c-9", "listener": "web", "kind": "h2",
          "client": "127.0.0.1:40000", "pool": None, "backend": None, "streams": 3,
          "closed_by": "client", "duration_ms": 20.0}
    text = diagrams.connection_sequence(h2)
    assert "C->>P: HTTP/2 connection" in text and "L7 listener web" in text
    assert "3 stream(s), each a request routed and balanced on its own" in text
