"""HealthManager bookkeeping across config changes, slow start and panic (no sockets)."""
import asyncio

import pytest

from proxy.balancers.base import PickContext
from proxy.events import PoolEvent
from proxy.health.active import ProbeResult
from proxy.health.manager import HealthManager
from proxy.health.table import Counters
from proxy.model import BackendState, Health, Intent

from tests.proxy.health.helpers import FakeClock, Recorder, fake_server, make_runtime, pool_data

HC = {"interval": "100ms", "healthy_threshold": 2, "unhealthy_threshold": 3, "grace": "1s"}


def test_initial_backends_of_a_checked_pool_are_not_eligible_until_they_pass():
    clock = FakeClock()
    rt = make_runtime({"web": pool_data([("b1", 9001)], health=HC),
                       "plain": pool_data([("p1", 9101)])}, clock=clock)
    HealthManager(fake_server(rt))
    b1, p1 = rt.pools["web"].backends["b1"], rt.pools["plain"].backends["p1"]
    assert b1.requires_check and not b1.is_eligible(clock.now)
    assert not p1.requires_check and p1.is_eligible(clock.now)  # nothing will ever check it
    assert b1.snapshot(clock.now)["eligible"] is False
    rt.pools["web"].set_health(b1, Health.HEALTHY, "2 consecutive passes")
    assert b1.is_eligible(clock.now)


def test_new_backends_get_grace_unchanged_ones_keep_checker_and_counters():
    clock = FakeClock()
    rt = make_runtime({"web": pool_data([("b1", 9001)], health=HC)}, clock=clock)
    manager = HealthManager(fake_server(rt))
    first = manager.checkers[("web", "b1")]
    assert first.new is True
    first.counters = Counters(passes=1)
    rt.add_backend("web", {"name": "b2", "address": "127.0.0.1:9002"})
    assert manager.checkers[("web", "b1")] is first  # untouched
    b2 = manager.checkers[("web", "b2")]
    assert b2.new is True and rt.pools["web"].backends["b2"].requires_check
    # health settings change: restarted, counters kept, no grace again
    rt.set_pool_settings("web", {"health": {**HC, "interval": "200ms"}})
    again = manager.checkers[("web", "b1")]
    assert again is not first and again.new is False and again.counters == Counters(passes=1)
    assert again.config.interval == 0.2
    # address change: a new backend as far as health goes
    rt.remove_backend("web", "b2")
    assert ("web", "b2") not in manager.checkers
    rt.add_backend("web", {"name": "b2", "address": "127.0.0.1:9012"})
    assert manager.checkers[("web", "b2")].new is True


def test_removing_health_checks_returns_backends_to_initial_and_eligible():
    clock = FakeClock()
    rt = make_runtime({"web": pool_data([("b1", 9001), ("b2", 9002)], health=HC)}, clock=clock)
    manager = HealthManager(fake_server(rt))
    rec = Recorder(rt.bus)
    pool = rt.pools["web"]
    pool.set_health(pool.backends["b1"], Health.UNHEALTHY, "3 consecutive failures: refused")
    rt.set_pool_settings("web", {"health": None})
    b1 = rt.pools["web"].backends["b1"]
    assert manager.checkers == {}
    assert b1.health is Health.INITIAL and not b1.requires_check and b1.is_eligible(clock.now)
    last = rec.changes(kind="health")[-1]
    assert (last.old, last.new, last.cause) == ("unhealthy", "initial",
                                                "health checks removed from pool web")


def test_state_lists_every_backend_with_counters_and_next_probe():
    clock = FakeClock()
    rt = make_runtime({"web": pool_data([("b1", 9001)], health=HC),
                       "plain": pool_data([("p1", 9101)])}, clock=clock)
    manager = HealthManager(fake_server(rt))
    state = manager.state()
    b1 = state["pools"]["web"]["backends"]["b1"]
    assert b1["consecutive_passes"] == 0 and b1["consecutive_fails"] == 0
    assert b1["last_probe"] is None and b1["type"] == "http"
    assert state["pools"]["web"]["health_check"]["interval"] == "100ms"
    assert state["pools"]["plain"]["backends"]["p1"] == {"type": None}


