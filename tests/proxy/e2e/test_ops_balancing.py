"""Everyday operations in a real proxy process: least_response_time finds a
recovered backend again, and the panic flag follows health checks with no
request in between."""
from __future__ import annotations

import http.client
import time

from tests.proxy.e2e.support import backend_entry, base_config, request

WAIT = 20.0


def until(predicate, what: str, proxy) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"never happened: {what}\n{proxy.output()}"
        time.sleep(0.05)


def test_least_response_time_sends_traffic_to_a_recovered_backend(backends, proxy_factory):
    fast, slow = backends["b1"], backends["b2"]
    proxy = proxy_factory(base_config({"web": {
        "balancer": {"algorithm": "least_response_time", "decay_time": "1s",
                     "probe_after": "500ms"},
        "backends": [backend_entry(fast), backend_entry(slow)]}}))
    slow.control({"latency_ms": 300})
    seen = [request(proxy.port()).backend for _ in range(30)]
    assert seen.count("b1") > seen.count("b2")  # b2 is slow: avoided
    slow.control({"latency_ms": 0})
    # Sequential requests leave nothing in flight: only forgetting and probing
    # can bring b2 back (an average that never decays keeps it at 300 ms forever).
    found: list[str] = []
    until(lambda: found.append(request(proxy.port()).backend) or "b2" in found[-5:],
          "a request to the recovered b2", proxy)
    state = proxy.admin("GET", "/state")[1]
    ewma = {b["name"]: b["ewma_ms"] for b in state["pools"]["web"]["backends"]}
    assert ewma["b2"] < 300  # its new average is from after the recovery


def test_panic_follows_health_checks_without_requests(backends, proxy_factory):
    handles = [backends[n] for n in ("b1", "b2", "b3")]
    proxy = proxy_factory(base_config({"web": {
        "panic_threshold": 0.5,
        "health": {"type": "http", "path": "/health", "interval": "100ms",
                   "timeout": "500ms", "healthy_threshold": 1, "unhealthy_threshold": 1},
        "backends": [backend_entry(h) for h in handles]}}))

    def panic() -> bool:
        return proxy.admin("GET", "/state")[1]["pools"]["web"]["panic"]

    until(lambda: all(b["health"] == "healthy" for b in
                      proxy.admin("GET", "/state")[1]["pools"]["web"]["backends"]),
          "every backend healthy", proxy)
    assert panic() is False
    for h in handles[:2]:
        h.control({"health_fail": True})
    until(panic, "panic on (1/3 eligible is below 50%)", proxy)
    for h in handles[:2]:
        h.control({"health_fail": False})
    until(lambda: not panic(), "panic off once they recover, with no request sent", proxy)
    conn = http.client.HTTPConnection("127.0.0.1", proxy.admin_port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        metrics = conn.getresponse().read().decode()
    finally:
        conn.close()
    assert 'lblab_pool_panic{pool="web"} 0.0' in metrics
