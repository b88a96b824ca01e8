"""Weighted random: a backend chosen at random with probability weight / total.

A roll in [0, total) lands in one backend's stretch of the weight line
(b1 covers 0-3, b2 3-4, ...). Weights are effective weights, so slow start
ramps a new backend in. Stateless, like random: independent proxies need no
coordination.

When it is right: backends of different capacity behind many proxies.
Failure mode: short-term lumpiness as with random, and weights are static
guesses that ignore the backend's current load.
"""
from __future__ import annotations

from proxy.balancers.base import Balancer, Decision, register
from proxy.balancers.scoring import effective_weights, r3


@register
class WeightedRandom(Balancer):
    name = "weighted_random"
    summary = "A backend chosen at random, with probability proportional to its weight."
    weighted = True

    def pick(self, ctx, eligible):
        weights = effective_weights(eligible, ctx.now)
        if not weights:
            return None
        total = sum(weights.values())
        roll = self.rng.random() * total
        acc = 0.0
        chosen = None
        for b in eligible:
            w = weights.get(b.name)
            if w is None:
                continue
            chosen = b
            acc += w
            if roll < acc:
                break
        return Decision(chosen, {"roll": r3(roll), "total": r3(total),
                                 "weights": {n: r3(w) for n, w in weights.items()}})
