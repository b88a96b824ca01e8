"""Active checks against real toy backend processes, inside the test's event loop.

No proxy process: a real Runtime and EventBus, the HealthManager's checkers,
and `python -m labs.backend` children on free 127.0.0.1 ports. Timing
assertions are deliberately loose (a loaded 2-core machine); the measured
figures are printed (run with -s) and measured properly by bench_lifecycle.py.
"""
from __future__ import annotations

import asyncio

import pytest

from labs.backend.testing import free_port, start_backend
from proxy.events import HealthProbe, StateChange
from proxy.health.manager import HealthManager
from proxy.model import Health

from tests.proxy.health.helpers import Recorder, fake_server, make_runtime

FAST = {"interval": "200ms", "timeout": "150ms", "healthy_threshold": 2,
        "unhealthy_threshold": 3}


async def wait_until(predicate, timeout: float = 10.0, what: str = "condition"):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


def first_change(rec: Recorder, backend: str, new: str, after: int = 0) -> StateChange | None:
    for e in rec.events[after:]:
        if isinstance(e, StateChange) and e.kind == "health" and e.backend == backend \
                and e.new == new:
            return e
    return None


class Timeline:
    """Records when (on the runtime clock) each StateChange arrives."""

    def __init__(self, bus, clock):
        self.at: list[tuple[float, StateChange]] = []
        bus.add_sink(lambda e: self.at.append((clock(), e)) if isinstance(e, StateChange) else None)

    def when(self, backend: str, new: str) -> float | None:
        for t, e in self.at:
            if e.backend == backend and e.new == new and e.kind == "health":
                return t
        return None


@pytest.fixture
def backend():
    handle = start_backend("hb1")
    yield handle
    handle.stop()


def pool(name, port, **health):
    return {"backends": [{"name": name, "address": f"127.0.0.1:{port}"}],
            "health": {**FAST, **health}}


@pytest.mark.asyncio
async def test_a_killed_backend_is_marked_down_in_about_three_intervals_and_recovers():
    port = free_port()
    handle = await asyncio.to_thread(start_backend, "hk1", port)
    try:
        rt = make_runtime({"web": pool("k1", port, timeout="150ms")})
        rec = Recorder(rt.bus)
        timeline = Timeline(rt.bus, rt.clock)
        manager = HealthManager(fake_server(rt))
        await manager.start()
        b = rt.backend("web", "k1")
        await wait_until(lambda: b.health is Health.HEALTHY, what="k1 healthy")
        assert b.is_eligible(rt.clock())

        killed_at = rt.clock()
        await asyncio.to_thread(handle.crash)  # POST /_control/crash, wait for the exit
        await wait_until(lambda: b.health is Health.UNHEALTHY, what="k1 unhealthy")
        detected = timeline.when("k1", "unhealthy") - killed_at
        print(f"\ndeath -> unhealthy: {detected * 1000:.0f} ms "
              "(interval 200 ms, unhealthy_threshold 3)")
        # 3 failing probes are 2 intervals apart at least; the first comes within
        # one interval of the death: 400..600 ms, plus slack for a loaded machine.
        assert 0.3 <= detected <= 0.6 + 0.2 + 1.0
        change = first_change(rec, "k1", "unhealthy")
        assert change.old == "healthy"
        assert change.cause.startswith("3 consecutive failures: ")
        assert any(word in change.cause for word in ("refused", "closed", "reset", "timeout"))
        assert not b.is_eligible(rt.clock())
        fails = [p for p in rec.probes(backend="k1") if not p.ok]
        assert len(fails) >= 3  # every failing probe is published

        mark = len(rec.events)
        restarted_at = rt.clock()
        handle = await asyncio.to_thread(start_backend, "hk1", port)  # same port
        await wait_until(lambda: b.health is Health.HEALTHY, what="k1 healthy again")
        back = first_change(rec, "k1", "healthy", after=mark)
        assert (back.old, back.cause) == ("unhealthy", "2 consecutive passes")
        print(f"restart -> healthy: {(rt.clock() - restarted_at) * 1000:.0f} ms "
              "(including the process start)")
        state = manager.state()["pools"]["web"]["backends"]["k1"]
        assert state["health"] == "healthy" and state["consecutive_passes"] >= 2
        assert state["last_probe"]["ok"] is True
        await manager.stop()
    finally:
        await asyncio.to_thread(handle.stop)


@pytest.mark.asyncio
async def test_http_check_status_and_body(backend):
    p = backend.port
    rt = make_runtime({
        "ok": pool("ok1", p, path="/health", expect_status=[200], body_contains='"ready"'),
        "status": pool("st1", p, expect_status=[204, 299]),
        "body": pool("bd1", p, body_contains="no such text"),
    })
    rec = Recorder(rt.bus)
    manager = HealthManager(fake_server(rt))
    await manager.start()
    try:
        ok1, st1, bd1 = (rt.backend(*k) for k in [("ok", "ok1"), ("status", "st1"),
                                                   ("body", "bd1")])
        await wait_until(lambda: ok1.health is Health.HEALTHY
                         and st1.health is Health.UNHEALTHY
                         and bd1.health is Health.UNHEALTHY, what="three verdicts")
        assert st1.health_reason.startswith("3 consecutive failures: status 200 (expected 204, 299)")
        assert bd1.health_reason == ("3 consecutive failures: status 200 but body lacks "
                                     "'no such text'")
        # the readiness endpoint failing on purpose takes the good one down, with its status
        await backend.acontrol({"health_fail": True})
        await wait_until(lambda: ok1.health is Health.UNHEALTHY, what="ok1 down on health_fail")
        assert "status 503 (expected 200)" in ok1.health_reason
        await backend.acontrol({"health_fail": False})
        await wait_until(lambda: ok1.health is Health.HEALTHY, what="ok1 back")
    finally:
        await manager.stop()


