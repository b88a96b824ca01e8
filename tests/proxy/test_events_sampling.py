"""GET /events?requests=sample|summary: request events counted exactly, sent within a budget.

The bus is tested alone (events with chosen timestamps, `flush_stats()` by
hand), then over the admin API's real HTTP, then against a real proxy process
with real toy backends: the request_stats lines add up to exactly what the
access log (every event) says, while far fewer request events are sent.
"""
from __future__ import annotations

import http.client
import json
import math
import socket
import threading
import time
from pathlib import Path

import pytest
import yaml

from labs.backend.testing import start_backends
from proxy.events import (LATENCY_MIN_MS, LATENCY_PER_OCTAVE, AdminChange, ConnectionEvent,
                          ConnectionOpen, EventBus, HealthProbe, RequestEvent, StateChange,
                          latency_bucket)
from tests.proxy.e2e.support import ProxyProcess, backend_entry, base_config
from tests.proxy.test_control import admin, read_lines, until  # noqa: F401 - fixture

REQUEST_STATS = "request_stats"


def req(n: int, ts: float, backend: str | None = "b1", status: int = 200,
        latency: float = 3.0, **kw) -> RequestEvent:
    base = dict(request_id=f"r{n}", listener="web", client="127.0.0.1:5000", method="GET",
                path="/", pool="web", backend=backend, status=status, latency_ms=latency,
                ts=ts)
    base.update(kw)
    return RequestEvent(**base)


def drain(sub) -> list[dict]:
    """Everything buffered in a subscription, parsed (no loop needed)."""
    lines = list(sub._lines)
    sub._lines.clear()
    return [json.loads(line) for line in lines]


def stats_rows(lines: list[dict]) -> list[dict]:
    return [row for line in lines if line["type"] == REQUEST_STATS for row in line["rows"]]


# ---------------------------------------------------------------- the bus alone

def test_default_subscription_still_gets_every_event():
    bus = EventBus()
    sub = bus.subscribe()
    for i in range(500):
        bus.publish(req(i, ts=100.0 + i / 1000))
    assert sub.stats is None
    lines = drain(sub)
    assert [e["request_id"] for e in lines] == [f"r{i}" for i in range(500)]
    sub.flush_stats()  # nothing to do without sampling
    assert drain(sub) == []


def test_sample_sends_within_budget_and_counts_exactly():
    bus = EventBus()
    sub = bus.subscribe(requests="sample", max_per_s=10, interval=0.5)
    t0 = sub._last
    # 2000 requests over 2 s (1000/s), every fourth one a 503 from b2, some proxy errors.
    for i in range(2000):
        ts = t0 + i / 1000
        if i % 4 == 0:
            bus.publish(req(i, ts, backend="b2", status=503, latency=200.0, bytes_out=10,
                            termination="SH"))
        elif i % 50 == 1:
            bus.publish(req(i, ts, backend=None, status=503, proxy_error=True,
                            termination="PQ", latency=0.0))
        else:
            bus.publish(req(i, ts, latency=2.0 + (i % 7), bytes_in=3, bytes_out=5))
    sent = [e for e in drain(sub) if e["type"] == "request"]
    # A token bucket: one interval's burst (5) plus 10/s over 2 s.
    assert 20 <= len(sent) <= 26
    sub.flush_stats(now=t0 + 2.0)
    [line] = drain(sub)
    assert line["type"] == REQUEST_STATS and line["mode"] == "sample"
    assert line["max_per_s"] == 10 and line["interval_s"] == 0.5
    assert line["sent"] == {"request": len(sent)}
    assert line["not_sent"] == {"request": 2000 - len(sent)}
    rows = {(r["kind"], r["pool"], r["backend"]): r for r in line["rows"]}
    b1, b2, none = rows["request", "web", "b1"], rows["request", "web", "b2"], \
        rows["request", "web", None]
    assert b2["count"] == 500 and b2["errors"] == 500 and b2["proxy_errors"] == 0
    assert b2["status"] == {"5xx": 500} and b2["termination"] == {"SH": 500}
    assert b2["bytes_out"] == 5000
    assert b2["latency_ms"]["n"] == 500 and b2["latency_ms"]["min"] == 200.0
    assert b2["latency_ms"]["buckets"] == [[latency_bucket(200.0), 500]]
    proxy_errors = sum(1 for i in range(2000) if i % 4 and i % 50 == 1)
    assert none["count"] == none["errors"] == none["proxy_errors"] == proxy_errors
    assert none["termination"] == {"PQ": proxy_errors}
    assert b1["count"] == 1500 - proxy_errors and b1["errors"] == 0
    assert b1["status"] == {"2xx": b1["count"]}
    assert (b1["bytes_in"], b1["bytes_out"]) == (3 * b1["count"], 5 * b1["count"])
    assert b1["latency_ms"]["min"] == 2.0 and b1["latency_ms"]["max"] == 8.0
    assert sum(n for _, n in b1["latency_ms"]["buckets"]) == b1["count"]
    # Counting restarts after each line; an interval with nothing adds no line.
    sub.flush_stats()
    assert drain(sub) == []


