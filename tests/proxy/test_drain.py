"""Draining: the pure decision object with a fake clock, then the manager on a real Runtime."""
import asyncio

import pytest

from proxy.config import ConfigError
from proxy.drain import Drain, DrainManager, in_flight
from proxy.events import DrainEvent, RequestEvent
from proxy.model import Intent

from tests.proxy.health.helpers import FakeClock, Recorder, make_runtime, pool_data


# ---------------------------------------------------------------- the decisions (pure)

def test_completes_as_soon_as_nothing_is_in_flight():
    d = Drain("web", "b1", started=100.0, delay=30.0)
    assert d.deadline == 130.0
    a = d.decide(100.0, in_flight=3)
    assert a.kind == "wait" and a.wait == pytest.approx(0.1)
    a = d.decide(102.5, in_flight=0)
    assert a.kind == "complete" and a.detail == "nothing in flight after 2.5s"


def test_waits_no_longer_than_the_deadline():
    d = Drain("web", "b1", started=100.0, delay=30.0, poll=5.0)
    assert d.decide(110.0, 1).wait == 5.0
    assert d.decide(128.0, 1).wait == pytest.approx(2.0)
    assert d.remaining(128.0) == pytest.approx(2.0) and d.remaining(200.0) == 0.0


def test_cuts_at_the_deadline():
    d = Drain("web", "b1", started=100.0, delay=30.0)
    assert d.decide(129.999, 2).kind == "wait"
    a = d.decide(130.0, 2)
    assert a.kind == "cut" and a.detail == "deregistration delay 30s elapsed with 2 in flight"
    assert d.decide(130.0, 0).kind == "complete"  # nothing left: no cut needed


def test_zero_delay_cuts_at_once():
    d = Drain("web", "b1", started=5.0, delay=0.0)
    assert d.decide(5.0, 1).kind == "cut"
    assert d.decide(5.0, 0).kind == "complete"


def test_view_reports_deadline_and_what_is_left():
    clock = FakeClock(100.0)
    d = Drain("web", "b1", started=clock.now, delay=30.0, remove=True)
    clock.advance(12)
    view = d.view(clock.now, requests=2, connections=1)
    assert view == {"pool": "web", "backend": "b1", "remove": True,
                    "deregistration_delay": "30s", "elapsed_s": 12.0, "deadline_in_s": 18.0,
                    "in_flight": {"requests": 2, "connections": 1}}


# ---------------------------------------------------------------- the manager

class Exchange:
    def __init__(self, backend, request_id):
        self.backend = backend
        self.request_id = request_id
        self.cut_reason = None
        backend.request_started()

    def finish(self):
        self.backend.request_finished(0.01, failed=False)

    def cut(self, reason):
        self.cut_reason = reason
        self.finish()


