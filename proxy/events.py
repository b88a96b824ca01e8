"""Every decision the proxy makes is an event: a frozen dataclass, one JSON object.

The same events feed the access log, the admin API's live stream
(`GET /events`), the request-lookup store (`GET /requests/<id>`), the graders
and the page. An event is serialised at most once, and only when someone
listens: the data plane pays for a dataclass, not for JSON it never sends.

Slow stream subscribers never slow the proxy: each has a bounded buffer that
drops its oldest lines and counts what it dropped (the count is reported in a
`stream_gap` line so a reader knows it missed something).
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import sys
import time
from typing import ClassVar, Iterable


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    type: ClassVar[str] = "event"
    ts: float = dataclasses.field(default_factory=time.time)

    def to_dict(self) -> dict:
        out = {"type": self.type}
        for name in _field_names(type(self)):
            out[name] = getattr(self, name)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), default=str)


_FIELDS: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


# ---------------------------------------------------------------- data plane

@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RequestEvent(Event):
    """One HTTP request, from accept to done: the routing decision and its outcome."""

    type: ClassVar[str] = "request"
    request_id: str
    listener: str
    client: str  # ip:port as seen by the proxy
    method: str
    path: str
    host: str | None = None
    route: str | None = None
    pool: str | None = None
    algorithm: str | None = None
    # Each candidate with its state at decision time: name, health, intent, counts...
    candidates: list = dataclasses.field(default_factory=list)
    inputs: dict = dataclasses.field(default_factory=dict)  # the algorithm's inputs
    sticky: dict | None = None  # {"mode", "hit", "target", "reason"}
    # A route that splits between pools: {"weights": {pool: w}, "roll", "chosen"}.
    split: dict | None = None
    backend: str | None = None
    status: int = 0
    latency_ms: float = 0.0
    bytes_in: int = 0  # request body bytes from the client
    bytes_out: int = 0  # response body bytes to the client
    # Two letters, HAProxy style: who ended it (C client, S server, P proxy,
    # - normal) and at which phase (R request, Q queue/pick, C connect,
    # H response headers, D data, - done). "--" is a clean finish.
    termination: str = "--"
    proxy_error: bool = False  # the proxy made this response (not the backend)
    error: str | None = None  # human-readable cause when something went wrong
    retries: list = dataclasses.field(default_factory=list)  # [{backend, error}]
    # Milliseconds since accept of each step: accepted, route_matched,
    # backend_picked, connected, first_byte, done.
    timings: dict = dataclasses.field(default_factory=dict)
    # TLS terminated by the listener: {mode, sni, certificate, matched, version,
    # cipher, alpn, client_cert?}; None on plain HTTP.
    tls: dict | None = None
    # TLS from the proxy to the backend (re-encryption): {server_name, verified,
    # version, subject?}; None when the backend speaks plain HTTP.
    backend_tls: dict | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionOpen(Event):
    """A long-lived connection began: an L4 connection once its backend is chosen, or
    an HTTP connection upgraded to a tunnel (WebSocket) after the backend's 101.

    The page lists it as live (with its age) until the event that closes it: a
    `connection` event with the same connection_id (L4), or the `request` event
    whose request_id is this connection_id (kind "websocket")."""

    type: ClassVar[str] = "connection_open"
    connection_id: str
    listener: str
    client: str
    kind: str = "tcp"  # tcp | tls-passthrough | websocket
    pool: str | None = None
    algorithm: str | None = None
    candidates: list = dataclasses.field(default_factory=list)
    inputs: dict = dataclasses.field(default_factory=dict)
    sticky: dict | None = None
    backend: str | None = None
    tls: dict | None = None  # passthrough: {mode, sni, alpn, versions}; terminate: as requests
    proxy_protocol: str | None = None  # v1 | v2 when the backend gets a PROXY header


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionEvent(Event):
    """One L4 connection, reported when it closes (also a failed TLS handshake: kind tls)."""

    type: ClassVar[str] = "connection"
    connection_id: str
    listener: str
    client: str
    kind: str = "tcp"  # tcp | tls-passthrough | tls (handshake failed on an http listener)
    pool: str | None = None
    algorithm: str | None = None
    candidates: list = dataclasses.field(default_factory=list)
    inputs: dict = dataclasses.field(default_factory=dict)
    sticky: dict | None = None
    backend: str | None = None
    bytes_in: int = 0  # client -> backend
    bytes_out: int = 0  # backend -> client
    duration_ms: float = 0.0
    connect_ms: float | None = None  # TCP connect to the backend
    # Who ended it first: client | backend (FIN or reset) | proxy (idle timeout,
    # drain deadline, no backend, connect failure, refused name, stopping).
    closed_by: str = ""
    error: str | None = None  # why, when it was not a normal close
    retries: list = dataclasses.field(default_factory=list)  # [{backend, error}]
    tls: dict | None = None
    proxy_protocol: str | None = None


# ---------------------------------------------------------------- lifecycle

@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HealthProbe(Event):
    type: ClassVar[str] = "health_probe"
    pool: str
    backend: str
    ok: bool
    detail: str  # "200 in 12 ms", "timeout after 500 ms", "connection refused"
    latency_ms: float = 0.0
    # When probes are coalesced, how many identical results this one stands for.
    count: int = 1


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class StateChange(Event):
    """A backend's observed health or intended state changed, with its cause."""

    type: ClassVar[str] = "state_change"
    pool: str
    backend: str
    kind: str  # "health" | "intent" | "ejection"
    old: str
    new: str
    cause: str  # "3 consecutive failures: timeout after 500 ms"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PoolEvent(Event):
    """Pool-level conditions: panic (fail open), no eligible backend (503)."""

    type: ClassVar[str] = "pool"
    pool: str
    what: str  # "panic_on" | "panic_off" | "no_eligible" ...
    eligible: int = 0
    total: int = 0
    detail: str = ""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DrainEvent(Event):
    type: ClassVar[str] = "drain"
    pool: str
    backend: str
    what: str  # "started" | "cut" | "completed" | "closed_keepalive"
    detail: str = ""
    request_id: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AdminChange(Event):
    """A change made through the admin API (or a config reload)."""

    type: ClassVar[str] = "admin"
    verb: str  # "put_config", "add_backend", "set_weight", "set_algorithm", ...
    target: str
    detail: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Warning(Event):  # noqa: A001 - the event's own name
    type: ClassVar[str] = "warning"
    source: str
    message: str
    # What it is about, when it is about one thing (e.g. an unverified TLS
    # connection to a backend: source "tls", pool, backend).
    pool: str | None = None
    backend: str | None = None
    connection_id: str | None = None


