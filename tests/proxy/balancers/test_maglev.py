from collections import Counter

import pytest

from proxy.balancers.maglev import build_table
from proxy.config import BalancerConfig
from tests.proxy.balancers.support import backends, balancer, client_ips, ctx, four

M = 65537


def test_table_spreads_within_one_percent():
    pool = four()
    bal = balancer("maglev", pool)
    table = bal.table_for(pool)
    assert len(table) == M
    slots = Counter(table)
    for name in ("b1", "b2", "b3", "b4"):
        assert abs(slots[name] - M / 4) <= 0.01 * M / 4, slots


def test_removing_a_backend_moves_few_entries_of_the_others():
    pool = backends("b1", "b2", "b3", "b4", "b5")
    bal = balancer("maglev", pool)
    before = bal.table_for(pool)
    after = bal.table_for([b for b in pool if b.name != "b3"])
    kept = [i for i in range(M) if before[i] != "b3"]
    moved = sum(before[i] != after[i] for i in kept)
    assert moved / len(kept) < 0.02  # small disruption (a ring would move 0, modulo ~80%)
    assert "b3" not in after
    assert abs(Counter(after)["b1"] - M / 4) <= 0.01 * M / 4  # still even


def test_pick_uses_the_table_for_the_eligible_set():
    pool = four()
    bal = balancer("maglev", pool, table_size=251)
    decision = bal.pick(ctx(ip="127.0.0.5"), pool)
    assert decision.inputs["table_size"] == 251
    assert decision.backend.name == bal.table_for(pool)[decision.inputs["slot"]]
    assert decision.inputs["slot"] == decision.inputs["hash"] % 251
    assert "table_for" not in decision.inputs
    eligible = [b for b in pool if b.name != "b2"]
    for ip in client_ips(300):
        d = bal.pick(ctx(ip=ip), eligible)
        assert d.backend.name != "b2"
        assert d.inputs["table_for"] == ["b1", "b3", "b4"]


def test_tables_are_built_once_and_cached_by_eligible_set():
    pool = four()
    bal = balancer("maglev", pool, table_size=251)
    full = bal.table_for(pool)
    three = bal.table_for(pool[:3])
    assert bal.table_for(list(reversed(pool))) is full
    assert bal.table_for(pool[:3]) is three
    # many different sets: the cache stays bounded and keeps the full table
    pool8 = backends(*[f"b{i}" for i in range(1, 9)])
    bal8 = balancer("maglev", pool8, table_size=251)
    full8 = bal8.table_for(pool8)
    for drop in range(8):
        bal8.table_for([b for i, b in enumerate(pool8) if i != drop])
    for drop in range(8):
        bal8.table_for([b for i, b in enumerate(pool8) if i not in (drop, (drop + 1) % 8)])
    assert len(bal8._tables) <= 9
    assert bal8.table_for(pool8) is full8


def test_same_client_same_backend_and_weights_respected():
    pool = four(weights=[2, 1, 1, 0])
    bal = balancer("maglev", pool)
    slots = Counter(bal.table_for(pool))
    assert "b4" not in slots  # weight 0: no slots
    assert abs(slots["b1"] / M - 0.5) < 0.01
    first = {ip: bal.pick(ctx(ip=ip), pool).backend.name for ip in client_ips(500)}
    again = {ip: bal.pick(ctx(ip=ip), pool).backend.name for ip in client_ips(500)}
    assert first == again


def test_build_table_is_independent_of_member_order():
    assert build_table([("b2", 1), ("b1", 1)], 251) == build_table([("b1", 1), ("b2", 1)], 251)


def test_table_size_must_be_prime():
    with pytest.raises(ValueError):
        BalancerConfig(algorithm="maglev", table_size=250)