def test_summary_sends_no_request_events_and_lifecycle_events_always_pass():
    bus = EventBus()
    sub = bus.subscribe(requests="summary")
    for i in range(100):
        bus.publish(req(i, ts=100.0 + i))
    bus.publish(StateChange(pool="web", backend="b1", kind="health", old="healthy",
                            new="unhealthy", cause="3 consecutive failures"))
    bus.publish(AdminChange(verb="set_weight", target="web/b1"))
    bus.publish(HealthProbe(pool="web", backend="b1", ok=False, detail="timeout"))
    sub.flush_stats()
    lines = drain(sub)
    assert [e["type"] for e in lines] == ["state_change", "admin", "health_probe",
                                          REQUEST_STATS]
    assert lines[-1]["max_per_s"] == 0 and lines[-1]["sent"] == {}
    assert stats_rows(lines)[0]["count"] == 100


def test_an_opened_connection_that_was_sent_has_its_close_sent():
    bus = EventBus()
    sub = bus.subscribe(requests="sample", max_per_s=1, interval=1.0)
    t0 = sub._last

    def opened(n, ts):
        return ConnectionOpen(connection_id=f"c{n}", listener="tcp", client="127.0.0.1:1",
                              pool="db", backend="d1", ts=ts)

    def closed(n, ts, **kw):
        return ConnectionEvent(connection_id=f"c{n}", listener="tcp", client="127.0.0.1:1",
                               pool="db", backend="d1", ts=ts, connect_ms=0.5,
                               closed_by="client", **kw)

    bus.publish(opened(1, t0))  # uses the one token
    bus.publish(opened(2, t0))  # over budget: not sent
    bus.publish(closed(2, t0, error="reset"))  # its open was not sent: not sent either
    bus.publish(closed(1, t0))  # over budget, but its open was sent: sent
    sub.flush_stats()
    lines = drain(sub)
    assert [(e["type"], e.get("connection_id")) for e in lines] == [
        ("connection_open", "c1"), ("connection", "c1"), (REQUEST_STATS, None)]
    [row] = stats_rows(lines)
    assert row["kind"] == "connection" and (row["count"], row["opened"], row["errors"]) == (2, 2, 1)
    assert row["closed_by"] == {"client": 2} and row["connect_ms"]["n"] == 2


