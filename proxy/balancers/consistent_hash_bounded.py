"""Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam 2016).

Plain consistent hashing lets one hot key or one unlucky arc overload a
backend. Here every backend has a capacity:

    capacity = ceil(load_factor * (total_outstanding + 1) / n)

(total over the eligible backends, +1 for the request being placed). The
request starts at its key's position on the ring, as in consistent_hash, and
walks clockwise to the first eligible backend whose outstanding requests are
below capacity. Since load_factor > 1 the capacities add up to more than the
load, so some backend always has room, and no backend ever goes above its
capacity. Most keys still land on their own backend; only overflow moves, and
it moves to the same next backend each time, so caches there warm up.
With different weights the capacity is split by weight:
ceil(load_factor * (total + 1) * weight / total_weight).

Load is `backend.outstanding` (requests in flight, kept by the data plane),
so the bound holds whoever else sends to the backend. load_factor 1.25 (the
default; HAProxy spells it hash-balance-factor 125) allows 25% above the
average; lower is more even, higher is more sticky.

When it is right: caching backends with skewed key popularity (Vimeo's video
segments). Failure mode: under overload the spill-over breaks key affinity,
and with load_factor close to 1 keys bounce between backends.
"""
from __future__ import annotations

import math

from proxy.balancers.base import Decision, register
from proxy.balancers.hashing import HashBalancer, Ring


@register
class ConsistentHashBounded(HashBalancer):
    name = "consistent_hash_bounded"
    summary = "Consistent hashing where no backend may exceed load_factor times the average load."
    weighted = True

    def rebuild(self, backends):
        super().rebuild(backends)
        self.ring = Ring(self.backends, self.settings.virtual_nodes)

    def capacities(self, eligible) -> dict[str, int]:
        """Backend name -> how many requests in flight it may hold after this one."""
        members = [b for b in eligible if b.weight > 0]
        if not members:
            return {}
        total = sum(b.outstanding for b in members) + 1
        factor = self.settings.load_factor
        weights = {b.weight for b in members}
        if len(weights) == 1:
            cap = math.ceil(factor * total / len(members))
            return {b.name: cap for b in members}
        total_weight = sum(b.weight for b in members)
        return {b.name: math.ceil(factor * total * b.weight / total_weight) for b in members}

    def pick(self, ctx, eligible):
        if not eligible:
            return None
        caps = self.capacities(eligible)
        if not caps:
            return None
        by_name = {b.name: b for b in eligible}
        h, inputs = self._key_inputs(ctx)
        skipped = []
        for index, owner in self.ring.walk(h):
            backend = by_name.get(owner)
            if backend is None:
                skipped.append(f"{owner}: not eligible")
                continue
            if backend.outstanding >= caps[owner]:
                skipped.append(f"{owner}: full ({backend.outstanding}/{caps[owner]})")
                continue
            inputs["ring_position"] = self.ring.points[index]
            inputs["capacity"] = caps[owner]
            if len(set(caps.values())) > 1:
                inputs["capacities"] = caps
            inputs["load"] = backend.outstanding
            inputs["skipped"] = skipped
            return Decision(backend, inputs)
        return None
