"""A request event's JSON line is the same text however it is made.

RequestEvent.to_json joins the candidates' JSON as the pick made it (each
candidate's text kept by its values, proxy.runtime.Choice.candidates_json)
with the rest of the event encoded at once, from the event's fields or, for
an event not built yet, from its builder's values. These tests pin that the line is
exactly `encode_json(event.to_dict())`, character for character, for picks in
many states, and that a pick whose candidates were set by hand falls back to
encoding them.
"""
from __future__ import annotations

import json

from proxy.balancers.base import PickContext
from proxy.config import load_config
from proxy.events import RequestEvent, encode_json, lazy_request
from proxy.io.l7 import _request_fields
from proxy.model import Health, Intent
from proxy.runtime import Runtime

CONFIG = """
listeners:
  web: {bind: "127.0.0.1:0", routes: [all]}
routes:
  all: {forward: web}
pools:
  web:
    backends:
      - {name: b1, address: "127.0.0.1:1", weight: 2}
      - {name: b2, address: "127.0.0.1:2", zone: eu-1}
      - {name: b3, address: "127.0.0.1:3", backup: true}
"""


def event_of(choice, n: int) -> RequestEvent:
    """A request event made as the L7 data plane makes it (lazy, same builder)."""
    args = ("web", "127.0.0.1:5000", "GET", b"/a?b=\xe9", "example.test", "all", choice,
            None, None, 10.0, 10.001, 10.002, 10.003, 10.004, 10.005, None, None, None,
            None, "127.0.0.1", None)
    return lazy_request((_request_fields, *args), 1_700_000_000.25 + n, f"r{n}", "web",
                        choice.backend.name if choice.backend else None, 200, 5.0, 0, 3,
                        "--", False, None, [], None, None, None)


def picks(runtime: Runtime):
    """Picks of one pool through a series of backend states."""
    pool = runtime.pools["web"]
    b1, b2, b3 = pool.backends.values()
    ctx = PickContext(client_ip="127.0.0.1", now=100.0)
    for step in range(12):
        b1.outstanding = step % 3
        b2.active_connections = step % 2
        b2.health = (Health.HEALTHY, Health.UNHEALTHY, Health.INITIAL)[step % 3]
        b3.intent = Intent.DRAINING if step % 4 == 3 else Intent.ACTIVE
        b1.weight = 1 + step % 2
        yield pool.choose(ctx)


def test_the_line_is_the_event_encoded_whole():
    runtime = Runtime(load_config(CONFIG), clock=lambda: 100.0)
    for n, choice in enumerate(picks(runtime)):
        assert choice.candidates_json() is not None
        ev = event_of(choice, n)
        line = ev.to_json()  # from the builder's values, the event left unbuilt
        assert line == encode_json(ev.to_dict())
        assert json.loads(line)["candidates"] == choice.candidates
        # Again from the kept texts, and from an event built first: the same.
        assert event_of(choice, n).to_json() == line
        built = event_of(choice, n)
        assert built.path == "/a?b=\xe9"  # a rich field read: the event is built
        assert built.to_json() == line


def test_candidates_set_by_hand_are_encoded_as_they_are():
    runtime = Runtime(load_config(CONFIG), clock=lambda: 100.0)
    choice = next(picks(runtime))
    choice.candidates = [{"name": "b1", "weight": True}, {"name": "b2", "weight": 1}]
    assert choice.candidates_json() is None
    ev = event_of(choice, 0)
    assert ev.to_json() == encode_json(ev.to_dict())
    assert '"candidates":[{"name":"b1","weight":true},{"name":"b2","weight":1}]' in ev.to_json()


def test_an_event_built_whole_encodes_as_before():
    ev = RequestEvent(request_id="r", listener="web", client="c", method="GET", path="/",
                      candidates=[{"name": "b1"}], timings={"done": 1.5})
    assert ev.to_json() == encode_json(ev.to_dict())