# ---------------------------------------------------------------- the bus

class Subscription:
    """A bounded buffer of JSON lines for one stream reader."""

    def __init__(self, bus: "EventBus", types: frozenset[str] | None, maxlen: int):
        self._bus = bus
        self.types = types
        self._lines: collections.deque[str] = collections.deque(maxlen=maxlen)
        self._wakeup = asyncio.Event()
        self.dropped = 0

    def push(self, event_type: str, line: str) -> None:
        if self.types is not None and event_type not in self.types:
            return
        if len(self._lines) == self._lines.maxlen:
            self.dropped += 1
        self._lines.append(line)
        self._wakeup.set()

    async def next_batch(self) -> list[str]:
        """Wait for at least one line; return all buffered lines."""
        while not self._lines:
            self._wakeup.clear()
            await self._wakeup.wait()
        batch = list(self._lines)
        self._lines.clear()
        if self.dropped:
            gap = json.dumps({"type": "stream_gap", "ts": time.time(), "dropped": self.dropped})
            batch.insert(0, gap)
            self.dropped = 0
        return batch

    def close(self) -> None:
        self._bus._subscribers.discard(self)


class EventBus:
    def __init__(self, history: int = 10_000, access_log=None):
        self._subscribers: set[Subscription] = set()
        # Request lookup by id: the newest `history` requests, oldest evicted.
        self._requests: collections.OrderedDict[str, RequestEvent] = collections.OrderedDict()
        self._history = history
        # Recent non-request events (health, admin, drain...) for the site's first paint.
        self._recent: collections.deque[Event] = collections.deque(maxlen=1000)
        self.access_log = access_log  # a text file object, or None
        self.published = 0
        # In-process consumers (metrics, passive health) get the event object
        # itself, synchronously: they must be quick and must not raise.
        self._sinks: list = []

    def add_sink(self, sink) -> None:
        self._sinks.append(sink)

    def remove_sink(self, sink) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)

    def publish(self, event: Event) -> None:
        self.published += 1
        if isinstance(event, RequestEvent):
            self._requests[event.request_id] = event
            if len(self._requests) > self._history:
                self._requests.popitem(last=False)
        else:
            self._recent.append(event)
        for sink in self._sinks:
            sink(event)
        if not self._subscribers and self.access_log is None:
            return
        line = event.to_json()
        if self.access_log is not None and isinstance(event, (RequestEvent, ConnectionEvent)):
            self.access_log.write(line + "\n")
        for sub in self._subscribers:
            sub.push(event.type, line)

    def subscribe(self, types: Iterable[str] | None = None, maxlen: int = 10_000) -> Subscription:
        sub = Subscription(self, frozenset(types) if types else None, maxlen)
        self._subscribers.add(sub)
        return sub

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def request(self, request_id: str) -> RequestEvent | None:
        return self._requests.get(request_id)

    def recent_requests(self, limit: int = 100) -> list[RequestEvent]:
        items = list(self._requests.values())
        return items[-limit:]

    def recent(self, limit: int = 200) -> list[Event]:
        return list(self._recent)[-limit:]


def open_access_log(target: str | None):
    """'-' is stdout, a path is appended to (line-buffered), None is no log."""
    if target is None:
        return None
    if target == "-":
        return sys.stdout
    return open(target, "a", buffering=1, encoding="utf-8")