class Server:
    """What DrainManager needs from ProxyServer: runtime, bus, inflight, close_pooled."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.bus = runtime.bus
        self.config = runtime.config
        self.exchanges = []
        self.closed_pooled = []

    def inflight(self, backend):
        return [x for x in self.exchanges if x.backend is backend and x.cut_reason is None]

    def close_pooled(self, backend):
        self.closed_pooled.append(backend.name)
        return 2


def setup(delay="300ms"):
    rt = make_runtime({"web": pool_data([("b1", 9001), ("b2", 9002)],
                                        deregistration_delay=delay)})
    server = Server(rt)
    return rt, server, DrainManager(server, poll=0.02), Recorder(rt.bus)


async def wait_for(predicate, timeout=5.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.005)


@pytest.mark.asyncio
async def test_a_drain_stops_new_work_and_completes_when_the_last_request_ends():
    rt, server, drains, rec = setup(delay="10s")
    await drains.start()
    b1 = rt.backend("web", "b1")
    x = Exchange(b1, "req-1")
    server.exchanges.append(x)
    view = drains.start("web", "b1")
    assert view["in_flight"] == {"requests": 1, "connections": 0}
    assert view["deregistration_delay"] == "10s" and view["remove"] is False
    assert b1.intent is Intent.DRAINING and not b1.is_eligible(rt.clock())
    assert rt.config.pools["web"].backends[0].state == "draining"  # survives a reload
    [change] = rec.changes(kind="intent")
    assert change.cause == "drain started: deregistration delay 10s"
    assert [e.what for e in rec.of(DrainEvent)] == ["started", "closed_keepalive"]
    assert server.closed_pooled == ["b1"]
    assert drains.state()["drains"][0]["backend"] == "b1"
    await asyncio.sleep(0.05)
    assert drains.state()["drains"]  # still waiting for req-1
    started = rt.clock()
    x.finish()
    rt.bus.publish(RequestEvent(request_id="req-1", listener="l", client="c", method="GET",
                                path="/", pool="web", backend="b1", status=200))
    await wait_for(lambda: not drains.state()["drains"])
    assert rt.clock() - started < 1.0  # woken by the event, long before the 10 s deadline
    completed = rec.of(DrainEvent, what="completed")
    assert len(completed) == 1 and completed[0].detail.startswith("nothing in flight after")
    assert drains.state()["recent"][-1]["outcome"] == "completed"
    assert "b1" in rt.pools["web"].backends  # not a removal: it stays, draining
    assert rt.backend("web", "b1").intent is Intent.DRAINING
    await drains.stop()


@pytest.mark.asyncio
async def test_the_deadline_cuts_what_is_left_and_a_removal_removes():
    rt, server, drains, rec = setup(delay="300ms")
    await drains.start()
    b1 = rt.backend("web", "b1")
    server.exchanges += [Exchange(b1, "slow-1"), Exchange(b1, "slow-2")]
    t0 = rt.clock()
    drains.start("web", "b1", remove=True)
    await wait_for(lambda: "b1" not in rt.pools["web"].backends)
    elapsed = rt.clock() - t0
    assert 0.29 <= elapsed < 3.0
    cuts = rec.of(DrainEvent, what="cut")
    assert sorted(c.request_id for c in cuts) == ["slow-1", "slow-2"]
    assert all(x.cut_reason == "drain deadline" for x in server.exchanges)
    [done] = rec.of(DrainEvent, what="completed")
    assert "deregistration delay 300 ms elapsed with 2 in flight: cut 2" in done.detail
    assert done.detail.endswith("removed from the pool")
    removed = rec.changes(kind="intent", new="removed")
    assert removed and removed[0].cause.startswith("drain completed after")
    assert [b.name for b in rt.config.pools["web"].backends] == ["b2"]
    assert drains.state()["drains"] == []
    await drains.stop()


@pytest.mark.asyncio
async def test_nothing_in_flight_completes_at_once():
    rt, server, drains, rec = setup(delay="30s")
    drains.start("web", "b2", remove=True)
    await wait_for(lambda: "b2" not in rt.pools["web"].backends, timeout=2.0)
    assert [e.what for e in rec.of(DrainEvent)] == [
        "started", "closed_keepalive", "closed_keepalive", "completed"]
    await drains.stop()


@pytest.mark.asyncio
async def test_connections_count_as_in_flight_work():
    rt, server, drains, rec = setup(delay="30s")
    b1 = rt.backend("web", "b1")
    b1.active_connections = 1
    drains.start("web", "b1")
    await asyncio.sleep(0.1)
    assert drains.state()["drains"][0]["in_flight"]["connections"] == 1
    b1.active_connections = 0
    await wait_for(lambda: not drains.state()["drains"], timeout=2.0)
    await drains.stop()


@pytest.mark.asyncio
async def test_activating_again_cancels_the_drain():
    rt, server, drains, rec = setup(delay="30s")
    b1 = rt.backend("web", "b1")
    server.exchanges.append(Exchange(b1, "r"))
    drains.start("web", "b1", remove=True)
    rt.set_backend_state("web", "b1", "active")
    await wait_for(lambda: not drains.state()["drains"], timeout=2.0)
    [cancelled] = rec.of(DrainEvent, what="cancelled")
    assert cancelled.detail == "intent changed to active"
    assert "b1" in rt.pools["web"].backends and b1.is_eligible(rt.clock())
    await drains.stop()


@pytest.mark.asyncio
async def test_starting_twice_is_idempotent_and_unknown_backends_are_refused():
    rt, server, drains, rec = setup(delay="30s")
    b1 = rt.backend("web", "b1")
    server.exchanges.append(Exchange(b1, "r"))
    first = drains.start("web", "b1")
    second = drains.start("web", "b1", remove=True)
    assert second["remove"] is True and first["deregistration_delay"] == "30s"
    assert len(rec.of(DrainEvent, what="started")) == 1
    with pytest.raises(ConfigError, match="no backend 'nope'"):
        drains.start("web", "nope")
    with pytest.raises(ConfigError):
        drains.start("missing", "b1")
    await drains.stop()
    assert drains.state()["drains"] == []


def test_in_flight_is_zero_only_when_requests_and_connections_are():
    rt = make_runtime({"web": pool_data([("b1", 9001)])})
    b = rt.backend("web", "b1")
    b.outstanding, b.active_connections = 2, 2  # L7: each request holds its upstream connection
    assert in_flight(b) == 2
    b.outstanding, b.active_connections = 0, 3  # L4: connections only
    assert in_flight(b) == 3
    b.outstanding, b.active_connections = 1, 0
    assert in_flight(b) == 1
    b.outstanding, b.active_connections = 0, 0
    assert in_flight(b) == 0


# ---------------------------------------------------------------- with the real proxy

async def http_get(port: int, path: str, request_id: str | None = None) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    rid = f"X-Request-Id: {request_id}\r\n" if request_id else ""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: lab\r\n{rid}Connection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.fixture
def two_backends():
    from labs.backend.testing import start_backends

    handles = start_backends(["d1", "d2"])
    yield handles
    for h in handles:
        h.stop()


async def proxy_for(backends, delay: str):
    from labs.backend.testing import free_port
    from proxy.config import parse_config
    from proxy.server import ProxyServer

    listen = free_port()
    config = parse_config({
        "admin": {"listen": f"127.0.0.1:{free_port()}"},
        "listeners": {"main": {"bind": f"127.0.0.1:{listen}", "routes": ["all"]}},
        "routes": {"all": {"forward": "web"}},
        "pools": {"web": {"backends": [{"name": h.name, "address": f"127.0.0.1:{h.port}"}
                                       for h in backends],
                          "deregistration_delay": delay}}})
    server = ProxyServer(config)
    await server.start()
    return server, listen


@pytest.mark.asyncio
async def test_real_proxy_drain_lets_the_slow_request_finish_and_sends_new_work_elsewhere(
        two_backends):
    server, port = await proxy_for(two_backends, delay="10s")
    rec = Recorder(server.bus)
    try:
        slow = asyncio.create_task(http_get(port, "/work?ms=700", request_id="slow-req"))
        await wait_for(lambda: server.runtime.backend("web", "d1").outstanding
                       + server.runtime.backend("web", "d2").outstanding == 1)
        busy = next(h.name for h in two_backends
                    if server.runtime.backend("web", h.name).outstanding)
        other = ({"d1", "d2"} - {busy}).pop()
        t0 = server.runtime.clock()
        view = server.drains.start("web", busy, remove=True)
        assert view["in_flight"]["requests"] == 1
        for _ in range(4):  # new work goes to the other backend only
            status, body = await http_get(port, "/")
            assert status == 200 and f'"backend": "{other}"'.encode() in body
        status, _ = await slow
        assert status == 200  # not cut: it finished within the deregistration delay
        await wait_for(lambda: busy not in server.runtime.pools["web"].backends)
        assert server.runtime.clock() - t0 < 5.0  # completed when the request ended
        assert rec.of(DrainEvent, what="cut") == []
        [done] = rec.of(DrainEvent, what="completed")
        assert done.detail.startswith("nothing in flight after")
    finally:
        await server.stop(grace=0)


@pytest.mark.asyncio
async def test_real_proxy_drain_deadline_cuts_the_request_with_its_id(two_backends):
    server, port = await proxy_for(two_backends[:1], delay="300ms")
    rec = Recorder(server.bus)
    try:
        slow = asyncio.create_task(http_get(port, "/work?ms=5000", request_id="cut-me"))
        await wait_for(lambda: server.runtime.backend("web", "d1").outstanding == 1)
        server.drains.start("web", "d1")
        status, _ = await slow
        assert status == 502  # the proxy cut it at the deadline
        [cut] = rec.of(DrainEvent, what="cut")
        assert cut.request_id == "cut-me" and cut.backend == "d1"
        await wait_for(lambda: rec.of(DrainEvent, what="completed"))
        assert "d1" in server.runtime.pools["web"].backends  # a drain, not a removal
        status, _ = await http_get(port, "/")
        assert status == 503  # the only backend is draining
    finally:
        await server.stop(grace=0)