@pytest.mark.asyncio
async def test_checkers_run_only_between_start_and_stop():
    rt = make_runtime({"web": pool_data([("b1", 9001)],
                                        health={"interval": "20ms", "grace": "0s"})})
    calls = []

    async def fake_probe(host, port, config, clock):
        calls.append((host, port))
        return ProbeResult(True, "200 in 0 ms", 0.0)

    manager = HealthManager(fake_server(rt), probers={"http": fake_probe})
    await asyncio.sleep(0.05)
    assert calls == []
    await manager.start()
    for _ in range(100):
        if rt.pools["web"].backends["b1"].health is Health.HEALTHY:
            break
        await asyncio.sleep(0.01)
    assert rt.pools["web"].backends["b1"].health is Health.HEALTHY
    assert calls[0] == ("127.0.0.1", 9001)
    await manager.stop()
    n = len(calls)
    await asyncio.sleep(0.06)
    assert len(calls) == n
    assert manager._on_apply not in rt.on_apply


# ---------------------------------------------------------------- slow start

def test_slow_start_ramp_numbers():
    b = BackendState("b1", "127.0.0.1", 1, "web", weight=10, slow_start=30.0)
    assert b.effective_weight(0.0) == 10.0  # never became healthy: no ramp known
    b.healthy_since = 100.0
    assert b.effective_weight(100.0) == pytest.approx(0.1)  # floor: 1% of the weight
    assert b.effective_weight(101.5) == pytest.approx(0.5)
    assert b.effective_weight(107.5) == pytest.approx(2.5)
    assert b.effective_weight(115.0) == pytest.approx(5.0)
    assert b.effective_weight(129.0) == pytest.approx(9.6667, rel=1e-3)
    assert b.effective_weight(130.0) == 10.0
    assert b.effective_weight(500.0) == 10.0
    b.slow_start = 0.0
    assert b.effective_weight(100.0) == 10.0


def test_becoming_healthy_starts_the_ramp_and_a_later_recovery_restarts_it():
    clock = FakeClock(50.0)
    rt = make_runtime({"web": pool_data([{"name": "b1", "address": "127.0.0.1:9001",
                                          "weight": 4}], health=HC, slow_start="20s")},
                      clock=clock)
    HealthManager(fake_server(rt))
    pool = rt.pools["web"]
    b1 = pool.backends["b1"]
    pool.set_health(b1, Health.HEALTHY, "2 consecutive passes")
    clock.advance(5)
    assert b1.snapshot(clock.now)["effective_weight"] == 1.0  # 4 * 5/20
    pool.set_health(b1, Health.UNHEALTHY, "3 consecutive failures: refused")
    clock.advance(100)
    pool.set_health(b1, Health.HEALTHY, "2 consecutive passes")
    clock.advance(10)
    assert b1.effective_weight(clock.now) == pytest.approx(2.0)


def test_a_backend_added_to_an_unchecked_pool_ramps_from_when_it_joins():
    clock = FakeClock(10.0)
    rt = make_runtime({"web": pool_data([("b1", 9001)], slow_start="10s")}, clock=clock)
    HealthManager(fake_server(rt))
    b1 = rt.pools["web"].backends["b1"]
    assert b1.healthy_since is None and b1.effective_weight(clock.now) == 1.0  # at startup
    clock.advance(3)
    rt.add_backend("web", {"name": "b2", "address": "127.0.0.1:9002", "weight": 10})
    b2 = rt.pools["web"].backends["b2"]
    assert b2.healthy_since == 13.0
    clock.advance(4)
    assert b2.effective_weight(clock.now) == pytest.approx(4.0)
    assert b1.effective_weight(clock.now) == 1.0  # untouched by the reload


# ---------------------------------------------------------------- panic (fail open)

def four_backends(clock, **settings):
    rt = make_runtime({"web": pool_data([(f"b{i}", 9000 + i) for i in range(1, 5)],
                                        **settings)}, clock=clock)
    return rt, rt.pools["web"]


