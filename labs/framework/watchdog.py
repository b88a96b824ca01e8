"""Which parts of the sandbox died while a lab ran (so the run is not graded as normal).

Theory of operation
-------------------
A grader reads the proxy's events. If the proxy dies mid-run the events simply stop, and
"0 requests failed" would look like a pass; if a toy backend dies for a reason the lab did
not plan, the failures it causes are not the ones the lab is about. So while the traffic
runs, the runner polls the sandbox's driver (``part_states``: each part's pid and whether
it still runs; a host pid for the process driver, a pid in the container's own namespace
asked of its ``serve`` for the container and swarm drivers, labs/sandbox/drivers.py)
and feeds it to a `PartWatch`, which turns what changed into deaths: a part whose process
is gone, or whose pid changed (a supervisor started it again), is a death at that lab
second, unless the lab itself is stopping or starting that part right then (a planned
crash, a restart, a rolling deploy, an autoscaler replacing an instance): the runner
says so with ``expect(part)`` before and ``settled(part, pid)`` after.

``PartWatch`` does no I/O and reads no clock: the runner passes lab seconds in, so it is
tested with plain dictionaries.
"""
from __future__ import annotations

import threading


class PartWatch:
    def __init__(self, pids: dict[str, int | None]):
        self.known: dict[str, int | None] = dict(pids)
        self.expected: set[str] = set()
        self.down: set[str] = set()  # reported dead, not seen running again yet
        self.deaths: list[dict] = []
        self._lock = threading.Lock()

    def expect(self, part: str) -> None:
        """The lab is about to stop or restart ``part``: what happens to it is planned."""
        with self._lock:
            self.expected.add(part)

    def settled(self, part: str, pid: int | None, planned_down: bool = False) -> None:
        """The planned change is over: ``pid`` is the part's process from now on
        (``planned_down``: the lab left it stopped, e.g. a crash fault)."""
        with self._lock:
            self.known[part] = pid
            self.down.discard(part)
            if not planned_down:
                self.expected.discard(part)

    def check(self, t: float, parts: dict[str, tuple[int | None, bool]]) -> list[dict]:
        """``parts``: {part: (pid, running)} now. Returns the deaths seen in this check."""
        new = []
        with self._lock:
            for part, (pid, running) in parts.items():
                if part in self.expected:
                    continue
                if part in self.down:
                    if running:  # started again by someone else: from now on it is its pid
                        self.known[part] = pid
                        self.down.discard(part)
                    continue
                before = self.known.get(part)
                if not running:
                    new.append({"t": t, "part": part,
                                "what": f"{_name(part)} (pid {before}) stopped running"})
                    self.down.add(part)
                elif before is not None and pid != before:
                    new.append({"t": t, "part": part,
                                "what": f"{_name(part)} (pid {before}) died and was started "
                                        f"again as pid {pid}"})
                    self.known[part] = pid
            self.deaths += new
        return new


def _name(part: str) -> str:
    return "the proxy" if part == "proxy" else f"backend {part}"
