"""IP hash: hash the client address, take it modulo the number of backends.

index = hash(key) % n over the eligible backends sorted by name, where the key
is the client IP by default (any `hash_key` works: header, cookie, uri). The
same client lands on the same backend as long as the set of backends stays
the same: stickiness with no table and no cookie, and it works at L4.

Kept naive ON PURPOSE. Its failure mode is the lesson: when n changes (a
backend added, removed, or failing its health check) almost every key moves,
because hash % 4 and hash % 5 agree for only about one key in five. Caches on
the backends go cold and sessions are lost all at once. consistent_hash and
maglev exist to move only about 1/n of the keys instead. It also ignores
weights and load, and many clients behind one NAT address all land together.
The hash is BLAKE2b, never Python's per-process salted hash().
"""
from __future__ import annotations

from operator import attrgetter

from proxy.balancers.base import Decision, register
from proxy.balancers.hashing import HashBalancer

_by_name = attrgetter("name")


@register
class IpHash(HashBalancer):
    name = "ip_hash"
    summary = "hash(client address) modulo the number of backends: sticky, but remaps on change."

    def pick(self, ctx, eligible):
        if not eligible:
            return None
        ordered = sorted(eligible, key=_by_name)
        h, inputs = self._key_inputs(ctx)
        index = h % len(ordered)
        inputs["modulo"] = len(ordered)
        inputs["index"] = index
        return Decision(ordered[index], inputs)
