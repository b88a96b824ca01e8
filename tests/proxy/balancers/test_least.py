import random
from collections import Counter

from tests.proxy.balancers.support import backends, balancer, ctx, four, picks


def test_least_connections_follows_the_counts():
    pool = four()
    for b, n in zip(pool, [5, 2, 7, 3]):
        b.active_connections = n
    lc = balancer("least_connections", pool)
    decision = lc.pick(ctx(), pool)
    assert decision.backend.name == "b2"
    assert decision.inputs == {"counts": {"b1": 5, "b2": 2, "b3": 7, "b4": 3}}
    pool[1].active_connections = 9
    assert lc.pick(ctx(), pool).backend.name == "b4"


def test_least_connections_rotates_among_ties():
    pool = four()
    for b, n in zip(pool, [1, 0, 1, 0]):
        b.active_connections = n
    lc = balancer("least_connections", pool)
    assert picks(lc, pool, 4) == ["b2", "b4", "b2", "b4"]
    assert lc.pick(ctx(), pool).inputs["tied"] == ["b2", "b4"]


def test_least_connections_as_connections_accumulate_spreads_evenly():
    pool = four()
    lc = balancer("least_connections", pool)
    for _ in range(12):
        lc.pick(ctx(), pool).backend.active_connections += 1
    assert [b.active_connections for b in pool] == [3, 3, 3, 3]


def test_least_connections_divides_by_weight_when_weights_differ():
    pool = backends("big", "small", weights=[3, 1])
    lc = balancer("least_connections", pool)
    for _ in range(8):
        lc.pick(ctx(), pool).backend.active_connections += 1
    assert [b.active_connections for b in pool] == [6, 2]
    decision = lc.pick(ctx(), pool)
    assert decision.inputs["scores"] == {"big": 2.333, "small": 3}
    assert decision.backend.name == "big"


def test_least_outstanding_follows_the_counts_and_rotates_ties():
    pool = four()
    for b, n in zip(pool, [4, 4, 1, 4]):
        b.outstanding = n
    lor = balancer("least_outstanding_requests", pool)
    assert lor.pick(ctx(), pool).backend.name == "b3"
    pool[2].outstanding = 4
    assert picks(lor, pool, 5) == ["b1", "b2", "b3", "b4", "b1"]


def test_least_outstanding_respects_slow_start():
    pool = four()
    for b in pool:
        b.slow_start = 100.0
        b.healthy_since = 0.0
    pool[0].healthy_since = 495.0  # 5% into its ramp at now=500
    lor = balancer("least_outstanding_requests", pool)
    # All idle: the ramping backend scores (0+1)/0.05 = 20, the others 1.
    chosen = Counter(picks(lor, pool, 30, now=500.0))
    assert chosen["b1"] == 0


def test_power_of_two_prefers_the_less_loaded_draw():
    pool = four()
    for b, n in zip(pool, [10, 0, 5, 5]):
        b.outstanding = n
    p2c = balancer("power_of_two_choices", pool, seed=1)
    for _ in range(200):
        decision = p2c.pick(ctx(), pool)
        draws = decision.inputs["draws"]
        assert len(draws) == 2 and len(set(draws)) == 2  # without replacement
        assert decision.inputs["counts"] == {n: pool[int(n[1]) - 1].outstanding for n in draws}
        assert decision.backend.outstanding == min(decision.inputs["counts"].values())
        assert decision.backend.name != "b1"  # b1 is the busiest: it always loses its draw


def test_power_of_two_chooses_a_loaded_backend_far_less_often():
    pool = four()
    pool[0].outstanding = 50
    p2c = balancer("power_of_two_choices", pool, seed=11)
    counts = Counter()
    for _ in range(4000):
        chosen = p2c.pick(ctx(), pool).backend
        counts[chosen.name] += 1
        # requests come and go on the others; b1 stays stuck
        if chosen.name != "b1":
            chosen.outstanding = (chosen.outstanding + 1) % 3
    assert counts["b1"] == 0  # b1 is drawn ~half the time but always loses
    assert min(counts[n] for n in ("b2", "b3", "b4")) > 1000


def test_power_of_two_with_more_choices_than_backends():
    pool = backends("b1", "b2")
    p2c = balancer("power_of_two_choices", pool, choices=4)
    assert sorted(p2c.pick(ctx(), pool).inputs["draws"]) == ["b1", "b2"]


def test_least_response_time_prefers_the_fast_backend():
    pool = four()
    for b, ms in zip(pool, [50.0, 10.0, 40.0, 80.0]):
        b.ewma_ms = ms
    lrt = balancer("least_response_time", pool)
    decision = lrt.pick(ctx(), pool)
    assert decision.backend.name == "b2"
    assert decision.inputs["ewma_ms"] == {"b1": 50, "b2": 10, "b3": 40, "b4": 80}
    assert decision.inputs["scores"] == {"b1": 50, "b2": 10, "b3": 40, "b4": 80}
    # ... until its queue makes it worse: 10 ms * (5 + 1) = 60 > 40 ms * 1
    pool[1].outstanding = 5
    assert lrt.pick(ctx(), pool).backend.name == "b3"


def test_least_response_time_tries_new_backends_first():
    pool = four()
    for b, ms in zip(pool, [50.0, 10.0, 40.0, 0.0]):
        b.ewma_ms = ms
    lrt = balancer("least_response_time", pool)
    decision = lrt.pick(ctx(), pool)
    assert decision.backend.name == "b4"
    assert decision.inputs["untried"] == ["b4"]
    assert decision.inputs["probe"] == "b4"
    # one probe in flight: b4 is now scored with the others' average (33.3 ms * 2)
    pool[3].outstanding = 1
    assert lrt.pick(ctx(), pool).backend.name == "b2"


def test_least_response_time_converges_on_the_fast_backend():
    pool = four()
    latencies = {"b1": 0.050, "b2": 0.005, "b3": 0.050, "b4": 0.050}
    lrt = balancer("least_response_time", pool)
    rng = random.Random(5)
    in_flight = []
    counts = Counter()
    for _ in range(2000):
        chosen = lrt.pick(ctx(), pool).backend
        chosen.request_started()
        counts[chosen.name] += 1
        in_flight.append(chosen)
        # requests finish in random order, a few stay in flight
        while len(in_flight) > 4:
            done = in_flight.pop(rng.randrange(len(in_flight)))
            done.request_finished(latencies[done.name], failed=False)
    assert counts["b2"] > 0.5 * 2000
    assert all(counts[n] > 0 for n in latencies)  # everyone was tried
