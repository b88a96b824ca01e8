"""Consistent hashing (Karger et al.; ketama): a ring of virtual nodes.

Every backend is hashed onto a circle of 2^64 positions at `virtual_nodes`
points (scaled by weight: the heaviest backend gets exactly `virtual_nodes`).
A request's key is hashed onto the same circle and served by the owner of the
first point clockwise. Adding a fifth backend to four takes over only the arcs
just before its own points, about 1/5 of the keys; every other key stays where
it was. A backend that is not eligible is skipped: its keys go to the next
owner clockwise, and come back when it returns.

The key comes from `hash_key`: client_ip, a header, a cookie or the uri;
when the request lacks the header/cookie, client_ip is used and the decision
says so. The ring is built in rebuild() (on membership or weight change), a
pick is one bisect on the sorted points.

When it is right: per-key caches on the backends (CDN shards, memcached), or
stickiness that must survive scaling. Failure mode: load follows the keys; a
hot key or an unlucky arc overloads one backend while the others idle (see
consistent_hash_bounded), and with few virtual nodes the arcs are uneven.
"""
from __future__ import annotations

from proxy.balancers.base import Decision, register
from proxy.balancers.hashing import HashBalancer, Ring


@register
class ConsistentHash(HashBalancer):
    name = "consistent_hash"
    summary = "A hash ring of virtual nodes: a key keeps its backend; changes move ~1/n of keys."
    weighted = True

    def rebuild(self, backends):
        super().rebuild(backends)
        self.ring = Ring(self.backends, self.settings.virtual_nodes)

    def pick(self, ctx, eligible):
        if not eligible:
            return None
        by_name = {b.name: b for b in eligible}
        h, inputs = self._key_inputs(ctx)
        skipped = []
        for index, owner in self.ring.walk(h):
            backend = by_name.get(owner)
            if backend is not None:
                inputs["ring_position"] = self.ring.points[index]
                inputs["ring_points"] = len(self.ring)
                if skipped:
                    inputs["skipped"] = skipped
                return Decision(backend, inputs)
            skipped.append(owner)
        return None