def test_default_is_503_when_no_backend_is_eligible():
    clock = FakeClock()
    rt, pool = four_backends(clock)
    rec = Recorder(rt.bus)
    for b in pool.backends.values():
        pool.set_health(b, Health.UNHEALTHY, "3 consecutive failures: refused")
    choice = pool.choose(PickContext("127.0.0.1", now=clock.now))
    assert choice.backend is None and not choice.panic
    assert "no eligible backend in pool web" in choice.reason
    assert "b1 unhealthy" in choice.reason
    [event] = rec.of(PoolEvent, what="no_eligible")
    assert event.eligible == 0 and event.total == 4
    assert rec.of(PoolEvent, what="panic_on") == []


def test_panic_threshold_spreads_over_all_when_three_of_four_are_down():
    clock = FakeClock()
    rt, pool = four_backends(clock, panic_threshold=0.5)
    rec = Recorder(rt.bus)
    backends = list(pool.backends.values())
    ctx = PickContext("127.0.0.1", now=clock.now)
    pool.set_health(backends[0], Health.UNHEALTHY, "down")
    pool.set_health(backends[1], Health.UNHEALTHY, "down")
    # 2/4 eligible = 50%: not below the threshold, no panic
    picks = {pool.choose(ctx).backend.name for _ in range(8)}
    assert picks == {"b3", "b4"} and rec.of(PoolEvent, what="panic_on") == []
    pool.set_health(backends[2], Health.UNHEALTHY, "down")
    choices = [pool.choose(ctx) for _ in range(8)]
    assert all(c.panic for c in choices)
    assert {c.backend.name for c in choices} == {"b1", "b2", "b3", "b4"}
    [on] = rec.of(PoolEvent, what="panic_on")
    assert (on.eligible, on.total) == (1, 4)
    assert "1/4 eligible is below 50%" in on.detail
    pool.set_health(backends[2], Health.HEALTHY, "2 consecutive passes")
    choice = pool.choose(ctx)
    assert not choice.panic and choice.backend.name in {"b3", "b4"}
    [off] = rec.of(PoolEvent, what="panic_off")
    assert (off.eligible, off.total) == (2, 4)
    assert len(rec.of(PoolEvent, what="panic_on")) == 1  # one event per edge, not per request


def test_panic_ignores_backends_the_operator_took_out():
    clock = FakeClock()
    rt, pool = four_backends(clock, panic_threshold=0.5)
    backends = list(pool.backends.values())
    ctx = PickContext("127.0.0.1", now=clock.now)
    for b in backends[:3]:
        pool.set_health(b, Health.UNHEALTHY, "down")
    pool.set_intent(backends[0], Intent.MAINTENANCE, "admin maintenance")
    choices = [pool.choose(ctx) for _ in range(9)]
    assert all(c.panic for c in choices)
    assert {c.backend.name for c in choices} == {"b2", "b3", "b4"}  # never the one in maintenance


def test_panic_counts_not_yet_checked_backends_as_not_eligible():
    clock = FakeClock()
    rt, pool = four_backends(clock, panic_threshold=0.5, health=HC)
    HealthManager(fake_server(rt))
    choice = pool.choose(PickContext("127.0.0.1", now=clock.now))
    assert choice.panic and choice.backend is not None  # fail open at startup


def test_switching_checks_on_keeps_serving_backends_eligible_but_gates_new_ones():
    clock = FakeClock()
    rt = make_runtime({"web": pool_data([("b1", 9001)])}, clock=clock)
    manager = HealthManager(fake_server(rt))
    rt.set_pool_settings("web", {"health": HC})
    b1 = rt.pools["web"].backends["b1"]
    assert ("web", "b1") in manager.checkers
    assert not b1.requires_check and b1.is_eligible(clock.now)  # no outage from a setting
    rt.add_backend("web", {"name": "b2", "address": "127.0.0.1:9002"})
    b2 = rt.pools["web"].backends["b2"]
    assert b2.requires_check and not b2.is_eligible(clock.now)
    # b1's first verdict decides for it
    rt.pools["web"].set_health(b1, Health.UNHEALTHY, "3 consecutive failures: refused")
    assert not b1.is_eligible(clock.now)
