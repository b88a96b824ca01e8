"""The bridge's Coalescer is a plain object: events and state in, tick messages out."""
import json

from explainer.bridge import Coalescer, percentile, slim_state


def req(n, backend="b1", status=200, latency=10.0, **extra):
    return {"type": "request", "request_id": f"r{n}", "backend": backend, "status": status,
            "latency_ms": latency, "route": "all", "pool": "web", **extra}


STATE = {"generation": 3, "listeners": {"web": {"bind": "127.0.0.1:8080", "protocol": "http",
                                                "routes": ["all"], "pool": None}},
         "routes": {"all": {"match": {}, "forward": "web"}},
         "pools": {"web": {"algorithm": "round_robin", "backends": [
             {"name": "b1", "address": "127.0.0.1:9001", "weight": 1, "health": "healthy",
              "intent": "active", "eligible": True, "outstanding": 2, "active_connections": 5},
             {"name": "b2", "address": "127.0.0.1:9002", "weight": 1, "health": "healthy",
              "intent": "active", "eligible": True, "outstanding": 0, "active_connections": 0}]}},
         "config": {"huge": "x" * 1000}}


def test_percentile_nearest_rank():
    values = sorted(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


def test_tick_counts_per_backend_and_rolls_the_window():
    c = Coalescer("default", window_s=5.0, started=0.0)
    for i in range(10):
        c.add(req(i, "b1", latency=float(i + 1)), now=10.0)
    c.add(req(10, "b2", status=503, latency=100.0), now=10.0)
    c.add(req(11, None, status=503, proxy_error=True, error="no eligible backend"), now=10.0)
    tick = c.tick(now=10.25)
    b1, b2 = tick["stats"]["backends"]["b1"], tick["stats"]["backends"]["b2"]
    assert (b1["requests"], b1["errors"]) == (10, 0)
    assert b1["rps"] == 2.0  # 10 samples over the 5 s window
    assert b1["p50_ms"] == 5.0 and b1["p99_ms"] == 10.0
    assert (b2["requests"], b2["errors"], b2["eps"]) == (1, 1, 0.2)
    totals = tick["stats"]["totals"]
    assert totals["requests"] == 12 and totals["errors"] == 2 and totals["no_backend"] == 1
    assert totals["2xx"] == 10 and totals["5xx"] == 2
    # Next tick: per-tick counts restart, the window still holds the samples...
    c.add(req(20, "b1", latency=50.0), now=11.0)
    tick = c.tick(now=11.25)
    assert tick["stats"]["backends"]["b1"]["requests"] == 1
    assert tick["stats"]["backends"]["b1"]["rps"] == 2.2
    # ...until they are older than the window.
    tick = c.tick(now=16.5, force=True)
    assert tick["stats"]["backends"]["b1"]["rps"] == 0.0
    assert tick["stats"]["backends"]["b1"]["p50_ms"] is None


def test_rate_uses_elapsed_time_while_the_window_fills():
    c = Coalescer("default", window_s=5.0, started=100.0)
    for i in range(4):
        c.add(req(i), now=101.5)
    tick = c.tick(now=102.0)
    assert tick["stats"]["backends"]["b1"]["rps"] == 2.0  # 4 over 2 s, not over 5 s


def test_keeps_the_newest_decisions_and_counts_the_rest():
    c = Coalescer("default", decisions_per_tick=3, started=0.0)
    for i in range(10):
        c.add(req(i), now=1.0)
    tick = c.tick(now=1.25)
    assert [d["request_id"] for d in tick["decisions"]] == ["r7", "r8", "r9"]
    assert tick["decisions_dropped"] == 7
    assert tick["stats"]["backends"]["b1"]["requests"] == 10  # stats count every one


def test_lifecycle_events_are_all_kept_and_probes_folded():
    c = Coalescer("default", started=0.0)
    lifecycle = [
        {"type": "state_change", "pool": "web", "backend": "b1", "kind": "health",
         "old": "healthy", "new": "unhealthy", "cause": "2 consecutive failures"},
        {"type": "admin", "verb": "set_weight", "target": "web/b1", "detail": {"weight": 3}},
        {"type": "drain", "pool": "web", "backend": "b2", "what": "started"},
        {"type": "pool", "pool": "web", "what": "no_eligible"},
        {"type": "warning", "source": "x", "message": "careful"},
        {"type": "stream_gap", "dropped": 12},
    ]
    for e in lifecycle:
        c.add(e, now=1.0)
    c.add({"type": "health_probe", "pool": "web", "backend": "b1", "ok": True, "detail": "200",
           "count": 4}, now=1.0)
    c.add({"type": "health_probe", "pool": "web", "backend": "b1", "ok": False,
           "detail": "connection refused"}, now=1.1)
    c.add({"type": "something_new", "x": 1}, now=1.1)  # unknown types are ignored
    tick = c.tick(now=1.25)
    assert tick["events"] == lifecycle
    assert tick["probes"]["b1"]["ok"] == 4 and tick["probes"]["b1"]["failed"] == 1
    assert tick["probes"]["b1"]["last"]["detail"] == "connection refused"
    assert c.tick(now=1.5, force=True)["events"] == []


def test_state_goes_out_once_with_its_diagram_and_without_the_config():
    c = Coalescer("default", started=0.0)
    c.set_state(STATE, now=1.0)
    c.add(req(1, "b1"), now=1.0)
    tick = c.tick(now=1.25)
    assert tick["state"] == slim_state(STATE) and "config" not in tick["state"]
    assert tick["diagram"].startswith("flowchart LR")
    assert tick["stats"]["backends"]["b1"]["in_flight"] == 2
    assert tick["stats"]["backends"]["b1"]["connections"] == 5
    assert tick["stats"]["backends"]["b2"]["rps"] == 0.0  # known from state, no traffic yet
    nxt = c.tick(now=1.5, force=True)
    assert nxt["state"] is None and nxt["diagram"] is None


def test_quiet_ticks_are_skipped_until_the_heartbeat():
    c = Coalescer("default", heartbeat_s=1.0, started=0.0)
    assert c.tick(now=0.25)["seq"] == 1  # the first one always goes
    assert c.tick(now=0.5) is None
    assert c.tick(now=1.0) is None
    assert c.tick(now=1.3)["seq"] == 2  # heartbeat
    c.add(req(1), now=1.4)
    assert c.tick(now=1.55)["seq"] == 3  # news goes at once


def test_proxy_status_changes_are_news():
    c = Coalescer("sb1", started=0.0)
    c.tick(now=0.25)
    c.set_proxy(False, "proxy unreachable: connection refused", now=0.3)
    tick = c.tick(now=0.5)
    assert tick["proxy"] == {"reachable": False, "detail": "proxy unreachable: connection refused",
                             "since": 0.3}
    assert tick["sandbox"] == "sb1" and tick["type"] == "lab.tick"
    c.set_proxy(False, "proxy unreachable: connection refused", now=0.6)
    assert c.tick(now=0.75) is None  # same news is not news
    c.set_proxy(True, "ok", now=0.8)
    assert c.tick(now=1.0)["proxy"]["reachable"] is True


def test_parts_are_sent_when_they_change():
    c = Coalescer("default", started=0.0)
    parts = {"proxy": {"alive": True, "detail": "pid 1"}, "b1": {"alive": False, "detail": "gone"}}
    c.set_parts(parts)
    assert c.tick(now=0.25)["parts"] == parts
    c.set_parts(dict(parts))
    assert c.tick(now=1.5)["parts"] is None


def test_ticks_are_json_and_group_send_safe():
    c = Coalescer("default", started=0.0)
    c.set_state(STATE, now=1.0)
    c.add(req(1, "b1", candidates=[{"name": "b1"}], inputs={"index": 1}), now=1.0)
    tick = c.tick(now=1.25)
    assert json.loads(json.dumps(tick)) == tick
    assert tick["type"] == "lab.tick"


def test_connection_events_count_as_decisions():
    c = Coalescer("default", started=0.0)
    c.add({"type": "connection", "connection_id": "c1", "backend": "b1", "duration_ms": 3000.0,
           "connect_ms": 3.0}, now=1.0)
    c.add({"type": "connection", "connection_id": "c2", "backend": "b1", "duration_ms": 10.0,
           "connect_ms": 1.0, "error": "reset"}, now=1.0)
    tick = c.tick(now=1.25)
    assert len(tick["decisions"]) == 2
    assert tick["stats"]["backends"]["b1"]["errors"] == 1
    # how long a client stays is not latency: at L4 the latency is the connect time
    assert tick["stats"]["backends"]["b1"]["p99_ms"] == 3.0


def test_connection_opens_and_the_live_list_ride_on_the_tick():
    c = Coalescer("default", started=0.0, heartbeat_s=60.0)
    c.tick(now=0.1, force=True)
    opened = {"type": "connection_open", "connection_id": "c1", "kind": "tcp",
              "listener": "web", "client": "127.0.0.1:5000", "backend": "b1", "ts": 1.0}
    c.add(opened, now=1.0)
    tick = c.tick(now=1.1)
    assert tick["opened"] == [opened] and tick["decisions"] == []
    assert tick["connections"] is None  # not polled this tick
    live = {"count": 1, "connections": [{"connection_id": "c1", "age_s": 0.5}], "ts": 1.2}
    c.set_connections(live, now=1.2)
    tick = c.tick(now=1.3)
    assert tick["connections"] == live and tick["opened"] == []
    assert c.tick(now=1.4) is None  # nothing new: no tick until the heartbeat
    closed = {"type": "connection", "connection_id": "c1", "backend": "b1", "duration_ms": 900.0,
              "closed_by": "client", "error": None, "bytes_in": 10, "bytes_out": 20}
    c.add(closed, now=2.0)
    tick = c.tick(now=2.1)
    assert tick["decisions"] == [closed]
    assert tick["stats"]["totals"] == {"requests": 1, "ok": 1}


# ---------------------------------------------------------------- request_stats (sampled stream)

def stats_line(rows, ts=0.0):
    return {"type": "request_stats", "ts": ts, "since": ts - 0.25, "mode": "sample",
            "max_per_s": 200, "interval_s": 0.25, "sent": {}, "not_sent": {},
            "latency_buckets": {"min_ms": 0.01, "per_octave": 16}, "rows": rows}


def stats_row(backend, count, errors=0, latencies=(), status=None, kind="request"):
    from proxy.events import latency_bucket

    buckets = {}
    for ms in latencies:
        buckets[latency_bucket(ms)] = buckets.get(latency_bucket(ms), 0) + 1
    latency = {"n": len(latencies), "sum": sum(latencies),
               "min": min(latencies) if latencies else None,
               "max": max(latencies) if latencies else None,
               "buckets": sorted(buckets.items())}
    row = {"kind": kind, "pool": "web", "backend": backend, "count": count, "errors": errors}
    if kind == "request":
        row.update(status=status or {"2xx": count - errors, **({"5xx": errors} if errors else {})},
                   proxy_errors=0, termination={"--": count}, latency_ms=latency)
    else:
        row.update(opened=count, closed_by={"client": count}, connect_ms=latency)
    return row


def test_request_stats_give_exact_counts_and_samples_only_fill_decisions():
    c = Coalescer("default", window_s=5.0, started=0.0)
    c.stream_opened()
    c.add(stats_line([]), now=10.0)  # the opening line: counts come from the proxy now
    assert c.counts_from_stats
    for i in range(3):  # sampled decisions: shown, not counted
        c.add(req(i, "b1", latency=5.0), now=10.1)
    latencies = [float(1 + i % 10) for i in range(1000)]
    c.add(stats_line([stats_row("b1", 1000, latencies=latencies),
                      stats_row("b2", 10, errors=10, latencies=[100.0] * 10),
                      stats_row(None, 4, errors=4, status={"5xx": 4})]), now=10.2)
    tick = c.tick(now=10.25)
    b1, b2 = tick["stats"]["backends"]["b1"], tick["stats"]["backends"]["b2"]
    assert (b1["requests"], b1["errors"], b1["rps"]) == (1000, 0, 200.0)
    assert (b2["requests"], b2["errors"], b2["eps"]) == (10, 10, 2.0)
    # From the histogram, within one bucket (4.4%) of the exact nearest-rank values.
    assert abs(b1["p50_ms"] - percentile(sorted(latencies), 50)) <= 0.05 * 5
    assert abs(b1["p99_ms"] - percentile(sorted(latencies), 99)) <= 0.05 * 10
    assert b2["p50_ms"] == b2["p99_ms"] == 100.0  # all alike: exact
    totals = tick["stats"]["totals"]
    assert totals["requests"] == 1014 and totals["errors"] == 14
    assert totals["2xx"] == 1000 and totals["5xx"] == 14 and totals["no_backend"] == 4
    assert [d["request_id"] for d in tick["decisions"]] == ["r0", "r1", "r2"]
    assert tick["decisions_dropped"] == 1014 - 3
    # The window rolls the proxy's counts like single samples.
    c.add(stats_line([stats_row("b1", 500, latencies=[2.0] * 500)]), now=12.0)
    tick = c.tick(now=12.25)
    assert tick["stats"]["backends"]["b1"]["requests"] == 500
    assert tick["stats"]["backends"]["b1"]["rps"] == 300.0
    tick = c.tick(now=15.5, force=True)  # the 10.2 counts are out of the window
    assert tick["stats"]["backends"]["b1"]["rps"] == 100.0
    assert tick["stats"]["backends"]["b1"]["p99_ms"] == 2.0
    tick = c.tick(now=17.5, force=True)
    assert tick["stats"]["backends"]["b1"]["p50_ms"] is None


def test_decisions_before_the_opening_stats_line_are_counted_one_by_one():
    c = Coalescer("default", window_s=5.0, started=0.0)
    c.stream_opened()
    c.add(req(1, "b1", latency=7.0), now=1.0)  # replayed history
    c.add(stats_line([]), now=1.0)
    c.add(req(2, "b1", latency=9.0), now=1.1)  # a sample, counted by the next line
    c.add(stats_line([stats_row("b1", 2, latencies=[9.0, 11.0])]), now=1.2)
    tick = c.tick(now=1.25)
    b1 = tick["stats"]["backends"]["b1"]
    assert b1["requests"] == 3
    # Mixed single samples and histograms: bucket middles (within 2.2%), kept in [min, max].
    assert abs(b1["p50_ms"] - 9.0) <= 0.25 and abs(b1["p99_ms"] - 11.0) <= 0.25
    # A reconnect to a proxy that sends no request_stats: back to counting samples.
    c.stream_opened()
    c.add(req(3, "b1"), now=2.0)
    assert c.tick(now=2.25)["stats"]["backends"]["b1"]["requests"] == 1


def test_request_stats_connection_rows_count_as_connections():
    c = Coalescer("default", window_s=5.0, started=0.0)
    c.add(stats_line([stats_row("d1", 4, errors=1, latencies=[0.5, 0.5, 0.5],
                                kind="connection"),
                      {**stats_row("d2", 0, kind="connection"), "opened": 3}]), now=1.0)
    tick = c.tick(now=1.25)
    d1 = tick["stats"]["backends"]["d1"]
    assert (d1["requests"], d1["errors"], d1["p50_ms"]) == (4, 1, 0.5)
    assert "d2" not in tick["stats"]["backends"]  # opened, none closed yet
    assert tick["stats"]["totals"]["ok"] == 3 and tick["stats"]["totals"]["err"] == 1


def test_http2_connections_are_shown_but_their_streams_are_what_counts():
    """An HTTP/2 connection carries requests (each counted as one); counted again it
    would read as a 'no backend' connection."""
    c = Coalescer("default", started=0.0)
    c.add(req(1, "b1", protocol="h2", stream_id=1), now=1.0)
    c.add(req(2, "b2", protocol="h2", stream_id=3), now=1.0)
    c.add({"type": "connection", "connection_id": "h1", "kind": "h2", "backend": None,
           "pool": None, "streams": 2, "closed_by": "client"}, now=1.0)
    tick = c.tick(now=1.25)
    assert [d.get("kind") for d in tick["decisions"]] == [None, None, "h2"]
    assert tick["stats"]["totals"]["requests"] == 2
    assert tick["stats"]["totals"].get("no_backend", 0) == 0
    # The same through request_stats: the h2 connection row (no pool, no backend) is skipped.
    c.add(stats_line([stats_row("b1", 5), {**stats_row(None, 1, kind="connection"),
                                           "pool": None}]), now=2.0)
    tick = c.tick(now=2.25)
    assert tick["stats"]["totals"]["requests"] == 5
    assert tick["stats"]["totals"].get("no_backend", 0) == 0
