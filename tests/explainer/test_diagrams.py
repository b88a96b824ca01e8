"""The Mermaid generators are pure: plain dicts in, Mermaid text out."""
import re

from labs import diagrams

STATE = {
    "listeners": {
        "web": {"bind": "127.0.0.1:8080", "protocol": "http", "routes": ["api", "all"], "pool": None},
        "raw": {"bind": "127.0.0.1:7000", "protocol": "tcp", "routes": [], "pool": "tcp"},
    },
    "routes": {
        "api": {"priority": 10, "match": {"host": "api.example.com", "path_prefix": "/v1"},
                "split": [{"pool": "web", "weight": 90}, {"pool": "canary", "weight": 10}]},
        "all": {"match": {}, "forward": "web"},
        "teapot": {"match": {"path_prefix": "/tea"}, "respond": {"status": 418}},
    },
    "pools": {
        "web": {"algorithm": "round_robin", "sticky": {"mode": "cookie"}, "panic": False, "backends": [
            {"name": "b1", "address": "127.0.0.1:9001", "weight": 1, "effective_weight": 1.0,
             "health": "healthy", "intent": "active", "eligible": True, "ejected": False,
             "active_connections": 2, "outstanding": 1},
            {"name": "b2", "address": "127.0.0.1:9002", "weight": 3, "effective_weight": 3.0,
             "health": "unhealthy", "intent": "active", "eligible": False, "ejected": False,
             "active_connections": 0, "outstanding": 0},
            {"name": "b3", "address": "127.0.0.1:9003", "weight": 1, "health": "healthy",
             "intent": "draining", "eligible": False, "ejected": False},
            {"name": "b4", "address": "127.0.0.1:9004", "weight": 1, "health": "healthy",
             "intent": "active", "eligible": False, "ejected": True},
        ]},
        "canary": {"algorithm": "least_connections", "backends": [
            {"name": "c1", "address": "127.0.0.1:9101", "health": "initial",
             "intent": "maintenance", "eligible": False}]},
        "tcp": {"algorithm": "maglev", "backends": []},
    },
}

NASTY = 'x"];<b>bold</b>#60;&lt;`md`;\nend %% c\u202e'


def node_line(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if f'["{name} ' in line)


def test_topology_has_every_part_and_edge():
    text = diagrams.topology(STATE, rates={"b1": 12.5})
    assert text.startswith("flowchart LR")
    assert 'l0(["listener web<br/>L7 · http · 127.0.0.1:8080<br/>no TLS"]):::listener' in text
    assert 'l1(["listener raw<br/>L4 · tcp · 127.0.0.1:7000<br/>no TLS"]):::listener4' in text
    assert "r0{{" in text and "route api · priority 10" in text and "host api.example.com" in text
    assert "pool web<br/>round_robin<br/>sticky: cookie · 1/4 eligible" in text
    # edges: listener -> routes, split with weights, tcp listener straight to its pool
    assert "  l0 --> r0" in text and "  l0 --> r1" in text
    assert '  l1 -->|"every connection"| p2' in text
    assert '|"split weight 90"| p0' in text and '|"split weight 10"| p1' in text
    assert '  p0 -->|"12 req/s"| b0_0' in text
    assert "answers 418 itself" in text
    assert 'p2_none["no backends"]' in text


def test_backends_are_styled_by_intent_then_ejection_then_health():
    text = diagrams.topology(STATE)
    assert node_line(text, "b1").endswith(":::healthy")
    assert node_line(text, "b2").endswith(":::unhealthy")
    assert node_line(text, "b3").endswith(":::draining")
    assert node_line(text, "b4").endswith(":::ejected")
    assert node_line(text, "c1").endswith(":::maintenance")
    for cls in ("healthy", "unhealthy", "draining", "maintenance", "ejected", "initial"):
        assert f"classDef {cls} " in text
    # labels carry weight, connections and requests in flight
    assert "weight 1 · 2 conn · 1 in flight" in node_line(text, "b1")
    assert "weight 3 · 0 conn · 0 in flight" in node_line(text, "b2")


