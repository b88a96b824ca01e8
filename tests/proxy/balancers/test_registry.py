"""Properties every registered algorithm must have."""
import importlib
import json
import random

import pytest

from proxy.balancers import REGISTRY
from tests.proxy.balancers.support import balancer, ctx, four

EXPECTED = {
    "round_robin", "weighted_round_robin", "least_connections", "least_outstanding_requests",
    "power_of_two_choices", "least_response_time", "random", "weighted_random", "ip_hash",
    "consistent_hash", "maglev", "consistent_hash_bounded",
}


def test_all_algorithms_are_registered():
    assert set(REGISTRY) == EXPECTED


@pytest.mark.parametrize("algorithm", sorted(EXPECTED))
def test_documented(algorithm):
    cls = REGISTRY[algorithm]
    assert cls.summary and "\n" not in cls.summary
    doc = importlib.import_module(cls.__module__).__doc__
    assert doc and "failure mode" in doc.lower()


@pytest.mark.parametrize("algorithm", sorted(EXPECTED))
def test_picks_only_eligible_with_json_inputs(algorithm):
    pool = four()
    rng = random.Random(1)
    for b in pool:
        b.outstanding = rng.randrange(5)
        b.active_connections = rng.randrange(5)
        b.ewma_ms = rng.choice([0.0, 5.0, 20.0])
    bal = balancer(algorithm, pool, table_size=251)
    eligible = [pool[0], pool[2], pool[3]]
    for i in range(50):
        request = ctx(ip=f"127.0.0.{i + 1}", path=f"/p/{i}",
                      headers={"x-user": str(i)}, cookies={"uid": str(i)})
        decision = bal.pick(request, eligible)
        assert any(decision.backend is b for b in eligible)
        json.dumps(decision.inputs)
    assert bal.pick(ctx(), []) is None


def test_acquire_and_release_reach_a_balancer_that_counts():
    """The data plane skips the two hooks for balancers that keep them as no-ops
    (`counts` False), and calls both for one that overrides either."""
    from proxy.balancers.base import Balancer, Decision

    class Counting(Balancer):
        name = "counting-test"

        def pick(self, ctx, eligible):
            return Decision(eligible[0]) if eligible else None

        def acquire(self, backend):
            self.in_flight = getattr(self, "in_flight", 0) + 1

    assert Counting.counts
    assert not any(cls.counts for cls in REGISTRY.values())
