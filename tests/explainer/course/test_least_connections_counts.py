"""What least_connections counts behind this proxy's HTTP listener, as lesson 4 says.

Lesson 4 ("Connections are not requests") and the slow-backend-p99 lab's solution state
that at L7 this proxy's least_connections counts the connections to a backend that carry
a request right now: not the client's keep-alive connection, and not a pooled backend
connection waiting idle for the next request. This test checks the claim on a real proxy
process and a real toy backend, reading the counter the balancer reads (`/state`,
`active_connections`) while a request is in flight and after it.
"""
from __future__ import annotations

import threading
import time

import pytest
import yaml

from labs.backend.testing import start_backends
from tests.proxy.e2e.support import ProxyProcess, Session, backend_entry, base_config, request

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def backend():
    handles = start_backends(["b1"])
    yield handles[0]
    for handle in handles:
        handle.stop()


@pytest.fixture(scope="module")
def proxy(backend, tmp_path_factory):
    directory = tmp_path_factory.mktemp("least-connections")
    config = base_config({"web": {"balancer": {"algorithm": "least_connections"},
                                  "backends": [backend_entry(backend)]}},
                         access_log=directory / "access.log")
    path = directory / "proxy.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    proc = ProxyProcess(path, directory / "access.log").wait_ready()
    yield proc
    proc.stop()


def counters(proxy) -> tuple[int, int]:
    state = proxy.backend_state("web", "b1")
    return state["active_connections"], state["outstanding"]


def wait_for(predicate, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def test_an_open_client_connection_and_an_idle_pooled_one_count_zero(proxy, backend):
    # The toy backend's control API answers on its main port, so each stats() call is one
    # connection of its own: compare readings taken the same way.
    before = backend.stats()
    with Session(proxy.port("web")) as client:
        assert client.get("/first").status == 200
        after_first = backend.stats()
        # The client keeps its keep-alive connection open and the proxy keeps its
        # connection to b1 in the pool for the next request...
        assert after_first["connections_open"] == before["connections_open"] + 1
        # ...and neither is counted: nothing is being asked of b1 right now.
        assert counters(proxy) == (0, 0)
        assert client.get("/second").status == 200
        after_second = backend.stats()
        # only the stats call itself is new: the pooled connection was reused
        assert after_second["connections_total"] == after_first["connections_total"] + 1
        assert counters(proxy) == (0, 0)


def test_a_connection_carrying_a_request_counts_one(proxy, backend):
    backend.control({"latency_ms": 1500})
    statuses = []
    sender = threading.Thread(target=lambda: statuses.append(request(proxy.port("web"),
                                                                     path="/slow").status))
    sender.start()
    try:
        # The request's connection counts from the moment it is attached (connected) until
        # the response ends; b1 holds the answer for 1.5 s, so the count must show up.
        wait_for(lambda: counters(proxy) == (1, 1),
                 "b1 counting one connection and one outstanding request")
    finally:
        sender.join(10)
        backend.clear_faults()
    assert statuses == [200]
    assert counters(proxy) == (0, 0)
