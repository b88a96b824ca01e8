"""Smooth weighted round robin, as nginx does it.

Every backend keeps a running score `current`. On each pick every eligible
backend adds its effective weight to its score, the highest score wins, and
the winner gives back the total of all weights. Over one cycle of `total`
picks each backend is chosen exactly in proportion to its weight, and the
heavy one is interleaved with the others (weights 5,1,1 give a a b a c a a)
instead of served in a burst (a a a a a b c), which would hit it with five
requests at once.

When it is right: backends of known, different capacity (a big and a small
machine) and requests of similar cost. Failure mode: weights are static
guesses; a heavy backend that becomes slow keeps receiving its share because
WRR never looks at load (use least_outstanding_requests for that). Weights
are effective weights, so slow start ramps a newly healthy backend in, and a
weight change takes effect on the next pick.

Scores are kept per balancer node (the listener's zone, when it has one), as each node
runs its own cycle: two nodes picking from different lists (cross-zone off) would
otherwise drop each other's scores on every pick and restart the cycle each time.
"""
from __future__ import annotations

from proxy.balancers.base import Balancer, Decision, register
from proxy.balancers.scoring import effective_weights, r3


@register
class WeightedRoundRobin(Balancer):
    name = "weighted_round_robin"
    summary = "Each backend in turn, as often as its weight, interleaved smoothly (nginx)."
    weighted = True

    def rebuild(self, backends):
        super().rebuild(backends)
        # name -> running score; kept across rebuilds so a reload does not jolt the cycle.
        self._current: dict[str, float] = getattr(self, "_current", {})
        self._current_by_zone: dict[str, dict[str, float]] = getattr(
            self, "_current_by_zone", {})

    def pick(self, ctx, eligible):
        weights = effective_weights(eligible, ctx.now)
        if not weights:
            return None
        total = sum(weights.values())
        zone = ctx.zone
        old = self._current if zone is None else self._current_by_zone.get(zone, {})
        # Scores of backends no longer eligible are dropped: one coming back starts at 0.
        current = {name: old.get(name, 0.0) + w for name, w in weights.items()}
        best = max(current, key=current.__getitem__)  # first of the tied, in pool order
        compared = {n: r3(c) for n, c in current.items()}
        current[best] -= total
        if zone is None:
            self._current = current
        else:
            self._current_by_zone[zone] = current
        chosen = next(b for b in eligible if b.name == best)
        return Decision(chosen, {"current_weights": compared, "total": r3(total)})
