"""The wait queue's bookkeeping, without sockets (proxy/queueing.py)."""
from proxy.model import BackendState
from proxy.queueing import WaitQueue, backend_full


def test_first_come_first_served_bounded_and_front_for_the_woken():
    q = WaitQueue()
    assert q.admit("a", 2) == 1
    assert q.admit("b", 2) == 2
    assert q.admit("c", 2) is None  # full: refused, counted
    assert q.pop() == "a"
    assert q.admit("a", 2, front=True) == 1  # woken, found no slot: back at the head
    assert list(q.waiters) == ["a", "b"]
    assert q.remove("b") and not q.remove("b")
    snap = q.snapshot(2, 1.0)
    assert snap["depth"] == 1 and snap["queued"] == 2 and snap["full"] == 1


def test_backend_full_counts_in_flight_against_the_limit():
    b = BackendState(name="b1", host="127.0.0.1", port=1, pool="p")
    assert not backend_full(b, None)
    b.outstanding = 2
    assert backend_full(b, 2) and not backend_full(b, 3)
