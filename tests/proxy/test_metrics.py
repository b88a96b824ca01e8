"""Metrics without sockets: a real Runtime and EventBus, events published into it."""
from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.config import load_config
from proxy.events import (
    AdminChange,
    ConnectionEvent,
    HealthProbe,
    PoolEvent,
    RequestEvent,
)
from proxy.metrics import Metrics, status_class
from proxy.model import Health
from proxy.runtime import Runtime

CONFIG = """
listeners:
  web: {bind: "127.0.0.1:0", routes: [all]}
routes:
  all: {forward: web}
pools:
  web:
    slow_start: 10s
    backends:
      - {name: b1, address: "127.0.0.1:1", weight: 4}
      - {name: b2, address: "127.0.0.1:2"}
"""


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def runtime(clock):
    return Runtime(load_config(CONFIG), clock=clock)


@pytest.fixture
def metrics(runtime):
    m = Metrics(runtime)
    runtime.bus.add_sink(m.sink)
    return m


def request(**kw) -> RequestEvent:
    base = dict(request_id="r", listener="web", client="127.0.0.1:5000", method="GET",
                path="/", pool="web", backend="b1", status=200, latency_ms=5.0)
    base.update(kw)
    return RequestEvent(**base)


def value(m: Metrics, name: str, **labels) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_status_class():
    assert status_class(200) == "2xx"
    assert status_class(503) == "5xx"
    assert status_class(0) == "none"
    assert status_class(700) == "none"


def test_proxy_and_backend_5xx_are_split(runtime, metrics):
    bus = runtime.bus
    bus.publish(request(status=200))
    bus.publish(request(status=500))  # the backend answered 500
    bus.publish(request(status=500))
    bus.publish(request(status=502, proxy_error=True, termination="SC"))  # connect failed
    bus.publish(request(status=503, backend=None, proxy_error=True, termination="PQ"))
    total = "lblab_requests_total"
    assert value(metrics, total, pool="web", backend="b1", code_class="2xx", source="backend") == 1
    assert value(metrics, total, pool="web", backend="b1", code_class="5xx", source="backend") == 2
    assert value(metrics, total, pool="web", backend="b1", code_class="5xx", source="proxy") == 1
    assert value(metrics, total, pool="web", backend="-", code_class="5xx", source="proxy") == 1
    term = "lblab_request_terminations_total"
    assert value(metrics, term, pool="web", backend="b1", termination="--") == 3
    assert value(metrics, term, pool="web", backend="b1", termination="SC") == 1
    assert value(metrics, term, pool="web", backend="-", termination="PQ") == 1


def test_fixed_response_without_backend_counts_as_proxy(runtime, metrics):
    runtime.bus.publish(request(pool=None, backend=None, status=301))
    assert value(metrics, "lblab_requests_total", pool="-", backend="-", code_class="3xx",
                 source="proxy") == 1


def test_latency_histogram_and_bytes(runtime, metrics):
    runtime.bus.publish(request(latency_ms=4.0, bytes_in=10, bytes_out=300))
    runtime.bus.publish(request(latency_ms=2000.0, bytes_out=700))
    h = "lblab_request_duration_seconds"
    assert value(metrics, h + "_bucket", pool="web", backend="b1", le="0.001") == 0
    assert value(metrics, h + "_bucket", pool="web", backend="b1", le="0.005") == 1
    assert value(metrics, h + "_bucket", pool="web", backend="b1", le="2.5") == 2
    assert value(metrics, h + "_bucket", pool="web", backend="b1", le="30.0") == 2
    assert value(metrics, h + "_count", pool="web", backend="b1") == 2
    assert value(metrics, h + "_sum", pool="web", backend="b1") == pytest.approx(2.004)
    b = "lblab_bytes_total"
    assert value(metrics, b, pool="web", backend="b1", direction="in", layer="http") == 10
    assert value(metrics, b, pool="web", backend="b1", direction="out", layer="http") == 1000


def test_children_are_cached_per_label_tuple(runtime, metrics):
    for _ in range(5):
        runtime.bus.publish(request())
    runtime.bus.publish(request(backend="b2"))
    metrics.render()  # requests are counted in plain numbers until a collect
    assert len(metrics._request_children) == 2
    assert len(metrics._status_children) == 2


def test_connections(runtime, metrics):
    runtime.bus.publish(ConnectionEvent(connection_id="c1", listener="tcp", client="127.0.0.1:1",
                                        pool="web", backend="b2", bytes_in=5, bytes_out=7,
                                        duration_ms=1500.0, closed_by="client"))
    assert value(metrics, "lblab_connections_total", listener="tcp", pool="web", backend="b2",
                 closed_by="client") == 1
    assert value(metrics, "lblab_connection_duration_seconds_count", pool="web",
                 backend="b2") == 1
    assert value(metrics, "lblab_bytes_total", pool="web", backend="b2", direction="out",
                 layer="tcp") == 7


