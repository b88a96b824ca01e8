"""Prometheus metrics for the proxy, served by the admin API at GET /metrics.

Theory of operation. Two kinds of numbers, fed two ways:

* Things that *happen* (requests, connections, health changes) are counted as
  they are published on the EventBus: `Metrics.sink` is added with
  `bus.add_sink(metrics.sink)` and sees every event object synchronously, in
  the proxy's hot path. So it does almost nothing per event: one dict lookup
  by event class, one by label tuple, then `inc`/`observe` on a cached child
  (prometheus_client's `labels()` is the slow part, and runs once per tuple).
  Requests and L4 connections, the most frequent, are not even that: they add
  to plain integers per label tuple (`_pending`...), moved into prometheus_client's children
  whenever the registry is collected (a scrape, `get_sample_value`), so the
  numbers read are always exact while a request costs no lock and no
  histogram walk.
* Things that *are* (a backend's health, in-flight requests, effective
  weight, a pool's panic) are read from `runtime` at scrape time by a custom
  collector, so they can never drift from what the balancers see and cost
  nothing between scrapes.

Responses are split by who made them, as AWS ALB splits ELB 5XX from target
5XX: `source="backend"` when a backend answered, `source="proxy"` when the
proxy answered on its own (502/503/504 it generated, per
`RequestEvent.proxy_error`, or a route's fixed respond/redirect with no backend).

Label values: "-" stands for "no pool"/"no backend" (a name can never be "-",
config names start with a letter or digit). Series for a removed backend stay
until restart, as Prometheus counters should.

Every metric has its own CollectorRegistry so tests and several proxies in one
process never collide.
"""
from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING, Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from proxy.events import (
    AdminChange,
    ConnectionEvent,
    Event,
    HealthProbe,
    PoolEvent,
    RequestEvent,
    StateChange,
)
from proxy.model import Health, Intent

if TYPE_CHECKING:
    from proxy.runtime import Runtime

NONE = "-"

# 1 ms .. 30 s: a toy backend's fast path is ~1 ms, the default response
# header timeout is 30 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0, 30.0)
_REQUEST_BOUNDS = LATENCY_BUCKETS + (float("inf"),)  # the request sink's bucket bounds
# TCP connections live longer: 1 ms .. 1 h.
DURATION_BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 900.0, 3600.0)


def status_class(status: int) -> str:
    """200 -> "2xx"; 0 (no response, e.g. the client left first) -> "none"."""
    if 100 <= status <= 599:
        return f"{status // 100}xx"
    return "none"


