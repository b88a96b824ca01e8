"""Per-backend connection limits with a bounded queue in front (HAProxy maxconn + queue).

Real proxy, real sockets: a backend that answers only when the test opens its
gate holds its slot; what the clients get, the request events, GET /state and
GET /metrics are checked.
"""
from __future__ import annotations

import pytest

from proxy.config import ConfigError, parse_config
from tests.proxy.anchors.support import (
    Client, GatedBackend, admin_get, admin_json, backend_entry, config, event, state,
    wait_for)
from tests.proxy.edge.harness import EdgeProxy

pytestmark = pytest.mark.timeout(60)


def queued_pool(backend, **queue) -> dict:
    return {"p": {"backends": [backend_entry("b1", backend, max_connections=1)],
                  "queue": {"max_length": 1, "timeout": "10s", **queue}}}


def test_a_request_waits_for_the_slot_and_one_more_is_refused_queue_full():
    backend = GatedBackend("b1")
    try:
        with EdgeProxy(config(queued_pool(backend))) as proxy:
            port = proxy.port()
            first = Client(port, "/first")
            wait_for(lambda: backend.arrived == 1, what="the first request at the backend")
            second = Client(port, "/second")
            depth = wait_for(lambda: state(proxy)["pools"]["p"]["queue"]["depth"],
                             what="the second request in the queue")
            assert depth == 1
            snapshot = admin_json(proxy, "/state")["pools"]["p"]
            assert snapshot["queue"]["depth"] == 1 and snapshot["queue"]["max_length"] == 1
            assert snapshot["backends"][0]["max_connections"] == 1
            assert snapshot["backends"][0]["outstanding"] == 1
            third = Client(port, "/third").result()
            assert third.status == 503
            assert third.headers["x-lblab-error"] == "queue-full"
            backend.release()
            assert first.result().status == 200
            reply = second.result()
            assert reply.status == 200 and reply.body == b"b1 /second"
            served = event(proxy, "second")
            assert served.queue["outcome"] == "served"
            assert served.queue["position"] == 1
            assert served.queue["waited_ms"] > 0
            refused = event(proxy, "third")
            assert refused.termination == "PQ" and refused.queue["outcome"] == "full"
            assert "queue.max_length" in refused.error
            assert event(proxy, "first").queue is None
            metrics = admin_get(proxy, "/metrics").decode()
            assert 'lblab_queue_requests_total{outcome="served",pool="p"} 1.0' in metrics
            assert 'lblab_queue_requests_total{outcome="full",pool="p"} 1.0' in metrics
            assert 'lblab_queue_wait_seconds_count{pool="p"} 1.0' in metrics
            assert 'lblab_pool_queue_depth{pool="p"} 0.0' in metrics
    finally:
        backend.release()
        backend.close()


def test_a_request_that_waits_too_long_gets_503_queue_timeout_sq():
    backend = GatedBackend("b1")
    try:
        with EdgeProxy(config(queued_pool(backend, timeout="200ms"))) as proxy:
            port = proxy.port()
            first = Client(port, "/first")
            wait_for(lambda: backend.arrived == 1, what="the first request at the backend")
            waited = Client(port, "/waits").result()
            assert waited.status == 503
            assert waited.headers["x-lblab-error"] == "queue-timeout"
            ev = event(proxy, "waits")
            assert ev.termination == "sQ" and ev.proxy_error
            assert ev.queue["outcome"] == "timeout" and ev.queue["waited_ms"] >= 200
            assert "queue.timeout" in ev.error and "b1 1/1" in ev.error
            assert ev.backend is None  # it never reached a backend
            assert state(proxy)["pools"]["p"]["queue"]["depth"] == 0
            backend.release()
            assert first.result().status == 200
    finally:
        backend.release()
        backend.close()


def test_without_a_queue_the_limit_answers_503_backend_limit_at_once():
    backend = GatedBackend("b1")
    pools = {"p": {"backends": [backend_entry("b1", backend, max_connections=1)]}}
    try:
        with EdgeProxy(config(pools)) as proxy:
            first = Client(proxy.port(), "/first")
            wait_for(lambda: backend.arrived == 1, what="the first request at the backend")
            refused = Client(proxy.port(), "/refused").result()
            assert refused.status == 503 and refused.headers["x-lblab-error"] == "backend-limit"
            assert "b1 1/1" in event(proxy, "refused").error
            backend.release()
            assert first.result().status == 200
    finally:
        backend.release()
        backend.close()


def test_the_backend_limit_overrides_the_pools_and_the_free_backend_serves():
    busy, free = GatedBackend("b1"), GatedBackend("b2", gated=False)
    pools = {"p": {"max_connections_per_backend": 5, "balancer": {"algorithm": "round_robin"},
                   "backends": [backend_entry("b1", busy, max_connections=1),
                                backend_entry("b2", free)],
                   "queue": {"max_length": 5}}}
    try:
        with EdgeProxy(config(pools)) as proxy:
            first = Client(proxy.port(), "/first")
            wait_for(lambda: busy.arrived == 1, what="a request at b1")
            # b1 is full, b2 (limit 5 from the pool) is not: no one waits.
            for i in range(3):
                assert Client(proxy.port(), f"/n{i}").result().body.startswith(b"b2 ")
            backends = {b["name"]: b for b in state(proxy)["pools"]["p"]["backends"]}
            assert backends["b1"]["max_connections"] == 1
            assert backends["b2"]["max_connections"] == 5
            busy.release()
            assert first.result().status == 200
    finally:
        busy.release()
        busy.close()
        free.close()


def test_queue_config_is_bounded_and_needs_a_limit():
    base = {"listeners": {"web": {"bind": "127.0.0.1:0", "routes": ["all"]}},
            "routes": {"all": {"forward": "p"}}}
    backend = {"name": "b1", "address": "127.0.0.1:9001"}
    with pytest.raises(ConfigError) as err:
        parse_config({**base, "pools": {"p": {"backends": [backend], "queue": {}}}})
    assert "no backend has one" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_config({**base, "pools": {"p": {"backends": [backend],
                                               "max_connections_per_backend": 1,
                                               "queue": {"max_length": 0,
                                                         "timeout": "2h"}}}})
    paths = [p for p, _ in err.value.errors]
    assert "pools.p.queue.max_length" in paths and "pools.p.queue.timeout" in paths
    with pytest.raises(ConfigError) as err:
        parse_config({"listeners": {"t": {"bind": "127.0.0.1:0", "protocol": "tcp",
                                          "pool": "p"}},
                      "pools": {"p": {"backends": [dict(backend, max_connections=2)],
                                      "queue": {}}}})
    assert [p for p, _ in err.value.errors] == ["pools.p.queue"]
    ok = parse_config({**base, "pools": {"p": {"backends": [dict(backend, max_connections=3)],
                                               "queue": {"timeout": "250ms"}}}})
    assert ok.pools["p"].queue.timeout == 0.25
