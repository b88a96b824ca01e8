"""Queued requests are woken by every change that can end their wait, not only by a
freed slot (proxy/queueing.py): a backend that recovers, a raised max_connections, a new
backend, a slot freed after a reload; and refused at once when the pool has nothing left
to wait for (its only backend drained or removed, the pool removed).

Real proxy in-process, real sockets: backends that hold their answers until the test
opens the gate, and answer /health at once, healthy or not as the test says.
"""
from __future__ import annotations

import copy

import pytest

from tests.proxy.anchors.support import (
    Client, GatedBackend, backend_entry, config, event, state, wait_for)
from tests.proxy.edge.harness import EdgeProxy

pytestmark = pytest.mark.timeout(90)


class Backend(GatedBackend):
    """Gated requests; /health answered at once, 503 while `sick`."""

    def __init__(self, name: str, gated: bool = True, sick: bool = False):
        self.sick = sick
        super().__init__(name, gated)

    def _reply(self, target: bytes, conn) -> bytes:
        if target == b"/health":
            status = b"503 Service Unavailable" if self.sick else b"200 OK"
            return b"HTTP/1.1 %b\r\nContent-Length: 0\r\n\r\n" % status
        return super()._reply(target, conn)


def pool(*backends, max_connections: int = 1, health: bool = False, **extra) -> dict:
    p = {"backends": [backend_entry(b.name, b, max_connections=max_connections)
                      for b in backends],
         "queue": {"max_length": 10, "timeout": "30s"}, **extra}
    if health:
        p["health"] = {"type": "http", "path": "/health", "interval": "100ms",
                       "timeout": "1s", "healthy_threshold": 1, "unhealthy_threshold": 1}
    return p


def depth(proxy) -> int:
    return state(proxy)["pools"]["p"]["queue"]["depth"]


def health(proxy, name: str) -> str:
    return next(b["health"] for b in state(proxy)["pools"]["p"]["backends"]
                if b["name"] == name)


def hold_and_queue(proxy, backend, waiting: int) -> tuple[Client, list[Client]]:
    """One request holding `backend`'s only slot, then `waiting` queued behind it."""
    first = Client(proxy.port(), "/first")
    wait_for(lambda: backend.arrived == 1, what="the first request at the backend")
    queued = []
    for i in range(waiting):
        queued.append(Client(proxy.port(), f"/w{i}"))
        wait_for(lambda: depth(proxy) == i + 1, what=f"request {i} in the queue")
    return first, queued


def close(*backends) -> None:
    for b in backends:
        b.release()
        b.close()


def test_a_backend_that_recovers_serves_the_queue_at_once():
    b1, b2 = Backend("b1"), Backend("b2", gated=False, sick=True)
    cfg = config({"p": pool(b1, b2, health=True)})
    try:
        with EdgeProxy(cfg) as proxy:
            wait_for(lambda: health(proxy, "b1") == "healthy" and
                     health(proxy, "b2") == "unhealthy", what="b1 up, b2 down")
            first, (waiting,) = hold_and_queue(proxy, b1, 1)
            b2.sick = False  # its next check passes: healthy, and the waiter goes to it
            reply = waiting.result()
            assert reply.status == 200 and reply.body == b"b2 /w0"
            assert b1.arrived == 1  # b1 still holds the first one
            served = event(proxy, "w0")
            assert served.queue["outcome"] == "served" and served.backend == "b2"
            b1.release()
            assert first.result().status == 200
    finally:
        close(b1, b2)


def test_raising_max_connections_serves_the_waiters_at_once():
    b1 = Backend("b1")
    cfg = config({"p": pool(b1)})
    try:
        with EdgeProxy(cfg) as proxy:
            first, queued = hold_and_queue(proxy, b1, 2)
            proxy.apply(config({"p": pool(b1, max_connections=3)}))
            wait_for(lambda: b1.arrived == 3, what="both waiters at the backend")
            assert depth(proxy) == 0
            b1.release()
            assert [c.result().body for c in queued] == [b"b1 /w0", b"b1 /w1"]
            assert all(event(proxy, f"w{i}").queue["outcome"] == "served" for i in range(2))
            assert first.result().status == 200
    finally:
        close(b1)


def test_a_new_backend_takes_the_waiters():
    b1, b2 = Backend("b1"), Backend("b2", gated=False)
    try:
        with EdgeProxy(config({"p": pool(b1)})) as proxy:
            first, (waiting,) = hold_and_queue(proxy, b1, 1)
            proxy.apply(config({"p": pool(b1, b2)}))
            reply = waiting.result()
            assert reply.status == 200 and reply.body == b"b2 /w0"
            b1.release()
            assert first.result().status == 200
    finally:
        close(b1, b2)