class Metrics:
    def __init__(self, runtime: "Runtime", prefix: str = "lblab"):
        self.runtime = runtime
        self.registry = CollectorRegistry(auto_describe=True)
        p = prefix
        r = self.registry
        # First in the registry: moves the pending request counts into the
        # children before any of them is collected.
        r.register(_Flush(self))
        self.requests = Counter(
            f"{p}_requests", "HTTP requests finished, by who made the response "
            "(source=backend|proxy) and status class.",
            ["pool", "backend", "code_class", "source"], registry=r)
        self.terminations = Counter(
            f"{p}_request_terminations", "HTTP requests by termination code "
            "(two letters: who ended it, at which phase; '--' is a clean finish).",
            ["pool", "backend", "termination"], registry=r)
        self.latency = Histogram(
            f"{p}_request_duration_seconds", "HTTP request latency, accept to last byte.",
            ["pool", "backend"], buckets=LATENCY_BUCKETS, registry=r)
        self.bytes = Counter(
            f"{p}_bytes", "Body bytes relayed: direction=in from clients, out to clients; "
            "layer=http (requests) or tcp (L4 connections).",
            ["pool", "backend", "direction", "layer"], registry=r)
        self.connections = Counter(
            f"{p}_connections", "L4 connections (and upgraded tunnels) closed, by who closed them.",
            ["listener", "pool", "backend", "closed_by"], registry=r)
        self.connection_duration = Histogram(
            f"{p}_connection_duration_seconds", "L4 connection lifetime.",
            ["pool", "backend"], buckets=DURATION_BUCKETS, registry=r)
        self.state_changes = Counter(
            f"{p}_backend_state_changes", "Backend state transitions: kind=health|intent|"
            "ejection, to the new state.",
            ["pool", "backend", "kind", "new"], registry=r)
        self.probes = Counter(
            f"{p}_health_probes", "Active health probes by result.",
            ["pool", "backend", "result"], registry=r)
        self.pool_events = Counter(
            f"{p}_pool_events", "Pool conditions: panic_on, panic_off, no_eligible...",
            ["pool", "what"], registry=r)
        self.queued = Counter(
            f"{p}_queue_requests", "Requests that met a full pool (every eligible backend "
            "at its limit) with a queue, by outcome: served, timeout, full (refused), left.",
            ["pool", "outcome"], registry=r)
        self.retries = Counter(
            f"{p}_retries", "Retries of HTTP requests: result=retried for each retry "
            "made, skipped_by_budget when the pool's retry_budget refused one.",
            ["pool", "result"], registry=r)
        self.zone_requests = Counter(
            f"{p}_zone_requests", "HTTP requests through listeners with a zone, by the "
            "listener's zone and the chosen backend's (from_zone != to_zone: cross-zone "
            "traffic; to_zone '-' for a backend without a zone).",
            ["pool", "from_zone", "to_zone"], registry=r)
        self.queue_wait = Histogram(
            f"{p}_queue_wait_seconds", "Time requests waited in a pool's queue.",
            ["pool"], buckets=LATENCY_BUCKETS, registry=r)
        self.admin_changes = Counter(
            f"{p}_admin_changes", "Changes applied through the admin API or a reload.",
            ["verb"], registry=r)
        r.register(_StateCollector(runtime, p))

        # Per-label-tuple caches of children (labels() is the slow call).
        self._request_children: dict[tuple, tuple] = {}
        self._status_children: dict[tuple, object] = {}
        self._termination_children: dict[tuple, object] = {}
        self._connection_children: dict[tuple, object] = {}
        self._conn_pb_children: dict[tuple, tuple] = {}
        # Requests counted since the last collect, one row per (pool, backend, status,
        # proxy_error, termination) as the event has them: [count, sum_s, bytes_in,
        # bytes_out, count per latency bucket...] (one lookup per request, split per
        # metric, and made into labels, at flush).
        self._pending: dict[tuple, list] = {}
        # Connections closed since the last collect, the same way: (listener, pool,
        # backend, closed_by) -> [count]; (pool, backend) -> [sum_s, bytes_in,
        # bytes_out, count per duration bucket...].
        self._pending_conn: dict[tuple, list] = {}
        self._pending_conn_pb: dict[tuple, list] = {}
        self._duration_bounds = DURATION_BUCKETS + (float("inf"),)
        self._dispatch: dict[type, Callable[[Event], None]] = {
            ConnectionEvent: self._on_connection,
            StateChange: self._on_state_change,
            HealthProbe: self._on_probe,
            PoolEvent: self._on_pool_event,
            AdminChange: self._on_admin,
        }

    # ------------------------------------------------------------ events

    def sink(self, event: Event) -> None:
        """EventBus sink: count one event. Must be quick and must not raise.

        A request (every request) is counted right here, with no dispatch and no
        second call; the other kinds go to their handler."""
        if type(event) is not RequestEvent:
            handler = self._dispatch.get(type(event))
            if handler is not None:
                handler(event)
            return
        ev = event
        # The fields as they are (labels are made from them at flush).
        key = (ev.pool, ev.backend, ev.status, ev.proxy_error, ev.termination)
        acc = self._pending.get(key)
        if acc is None:
            acc = self._pending[key] = [0, 0.0, 0, 0] + [0] * len(_REQUEST_BOUNDS)
        seconds = ev.latency_ms / 1000.0
        acc[0] += 1
        acc[1] += seconds
        acc[2] += ev.bytes_in
        acc[3] += ev.bytes_out
        acc[4 + bisect_left(_REQUEST_BOUNDS, seconds)] += 1
        if ev.retries or ev.retry_budget is not None or ev.zone is not None or (
                ev.queue is not None):
            self._on_request_extras(ev, ev.pool or NONE)

    def _on_request_extras(self, ev: RequestEvent, pool: str) -> None:
        """Retries, budgets, zones and queues: rarer, counted straight into children."""
        if ev.retries:
            self.retries.labels(pool, "retried").inc(len(ev.retries))
        budget = ev.retry_budget
        if budget is not None and not budget["allowed"]:
            self.retries.labels(pool, "skipped_by_budget").inc()
        zone = ev.zone
        if zone is not None and ev.backend is not None:
            self.zone_requests.labels(pool, zone["listener_zone"],
                                      zone.get("backend_zone") or NONE).inc()
        queue = ev.queue
        if queue is not None:
            self.queued.labels(pool, queue["outcome"]).inc()
            if queue["outcome"] != "full":
                self.queue_wait.labels(pool).observe(queue["waited_ms"] / 1000.0)

    def flush(self) -> None:
        """Move the request and connection counts gathered since the last call into
        the children."""
        self._flush_connections()
        pending, self._pending = self._pending, {}
        for (pool, backend, status, proxy_error, termination), acc in pending.items():
            # The proxy made the response when it says so, or when no backend was involved.
            proxy_made = proxy_error or backend is None
            pool = pool or NONE
            backend = backend or NONE
            count = acc[0]
            skey = (pool, backend, status, proxy_made)
            child = self._status_children.get(skey)
            if child is None:
                child = self._status_children[skey] = self.requests.labels(
                    pool, backend, status_class(status), "proxy" if proxy_made else "backend")
            child.inc(count)
            tkey = (pool, backend, termination)
            child = self._termination_children.get(tkey)
            if child is None:
                child = self._termination_children[tkey] = self.terminations.labels(
                    pool, backend, termination)
            child.inc(count)
            self._add_sizes(self._request_children, self.latency, "http", pool, backend,
                            acc[1], acc[4:], acc[2], acc[3])

    def _on_connection(self, ev: ConnectionEvent) -> None:
        pool = ev.pool or NONE
        backend = ev.backend or NONE
        key = (ev.listener, pool, backend, ev.closed_by)
        count = self._pending_conn.get(key)
        if count is None:
            self._pending_conn[key] = [1]
        else:
            count[0] += 1
        pb = (pool, backend)
        acc = self._pending_conn_pb.get(pb)
        if acc is None:
            acc = self._pending_conn_pb[pb] = [0.0, 0, 0] + [0] * len(self._duration_bounds)
        seconds = ev.duration_ms / 1000.0
        acc[0] += seconds
        acc[1] += ev.bytes_in
        acc[2] += ev.bytes_out
        acc[3 + bisect_left(self._duration_bounds, seconds)] += 1

    def _flush_connections(self) -> None:
        pending, self._pending_conn = self._pending_conn, {}
        for key, (count,) in pending.items():
            child = self._connection_children.get(key)
            if child is None:
                listener, pool, backend, closed_by = key
                child = self._connection_children[key] = self.connections.labels(
                    listener, pool, backend, closed_by or "unknown")
            child.inc(count)
        pending_pb, self._pending_conn_pb = self._pending_conn_pb, {}
        for (pool, backend), acc in pending_pb.items():
            self._add_sizes(self._conn_pb_children, self.connection_duration, "tcp", pool,
                            backend, acc[0], acc[3:], acc[1], acc[2])

    def _add_sizes(self, cache: dict, histogram, layer: str, pool: str, backend: str,
                   seconds: float, buckets: list, bytes_in: int, bytes_out: int) -> None:
        """One pool and backend's gathered latencies (or durations: ``seconds`` summed,
        ``buckets`` counted per bound) and bytes into their children, which are looked up
        once and kept in ``cache``."""
        children = cache.get((pool, backend))
        if children is None:
            children = cache[(pool, backend)] = (
                histogram.labels(pool, backend),
                self.bytes.labels(pool, backend, "in", layer),
                self.bytes.labels(pool, backend, "out", layer),
            )
        observed, counter_in, counter_out = children
        _add_observations(observed, seconds, buckets)
        if bytes_in:
            counter_in.inc(bytes_in)
        if bytes_out:
            counter_out.inc(bytes_out)

    # Rare events: labels() directly is fine.
    def _on_state_change(self, ev: StateChange) -> None:
        self.state_changes.labels(ev.pool, ev.backend, ev.kind, ev.new).inc()

    def _on_probe(self, ev: HealthProbe) -> None:
        self.probes.labels(ev.pool, ev.backend, "ok" if ev.ok else "fail").inc(ev.count)

    def _on_pool_event(self, ev: PoolEvent) -> None:
        self.pool_events.labels(ev.pool, ev.what).inc()

    def _on_admin(self, ev: AdminChange) -> None:
        self.admin_changes.labels(ev.verb).inc()

    # ------------------------------------------------------------ exposition

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition (format 0.0.4, read by every Prometheus)."""
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4


def _add_observations(histogram, total: float, per_bucket: list) -> None:
    """Observations counted per bucket (same bounds), added to a Histogram child."""
    histogram._sum.inc(total)
    for bucket, count in zip(histogram._buckets, per_bucket):
        if count:
            bucket.inc(count)


class _Flush:
    """Collects nothing: makes Metrics move its pending counts in first."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def describe(self):
        return []

    def collect(self):
        self.metrics.flush()
        return iter(())


