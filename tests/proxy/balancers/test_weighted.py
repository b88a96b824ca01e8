from collections import Counter

from tests.proxy.balancers.support import backends, balancer, ctx, four, picks


def test_smooth_wrr_5_1_1_exact_sequence():
    pool = backends("a", "b", "c", weights=[5, 1, 1])
    wrr = balancer("weighted_round_robin", pool)
    assert picks(wrr, pool, 7) == ["a", "a", "b", "a", "c", "a", "a"]
    # and the cycle repeats exactly
    assert picks(wrr, pool, 7) == ["a", "a", "b", "a", "c", "a", "a"]


def test_wrr_inputs_show_current_weights_and_total():
    pool = backends("a", "b", "c", weights=[5, 1, 1])
    wrr = balancer("weighted_round_robin", pool)
    wrr.pick(ctx(), pool)
    decision = wrr.pick(ctx(), pool)
    assert decision.inputs == {"current_weights": {"a": 3, "b": 2, "c": 2}, "total": 7}


def test_wrr_follows_weight_changes():
    pool = backends("a", "b", weights=[1, 1])
    wrr = balancer("weighted_round_robin", pool)
    assert Counter(picks(wrr, pool, 10)) == {"a": 5, "b": 5}
    pool[1].weight = 4  # what PoolRuntime does on set_weight
    assert Counter(picks(wrr, pool, 50)) == {"a": 10, "b": 40}


def test_wrr_weight_zero_gets_nothing():
    pool = backends("a", "b", weights=[0, 2])
    wrr = balancer("weighted_round_robin", pool)
    assert set(picks(wrr, pool, 10)) == {"b"}
    assert wrr.pick(ctx(), [pool[0]]) is None


def test_slow_start_gives_recently_healthy_backend_a_small_share():
    pool = four()
    now = 1000.0
    for b in pool:
        b.slow_start = 60.0
        b.healthy_since = 0.0  # long ago: full weight
    pool[3].healthy_since = now - 6.0  # 10% into its 60 s ramp
    assert pool[3].effective_weight(now) == 0.1
    wrr = balancer("weighted_round_robin", pool)
    counts = Counter(picks(wrr, pool, 3100, now=now))
    # 0.1 / 3.1 of the traffic: exactly 100 of 3100 with smooth WRR
    assert counts["b4"] == 100
    assert counts["b1"] == counts["b2"] == counts["b3"] == 1000
    # once the ramp is over it gets its full quarter
    counts = Counter(picks(wrr, pool, 4000, now=now + 60))
    assert counts["b4"] == 1000


def test_weighted_random_spreads_by_weight():
    pool = four(weights=[4, 3, 2, 1])
    wr = balancer("weighted_random", pool, seed=42)
    counts = Counter(picks(wr, pool, 10_000))
    for name, share in {"b1": 0.4, "b2": 0.3, "b3": 0.2, "b4": 0.1}.items():
        assert abs(counts[name] / 10_000 - share) < 0.02, counts


def test_weighted_random_inputs():
    pool = four(weights=[4, 3, 2, 1])
    decision = balancer("weighted_random", pool).pick(ctx(), pool)
    assert decision.inputs["total"] == 10
    assert 0 <= decision.inputs["roll"] < 10
    assert decision.inputs["weights"] == {"b1": 4, "b2": 3, "b3": 2, "b4": 1}


def test_random_spreads_evenly():
    pool = four()
    rnd = balancer("random", pool, seed=42)
    counts = Counter(picks(rnd, pool, 10_000))
    for name in ("b1", "b2", "b3", "b4"):
        assert abs(counts[name] / 10_000 - 0.25) < 0.02, counts


def test_random_is_deterministic_with_a_seed():
    pool = four()
    assert picks(balancer("random", pool, seed=3), pool, 20) == \
        picks(balancer("random", pool, seed=3), pool, 20)
