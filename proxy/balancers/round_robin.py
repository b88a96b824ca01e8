"""Round robin: each eligible backend in turn.

The index advances over the eligible list as it is at pick time, so when a
backend leaves, the cycle continues over the rest without a restart.

When it is right: identical backends and requests of similar cost; it is
simple, fair by count and easy to predict. Failure mode: it ignores weight
and load, so a slow or overloaded backend keeps getting its full 1/n share
while its queue grows (least_outstanding_requests reacts to that).

Each balancer node keeps its own position: with zones, a listener's zone stands for
a node (NLB runs one per zone), and with cross-zone off each node turns over its own
zone's list. One shared counter over lists of different lengths would skip backends
(a one-backend zone resets it on every pick), so the position is kept per zone.
"""
from __future__ import annotations

from proxy.balancers.base import Balancer, Decision, register


@register
class RoundRobin(Balancer):
    name = "round_robin"
    summary = "Each backend in turn, ignoring load and weight."

    def rebuild(self, backends):
        super().rebuild(backends)
        self._next = getattr(self, "_next", 0)
        self._next_by_zone: dict[str, int] = getattr(self, "_next_by_zone", {})

    def pick(self, ctx, eligible):
        if not eligible:
            return None
        zone = ctx.zone
        if zone is None:
            index = self._next % len(eligible)
            self._next = index + 1
            return Decision(eligible[index], {"index": index, "of": len(eligible)})
        index = self._next_by_zone.get(zone, 0) % len(eligible)
        self._next_by_zone[zone] = index + 1
        return Decision(eligible[index], {"index": index, "of": len(eligible), "node": zone})