class _StateCollector:
    """Gauges read from the runtime at scrape time."""

    def __init__(self, runtime: "Runtime", prefix: str):
        self.runtime = runtime
        self.p = prefix

    def describe(self):
        # Names only; lets the registry detect clashes at register time.
        return list(self._families().values())

    def collect(self):
        families = self._families()
        runtime = self.runtime
        now = runtime.clock()
        for pool_name, pool in runtime.pools.items():
            eligible = 0
            for b in pool.backends.values():
                labels = [pool_name, b.name]
                up = b.is_eligible(now)
                eligible += up
                families["up"].add_metric(labels, 1.0 if up else 0.0)
                for h in Health:
                    families["health"].add_metric(labels + [h.value], 1.0 if b.health is h else 0.0)
                for i in Intent:
                    families["intent"].add_metric(labels + [i.value], 1.0 if b.intent is i else 0.0)
                families["ejected"].add_metric(labels, 1.0 if b.ejected_until > now else 0.0)
                families["outstanding"].add_metric(labels, b.outstanding)
                families["connections"].add_metric(labels, b.active_connections)
                families["weight"].add_metric(labels, b.weight)
                families["effective_weight"].add_metric(labels, b.effective_weight(now))
                families["ewma"].add_metric(labels, b.ewma_ms / 1000.0)
            families["panic"].add_metric([pool_name], 1.0 if pool.in_panic else 0.0)
            families["queue"].add_metric([pool_name], len(pool.queue))
            families["backends"].add_metric([pool_name], len(pool.backends))
            families["eligible"].add_metric([pool_name], eligible)
        bus = runtime.bus
        families["subscribers"].add_metric([], bus.subscriber_count)
        families["published"].add_metric([], bus.published)
        families["generation"].add_metric([], runtime.generation)
        yield from families.values()

    def _families(self) -> dict:
        p = self.p
        pb = ["pool", "backend"]
        return {
            "up": GaugeMetricFamily(
                f"{p}_backend_up", "1 when the backend is eligible: active, not unhealthy, "
                "not ejected.", labels=pb),
            "health": GaugeMetricFamily(
                f"{p}_backend_health", "Observed health: 1 for the current state.",
                labels=pb + ["state"]),
            "intent": GaugeMetricFamily(
                f"{p}_backend_intent", "Intended state: 1 for the current intent.",
                labels=pb + ["intent"]),
            "ejected": GaugeMetricFamily(
                f"{p}_backend_ejected", "1 while outlier detection ejects the backend.",
                labels=pb),
            "outstanding": GaugeMetricFamily(
                f"{p}_backend_outstanding_requests", "Requests in flight to the backend.",
                labels=pb),
            "connections": GaugeMetricFamily(
                f"{p}_backend_active_connections",
                "Connections to the backend busy with a request or relay.", labels=pb),
            "weight": GaugeMetricFamily(
                f"{p}_backend_weight", "Configured weight.", labels=pb),
            "effective_weight": GaugeMetricFamily(
                f"{p}_backend_effective_weight", "Weight after slow start ramping.", labels=pb),
            "ewma": GaugeMetricFamily(
                f"{p}_backend_response_time_ewma_seconds", "Smoothed response time "
                "(what least_response_time compares).", labels=pb),
            "panic": GaugeMetricFamily(
                f"{p}_pool_panic", "1 while the pool fails open (panic threshold).",
                labels=["pool"]),
            "queue": GaugeMetricFamily(
                f"{p}_pool_queue_depth", "Requests waiting in the pool's queue now.",
                labels=["pool"]),
            "backends": GaugeMetricFamily(
                f"{p}_pool_backends", "Backends configured in the pool.", labels=["pool"]),
            "eligible": GaugeMetricFamily(
                f"{p}_pool_eligible_backends", "Backends eligible in the pool.", labels=["pool"]),
            "subscribers": GaugeMetricFamily(
                f"{p}_event_stream_subscribers", "Open GET /events streams."),
            "published": CounterMetricFamily(
                f"{p}_events_published", "Events published on the bus."),
            "generation": GaugeMetricFamily(
                f"{p}_config_generation", "How many configs have been applied since start."),
        }