def test_a_slot_freed_after_a_reload_wakes_the_waiter():
    b1 = Backend("b1")
    cfg = config({"p": pool(b1)})
    try:
        with EdgeProxy(cfg) as proxy:
            first, (waiting,) = hold_and_queue(proxy, b1, 1)
            changed = copy.deepcopy(cfg)
            changed["pools"]["p"]["retries"] = 2  # a new pool object, the same queue
            proxy.apply(changed)
            assert depth(proxy) == 1  # still waiting: no slot is free yet
            b1.release()  # the first request, picked before the reload, frees its slot
            assert first.result().status == 200
            reply = waiting.result()
            assert reply.status == 200 and reply.body == b"b1 /w0"
            assert event(proxy, "w0").queue["outcome"] == "served"
    finally:
        close(b1)


@pytest.mark.parametrize("change", ["drain", "remove-backend", "remove-pool"])
def test_waiters_are_refused_when_nothing_is_left_to_wait_for(change):
    b1 = Backend("b1")
    cfg = config({"p": pool(b1)})
    try:
        with EdgeProxy(cfg) as proxy:
            first, queued = hold_and_queue(proxy, b1, 2)
            changed = copy.deepcopy(cfg)
            if change == "drain":
                changed["pools"]["p"]["backends"][0]["state"] = "draining"
            elif change == "remove-backend":
                changed["pools"]["p"]["backends"] = []
            else:
                changed["routes"] = {"all": {"respond": {"status": 200, "body": "elsewhere"}}}
                del changed["pools"]["p"]
            proxy.apply(changed)
            for i, client in enumerate(queued):
                reply = client.result()  # long before queue.timeout (30s)
                assert reply.status == 503
                assert reply.headers["x-lblab-error"] == "no-backend"
                ev = event(proxy, f"w{i}")
                assert ev.queue["outcome"] == "refused"
                assert ev.termination != "sQ"  # not a queue timeout
                if change == "remove-pool":
                    assert "pool p was removed" in ev.error
            if change != "remove-pool":
                assert state(proxy)["pools"]["p"]["queue"]["refused"] == 2
            b1.release()
            assert first.result().status == 200  # the one in flight finishes
    finally:
        close(b1)


def test_waiters_of_a_queue_removed_by_a_reload_get_503_backend_limit():
    b1 = Backend("b1")
    cfg = config({"p": pool(b1)})
    try:
        with EdgeProxy(cfg) as proxy:
            first, (waiting,) = hold_and_queue(proxy, b1, 1)
            changed = copy.deepcopy(cfg)
            del changed["pools"]["p"]["queue"]  # the limit stays, the queue goes
            proxy.apply(changed)
            reply = waiting.result()
            assert reply.status == 503 and reply.headers["x-lblab-error"] == "backend-limit"
            assert event(proxy, "w0").queue["outcome"] == "refused"
            b1.release()
            assert first.result().status == 200
    finally:
        close(b1)


# ---------------------------------------------------------------- the pool's max_requests

def test_pool_max_requests_caps_all_backends_together():
    """Envoy's cluster-wide max_requests: no backend has a limit of its own, yet the
    pool takes 2 requests at once; the third waits, a fourth (no room) is refused."""
    b1, b2 = Backend("b1"), Backend("b2")
    pools = {"p": {"balancer": {"algorithm": "round_robin"}, "max_requests": 2,
                   "backends": [backend_entry("b1", b1), backend_entry("b2", b2)],
                   "queue": {"max_length": 1, "timeout": "30s"}}}
    try:
        with EdgeProxy(config(pools)) as proxy:
            port = proxy.port()
            held = [Client(port, "/h1"), Client(port, "/h2")]
            wait_for(lambda: b1.arrived + b2.arrived == 2, what="two requests in flight")
            waiting = Client(port, "/w0")
            wait_for(lambda: depth(proxy) == 1, what="the third in the queue")
            snapshot = state(proxy)["pools"]["p"]
            assert snapshot["max_requests"] == 2 and snapshot["in_flight"] == 2
            refused = Client(port, "/full").result()
            assert refused.status == 503 and refused.headers["x-lblab-error"] == "queue-full"
            assert "pool max_requests 2/2" in event(proxy, "full").error
            b1.release()
            b2.release()
            assert waiting.result().status == 200
            assert event(proxy, "w0").queue["outcome"] == "served"
            assert all(c.result().status == 200 for c in held)
    finally:
        close(b1, b2)


def test_pool_max_requests_config():
    from proxy.config import ConfigError, parse_config

    backend = {"name": "b1", "address": "127.0.0.1:9001"}
    ok = parse_config({"listeners": {"web": {"bind": "127.0.0.1:0", "routes": ["all"]}},
                       "routes": {"all": {"forward": "p"}},
                       "pools": {"p": {"backends": [backend], "max_requests": 5,
                                       "queue": {}}}})  # a limit enough for a queue
    assert ok.pools["p"].max_requests == 5
    with pytest.raises(ConfigError) as err:
        parse_config({"listeners": {"t": {"bind": "127.0.0.1:0", "protocol": "tcp",
                                          "pool": "p"}},
                      "pools": {"p": {"backends": [backend], "max_requests": 5}}})
    assert [p for p, _ in err.value.errors] == ["pools.p.max_requests"]
    assert "max_connections_per_backend" in err.value.errors[0][1]
