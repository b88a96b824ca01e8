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


class Waiter:
    """Stands for a queued request: on unqueue it is served, refused, or goes back."""

    def __init__(self, queue: WaitQueue, name: str, outcome: str, log: list):
        self.queue, self.name, self.outcome, self.log = queue, name, outcome, log

    def unqueue(self) -> None:
        self.log.append(self.name)
        if self.outcome == "back":  # no free slot: back at the head, keeping its place
            self.queue.admit(self, 10, front=True)


def test_reconsider_wakes_in_order_until_one_finds_no_slot():
    q, log = WaitQueue(), []
    waiters = [Waiter(q, n, o, log) for n, o in
               (("a", "served"), ("b", "served"), ("c", "back"), ("d", "served"))]
    for w in waiters:
        q.admit(w, 10)
    q.reconsider()
    assert log == ["a", "b", "c"]  # c found no slot: d keeps waiting behind it
    assert [w.name for w in q.waiters] == ["c", "d"]


def test_reconsider_refuses_everyone_when_nothing_is_left():
    q, log = WaitQueue(), []
    for n in "abc":
        q.admit(Waiter(q, n, "refused", log), 10)
    q.reconsider()
    assert log == ["a", "b", "c"] and not q.waiters


def test_kick_without_waiters_or_outside_a_loop_does_nothing():
    q = WaitQueue()
    q.kick()
    assert not q.kicked
    q.admit(Waiter(q, "a", "served", []), 10)
    q.kick()  # no running loop here (the runtime alone): nothing scheduled
    assert not q.kicked and len(q) == 1


def test_kick_schedules_one_reconsider_however_many_changes():
    import asyncio

    async def run():
        q, log = WaitQueue(), []
        q.admit(Waiter(q, "a", "served", log), 10)
        q.kick()
        q.kick()
        assert q.kicked and log == []  # not inside the caller's callback
        await asyncio.sleep(0)
        return q, log

    q, log = asyncio.run(run())
    assert log == ["a"] and not q.kicked and not q.waiters
