"""Balancing algorithms, one module each, registered by name (see base.py)."""
from proxy.balancers.base import REGISTRY, Balancer, Decision, PickContext, register

# Importing a module registers its algorithm(s).
from proxy.balancers import (  # noqa: F401,E402
    consistent_hash,
    consistent_hash_bounded,
    ip_hash,
    least_connections,
    least_outstanding_requests,
    least_response_time,
    maglev,
    power_of_two_choices,
    random_choice,
    round_robin,
    weighted_random,
    weighted_round_robin,
)

__all__ = ["REGISTRY", "Balancer", "Decision", "PickContext", "register", "create"]


def create(settings, backends, rng=None, clock=None) -> Balancer:
    """Build the balancer named by `settings.algorithm` for a pool's backends."""
    return REGISTRY[settings.algorithm](settings, backends, rng=rng, clock=clock)
