import math
import random
from collections import Counter

from tests.proxy.balancers.support import balancer, ctx, four


def skewed_paths(rng, n):
    """70% of requests for one hot object, the rest spread over 50 others."""
    return ["/hot" if rng.random() < 0.7 else f"/item/{rng.randrange(50)}" for _ in range(n)]


def test_never_exceeds_the_bound_while_outstanding_grows():
    pool = four()
    bal = balancer("consistent_hash_bounded", pool, hash_key={"source": "uri"}, load_factor=1.25)
    rng = random.Random(9)
    skipped_any = False
    for path in skewed_paths(rng, 2000):
        decision = bal.pick(ctx(path=path), pool)
        decision.backend.request_started()  # nothing finishes: load only grows
        total = sum(b.outstanding for b in pool)
        bound = math.ceil(1.25 * total / 4)
        assert decision.inputs["capacity"] == bound
        assert max(b.outstanding for b in pool) <= bound
        skipped_any = skipped_any or bool(decision.inputs["skipped"])
    assert skipped_any  # the hot key overflowed to its ring successors
    loads = [b.outstanding for b in pool]
    assert max(loads) <= math.ceil(1.25 * 2000 / 4)


def test_plain_consistent_hash_would_overload_with_the_same_traffic():
    pool = four()
    bal = balancer("consistent_hash", pool, hash_key={"source": "uri"})
    rng = random.Random(9)
    counts = Counter(bal.pick(ctx(path=p), pool).backend.name for p in skewed_paths(rng, 2000))
    assert max(counts.values()) > math.ceil(1.25 * 2000 / 4)


def test_bound_holds_with_requests_finishing():
    pool = four()
    bal = balancer("consistent_hash_bounded", pool, hash_key={"source": "uri"}, load_factor=1.1)
    rng = random.Random(4)
    in_flight = []
    for path in skewed_paths(rng, 3000):
        decision = bal.pick(ctx(path=path), pool)
        chosen = decision.backend
        assert chosen.outstanding < decision.inputs["capacity"]  # room before placing
        chosen.request_started()
        in_flight.append(chosen)
        if len(in_flight) > 40:
            in_flight.pop(rng.randrange(len(in_flight))).request_finished(0.01, failed=False)


def test_keys_stay_home_when_there_is_room():
    pool = four()
    bounded = balancer("consistent_hash_bounded", pool, hash_key={"source": "uri"})
    plain = balancer("consistent_hash", pool, hash_key={"source": "uri"})
    for i in range(200):
        path = f"/item/{i}"
        d = bounded.pick(ctx(path=path), pool)
        assert d.backend is plain.pick(ctx(path=path), pool).backend
        assert d.inputs["skipped"] == []


def test_skips_ineligible_and_full_backends_and_says_so():
    pool = four()
    bal = balancer("consistent_hash_bounded", pool, hash_key={"source": "uri"})
    home = bal.pick(ctx(path="/x"), pool).backend
    home.outstanding = 10  # total 11 -> capacity ceil(1.25 * 11 / 4) = 4
    d = bal.pick(ctx(path="/x"), pool)
    assert d.backend is not home
    assert d.inputs["capacity"] == 4
    assert d.inputs["skipped"] == [f"{home.name}: full (10/4)"]
    eligible = [b for b in pool if b is not home]
    home.outstanding = 0
    d = bal.pick(ctx(path="/x"), eligible)
    assert d.inputs["skipped"] == [f"{home.name}: not eligible"]
