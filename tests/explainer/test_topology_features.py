"""The topology draws issue 14's balancer features: backups, queues, max_connections, zones.

The states are real GET /state answers of `python -m proxy` running
proxy/examples/anchors.yaml (ports moved): anchors_state.json with every backend
healthy, anchors_state_busy.json with b2 and b3 down (the backup b4 serving) and b1
at its max_connections while 40 requests were in flight.
"""
import copy
import json
from pathlib import Path

from labs import diagrams

HERE = Path(__file__).parent
CALM = json.loads((HERE / "anchors_state.json").read_text())
BUSY = json.loads((HERE / "anchors_state_busy.json").read_text())


def node_line(text: str, name: str) -> str:
    """The line that defines the node whose label starts with `name`."""
    return next(line for line in text.splitlines() if f'["{name} · ' in line)


def node_id(text: str, name: str) -> str:
    return node_line(text, name).split("[")[0].strip()


def subgraphs(text: str) -> dict[str, list[str]]:
    """Zone title -> names of the backends drawn inside that subgraph."""
    groups: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("subgraph "):
            current = line.split('["', 1)[1].rstrip('"]')
            groups[current] = []
        elif line == "end":
            current = None
        elif current is not None:
            groups[current].append(line.split('["', 1)[1].split(" · ")[0])
    return groups


def test_backup_is_dashed_labelled_and_on_standby_while_primaries_serve():
    text = diagrams.topology(CALM)
    b4 = node_id(text, "b4")
    assert "<br/>backup<br/>" in node_line(text, "b4")
    assert f"  class {b4} backup" in text.splitlines()
    assert "classDef backup stroke-dasharray" in text
    assert f'p0 -.->|"backup · standby"| {b4}' in text
    assert "backups standby: serve when primaries eligible under 0.5" in text
    # primaries are not marked as backups
    assert f"class {node_id(text, 'b1')} backup" not in text


def test_backups_serving_when_primaries_are_down():
    text = diagrams.topology(BUSY)
    b4 = node_id(text, "b4")
    assert "BACKUPS SERVING: primaries eligible under 0.5" in text
    assert f'p0 -->|"backup · serving now"| {b4}' in text
    assert "b2 · UNHEALTHY" in text and f"p0 -.-> {node_id(text, 'b2')}" in text


def test_max_connections_is_in_flight_against_the_limit():
    calm, busy = diagrams.topology(CALM), diagrams.topology(BUSY)
    assert "0 conn · 0/10 in flight" in node_line(calm, "b1")
    assert "10/10 in flight · FULL" in node_line(busy, "b1")
    # the L4 pool's backend counts open connections against its own limit
    assert "0/100 open TCP conn" in node_line(calm, "r1")


def test_queue_depth_and_counts_on_the_pool():
    busy = diagrams.topology(BUSY)
    assert "queue: 0/50 waiting · waits ≤ 2s" in busy
    assert "queued 6 · timed out 0 · turned away 0" in busy
    state = copy.deepcopy(BUSY)
    state["pools"]["web"]["queue"].update(depth=7, timeouts=2, full=1)
    text = diagrams.topology(state)
    assert "queue: 7/50 waiting" in text and "timed out 2 · turned away 1" in text
    # the relay pool has no queue configured: nothing about queues on it
    relay = next(line for line in text.splitlines() if "pool relay" in line)
    assert "queue" not in relay


def test_zones_group_backends_and_listeners_say_theirs():
    text = diagrams.topology(CALM)
    assert subgraphs(text) == {"zone a": ["b1", "b4"], "zone b": ["b2", "b3"]}
    assert "listener node-a<br/>L7 · http · 127.0.0.1:31580<br/>no TLS<br/>zone a" in text
    assert "cross-zone off: a listener picks in its own zone first" in text
    state = copy.deepcopy(CALM)
    state["pools"]["web"]["cross_zone"] = True
    assert "cross-zone on: every zone serves every listener" in diagrams.topology(state)


def test_zone_names_are_escaped_and_ids_generated():
    state = copy.deepcopy(CALM)
    state["pools"]["web"]["backends"][0]["zone"] = 'end"]; %%{init}%% <b>x</b>'
    text = diagrams.topology(state)
    title = next(line for line in text.splitlines() if line.strip().startswith("subgraph"))
    assert title.strip().startswith('subgraph p0_z0["zone end')
    assert title.count('"') == 2 and "<b>" not in title and "%%" not in title and ";" not in title


def test_a_pool_without_the_features_draws_as_before():
    state = copy.deepcopy(CALM)
    pool = state["pools"]["web"]
    pool["queue"]["max_length"] = None
    for backend in pool["backends"]:
        backend.update(backup=False, zone=None, max_connections=None)
    text = diagrams.topology(state)
    assert "subgraph" not in text and "backup" not in text.replace("classDef backup", "")
    assert "queue" not in text and "cross-zone" not in text
    assert "0 conn · 0 in flight" in node_line(text, "b1")
