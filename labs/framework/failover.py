"""A balancer pair's failover logic, without I/O: heartbeats, DNS health, resolver caches.

Theory of operation
-------------------
Two ways to survive losing one balancer, each with a clock the learner tunes:

* **Active–passive, floating address** (VRRP, RFC 5798; keepalived beside HAProxy). One
  balancer holds the service address; the standby checks it every ``interval`` and, when
  nothing has answered for ``dead_after``, binds the address itself. VRRP's own rule is
  Master_Down_Interval = 3 x Advertisement_Interval + Skew_Time (RFC 5798 section 6.1):
  three missed adverts. (In VRRP the master multicasts its adverts and the backup only
  listens; on one machine the standby asks instead, which measures the same silence.)
  `Standby` is that standby's state machine; each transition is a `Decision` with the
  reason, which the runner turns into a timeline event.
* **Active–active, DNS round robin**. Both balancers' own addresses are in the DNS answer;
  a health-checked zone drops one after ``fall`` failed checks (as Route 53 health checks
  do, with their failure threshold), but a client keeps using the answer it cached until
  its TTL runs out (RFC 1035 section 3.2.1: TTL is how long a record may be cached).
  `ZoneHealth` is the zone's view, `ResolverCache` one client's.

Everything takes the time as an argument (seconds on any monotonic clock), so the tests
drive it with plain numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

BACKUP, MASTER = "backup", "master"


@dataclass(frozen=True)
class HeartbeatSettings:
    interval: float  # seconds between two heartbeats the standby asks for
    dead_after: float  # seconds without an answer before the standby takes over

    def problems(self) -> list[tuple[str, str]]:
        """(path in the lab: settings, message) for values that cannot work."""
        out = []
        if not 0.02 <= self.interval <= 60:
            out.append(("lab.heartbeat.interval_s", f"give 0.02 to 60 seconds, got "
                        f"{self.interval:g}"))
        if not self.interval <= self.dead_after <= 600:
            out.append(("lab.heartbeat.dead_after_s", f"give at least one interval "
                        f"({self.interval:g} s) and at most 600 s, got {self.dead_after:g}"))
        return out


@dataclass(frozen=True)
class Decision:
    at: float
    old: str
    new: str
    why: str
    missed: int  # heartbeats missed in a row when it was taken
    silent_for: float  # seconds since the peer last answered


class Standby:
    """The standby's side of the pair: ask for a heartbeat when `due`, report the answer
    with `heard`; a `Decision` comes back when its view changes.

    Transitions (old -> new: when):
      backup -> backup   first heartbeat missed ("suspect"), or answered again after misses
      backup -> master   nothing answered for dead_after: take the floating address
      master -> master   never gives it back by itself (no preemption: the old active,
                         if it returns, must not steal the address back mid-traffic)
    """

    def __init__(self, settings: HeartbeatSettings, now: float, peer: str = "the active",
                 address: str = "the floating address"):
        self.settings = settings
        self.peer, self.address = peer, address
        self.role = BACKUP
        self.last_heard = now
        self.missed = 0
        self.next_due = now

    def due(self, now: float) -> bool:
        return now >= self.next_due

    def heard(self, now: float, answered: bool, detail: str = "") -> Decision | None:
        s = self.settings
        self.next_due = now + s.interval
        if self.role == MASTER:
            return None
        if answered:
            missed, self.missed, self.last_heard = self.missed, 0, now
            if missed:
                return Decision(now, BACKUP, BACKUP, f"{self.peer} answered again after "
                                f"{missed} missed heartbeat(s): stay standby", 0, 0.0)
            return None
        self.missed += 1
        silent = now - self.last_heard
        why = f" ({detail})" if detail else ""
        if silent >= s.dead_after - 1e-9:  # sums of intervals land a hair short
            self.role = MASTER
            return Decision(now, BACKUP, MASTER,
                            f"no heartbeat from {self.peer} for {silent:.2f} s ({self.missed} "
                            f"missed at {s.interval:g} s; dead after {s.dead_after:g} s){why}: "
                            f"take over {self.address}", self.missed, silent)
        if self.missed == 1:
            return Decision(now, BACKUP, BACKUP,
                            f"{self.peer} missed a heartbeat{why}; it is declared dead after "
                            f"{s.dead_after:g} s of silence", 1, silent)
        return None


@dataclass(frozen=True)
class ZoneChange:
    node: str
    serving: bool
    why: str


class ZoneHealth:
    """A health-checked DNS zone: a node leaves the answer after ``fall`` failed checks in
    a row and comes back after ``rise`` good ones."""

    def __init__(self, nodes: list[str], fall: int = 2, rise: int = 2):
        if fall < 1 or rise < 1:
            raise ValueError("fall and rise are counts of checks: give 1 or more")
        self.nodes = list(nodes)
        self.fall, self.rise = fall, rise
        self.serving = {n: True for n in nodes}
        self._streak = {n: 0 for n in nodes}  # checks in a row that disagree with serving

    def answer(self) -> list[str]:
        return [n for n in self.nodes if self.serving[n]]

    def checked(self, node: str, ok: bool) -> ZoneChange | None:
        if ok == self.serving[node]:
            self._streak[node] = 0
            return None
        self._streak[node] += 1
        need = self.rise if ok else self.fall
        if self._streak[node] < need:
            return None
        self.serving[node], self._streak[node] = ok, 0
        verb = "back in the answer" if ok else "out of the answer"
        return ZoneChange(node, ok, f"{node} {'passed' if ok else 'failed'} {need} health "
                          f"check(s) in a row: {verb}")


class ResolverCache:
    """One client's cache of a DNS answer: asked again only once ``ttl`` has passed."""

    def __init__(self, ttl: float):
        if ttl < 0:
            raise ValueError("a TTL is 0 seconds or more")
        self.ttl = ttl
        self.answer: list[str] = []
        self.expires = float("-inf")
        self.queries = 0

    def lookup(self, now: float, query: Callable[[], list[str]]) -> list[str]:
        if now >= self.expires or not self.answer:
            self.answer = list(query())
            self.expires = now + self.ttl
            self.queries += 1
        return self.answer
