"""What a run recorded, as graders see it: plain data plus a few questions it can answer.

A `Recording` holds the proxy's events (each as the JSON object the admin stream sent,
plus ``t``: lab seconds since the traffic started), locust's final statistics, the
runner's timeline (every fault and admin action as it really happened, with its time), the
config that was tried and the lab's targets. It has no I/O and no clock: graders are pure
functions of it, so they are tested on recorded runs (``Recording.from_json``) as well as
on live ones.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from labs.framework.timescale import TimeScale


@dataclass
class Recording:
    slug: str
    time_scale: float
    t0: float  # wall-clock time (the events' ts) of lab second 0: the first request
    duration: float  # lab seconds of traffic asked for
    config: dict  # the proxy config tried (as written, before the sandbox's addresses)
    settings: dict = field(default_factory=dict)  # the lab: settings (defaults filled in)
    events: list[dict] = field(default_factory=list)
    stats: dict = field(default_factory=dict)  # locust's numbers (labs.traffic.parse_stats)
    timeline: list[dict] = field(default_factory=list)  # {"t", "kind", "what", "label"...}
    targets: dict = field(default_factory=dict)
    answers: dict | None = None
    traffic: dict = field(default_factory=dict)  # profile, users, driver, ended_at (lab s)
    sandbox: dict = field(default_factory=dict)  # id, start_seconds, memory
    notes: list[str] = field(default_factory=list)  # what went wrong around the run itself
    # What died while the traffic ran ({"t", "part", "what"}): a run with any entry here
    # cannot be graded (labs/framework/watchdog.py).
    broken: list[dict] = field(default_factory=list)

    # -- time --------------------------------------------------------------------------

    @property
    def scale(self) -> TimeScale:
        return TimeScale(self.time_scale)

    @property
    def end(self) -> float:
        """Lab second the traffic ended (the last request event if later)."""
        ended = self.traffic.get("ended_at") or self.duration
        last = max((e["t"] for e in self.requests()), default=0.0)
        return max(ended, last)

    # -- events ------------------------------------------------------------------------

    def of_type(self, *types: str) -> list[dict]:
        return [e for e in self.events if e.get("type") in types]

    def requests(self, start: float | None = None, end: float | None = None,
                 where: Callable[[dict], bool] | None = None) -> list[dict]:
        """Request events that *started* in [start, end) lab seconds (their ts is when they
        finished, so the start is ts - latency)."""
        out = []
        for e in self.events:
            if e.get("type") != "request":
                continue
            t = started_at(e)
            if start is not None and t < start:
                continue
            if end is not None and t >= end:
                continue
            if where is None or where(e):
                out.append(e)
        return out

    def state_changes(self, backend: str | None = None, new: str | None = None,
                      kind: str | None = None) -> list[dict]:
        return [e for e in self.events if e.get("type") == "state_change"
                and (backend is None or e.get("backend") == backend)
                and (new is None or e.get("new") == new)
                and (kind is None or e.get("kind") == kind)]

    def first_change(self, backend: str, new: str, after: float = float("-inf"),
                     kind: str | None = None) -> dict | None:
        for e in self.state_changes(backend, new, kind):
            if e["t"] >= after:
                return e
        return None

    def marks(self, label: str | None = None, kind: str | None = None) -> list[dict]:
        return [m for m in self.timeline
                if (label is None or m.get("label") == label)
                and (kind is None or m.get("kind") == kind)]

    def mark(self, label: str) -> dict | None:
        found = self.marks(label)
        return found[0] if found else None

    def request(self, request_id: str) -> dict | None:
        for e in self.events:
            if e.get("type") == "request" and e.get("request_id") == request_id:
                return e
        return None

    # -- serialisation -----------------------------------------------------------------

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Recording":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), separators=(",", ":"), default=str))

    @classmethod
    def load(cls, path: Path) -> "Recording":
        return cls.from_json(json.loads(Path(path).read_text()))


# ---------------------------------------------------------------- request questions

def started_at(event: dict) -> float:
    return event["t"] - float(event.get("latency_ms") or 0) / 1000.0


def failed(event: dict) -> bool:
    """What a user would call a failed request: a 5xx, no answer, or a cut response."""
    status = int(event.get("status") or 0)
    term = event.get("termination") or "--"
    if term[:1] == "C":  # the client left: not something the system did to it
        return False
    return status >= 500 or status in (0, 408) or term in _FAILED_TERMINATIONS


_FAILED_TERMINATIONS = {"SH", "SD", "PQ", "PC", "PH", "PD", "P-"}


def error_code(event: dict) -> str:
    """The proxy's X-LBLab-Error code for a response it made, else what the backend sent."""
    if event.get("proxy_error"):
        return _PROXY_CODES.get((int(event.get("status") or 0), event.get("termination")),
                                f"proxy-{event.get('status')}")
    status = int(event.get("status") or 0)
    term = event.get("termination") or "--"
    if term == "SD":
        return "cut-mid-body"
    if status >= 500:
        return f"backend-{status}"
    return "ok" if status and status < 400 else f"status-{status}"


# (status, termination) -> code, following docs/errors.md; a few codes share a pair and
# are told apart by the event's error text in `cause_of`.
_PROXY_CODES = {
    (502, "SH"): "backend-closed", (503, "PQ"): "no-backend", (503, "PC"): "connect-failed",
    (504, "PH"): "response-timeout", (502, "PD"): "drain-cut", (408, "PR"): "header-timeout",
    (404, "PR"): "no-route", (500, "P-"): "internal", (413, "PR"): "body-too-large",
}


def cause_of(event: dict) -> str:
    """The docs/errors.md code of a failed request, reading the error text when needed."""
    code = error_code(event)
    err = (event.get("error") or "").lower()
    if code == "backend-closed" and ("not a valid" in err or "bad response" in err
                                     or "invalid" in err):
        return "bad-response"
    if code == "no-backend" and ("limit" in err or "max_connections" in err):
        return "backend-limit"
    if code == "header-timeout" and ("body" in err):
        return "body-timeout"
    return code


def count_by(events: Iterable[dict], key: Callable[[dict], object]) -> dict:
    out: dict = {}
    for e in events:
        k = key(e)
        out[k] = out.get(k, 0) + 1
    return out


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(round(q / 100.0 * len(ordered) + 0.5))))
    return ordered[rank - 1]
