"""Real BackendState objects, real BalancerConfig, a seeded rng: no mocks."""
from __future__ import annotations

import random

from proxy.balancers import PickContext, create
from proxy.config import BalancerConfig
from proxy.model import BackendState


def backends(*names, weights=None) -> list[BackendState]:
    weights = weights or [1] * len(names)
    return [BackendState(name=n, host="127.0.0.1", port=9001 + i, pool="web", weight=w)
            for i, (n, w) in enumerate(zip(names, weights))]


def four(**kw) -> list[BackendState]:
    return backends("b1", "b2", "b3", "b4", **kw)


def balancer(algorithm, pool, seed=7, **settings):
    config = BalancerConfig(algorithm=algorithm, **settings)
    return create(config, pool, rng=random.Random(seed), clock=lambda: 0.0)


def ctx(ip="127.0.0.1", now=0.0, **kw) -> PickContext:
    return PickContext(client_ip=ip, now=now, **kw)


def picks(bal, pool, n, **kw) -> list[str]:
    return [bal.pick(ctx(**kw), pool).backend.name for _ in range(n)]


def client_ips(n: int) -> list[str]:
    """n distinct addresses in 10.0.0.0/8, the way many clients would look."""
    return [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(1, n + 1)]
