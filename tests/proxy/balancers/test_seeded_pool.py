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
