"""Maglev hashing (Google, NSDI 2016): a lookup table instead of a ring.

The table has M slots (M prime, `table_size`, 65537 by default). Every backend
gets its own permutation of the slots from two hashes of its name,
offset = h1 % M and skip = h2 % (M - 1) + 1, slot j = (offset + j * skip) % M;
because M is prime every skip visits every slot. The backends then take turns
claiming the next slot of their permutation that is still free, until the
table is full. Result: each backend owns almost exactly M/n slots (they differ
by at most one), and a request is one hash and one list index: slot =
hash(key) % M.

Weights: a backend takes a turn only as often as its weight allows relative
to the heaviest one (as Envoy does), so it owns about weight/total of the
slots. Weight-0 backends get none; weights are the configured ones.

When a backend is not eligible the table is rebuilt for the eligible set, as
the paper does. Built lazily on the first pick that needs it and cached by the
eligible set (a few sets are kept), so a flapping backend does not rebuild
every time; the full set is built in rebuild(). Because the permutations do
not depend on who else is in the table, most slots keep their owner when one
backend leaves: the disruption is small, though not zero (unlike a ring, a
few keys of the remaining backends move too).

When it is right: L4 load balancers where a lookup must be O(1) and even
spread matters more than perfectly minimal disruption. Failure mode: as with
every hash, a hot key overloads its backend, and a rebuild for a large M
costs real time (tens of milliseconds for M = 65537 in Python).
"""
from __future__ import annotations

import heapq
from collections import OrderedDict
from typing import Sequence

from proxy.balancers.base import Decision, register
from proxy.balancers.hashing import HashBalancer, stable_hash
from proxy.model import BackendState

# Tables kept for eligible sets other than the current one.
CACHE_SIZE = 8


def build_table(members: Sequence[tuple[str, int]], size: int) -> list[str]:
    """The Maglev table (slot -> backend name) for (name, weight) pairs; weight > 0."""
    members = sorted((name, w) for name, w in members if w > 0)
    if not members:
        return []
    names = [name for name, _ in members]
    weights = [w for _, w in members]
    top = max(weights)
    offsets = [stable_hash(n, salt=b"maglev-offset") % size for n in names]
    skips = [stable_hash(n, salt=b"maglev-skip") % (size - 1) + 1 for n in names]
    # Turns in order of (iteration, backend index), as the paper's round-robin
    # loop takes them: the heaviest backend a turn every iteration, one of
    # weight top/3 every third. A heap of next turns instead of the loop over
    # every backend per iteration keeps the cost M log N whatever the weights
    # (the loop was M x N when one weight dwarfs the others).
    nexts = [0] * len(names)
    turns = [0] * len(names)
    heap = [(1, i) for i in range(len(names))]
    table = [-1] * size
    filled = 0
    while filled < size:
        iteration, i = heapq.heappop(heap)
        offset, skip, j = offsets[i], skips[i], nexts[i]
        slot = (offset + j * skip) % size
        while table[slot] >= 0:
            j += 1
            slot = (offset + j * skip) % size
        table[slot] = i
        nexts[i] = j + 1
        filled += 1
        turns[i] += 1
        # Next turn: the first later iteration t with t * weight >= turns * top.
        due = -(-turns[i] * top // weights[i])
        heapq.heappush(heap, (max(iteration + 1, due), i))
    return [names[i] for i in table]


@register
class Maglev(HashBalancer):
    name = "maglev"
    summary = "Google's Maglev lookup table: O(1) picks, even spread, little disruption."
    weighted = True

    def rebuild(self, backends):
        super().rebuild(backends)
        self._tables: OrderedDict[tuple, list[str]] = OrderedDict()
        self._full = self._key_of(self.backends)
        self._table(self._full)

    @staticmethod
    def _key_of(backends: Sequence[BackendState]) -> tuple:
        return tuple(sorted((b.name, b.weight) for b in backends if b.weight > 0))

    def _table(self, key: tuple) -> list[str]:
        table = self._tables.get(key)
        if table is None:
            table = build_table(key, self.settings.table_size)
            self._tables[key] = table
            if len(self._tables) > CACHE_SIZE + 1:
                # Evict the oldest set, but never the table of the whole pool.
                for old in self._tables:
                    if old != self._full:
                        del self._tables[old]
                        break
        else:
            self._tables.move_to_end(key)
        return table

    def table_for(self, eligible: Sequence[BackendState]) -> list[str]:
        """The table used when exactly these backends are eligible."""
        return self._table(self._key_of(eligible))

    def pick(self, ctx, eligible):
        if not eligible:
            return None
        key = self._key_of(eligible)
        table = self._table(key)
        if not table:
            return None
        h, inputs = self._key_inputs(ctx)
        slot = h % len(table)
        owner = table[slot]
        chosen = next(b for b in eligible if b.name == owner)
        inputs["table_size"] = len(table)
        inputs["slot"] = slot
        if key != self._full:
            inputs["table_for"] = [name for name, _ in key]
        return Decision(chosen, inputs)
