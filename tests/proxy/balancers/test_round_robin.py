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