def test_types_filter_applies_to_samples_and_stats():
    bus = EventBus()
    only_stats = bus.subscribe(types=["request_stats", "admin"], requests="sample")
    no_stats = bus.subscribe(types=["request"], requests="sample", max_per_s=1000)
    t0 = max(only_stats._last, no_stats._last)
    for i in range(10):
        bus.publish(req(i, ts=t0))
    bus.publish(AdminChange(verb="x", target="y"))
    only_stats.flush_stats()
    no_stats.flush_stats()
    lines = drain(only_stats)
    assert [e["type"] for e in lines] == ["admin", REQUEST_STATS]
    assert stats_rows(lines)[0]["count"] == 10
    assert [e["type"] for e in drain(no_stats)] == ["request"] * 10


def test_latency_buckets_are_log_spaced():
    assert latency_bucket(0.0) == latency_bucket(LATENCY_MIN_MS) == 0
    assert latency_bucket(LATENCY_MIN_MS * 2) == LATENCY_PER_OCTAVE
    for ms in (0.3, 1.0, 12.5, 480.0):
        i = latency_bucket(ms)
        low = LATENCY_MIN_MS * 2 ** (i / LATENCY_PER_OCTAVE)
        high = LATENCY_MIN_MS * 2 ** ((i + 1) / LATENCY_PER_OCTAVE)
        assert low <= ms * (1 + 1e-9) and ms < high
    assert latency_bucket(1e12) == latency_bucket(1e13)  # capped


def test_to_json_is_unchanged_in_shape():
    event = req(1, ts=5.0, candidates=[{"name": "b1", "health": "healthy"}],
                timings={"done": 1.5}, tls={"mode": "terminate"})
    data = json.loads(event.to_json())
    assert data == event.to_dict()
    assert list(data)[:3] == ["type", "ts", "request_id"]
    assert data["candidates"] == [{"name": "b1", "health": "healthy"}]
    assert json.loads(AdminChange(verb="v", target="t", detail={"x": Path("/a")}).to_json()
                      )["detail"] == {"x": "/a"}  # default=str still applies


# ---------------------------------------------------------------- over the admin API

@pytest.mark.asyncio
async def test_stream_opens_with_an_empty_request_stats_after_the_replay(admin):
    admin.bus.publish(req(1, ts=100.0))
    async with admin.http.get("/events?replay=5&requests=sample&max_per_s=1000"
                              "&interval_ms=50") as stream:
        assert stream.status == 200
        replayed, opening = await read_lines(stream, 2)
        assert replayed["request_id"] == "r1"
        assert opening["type"] == REQUEST_STATS and opening["rows"] == []
        assert opening["max_per_s"] == 1000 and opening["interval_s"] == 0.05
        now = time.time()
        for i in range(5):
            admin.bus.publish(req(10 + i, ts=now))
        seen, counted = [], 0
        while counted < 5:  # the timer flushes every 50 ms
            [line] = await read_lines(stream, 1)
            if line["type"] == REQUEST_STATS:
                counted += sum(r["count"] for r in line["rows"])
            else:
                seen.append(line["request_id"])
        assert counted == 5 and seen == [f"r{10 + i}" for i in range(5)]


@pytest.mark.asyncio
@pytest.mark.parametrize("query, path", [
    ("requests=some", "requests"),
    ("max_per_s=10", "max_per_s"),
    ("requests=summary&max_per_s=10", "max_per_s"),
    ("requests=sample&max_per_s=0", "max_per_s"),
    ("requests=sample&interval_ms=5", "interval_ms"),
    ("interval_ms=100", "interval_ms"),
])
async def test_bad_sampling_options_are_400(admin, query, path):
    async with admin.http.get(f"/events?{query}") as r:
        assert r.status == 400
        body = await r.json()
    assert body["errors"][0]["path"] == path


@pytest.mark.asyncio
async def test_request_stats_is_a_known_type(admin):
    async with admin.http.get("/events?types=request_stats&requests=summary") as stream:
        [opening] = await read_lines(stream, 1)
    assert opening["type"] == REQUEST_STATS and opening["mode"] == "summary"