def test_ineligible_backends_get_dotted_grey_edges():
    text = diagrams.topology(STATE)
    edges = [line.strip() for line in text.splitlines()
             if "-->" in line or "-.->" in line]
    dotted = [i for i, e in enumerate(edges) if "-.->" in e]
    # ...and so are the edges of a route no listener uses (teapot)
    assert [edges[i] for i in dotted] == ["r2 -.-> r2_t", "p0 -.-> b0_1", "p0 -.-> b0_2",
                                          "p0 -.-> b0_3", "p1 -.-> b1_0"]
    for i in dotted:
        assert f"linkStyle {i} stroke:#9ca3af" in text


def test_slow_start_shows_the_ramping_weight():
    state = {"listeners": {}, "routes": {}, "pools": {"p": {"algorithm": "rr", "backends": [
        {"name": "b", "address": "a:1", "weight": 10, "effective_weight": 2.5,
         "health": "healthy", "intent": "active", "eligible": True}]}}}
    assert "weight 10 (ramping: 2.5)" in diagrams.topology(state)


def test_empty_state_still_renders():
    text = diagrams.topology({})
    assert text.startswith("flowchart LR")
    assert "no listeners or pools configured" in text


def test_escape_makes_outside_text_inert():
    out = diagrams.escape(NASTY)
    for bad in ('"', ";", "<", ">", "`", "#", "\n", "\u202e"):
        assert bad not in out
    assert "bold" in out and "end" in out
    assert diagrams.escape("a" * 500, limit=10) == "a" * 9 + "\u2026"
    assert diagrams.escape("ünïcode → ✓") == "ünïcode → ✓"


def test_names_never_become_node_ids():
    state = {"listeners": {NASTY: {"bind": "a:1", "protocol": "http", "routes": ["end"]}},
             "routes": {"end": {"match": {"path_prefix": "/<x>"}, "forward": "end"}},
             "pools": {"end": {"algorithm": "rr", "backends": [
                 {"name": "end", "address": NASTY, "health": "healthy", "intent": "active",
                  "eligible": True}]}}}
    text = diagrams.topology(state)
    ids = re.findall(r"^\s+(\w+)[\[({]", text, flags=re.M)
    assert ids == ["l0", "r0", "p0", "b0_0"]
    # every label is one quoted string on one line with no quote inside
    for line in text.splitlines()[1:]:
        assert line.count('"') in (0, 2), line


REQUEST = {
    "type": "request", "request_id": "r-1", "listener": "web", "client": "127.0.0.1:5555",
    "method": "GET", "path": "/hello", "host": "x.test", "route": "all", "pool": "web",
    "algorithm": "round_robin",
    "candidates": [{"name": "b1", "health": "healthy", "intent": "active", "eligible": True},
                   {"name": "b2", "health": "unhealthy", "intent": "active", "eligible": False}],
    "inputs": {"index": 3}, "sticky": {"mode": "cookie", "hit": False, "target": None,
                                       "reason": "no cookie"},
    "backend": "b1", "status": 200, "latency_ms": 4.2, "termination": "--",
    "retries": [{"backend": "b3", "error": "connection refused"}],
    "timings": {"accepted": 0, "route_matched": 0.1, "backend_picked": 0.2, "connected": 1.1,
                "first_byte": 3.3, "done": 4.2},
}


def test_request_sequence_follows_the_path_with_retries_and_timings():
    text = diagrams.request_sequence(REQUEST)
    lines = [line.strip() for line in text.splitlines()]
    assert lines[0] == "sequenceDiagram"
    assert "participant C as client 127.0.0.1:5555" in lines
    assert "participant LB as pool web · round_robin" in lines
    # the retried backend appears before the one that answered
    assert lines.index("participant S0 as backend b3") < lines.index("participant S1 as backend b1")
    order = ["C->>P: GET /hello · host x.test",
             "Note over P: route all matched at 0.10 ms",
             "P->>LB: pick a backend (2 candidates)",
             "Note over LB: b1 ✓, b2 ✗ unhealthy",
             "Note over LB: sticky (cookie) miss: no cookie · index=3",
             "LB-->>P: b1 at 0.20 ms",
             "P->>S0: GET /hello (attempt 1)",
             "S0--xP: connection refused",
             "P->>S1: GET /hello (attempt 2) · connected at 1.10 ms",
             "S1-->>P: 200 · first byte at 3.30 ms",
             "P-->>C: 200 · 4.20 ms"]
    positions = [lines.index(step) for step in order]
    assert positions == sorted(positions)


