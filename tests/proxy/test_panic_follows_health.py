"""The panic flag (GET /state, lblab_pool_panic, panic_on/panic_off events) follows
health, intent and ejection changes as they happen, with no request in between."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st
from prometheus_client.parser import text_string_to_metric_families

from proxy.config import load_config
from proxy.events import PoolEvent
from proxy.health.passive import OutlierDetector
from proxy.metrics import Metrics
from proxy.model import Health, Intent
from proxy.runtime import Runtime

NAMES = ["b1", "b2", "b3", "b4"]


def config(threshold: float, outlier: bool = False) -> str:
    backends = "\n".join(f"      - {{name: {n}, address: \"127.0.0.1:{i + 1}\"}}"
                         for i, n in enumerate(NAMES))
    extra = "    outlier: {consecutive_5xx: 1, base_ejection: 10s, max_ejection_percent: 100}\n" \
        if outlier else ""
    return f"""
listeners: {{web: {{bind: "127.0.0.1:0", routes: [all]}}}}
routes: {{all: {{forward: web}}}}
pools:
  web:
    panic_threshold: {threshold}
{extra}    backends:
{backends}
"""


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def panic_metric(metrics: Metrics) -> float:
    body, _ = metrics.render()
    for family in text_string_to_metric_families(body.decode()):
        if family.name == "lblab_pool_panic":
            return family.samples[0].value
    raise AssertionError("no lblab_pool_panic")


def expected(pool, now) -> bool:
    serving = [b for b in pool.backends.values() if b.intent is Intent.ACTIVE]
    eligible = [b for b in pool.backends.values() if b.is_eligible(now)]
    threshold = pool.config.panic_threshold
    return bool(threshold > 0 and serving and len(eligible) < threshold * len(serving))


def test_panic_turns_off_when_backends_recover_without_a_request():
    clock = Clock()
    runtime = Runtime(load_config(config(0.5)), clock=clock)
    metrics = Metrics(runtime)
    pool = runtime.pools["web"]
    for name in ("b1", "b2", "b3"):
        pool.set_health(pool.backends[name], Health.UNHEALTHY, "probe failed")
    assert pool.in_panic and runtime.state()["pools"]["web"]["panic"] is True
    assert panic_metric(metrics) == 1.0
    for name in ("b1", "b2"):
        pool.set_health(pool.backends[name], Health.HEALTHY, "probe passed")
    assert not pool.in_panic
    assert runtime.state()["pools"]["web"]["panic"] is False
    assert panic_metric(metrics) == 0.0
    whats = [e.what for e in runtime.bus.recent(50) if isinstance(e, PoolEvent)]
    assert whats == ["panic_on", "panic_off"]


@settings(max_examples=300, deadline=None)
@given(threshold=st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]),
       steps=st.lists(st.tuples(st.sampled_from(["health", "intent", "config_weight"]),
                                st.sampled_from(NAMES),
                                st.sampled_from(["healthy", "unhealthy", "initial", "active",
                                                 "draining", "maintenance"])), max_size=25))
def test_the_flag_always_equals_the_rule_after_any_change(threshold, steps):
    clock = Clock()
    runtime = Runtime(load_config(config(threshold)), clock=clock)
    pool = lambda: runtime.pools["web"]  # noqa: E731 (rebuilt by config changes)
    for kind, name, value in steps:
        if kind == "health" and value in ("healthy", "unhealthy", "initial"):
            pool().set_health(pool().backends[name], Health(value), "test")
        elif kind == "intent" and value in ("active", "draining", "maintenance"):
            runtime.set_backend_state("web", name, value)
        elif kind == "config_weight":
            runtime.set_weight("web", name, 2)
        clock.now += 1
        assert pool().in_panic == expected(pool(), clock.now), (kind, name, value)
        assert runtime.state()["pools"]["web"]["panic"] == pool().in_panic


def test_ejections_and_their_expiry_move_the_flag():
    clock = Clock()
    runtime = Runtime(load_config(config(0.75, outlier=True)), clock=clock)
    pool = runtime.pools["web"]
    detector = OutlierDetector(pool, pool.config.outlier, runtime.bus, clock)
    detector.record("b1", "5xx", clock.now)
    detector.record("b2", "5xx", clock.now)
    assert pool.in_panic  # 2/4 eligible is below 75%
    clock.now += 11
    detector.expire(clock.now)
    assert not pool.in_panic  # the return is reported, and panic ends with it
