from tests.proxy.balancers.support import balancer, ctx, four, picks


def test_exact_cycle():
    pool = four()
    rr = balancer("round_robin", pool)
    assert picks(rr, pool, 9) == ["b1", "b2", "b3", "b4", "b1", "b2", "b3", "b4", "b1"]


def test_inputs_show_index_of_n():
    pool = four()
    rr = balancer("round_robin", pool)
    rr.pick(ctx(), pool)
    assert rr.pick(ctx(), pool).inputs == {"index": 1, "of": 4}


def test_continues_over_the_rest_when_one_leaves():
    pool = four()
    rr = balancer("round_robin", pool)
    assert picks(rr, pool, 2) == ["b1", "b2"]
    without_b3 = [b for b in pool if b.name != "b3"]
    assert picks(rr, without_b3, 4) == ["b4", "b1", "b2", "b4"]


def test_no_eligible_backend_gives_none():
    pool = four()
    assert balancer("round_robin", pool).pick(ctx(), []) is None


def _alternate_nodes(algorithm, pool_of_zone, n):
    """Picks of two balancer nodes (listener zones) taking turns, each on its own list."""
    pool = [b for names in pool_of_zone.values() for b in names]
    bal = balancer(algorithm, pool)
    got = {zone: [] for zone in pool_of_zone}
    for _ in range(n):
        for zone, eligible in pool_of_zone.items():
            got[zone].append(bal.pick(ctx(zone=zone), eligible).backend.name)
    return got


def test_each_node_keeps_its_own_turn_when_zones_see_different_lists():
    """Cross-zone off: node a sees b1 alone, node b sees b2..b4. A shared counter reset by
    node a's one-backend list made node b skip b3 and b4; each node turns over its own."""
    pool = four()
    got = _alternate_nodes("round_robin", {"a": pool[:1], "b": pool[1:]}, 6)
    assert got["a"] == ["b1"] * 6
    assert got["b"] == ["b2", "b3", "b4", "b2", "b3", "b4"]


def test_weighted_round_robin_keeps_scores_per_node():
    pool = four()
    got = _alternate_nodes("weighted_round_robin", {"a": pool[:1], "b": pool[1:]}, 6)
    assert got["b"] == ["b2", "b3", "b4", "b2", "b3", "b4"]


def test_a_nodes_pick_says_which_node_turned():
    pool = four()
    rr = balancer("round_robin", pool)
    assert rr.pick(ctx(zone="a"), pool).inputs == {"index": 0, "of": 4, "node": "a"}
