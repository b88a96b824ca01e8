"""Maglev's table build: the heap of turns gives exactly the paper's round-robin
table, at a cost that no choice of weights can blow up."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from proxy.balancers.hashing import stable_hash
from proxy.balancers.maglev import build_table
from proxy.config import MAX_TABLE_SIZE


def reference(members, size):
    """The loop over every backend per iteration, as in the paper (weights as in Envoy)."""
    members = sorted((n, w) for n, w in members if w > 0)
    if not members:
        return []
    names = [n for n, _ in members]
    weights = [w for _, w in members]
    top = max(weights)
    offsets = [stable_hash(n, salt=b"maglev-offset") % size for n in names]
    skips = [stable_hash(n, salt=b"maglev-skip") % (size - 1) + 1 for n in names]
    nexts, targets, table, filled, iteration = [0] * len(names), [0] * len(names), \
        [-1] * size, 0, 0
    while filled < size:
        iteration += 1
        for i in range(len(names)):
            if iteration * weights[i] < targets[i]:
                continue
            targets[i] += top
            j = nexts[i]
            slot = (offsets[i] + j * skips[i]) % size
            while table[slot] >= 0:
                j += 1
                slot = (offsets[i] + j * skips[i]) % size
            table[slot] = i
            nexts[i] = j + 1
            filled += 1
            if filled == size:
                break
    return [names[i] for i in table]


@settings(max_examples=300, deadline=None)
@given(weights=st.lists(st.integers(0, 1000), min_size=1, max_size=12),
       size=st.sampled_from([7, 11, 13, 101, 251, 1009, 4099]))
def test_same_table_as_the_paper_loop(weights, size):
    members = [(f"b{i}", w) for i, w in enumerate(weights)]
    if sum(1 for w in weights if w) > size:
        return
    assert build_table(members, size) == reference(members, size)


def test_one_heavy_backend_among_many_light_ones_builds():
    # With the per-iteration loop this was M x N steps (7 s here); now M log N.
    members = [("heavy", 1000)] + [(f"b{i}", 1) for i in range(999)]
    table = build_table(members, MAX_TABLE_SIZE)
    assert len(table) == MAX_TABLE_SIZE
    assert table.count("heavy") > MAX_TABLE_SIZE // 3