def test_request_sequence_when_the_proxy_answers_itself():
    event = {"type": "request", "request_id": "r-2", "listener": "web", "client": "1.2.3.4:1",
             "method": "GET", "path": "/", "route": "all", "pool": "web",
             "algorithm": "round_robin", "backend": None, "status": 503, "proxy_error": True,
             "error": "no eligible backend in pool web", "termination": "PQ",
             "latency_ms": 0.4}
    text = diagrams.request_sequence(event)
    assert "LB--xP: no backend: no eligible backend in pool web" in text
    assert "P-->>C: 503 made by the proxy · 0.40 ms" in text
    assert "the proxy ended it while picking a backend" in text
    assert "participant S0" not in text


def test_request_sequence_escapes_outside_text():
    event = dict(REQUEST, path="/a;b#c<script>", retries=[{"backend": "b3", "error": NASTY}])
    text = diagrams.request_sequence(event)
    body = "\n".join(text.splitlines()[1:])
    assert "<script>" not in body and ";" not in body and "#" not in body
    assert len([line for line in text.splitlines() if "S0--xP" in line]) == 1


def test_termination_codes_in_words():
    assert diagrams.explain_termination("--") == "finished normally"
    assert diagrams.explain_termination("SH") == (
        "the backend ended it while waiting for the response headers")
    assert diagrams.explain_termination("CD") == (
        "the client ended it while the response body was flowing")


def probe(ts, ok, detail, backend="b1", count=1):
    return {"type": "health_probe", "pool": "web", "backend": backend, "ok": ok,
            "detail": detail, "ts": ts, "count": count}


def change(ts, old, new, cause, backend="b1", kind="health"):
    return {"type": "state_change", "pool": "web", "backend": backend, "kind": kind,
            "old": old, "new": new, "cause": cause, "ts": ts}


def test_health_episode_folds_probes_and_shows_changes_in_order():
    events = ([probe(i, True, f"200 in {i} ms") for i in range(5)]
              + [probe(9, True, "200 in 1 ms", backend="b2")]
              + [probe(10, False, "connection refused"), probe(11, False, "connection refused")]
              + [change(11.5, "healthy", "unhealthy", "2 consecutive failures: connection refused")]
              + [probe(20, True, "200 in 3 ms"), probe(21, True, "200 in 2 ms", count=3)]
              + [change(21.5, "unhealthy", "healthy", "2 consecutive successes")])
    text = diagrams.health_episode(list(reversed(events)), "b1")
    lines = [line.strip() for line in text.splitlines()]
    assert "participant HC as health checker · pool web" in lines
    expected = ["B-->>HC: ✓ 200 in 4 ms (×5)",
                "B--xHC: ✗ connection refused (×2)",
                "Note over HC,P: health healthy → unhealthy: 2 consecutive failures: "
                "connection refused",
                "HC-)P: take b1 out of rotation",
                "B-->>HC: ✓ 200 in 2 ms (×4)",
                "Note over HC,P: health unhealthy → healthy: 2 consecutive successes",
                "HC-)P: put b1 back in rotation"]
    positions = [lines.index(step) for step in expected]
    assert positions == sorted(positions)
    assert "b2" not in text


def test_health_episode_keeps_the_newest_steps():
    events = []
    for i in range(40):
        events.append(probe(i * 2, True, "200"))
        events.append(probe(i * 2 + 1, False, f"timeout {i}"))
    text = diagrams.health_episode(events, "b1", limit=10)
    assert "70 earlier steps not shown" in text
    assert "timeout 39" in text and "timeout 10" not in text


def test_health_episode_without_events_says_so():
    text = diagrams.health_episode([], "b9", pool="web")
    assert "no probes or state changes seen for b9 yet" in text
    assert text.startswith("sequenceDiagram")
