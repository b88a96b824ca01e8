"""Balancing algorithms, one module each, registered by name (see base.py)."""
from proxy.balancers.base import REGISTRY, Balancer, Decision, PickContext, register

# Importing a module registers its algorithm(s).
from proxy.balancers import round_robin  # noqa: F401,E402

__all__ = ["REGISTRY", "Balancer", "Decision", "PickContext", "register", "create"]


def create(settings, backends, rng=None, clock=None) -> Balancer:
    """Build the balancer named by `settings.algorithm` for a pool's backends."""
    return REGISTRY[settings.algorithm](settings, backends, rng=rng, clock=clock)