@pytest.mark.asyncio
async def test_tcp_check(backend):
    closed = free_port()  # nothing listens there
    rt = make_runtime({"tcp": {"backends": [
        {"name": "t1", "address": f"127.0.0.1:{backend.port}"},
        {"name": "t2", "address": f"127.0.0.1:{closed}"}],
        "health": {**FAST, "type": "tcp"}}})
    rec = Recorder(rt.bus)
    manager = HealthManager(fake_server(rt))
    await asyncio.to_thread(backend.reset_stats)
    await manager.start()
    try:
        t1, t2 = rt.backend("tcp", "t1"), rt.backend("tcp", "t2")
        await wait_until(lambda: t1.health is Health.HEALTHY and t2.health is Health.UNHEALTHY,
                         what="tcp verdicts")
        assert t2.health_reason == "3 consecutive failures: connection refused"
        assert rec.probes(backend="t1")[0].detail.startswith("connected in ")
        # a TCP check only connects: the backend saw connections but no health request
        stats = await backend.astats()
        assert stats["requests_by_kind"]["health"] == 0
        assert stats["connections_total"] >= 2
    finally:
        await manager.stop()


@pytest.mark.asyncio
async def test_a_deep_check_slower_than_its_timeout_fails_while_liveness_stays_up(backend):
    p = backend.port
    rt = make_runtime({
        "deep": pool("deep1", p, path="/health/ready", timeout="150ms"),
        "live": pool("live1", p, path="/health/live", timeout="150ms"),
    })
    rec = Recorder(rt.bus)
    manager = HealthManager(fake_server(rt))
    await manager.start()
    try:
        deep, live = rt.backend("deep", "deep1"), rt.backend("live", "live1")
        await wait_until(lambda: deep.health is Health.HEALTHY and live.health is Health.HEALTHY,
                         what="both healthy")
        mark = len(rec.events)
        await backend.acontrol({"health_latency_ms": 400})  # > the 150 ms timeout
        await wait_until(lambda: deep.health is Health.UNHEALTHY, what="deep check down")
        assert deep.health_reason == "3 consecutive failures: timeout after 150 ms"
        await asyncio.sleep(0.5)  # a few more rounds of liveness checks
        assert live.health is Health.HEALTHY
        assert [p for p in rec.events[mark:]
                if isinstance(p, HealthProbe) and p.backend == "live1" and not p.ok] == []
        assert first_change(rec, "live1", "unhealthy") is None
    finally:
        await manager.stop()


@pytest.mark.asyncio
async def test_warm_up_with_a_short_grace_fails_first_then_joins(backend):
    """Short grace: probed while warming up, marked unhealthy, joins once warm-up ends."""
    rt = make_runtime({"web": {"backends": [], "health": {**FAST, "grace": "0s"}}})
    rec = Recorder(rt.bus)
    timeline = Timeline(rt.bus, rt.clock)
    manager = HealthManager(fake_server(rt))
    await manager.start()
    try:
        await backend.acontrol({"warmup_s": 1.5})
        added = rt.clock()
        rt.add_backend("web", {"name": "w1", "address": f"127.0.0.1:{backend.port}"})
        w1 = rt.backend("web", "w1")
        assert not w1.is_eligible(rt.clock())  # initial, not proven yet
        await wait_until(lambda: w1.health is Health.UNHEALTHY, what="w1 unhealthy in warm-up")
        assert w1.health_reason.startswith("3 consecutive failures: status 503 (expected 200)")
        await wait_until(lambda: w1.health is Health.HEALTHY, what="w1 joins after warm-up")
        joined = timeline.when("w1", "healthy") - added
        print(f"\nwarm-up 1.5 s, grace 0: unhealthy after "
              f"{(timeline.when('w1', 'unhealthy') - added) * 1000:.0f} ms, "
              f"joined after {joined * 1000:.0f} ms")
        assert joined >= 1.4
        assert [(c.old, c.new) for c in rec.changes(backend="w1", kind="health")] == [
            ("initial", "unhealthy"), ("unhealthy", "healthy")]
    finally:
        await manager.stop()


@pytest.mark.asyncio
async def test_warm_up_shorter_than_the_grace_joins_on_its_first_checks(backend):
    rt = make_runtime({"web": {"backends": [], "health": {**FAST, "grace": "2s"}}})
    rec = Recorder(rt.bus)
    timeline = Timeline(rt.bus, rt.clock)
    manager = HealthManager(fake_server(rt))
    await manager.start()
    try:
        await backend.acontrol({"warmup_s": 1.0})
        added = rt.clock()
        rt.add_backend("web", {"name": "w2", "address": f"127.0.0.1:{backend.port}"})
        w2 = rt.backend("web", "w2")
        state = manager.state()["pools"]["web"]["backends"]["w2"]
        assert state["next_probe_in_s"] is not None and state["next_probe_in_s"] > 1.5
        await wait_until(lambda: w2.health is Health.HEALTHY, what="w2 healthy")
        joined = timeline.when("w2", "healthy") - added
        print(f"\nwarm-up 1 s, grace 2 s: joined after {joined * 1000:.0f} ms")
        assert joined >= 2.0  # nothing before the grace ended
        probes = rec.probes(backend="w2")
        assert all(p.ok for p in probes) and len(probes) == 2  # exactly healthy_threshold
        assert [(c.old, c.new) for c in rec.changes(backend="w2", kind="health")] == [
            ("initial", "healthy")]
    finally:
        await manager.stop()
