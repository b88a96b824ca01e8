"""Request events and candidate lists built on first read: the same content as eager ones.

The data plane keeps the raw decision-time values and builds the rich part of a
request event (candidates, timings...) only when something reads it (a /events
subscriber, the access log, GET /requests/<id>). These tests pin that a lazy
event reads exactly like one built whole, and that what it shows is the state at
the decision, not at the read.
"""
from __future__ import annotations

import dataclasses
import json

import pytest

from proxy.balancers.base import PickContext
from proxy.config import load_config
from proxy.events import EventBus, RequestEvent, lazy_request, with_lazy_fields
from proxy.model import Health, Intent
from proxy.runtime import Runtime, candidate_view

CONFIG = """
listeners:
  web: {bind: "127.0.0.1:0", routes: [all]}
routes:
  all: {forward: web}
pools:
  web:
    backends:
      - {name: b1, address: "127.0.0.1:1", weight: 2}
      - {name: b2, address: "127.0.0.1:2"}
      - {name: b3, address: "127.0.0.1:3"}
"""

EAGER = dict(ts=1.5, request_id="r1", pool="web", backend="b1", status=200,
             latency_ms=1.25, bytes_in=3, bytes_out=2, termination="--", proxy_error=False,
             error=None, retries=[], retry_budget=None, zone=None, queue=None)
RICH = dict(listener="web", client="127.0.0.1:5000", method="GET", path="/a?b=c",
            host="example.test", route="all", algorithm="round_robin",
            candidates=[{"name": "b1"}], inputs={"index": 0, "of": 1},
            timings={"accepted": 0.0, "done": 1.25})


def lazy(calls: list | None = None) -> RequestEvent:
    def build(extra: dict) -> dict:
        if calls is not None:
            calls.append(1)
        return dict(RICH, **extra)

    return lazy_request((build, {}), **EAGER)


def test_a_lazy_event_reads_like_one_built_whole():
    eager = RequestEvent(**EAGER, **RICH)
    ev = lazy()
    assert ev.to_dict() == eager.to_dict()
    assert json.loads(ev.to_json()) == json.loads(eager.to_json())
    assert ev == eager
    assert type(ev) is RequestEvent
    assert "_lazy" not in ev.to_dict()
    assert repr(ev) == repr(eager)


def test_the_counted_fields_are_there_without_building_the_rest():
    calls: list = []
    ev = lazy(calls)
    assert (ev.pool, ev.backend, ev.status, ev.latency_ms, ev.termination) == (
        "web", "b1", 200, 1.25, "--")
    assert calls == []
    assert ev.candidates == [{"name": "b1"}]  # first read of the rich part: built once
    assert ev.path == "/a?b=c" and ev.grpc is None and ev.stream_id is None
    assert calls == [1]


def test_an_http2_streams_fields_are_given_without_building_the_event():
    calls: list = []
    ev = with_lazy_fields(lazy(calls), protocol="h2", stream_id=7)
    assert calls == []  # still lazy: the request of a stream costs no more than any other
    eager = RequestEvent(**EAGER, **RICH, protocol="h2", stream_id=7)
    assert json.loads(ev.to_json()) == json.loads(eager.to_json())
    assert (ev.protocol, ev.stream_id) == ("h2", 7) and ev == eager
    # An event already built (or never lazy) is copied with them.
    built = with_lazy_fields(RequestEvent(**EAGER, **RICH), protocol="h2", stream_id=9)
    assert (built.protocol, built.stream_id, built.path) == ("h2", 9, "/a?b=c")


def test_replace_and_the_request_store_see_the_whole_event():
    bus = EventBus()
    bus.publish(lazy())
    stored = bus.request("r1")
    assert stored.method == "GET"
    assert dataclasses.replace(stored, protocol="h2").to_dict() == {
        **RequestEvent(**EAGER, **RICH).to_dict(), "protocol": "h2"}


def test_candidates_show_the_state_at_the_decision_not_at_the_read():
    runtime = Runtime(load_config(CONFIG), clock=lambda: 100.0)
    pool = runtime.pools["web"]
    b2 = pool.backends["b2"]
    b2.outstanding = 3
    b2.active_connections = 2
    before = [candidate_view(b, 100.0) for b in pool.backends.values()]
    choice = pool.choose(PickContext(client_ip="127.0.0.1", now=100.0))
    assert choice.backend is not None
    b2.outstanding = 9
    b2.health = Health.UNHEALTHY
    b2.intent = Intent.DRAINING
    assert choice.candidates == before
    assert choice.candidates[1] == {
        "name": "b2", "health": "initial", "intent": "active", "eligible": True,
        "weight": 1, "outstanding": 3, "connections": 2, "backup": False, "zone": None}
    assert choice.candidates is choice.candidates  # built once


