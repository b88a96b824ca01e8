"""Outlier detection (passive health) with a fake clock and a real Runtime/EventBus."""
import itertools

import pytest

from proxy.events import PoolEvent, RequestEvent
from proxy.health.manager import HealthManager
from proxy.health.passive import ERROR_5XX, GATEWAY, SUCCESS, OutlierDetector, classify

from tests.proxy.health.helpers import FakeClock, Recorder, fake_server, make_runtime, pool_data

_ids = itertools.count(1)


def req(backend, status, pool="web", **kw) -> RequestEvent:
    return RequestEvent(request_id=f"r{next(_ids)}", listener="main", client="127.0.0.1:5",
                        method="GET", path="/", pool=pool, backend=backend, status=status, **kw)


def setup(outlier: dict, n=4):
    clock = FakeClock()
    rt = make_runtime({"web": pool_data([(f"b{i}", 9000 + i) for i in range(1, n + 1)],
                                        outlier=outlier)}, clock=clock)
    pool = rt.pools["web"]
    det = OutlierDetector(pool, pool.config.outlier, rt.bus, clock)
    return clock, rt, pool, det, Recorder(rt.bus)


# ---------------------------------------------------------------- classification

def test_classify_outcomes():
    assert classify(req("b1", 200)) == [("b1", SUCCESS)]
    assert classify(req("b1", 404)) == [("b1", SUCCESS)]
    assert classify(req("b1", 500)) == [("b1", ERROR_5XX)]
    assert classify(req("b1", 503)) == [("b1", ERROR_5XX)]  # the backend's own 503
    assert classify(req("b1", 502, proxy_error=True, termination="SC")) == [("b1", GATEWAY)]
    assert classify(req("b1", 504, proxy_error=True, termination="PH")) == [("b1", GATEWAY)]
    assert classify(req("b1", 502, proxy_error=True, termination="SD")) == [("b1", GATEWAY)]
    assert classify(req("b1", 502, proxy_error=True, termination="SH")) == [("b1", GATEWAY)]
    # the backend closed mid-body after a 200 head: still its failure
    assert classify(req("b1", 200, termination="SD")) == [("b1", GATEWAY)]
    # neither: the proxy's own refusals and bugs, a drain cut, a client leaving
    assert classify(req("b1", 503, proxy_error=True, termination="PQ")) == []
    assert classify(req("b1", 500, proxy_error=True, termination="P-")) == []
    assert classify(req("b1", 502, proxy_error=True, termination="PD")) == []
    assert classify(req("b1", 502, termination="CD")) == []
    assert classify(req(None, 503, proxy_error=True, termination="PQ")) == []


def test_failed_attempts_that_were_retried_elsewhere_count_against_their_backend():
    event = req("b2", 200, retries=[{"backend": "b1", "error": "connection refused"}])
    assert classify(event) == [("b1", GATEWAY), ("b2", SUCCESS)]


# ---------------------------------------------------------------- detectors

def test_consecutive_5xx_ejects_with_cause_and_the_backend_is_not_eligible():
    clock, rt, pool, det, rec = setup({"consecutive_5xx": 5, "base_ejection": "30s"})
    b1 = pool.backends["b1"]
    for _ in range(4):
        det.on_event(req("b1", 500))
    det.on_event(req("b1", 200))  # a success resets the run
    for _ in range(4):
        det.on_event(req("b1", 500))
    assert rec.changes(kind="ejection") == []
    det.on_event(req("b1", 500))
    [change] = rec.changes(kind="ejection")
    assert (change.old, change.new) == ("included", "ejected")
    assert change.cause == "5 consecutive 5xx: ejected for 30s (ejection 1)"
    assert b1.ejected_until == clock.now + 30
    assert not b1.is_eligible(clock.now)
    assert b1 not in pool.eligible(clock.now)