@pytest.mark.asyncio
async def test_the_stream_timer_stops_with_the_subscription(admin):
    async with admin.http.get("/events?requests=sample") as stream:
        await read_lines(stream, 1)
        [sub] = list(admin.bus._subscribers)
        assert sub._timer is not None
    await until(lambda: admin.bus.subscriber_count == 0, "unsubscribed")
    assert sub._timer is None


# ---------------------------------------------------------------- a real proxy

class StreamReader(threading.Thread):
    """Reads GET /events lines in a thread until stopped."""

    def __init__(self, port: int, query: str):
        super().__init__(daemon=True)
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.conn.request("GET", f"/events?{query}")
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200
        self.lines: list[dict] = []
        self.stopped = False

    def run(self) -> None:
        try:
            while not self.stopped:
                line = self.resp.readline()
                if not line:
                    return
                if line.strip():
                    self.lines.append(json.loads(line))
        except (OSError, ValueError, http.client.HTTPException):
            return

    def stop(self) -> None:
        self.stopped = True
        try:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError):
            pass
        self.join(5)
        self.conn.close()


def test_counts_stay_exact_under_sampling_on_a_real_proxy(tmp_path):
    handles = start_backends(["s1", "s2"])
    proxy = None
    try:
        handles[1].control({"error_rate": 1.0, "error_status": 503})
        log = tmp_path / "access.log"
        config = base_config({"web": {"backends": [backend_entry(h) for h in handles]}},
                             access_log=log)
        path = tmp_path / "proxy.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        proxy = ProxyProcess(path, log).wait_ready()
        reader = StreamReader(proxy.admin_port,
                              "requests=sample&max_per_s=20&interval_ms=100")
        reader.start()
        deadline = time.monotonic() + 10
        while not reader.lines and time.monotonic() < deadline:
            time.sleep(0.01)
        assert reader.lines and reader.lines[0]["type"] == REQUEST_STATS

        total = 300
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port("web"), timeout=5)
        for i in range(total):
            conn.request("GET", f"/n/{i}")
            resp = conn.getresponse()
            resp.read()
        conn.close()
        every = proxy.wait_events(lambda e: e.get("type") == "request", total)

        def counted():
            return sum(r["count"] for r in stats_rows(reader.lines) if r["kind"] == "request")

        deadline = time.monotonic() + 10
        while counted() < total and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # a further flush must not add anything
        reader.stop()

        rows = stats_rows(reader.lines)
        assert counted() == total
        for handle in handles:
            want = [e for e in every if e["backend"] == handle.name]
            got = [r for r in rows if r["backend"] == handle.name]
            assert sum(r["count"] for r in got) == len(want) > 0
            assert sum(r["errors"] for r in got) == sum(1 for e in want if e["status"] >= 500)
            assert sum(r["bytes_out"] for r in got) == sum(e["bytes_out"] for e in want)
            statuses: dict[str, int] = {}
            for r in got:
                for k, v in r["status"].items():
                    statuses[k] = statuses.get(k, 0) + v
            assert statuses == ({"2xx": len(want)} if handle.name == "s1"
                                else {"5xx": len(want)})
            # The histogram's median bucket holds the exact median latency.
            hist: dict[int, int] = {}
            for r in got:
                for i, n in r["latency_ms"]["buckets"]:
                    hist[i] = hist.get(i, 0) + n
            exact = sorted(e["latency_ms"] for e in want)
            median = exact[math.ceil(len(exact) / 2) - 1]
            rank, seen = math.ceil(len(exact) / 2), 0
            for i in sorted(hist):
                seen += hist[i]
                if seen >= rank:
                    break
            assert i == latency_bucket(median)
        sent = [e for e in reader.lines if e["type"] == "request"]
        assert 0 < len(sent) < total  # sampled: far fewer than every request
        assert {e["request_id"] for e in sent} <= {e["request_id"] for e in every}
    finally:
        if proxy is not None:
            proxy.stop()
        for h in handles:
            h.stop()
