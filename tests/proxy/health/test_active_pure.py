"""Active checks without sockets: schedule, jitter, coalescing, counting into the runtime."""
import random


from proxy.config import HealthCheckConfig
from proxy.events import HealthProbe, StateChange
from proxy.health.active import (
    BackendChecker,
    Coalescer,
    ProbeResult,
    base_interval,
    first_delay,
    http_request,
    next_delay,
)
from proxy.model import Health

from tests.proxy.health.helpers import FakeClock, Recorder, make_runtime, pool_data


def cfg(**kw) -> HealthCheckConfig:
    return HealthCheckConfig.model_validate(kw)


def test_unhealthy_interval_is_used_only_while_down():
    c = cfg(interval="2s", unhealthy_interval="10s")
    assert base_interval(Health.HEALTHY, c) == 2.0
    assert base_interval(Health.INITIAL, c) == 2.0
    assert base_interval(Health.UNHEALTHY, c) == 10.0
    assert base_interval("unhealthy", cfg(interval="2s")) == 2.0  # not set: the interval


def test_jitter_stays_within_bounds_and_spreads():
    c = cfg(interval="100ms", jitter="50ms")
    rng = random.Random(1)
    delays = [next_delay(Health.HEALTHY, c, rng) for _ in range(2000)]
    assert all(0.1 <= d <= 0.15 for d in delays)
    assert max(delays) - min(delays) > 0.045  # really spread over the range
    assert abs(sum(delays) / len(delays) - 0.125) < 0.003


def test_no_jitter_draws_no_random_numbers():
    rng = random.Random(3)
    state = rng.getstate()
    assert next_delay(Health.HEALTHY, cfg(interval="1s"), rng) == 1.0
    assert rng.getstate() == state


def test_first_probe_waits_grace_for_a_new_backend_and_an_interval_after_a_restart():
    c = cfg(interval="2s", grace="5s", jitter="1s")
    rng = random.Random(2)
    assert 5.0 <= first_delay(c, rng, new=True) <= 6.0
    assert 2.0 <= first_delay(c, rng, new=False) <= 3.0
    assert first_delay(cfg(interval="2s"), rng, new=True) == 0.0


def test_http_request_is_a_closed_get_with_host():
    raw = http_request("127.0.0.1", 9001, "/health/live")
    assert raw.startswith(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1:9001\r\n")
    assert b"Connection: close\r\n" in raw and raw.endswith(b"\r\n\r\n")
    assert b"Host: [::1]:80\r\n" in http_request("::1", 80, "/")


# ---------------------------------------------------------------- coalescing

ok = ProbeResult(True, "200 in 2 ms", 2.0)


def test_coalescer_folds_steady_passes_into_one_event_per_second():
    c = Coalescer(every=1.0)
    published = []
    t = 0.0
    published += c.offer(ok, steady=False, now=t)  # the pass that made it healthy
    for i in range(25):  # 100 ms probes for 2.5 s
        t = (i + 1) * 0.1
        published += c.offer(ProbeResult(True, "200 in 4 ms", 4.0), steady=True, now=t)
    assert [p.count for p in published] == [1, 10, 10]
    assert published[1].latency_ms == 4.0 and published[1].detail == "200 in 4 ms"
    assert [p.count for p in c.flush()] == [5]


def test_coalescer_publishes_every_failure_and_flushes_pending_passes_first():
    c = Coalescer(every=1.0)
    c.offer(ok, steady=False, now=0.0)
    assert c.offer(ok, steady=True, now=0.1) == []
    assert c.offer(ok, steady=True, now=0.2) == []
    bad = ProbeResult(False, "connection refused", 0.3)
    out = c.offer(bad, steady=False, now=0.3)
    assert [(p.ok, p.count) for p in out] == [(True, 2), (False, 1)]
    out = c.offer(bad, steady=False, now=0.4)
    assert [(p.ok, p.count) for p in out] == [(False, 1)]


def test_with_a_slow_interval_every_pass_is_published():
    c = Coalescer(every=1.0)
    counts = [len(c.offer(ok, steady=True, now=2.0 * i)) for i in range(5)]
    assert counts == [1, 1, 1, 1, 1]


# ---------------------------------------------------------------- the checker's bookkeeping

def checker_for(health_cfg, clock):
    rt = make_runtime({"web": pool_data([("b1", 9)], health=health_cfg)}, clock=clock)
    pool = rt.pools["web"]
    backend = pool.backends["b1"]
    checker = BackendChecker("web", backend, pool.config.health, lambda: rt.pools.get("web"),
                             rt.bus, clock, random.Random(0))
    return rt, pool, backend, checker


def test_checker_moves_health_through_the_runtime_with_causes():
    clock = FakeClock()
    rt, pool, backend, checker = checker_for(
        {"interval": "100ms", "healthy_threshold": 2, "unhealthy_threshold": 3}, clock)
    rec = Recorder(rt.bus)
    checker.observe(ok, pool)
    assert backend.health is Health.INITIAL
    clock.advance(0.1)
    checker.observe(ok, pool)
    assert backend.health is Health.HEALTHY
    assert backend.healthy_since == clock.now  # slow start ramps from here
    for _ in range(3):
        clock.advance(0.1)
        checker.observe(ProbeResult(False, "timeout after 50 ms", 50.0), pool)
    changes = rec.changes(kind="health")
    assert [(c.old, c.new, c.cause) for c in changes] == [
        ("initial", "healthy", "2 consecutive passes"),
        ("healthy", "unhealthy",
         "3 consecutive failures: timeout after 50 ms"),
    ]
    assert backend.health_reason == "3 consecutive failures: timeout after 50 ms"
    # probe events: 2 passes while initial + 3 failures, all published
    assert [(p.ok, p.count) for p in rec.probes()] == [(True, 1)] * 2 + [(False, 1)] * 3
    # probe event precedes the state change it caused
    kinds = [type(e).__name__ for e in rec.events if isinstance(e, (HealthProbe, StateChange))]
    assert kinds[:3] == ["HealthProbe", "HealthProbe", "StateChange"]


def test_checker_state_view():
    clock = FakeClock()
    _, pool, _, checker = checker_for({"interval": "100ms"}, clock)
    checker.observe(ProbeResult(False, "connection refused", 0.2), pool)
    view = checker.state()
    assert view["consecutive_fails"] == 1 and view["consecutive_passes"] == 0
    assert view["last_probe"]["detail"] == "connection refused"
    assert view["type"] == "http" and view["probes"] == 1
