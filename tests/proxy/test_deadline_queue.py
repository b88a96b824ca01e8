"""Deadlines of one duration on one shared timer (proxy.io.DeadlineQueue).

The L4 relay puts every connection's connect timeout on such a queue instead of
an event-loop timer of its own. What must hold: each deadline fires once, never
before its time, in the order set; a cancelled one never fires; one moved later
or earlier fires at its new time; and the queue does not keep a finished
connection alive until its entry comes up.
"""
from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from proxy.io import Deadline, DeadlineQueue, deadline_queue

SECONDS = 0.05


class Owner:
    """Stands for a connection: its Deadline calls back into it."""

    def __init__(self, loop, name: str, fired: list):
        self.name = name
        self.fired = fired
        self.loop = loop
        self.deadline = Deadline(loop, self.on_timer)
        self.due: float | None = None

    def on_timer(self) -> None:
        self.fired.append((self.name, self.loop.time(), self.due))

    def start(self, queue: DeadlineQueue) -> None:
        self.deadline.after_in(queue)
        self.due = self.deadline.when


@pytest.mark.asyncio
async def test_each_fires_once_in_order_and_never_early():
    loop = asyncio.get_running_loop()
    queue = DeadlineQueue(loop, SECONDS)
    fired: list = []
    owners = []
    for n in range(5):
        owner = Owner(loop, f"c{n}", fired)
        owner.start(queue)
        owners.append(owner)
        await asyncio.sleep(0.005)
    await asyncio.sleep(SECONDS + 0.2)
    assert [name for name, _, _ in fired] == ["c0", "c1", "c2", "c3", "c4"]
    assert all(at + 0.001 >= due for _, at, due in fired)
    assert len(queue) == 0


@pytest.mark.asyncio
async def test_cancelled_cleared_and_moved_deadlines():
    loop = asyncio.get_running_loop()
    queue = DeadlineQueue(loop, SECONDS)
    fired: list = []
    cancelled, cleared, later, earlier = (Owner(loop, n, fired)
                                          for n in ("cancelled", "cleared", "later", "earlier"))
    for owner in (cancelled, cleared, later, earlier):
        owner.start(queue)
    cancelled.deadline.cancel()
    cleared.deadline.clear()
    later.deadline.set(loop.time() + 3 * SECONDS)  # on its own timer once the queue's comes
    later.due = later.deadline.when
    earlier.deadline.set(loop.time() + SECONDS / 5)
    earlier.due = earlier.deadline.when
    await asyncio.sleep(4 * SECONDS + 0.2)
    assert [name for name, _, _ in fired] == ["earlier", "later"]
    assert all(at + 0.001 >= due for _, at, due in fired)


@pytest.mark.asyncio
async def test_the_queue_does_not_keep_a_finished_connection_alive():
    loop = asyncio.get_running_loop()
    queue = DeadlineQueue(loop, SECONDS)
    fired: list = []
    owner = Owner(loop, "gone", fired)
    owner.start(queue)
    owner.deadline.cancel()
    gone = weakref.ref(owner)
    del owner
    gc.collect()
    assert gone() is None and len(queue) == 1  # the entry stays, without its owner
    await asyncio.sleep(SECONDS + 0.2)
    assert fired == [] and len(queue) == 0


@pytest.mark.asyncio
async def test_a_deadline_re_armed_after_firing_waits_on_the_queue_again():
    loop = asyncio.get_running_loop()
    fired: list = []
    owner = Owner(loop, "again", fired)
    owner.start(deadline_queue(loop, SECONDS))
    await asyncio.sleep(SECONDS + 0.2)
    owner.start(deadline_queue(loop, SECONDS))
    await asyncio.sleep(SECONDS + 0.2)
    assert [name for name, _, _ in fired] == ["again", "again"]
    assert deadline_queue(loop, SECONDS) is deadline_queue(loop, SECONDS)
    assert deadline_queue(loop, 2 * SECONDS) is not deadline_queue(loop, SECONDS)