def test_consecutive_gateway_failures_count_only_proxy_made_failures():
    clock, rt, pool, det, rec = setup({"consecutive_5xx": None, "consecutive_gateway_failure": 3})
    refused = dict(proxy_error=True, termination="PC")
    det.on_event(req("b1", 502, **refused))
    det.on_event(req("b1", 502, **refused))
    det.on_event(req("b1", 500))  # the backend answered: breaks the gateway run
    det.on_event(req("b1", 502, **refused))
    det.on_event(req("b1", 502, **refused))
    assert rec.changes(kind="ejection") == []
    det.on_event(req("b1", 504, proxy_error=True, termination="PH"))
    [change] = rec.changes(kind="ejection")
    assert change.cause.startswith("3 consecutive gateway failures")


def test_failure_percentage_needs_the_minimum_and_uses_the_window():
    clock, rt, pool, det, rec = setup({"consecutive_5xx": None, "failure_percentage": 40,
                                       "failure_window": "10s", "failure_min_requests": 10})
    # 9 requests, 5 failed: above 40% but under the minimum
    for status in [500, 200, 500, 200, 500, 200, 500, 200, 500]:
        clock.advance(0.5)
        det.on_event(req("b2", status))
    assert rec.changes(kind="ejection") == []
    # the window slides: wait until the first requests fall out, then 10 with 4 failures
    clock.advance(20)
    for status in [200, 500, 200, 500, 200, 200, 500, 200, 200]:
        clock.advance(0.1)
        det.on_event(req("b2", status))
    assert rec.changes(kind="ejection") == []  # 9 in window again
    clock.advance(0.1)
    det.on_event(req("b2", 500))  # 10 in window, 4 failed = 40%
    [change] = rec.changes(kind="ejection")
    assert change.cause.startswith("40% failures over 10s (min 10 requests): ejected for 30s")


def test_ejection_time_grows_with_each_ejection_and_is_capped():
    clock, rt, pool, det, rec = setup({"consecutive_5xx": 1, "base_ejection": "30s",
                                       "max_ejection": "75s"})
    b1 = pool.backends["b1"]
    durations = []
    for _ in range(4):
        det.on_event(req("b1", 500))
        durations.append(b1.ejected_until - clock.now)
        clock.advance(durations[-1])
        det.expire(clock.now)  # back, then fails again at once
    assert durations == [30, 60, 75, 75]
    causes = [c.cause for c in rec.changes(kind="ejection", new="ejected")]
    assert causes[1] == "1 consecutive 5xx: ejected for 60s (ejection 2)"
    assert causes[3].endswith("(ejection 4)")


def test_the_ejection_count_decays_with_clean_time():
    clock, rt, pool, det, rec = setup({"consecutive_5xx": 1, "base_ejection": "10s",
                                       "max_ejection": "300s"})
    b1 = pool.backends["b1"]
    for _ in range(3):
        det.on_event(req("b1", 500))
        clock.advance(b1.ejected_until - clock.now)
        det.expire(clock.now)
    assert det.stats["b1"].ejections == 3
    clock.advance(25)  # two base_ejection periods clean: 3 -> 1, so the next is #2
    det.on_event(req("b1", 500))
    assert b1.ejected_until - clock.now == 20


def test_return_is_reported_when_the_time_has_elapsed():
    clock, rt, pool, det, rec = setup({"consecutive_5xx": 2, "base_ejection": "30s"})
    b1 = pool.backends["b1"]
    det.on_event(req("b1", 500))
    det.on_event(req("b1", 500))
    clock.advance(29.9)
    assert det.expire(clock.now) == [] and not b1.is_eligible(clock.now)
    clock.advance(0.1)
    assert b1.is_eligible(clock.now)
    det.on_event(req("b2", 200))  # any event of the pool reports due returns
    back = rec.changes(kind="ejection", new="included")
    assert [(c.backend, c.cause) for c in back] == [("b1", "ejection time 30s elapsed")]


def test_outcomes_while_ejected_are_ignored():
    clock, rt, pool, det, rec = setup({"consecutive_5xx": 2})
    for _ in range(6):
        det.on_event(req("b1", 500))
    assert len(rec.changes(kind="ejection")) == 1


