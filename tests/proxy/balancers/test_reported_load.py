"""balancer.load: reported: least-* and power of two choices reading a shared, stale load
report instead of the proxy's own live counts (the herding the p2c-herding lab shows)."""
from collections import Counter

import pytest

from proxy.config import BalancerConfig, ConfigError, parse_config
from tests.proxy.balancers.support import balancer, ctx, four


def reported(pool, loads, at=0.0):
    for b, n in zip(pool, loads):
        b.reported_load, b.reported_at = n, at


def test_local_is_the_default_and_ignores_a_report():
    pool = four()
    reported(pool, [9, 9, 0, 9])
    for b, n in zip(pool, [0, 5, 5, 5]):
        b.outstanding = n
    decision = balancer("least_outstanding_requests", pool).pick(ctx(), pool)
    assert BalancerConfig().load == "local"
    assert decision.backend.name == "b1" and "load" not in decision.inputs


def test_least_outstanding_on_a_stale_report_sends_everything_to_one_backend():
    pool = four()
    reported(pool, [4, 3, 1, 5], at=10.0)
    lor = balancer("least_outstanding_requests", pool, load="reported")
    chosen = []
    for _ in range(20):  # the report does not move between refreshes: neither does the pick
        d = lor.pick(ctx(now=10.8), pool)
        d.backend.outstanding += 1
        chosen.append(d.backend.name)
    assert chosen == ["b3"] * 20
    assert d.inputs == {"counts": {"b1": 4, "b2": 3, "b3": 1, "b4": 5}, "load": "reported",
                        "report_age_s": 0.8}


def test_power_of_two_choices_on_the_same_report_spreads():
    pool = four()
    reported(pool, [4, 3, 1, 5])
    p2c = balancer("power_of_two_choices", pool, load="reported")
    got = Counter(p2c.pick(ctx(), pool).backend.name for _ in range(400))
    # b3 wins only when drawn (half the draws), the others share the rest; b4 (the
    # highest) never wins a comparison.
    assert 150 < got["b3"] < 250 and got["b1"] > 20 and got["b2"] > 50 and got["b4"] == 0
    d = p2c.pick(ctx(), pool)
    assert d.inputs["load"] == "reported" and set(d.inputs["counts"]) == set(d.inputs["draws"])


def test_a_backend_without_a_report_falls_back_to_the_local_count():
    pool = four()
    reported(pool[:3], [2, 2, 2])
    pool[3].outstanding = 1
    assert balancer("least_connections", pool, load="reported").pick(
        ctx(), pool).backend.name == "b4"


def test_the_config_names_the_choices():
    with pytest.raises(ConfigError) as err:
        parse_config({"listeners": {"web": {"bind": "127.0.0.1:0", "pool": "web"}},
                      "pools": {"web": {"balancer": {"algorithm": "least_connections",
                                                     "load": "shared"}, "backends": [
                          {"name": "b1", "address": "127.0.0.1:1"}]}}})
    assert "pools.web.balancer.load" in str(err.value) and "reported" in str(err.value)
