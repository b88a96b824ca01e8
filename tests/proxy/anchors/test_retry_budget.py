"""Retry budgets (Envoy's retry_budget): retries in flight capped as a share of the
pool's active requests, besides the per-request retry count."""
from __future__ import annotations

import pytest

from labs.backend.testing import free_port
from proxy.config import ConfigError, parse_config
from proxy.retrybudget import RetryBudget, decide, limit
from tests.proxy.anchors.support import (
    Client, GatedBackend, admin_get, backend_entry, config, event, state, wait_for)
from tests.proxy.edge.harness import EdgeProxy

pytestmark = pytest.mark.timeout(60)


def test_the_budget_is_a_share_of_active_requests_with_a_floor():
    assert limit(0, 20, 3) == 3  # a quiet pool may still retry
    assert limit(100, 20, 3) == 20
    assert decide(100, 19, 20, 3)["allowed"] is True
    refused = decide(100, 20, 20, 3)
    assert refused["allowed"] is False and refused["limit"] == 20
    assert "retry skipped: 20 retries already in flight, the budget is 20" in refused["reason"]
    budget = RetryBudget()
    assert budget.check(20, 0)["allowed"] is False  # no floor, nothing active: none
    assert budget.snapshot(20, 0)["limit"] == 0


def test_retry_budget_config_is_bounded():
    base = {"listeners": {"web": {"bind": "127.0.0.1:0", "routes": ["all"]}},
            "routes": {"all": {"forward": "p"}}}
    with pytest.raises(ConfigError) as err:
        parse_config({**base, "pools": {"p": {"retry_budget": {"percent": 0,
                                                                "min_concurrent": -1}}}})
    paths = sorted(p for p, _ in err.value.errors)
    assert paths == ["pools.p.retry_budget.min_concurrent", "pools.p.retry_budget.percent"]


def test_a_retry_over_the_budget_is_skipped_and_the_event_says_so():
    dead = free_port()  # nothing listens there: connect refused, a retryable failure
    gated = GatedBackend("alive")
    pools = {"p": {"balancer": {"algorithm": "round_robin"}, "retries": 1,
                   "retry_budget": {"percent": 1, "min_concurrent": 1},
                   "backends": [{"name": "dead", "address": f"127.0.0.1:{dead}"},
                                backend_entry("alive", gated)]}}
    try:
        with EdgeProxy(config(pools)) as proxy:
            port = proxy.port()
            # a: dead first, retried on alive (the one retry the floor allows), held there.
            a = Client(port, "/a")
            wait_for(lambda: gated.arrived == 1, what="a's retry at the alive backend")
            b = Client(port, "/b")  # round robin: alive, held too
            wait_for(lambda: gated.arrived == 2, what="b at the alive backend")
            budget = state(proxy)["pools"]["p"]["retry_budget"]
            assert budget["active_requests"] == 2 and budget["active_retries"] == 1
            c = Client(port, "/c").result()  # dead; its retry would be a second one in flight
            assert c.status == 503 and c.headers["x-lblab-error"] == "connect-failed"
            ev = event(proxy, "c")
            assert ev.retries == [] and ev.backend == "dead"
            assert ev.retry_budget["allowed"] is False
            assert ev.retry_budget["limit"] == 1 and ev.retry_budget["active_retries"] == 1
            assert "retry skipped" in ev.retry_budget["reason"]
            gated.release()
            assert a.result().status == 200 and b.result().status == 200
            first = event(proxy, "a")
            assert first.retry_budget["allowed"] is True and len(first.retries) == 1
            metrics = admin_get(proxy, "/metrics").decode()
            assert 'lblab_retries_total{pool="p",result="retried"} 1.0' in metrics
            assert 'lblab_retries_total{pool="p",result="skipped_by_budget"} 1.0' in metrics
            after = state(proxy)["pools"]["p"]["retry_budget"]
            assert after["active_requests"] == 0 and after["active_retries"] == 0
            assert after["skipped"] == 1
    finally:
        gated.release()
        gated.close()