def test_connection_durations_land_in_their_buckets_and_add_up_across_scrapes(runtime,
                                                                            metrics):
    def closed(ms: float, closed_by: str = "client") -> None:
        runtime.bus.publish(ConnectionEvent(
            connection_id="c", listener="tcp", client="127.0.0.1:1", pool="web",
            backend="b1", bytes_in=1, bytes_out=2, duration_ms=ms, closed_by=closed_by))

    closed(5.0)
    closed(1500.0, "backend")
    bucket = "lblab_connection_duration_seconds_bucket"
    assert value(metrics, bucket, pool="web", backend="b1", le="0.01") == 1
    assert value(metrics, bucket, pool="web", backend="b1", le="1.0") == 1
    assert value(metrics, bucket, pool="web", backend="b1", le="10.0") == 2
    assert value(metrics, "lblab_connection_duration_seconds_sum", pool="web",
                 backend="b1") == pytest.approx(1.505)
    closed(0.5)  # counted after the first scrape: added to what it showed
    assert value(metrics, bucket, pool="web", backend="b1", le="0.001") == 1
    assert value(metrics, "lblab_connections_total", listener="tcp", pool="web",
                 backend="b1", closed_by="client") == 2
    assert value(metrics, "lblab_bytes_total", pool="web", backend="b1", direction="in",
                 layer="tcp") == 3


def test_lifecycle_counters_from_the_runtime(runtime, metrics):
    # Real state changes, published by the real Runtime.
    runtime.set_backend_state("web", "b2", "maintenance")
    pool = runtime.pools["web"]
    pool.set_health(pool.backends["b1"], Health.UNHEALTHY, "3 consecutive failures")
    runtime.bus.publish(HealthProbe(pool="web", backend="b1", ok=False, detail="timeout",
                                    count=3))
    runtime.bus.publish(PoolEvent(pool="web", what="no_eligible"))
    assert value(metrics, "lblab_backend_state_changes_total", pool="web", backend="b2",
                 kind="intent", new="maintenance") == 1
    assert value(metrics, "lblab_backend_state_changes_total", pool="web", backend="b1",
                 kind="health", new="unhealthy") == 1
    assert value(metrics, "lblab_health_probes_total", pool="web", backend="b1",
                 result="fail") == 3
    assert value(metrics, "lblab_pool_events_total", pool="web", what="no_eligible") == 1
    assert value(metrics, "lblab_admin_changes_total", verb="set_state") == 1


def test_gauges_read_at_scrape_time(runtime, metrics, clock):
    pool = runtime.pools["web"]
    b1, b2 = pool.backends["b1"], pool.backends["b2"]
    b1.outstanding = 3
    b1.active_connections = 2
    b1.ewma_ms = 250.0
    pool.set_health(b1, Health.HEALTHY, "2 passes")
    clock.now += 5  # half way through a 10 s slow start
    pool.set_health(b2, Health.UNHEALTHY, "down")
    pool.in_panic = True
    sub = runtime.bus.subscribe()
    v = partial_value(metrics)
    assert v("lblab_backend_up", backend="b1") == 1
    assert v("lblab_backend_up", backend="b2") == 0
    assert v("lblab_backend_health", backend="b1", state="healthy") == 1
    assert v("lblab_backend_health", backend="b1", state="initial") == 0
    assert v("lblab_backend_health", backend="b2", state="unhealthy") == 1
    assert v("lblab_backend_intent", backend="b2", intent="active") == 1
    assert v("lblab_backend_outstanding_requests", backend="b1") == 3
    assert v("lblab_backend_active_connections", backend="b1") == 2
    assert v("lblab_backend_weight", backend="b1") == 4
    assert v("lblab_backend_effective_weight", backend="b1") == pytest.approx(2.0)
    assert v("lblab_backend_response_time_ewma_seconds", backend="b1") == pytest.approx(0.25)
    assert metrics.registry.get_sample_value("lblab_pool_panic", {"pool": "web"}) == 1
    assert metrics.registry.get_sample_value("lblab_pool_eligible_backends", {"pool": "web"}) == 1
    assert metrics.registry.get_sample_value("lblab_event_stream_subscribers") == 1
    assert metrics.registry.get_sample_value("lblab_events_published_total") == \
        runtime.bus.published
    sub.close()
    assert metrics.registry.get_sample_value("lblab_event_stream_subscribers") == 0


def test_gauges_follow_config_changes(runtime, metrics):
    runtime.add_backend("web", {"name": "b3", "address": "127.0.0.1:3"})
    assert partial_value(metrics)("lblab_backend_up", backend="b3") == 1
    runtime.remove_backend("web", "b3")
    assert partial_value(metrics)("lblab_backend_up", backend="b3") is None
    assert metrics.registry.get_sample_value("lblab_config_generation") == 3


def test_render_is_prometheus_text(runtime, metrics):
    runtime.bus.publish(request(status=502, proxy_error=True))
    runtime.bus.publish(AdminChange(verb="set_weight", target="web/b1"))
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {"lblab_requests", "lblab_request_duration_seconds", "lblab_backend_up",
            "lblab_backend_health", "lblab_pool_panic", "lblab_events_published",
            "lblab_event_stream_subscribers"} <= names


def test_two_instances_do_not_collide(runtime):
    # Each has its own registry: building twice must not raise "Duplicated timeseries".
    Metrics(runtime)
    Metrics(runtime)


def partial_value(m: Metrics):
    def v(name, **labels):
        return m.registry.get_sample_value(name, {"pool": "web", **labels})
    return v
