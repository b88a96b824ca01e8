"""balancer.seed: a pool whose random draws repeat, whatever else the proxy draws."""
from __future__ import annotations

import random

import pytest

from proxy.balancers.base import PickContext
from proxy.config import ConfigError, parse_config
from proxy.runtime import Runtime


def config(algorithm: str, seed=None) -> dict:
    balancer = {"algorithm": algorithm, **({} if seed is None else {"seed": seed})}
    return {"listeners": {"main": {"bind": "127.0.0.1:8080", "routes": ["all"]}},
            "routes": {"all": {"match": {}, "forward": "web"}},
            "pools": {"web": {"balancer": balancer, "backends": [
                {"name": f"b{i}", "address": f"127.0.0.1:{9000 + i}"} for i in range(1, 5)]}}}


def draws(algorithm: str, seed, n: int = 200, process_seed: int = 1) -> list[str]:
    # A different process-wide generator each time: a seeded pool must not depend on it.
    runtime = Runtime(parse_config(config(algorithm, seed)), rng=random.Random(process_seed))
    pool = runtime.pools["web"]
    eligible = list(pool.backends.values())
    return [pool.balancer.pick(PickContext(client_ip="127.0.0.1"), eligible).backend.name
            for _ in range(n)]


@pytest.mark.parametrize("algorithm", ["random", "power_of_two_choices", "weighted_random"])
def test_a_seeded_pool_draws_the_same_sequence_in_every_process(algorithm):
    first = draws(algorithm, 42, process_seed=1)
    assert draws(algorithm, 42, process_seed=2) == first
    assert draws(algorithm, 43, process_seed=1) != first
    assert len(set(first)) == 4


def test_without_a_seed_the_pool_uses_the_process_generator():
    assert draws("random", None, process_seed=1) != draws("random", None, process_seed=2)


def test_a_seed_out_of_range_is_refused_with_its_path():
    with pytest.raises(ConfigError) as err:
        parse_config(config("random", -1))
    assert "pools.web.balancer.seed" in str(err.value)


def test_a_seeded_split_route_rolls_the_same_in_every_process():
    from proxy.routing import RouteRequest, build_routers

    def pools(seed, process_seed):
        cfg = config("round_robin")
        cfg["pools"]["canary"] = {"backends": [{"name": "c1", "address": "127.0.0.1:9101"}]}
        cfg["routes"]["all"] = {"match": {}, "split": [{"pool": "web", "weight": 95},
                                                       {"pool": "canary", "weight": 5}],
                                **({} if seed is None else {"seed": seed})}
        router = build_routers(parse_config(cfg), random.Random(process_seed))["main"]
        req = RouteRequest(host="x", path="/", method="GET", headers={})
        return [router.match(req).pool for _ in range(400)]

    first = pools(9, 1)
    assert pools(9, 2) == first and "canary" in first and "web" in first
    assert pools(None, 1) != pools(None, 2)