def test_the_request_store_keeps_the_newest_and_finds_them_by_id():
    bus = EventBus(history=3)
    for n in range(5):
        bus.publish(dataclasses.replace(lazy(), request_id=f"r{n}", status=200 + n))
    assert bus.request("r0") is None and bus.request("r1") is None  # evicted, oldest first
    assert bus.request("r4").status == 204
    assert [e.request_id for e in bus.recent_requests(2)] == ["r3", "r4"]
    assert [e.request_id for e in bus.recent_requests(100)] == ["r2", "r3", "r4"]
    # A client may send an X-Request-Id twice: the lookup answers with the newest.
    bus.publish(dataclasses.replace(lazy(), request_id="r3", status=299))
    assert bus.request("r3").status == 299
    assert bus.request("r2") is None
    # The older r3 leaving the ring does not take the newer one out of the index...
    bus.publish(dataclasses.replace(lazy(), request_id="r5", status=205))
    assert bus.request("r3").status == 299 and bus.request("r4").status == 204
    # ...and the newer one leaving does.
    bus.publish(dataclasses.replace(lazy(), request_id="r6", status=206))
    bus.publish(dataclasses.replace(lazy(), request_id="r7", status=207))
    assert bus.request("r3") is None and bus.request("r7").status == 207


@pytest.mark.parametrize("seed", range(6))
def test_lookups_agree_with_a_scan_of_the_newest_kept(seed):
    """The index is brought up to date by lookups, in steps of any size (one request,
    more than the ring holds, enough to outgrow it twice): every lookup answers what
    a scan of the newest `history` requests, newest first, would."""
    import random

    rng = random.Random(seed)
    history = rng.choice([3, 7, 20])
    bus = EventBus(history=history)
    published: list[RequestEvent] = []
    for step in range(400):
        for _ in range(rng.choice([0, 1, 1, 2, history - 1, history, 3 * history])):
            rid = f"r{rng.randrange(2 * history)}"  # ids repeat, as clients' may
            ev = dataclasses.replace(lazy(), request_id=rid, status=200 + len(published) % 300)
            published.append(ev)
            bus.publish(ev)
        rid = f"r{rng.randrange(2 * history + 2)}"
        kept = published[-history:]
        expected = next((e for e in reversed(kept) if e.request_id == rid), None)
        assert bus.request(rid) is expected, (step, rid)
    assert bus.recent_requests(history) == published[-history:]


def test_a_lazy_event_stays_frozen():
    ev = lazy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.status = 500  # type: ignore[misc]
    assert ev.candidates == [{"name": "b1"}]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.candidates = []  # type: ignore[misc]
    assert type(ev) is RequestEvent


def test_many_l4_connections_leave_the_rare_events_in_the_replay():
    from proxy.control import replay_lines
    from proxy.events import ConnectionEvent, StateChange

    bus = EventBus()
    bus.publish(StateChange(pool="game", backend="b1", kind="health", old="healthy",
                            new="unhealthy", cause="3 consecutive failures"))
    for n in range(1500):  # seconds of connection churn: two events each at most
        bus.publish(ConnectionEvent(connection_id=f"c{n}", listener="game",
                                    client=f"127.0.0.1:{20000 + n}"))
    assert [e.type for e in bus.recent(10)] == ["state_change"]
    lines = replay_lines(bus, 50, {"state_change"})
    assert len(lines) == 1 and '"new":"unhealthy"' in lines[0]
    newest = replay_lines(bus, 3, None)
    assert [line.count('"connection_id":"c149') for line in newest] == [1, 1, 1]


def test_the_access_log_has_the_traffic_and_the_warnings_but_not_the_rest():
    import io
    import json

    from proxy.events import ConnectionEvent, StateChange, Warning  # noqa: A004

    log = io.StringIO()
    bus = EventBus(access_log=log)
    bus.publish(dataclasses.replace(lazy(), request_id="r1", status=200))
    bus.publish(ConnectionEvent(connection_id="c1", listener="game", client="127.0.0.1:1"))
    bus.publish(Warning(source="tls", pool="web", backend="b1",
                        message="TLS to backend b1 is NOT verified"))
    bus.publish(StateChange(pool="web", backend="b1", kind="health", old="healthy",
                            new="unhealthy", cause="timeout"))
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    assert [line["type"] for line in lines] == ["request", "connection", "warning"]
    assert lines[2]["message"] == "TLS to backend b1 is NOT verified"