def test_max_ejection_percent_caps_the_share_ejected_and_says_so_once():
    clock, rt, pool, det, rec = setup({"consecutive_5xx": 1, "max_ejection_percent": 50}, n=4)
    for name in ("b1", "b2", "b3"):
        det.on_event(req(name, 500))
    for _ in range(3):
        det.on_event(req("b3", 500))
    ejected = [c.backend for c in rec.changes(kind="ejection", new="ejected")]
    assert ejected == ["b1", "b2"]  # 2/4 = 50%; a third would be 75%
    [capped] = rec.of(PoolEvent, what="ejection_capped")
    assert "b3 not ejected (1 consecutive 5xx)" in capped.detail
    assert "2/4 already ejected" in capped.detail and "50%" in capped.detail
    assert pool.backends["b3"].is_eligible(clock.now)


def test_max_ejection_percent_zero_never_ejects():
    clock, rt, pool, det, rec = setup({"consecutive_5xx": 1, "max_ejection_percent": 0})
    det.on_event(req("b1", 500))
    assert rec.changes(kind="ejection") == []


def test_events_of_other_pools_are_ignored():
    clock, rt, pool, det, rec = setup({"consecutive_5xx": 1})
    det.on_event(req("b1", 500, pool="other"))
    assert rec.changes(kind="ejection") == []


# ---------------------------------------------------------------- through the manager

def test_manager_feeds_the_detector_from_the_bus_and_reports_state():
    clock = FakeClock()
    rt = make_runtime({"web": pool_data([("b1", 9001), ("b2", 9002)],
                                        outlier={"consecutive_5xx": 3})}, clock=clock)
    manager = HealthManager(fake_server(rt))
    rt.bus.add_sink(manager._sink)  # what start() does, without a loop
    rec = Recorder(rt.bus)
    for _ in range(3):
        rt.bus.publish(req("b1", 503))
    assert [c.backend for c in rec.changes(kind="ejection")] == ["b1"]
    view = manager.state()["pools"]["web"]["backends"]["b1"]["outlier"]
    assert view["ejected"] is True and view["ejections"] == 1 and view["ejected_for_s"] == 30


def test_removing_outlier_detection_returns_ejected_backends():
    clock = FakeClock()
    rt = make_runtime({"web": pool_data([("b1", 9001), ("b2", 9002)],
                                        outlier={"consecutive_5xx": 1})}, clock=clock)
    manager = HealthManager(fake_server(rt))
    rt.bus.add_sink(manager._sink)
    rec = Recorder(rt.bus)
    rt.bus.publish(req("b1", 500))
    assert not rt.pools["web"].backends["b1"].is_eligible(clock.now)
    rt.set_pool_settings("web", {"outlier": None})
    assert rt.pools["web"].backends["b1"].is_eligible(clock.now)
    back = rec.changes(kind="ejection", new="included")
    assert back[0].cause == "outlier detection removed from pool web"


def test_stats_survive_a_reload_that_keeps_the_backend():
    clock = FakeClock()
    rt = make_runtime({"web": pool_data([("b1", 9001), ("b2", 9002)],
                                        outlier={"consecutive_5xx": 3})}, clock=clock)
    manager = HealthManager(fake_server(rt))
    rt.bus.add_sink(manager._sink)
    rec = Recorder(rt.bus)
    rt.bus.publish(req("b1", 500))
    rt.bus.publish(req("b1", 500))
    rt.set_weight("web", "b2", 3)  # a reload
    rt.bus.publish(req("b1", 500))
    assert [c.backend for c in rec.changes(kind="ejection")] == ["b1"]


@pytest.mark.asyncio
async def test_a_started_manager_reads_requests_while_some_pool_detects_outliers():
    """Without outlier detection no request event passes through passive health;
    once a pool gets it at run time, 5xx responses eject again."""
    clock = FakeClock()
    rt = make_runtime({"web": pool_data([("b1", 9001), ("b2", 9002)])}, clock=clock)
    manager = HealthManager(fake_server(rt))
    await manager.start()
    try:
        assert manager._sink not in rt.bus._sinks
        rt.set_pool_settings("web", {"outlier": {"consecutive_5xx": 1}})
        assert manager._sink in rt.bus._sinks
        rt.bus.publish(req("b1", 500))
        assert not rt.pools["web"].backends["b1"].is_eligible(clock.now)
        rt.set_pool_settings("web", {"outlier": None})
        assert manager._sink not in rt.bus._sinks
    finally:
        await manager.stop()
    assert manager._sink not in rt.bus._sinks
