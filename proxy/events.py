"""Every decision the proxy makes is an event: a frozen dataclass, one JSON object.

The same events feed the access log, the admin API's live stream
(`GET /events`), the request-lookup store (`GET /requests/<id>`), the graders
and the page. An event is serialised at most once, and only when someone
listens: the data plane pays for a dataclass, not for JSON it never sends.

Slow stream subscribers never slow the proxy: each has a bounded buffer that
drops its oldest lines and counts what it dropped (the count is reported in a
`stream_gap` line so a reader knows it missed something).

A subscriber that wants counts more than every single request (the site's
bridge: rates and percentiles per backend, plus a few dozen decisions a tick)
subscribes with `requests="sample"` (or `"summary"`). Then the data-plane
events (request, connection, connection_open) are *counted* in plain
per-subscription counters as they are published, with no JSON, and only a
budget of them per second is serialised and sent in full (a token bucket on
the events' own `ts`; a connection_open that was sent always has its closing
event sent too, so a reader never lists a connection that never ends). Every
`interval` the counters since the previous line are sent as one
`request_stats` line (`RequestStats.line`), exact per pool and backend.
Everything else (state changes, health, admin, drain, pool, warning...) is
never sampled.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import json
import math
import operator
import sys
import time
from typing import ClassVar, Iterable



def _make_encode():
    """One encoder for every event (compact, ASCII, str() of anything else).

    json.dumps() with non-default options builds a new JSONEncoder per call,
    and JSONEncoder.encode a new C encoder per call (plus two Python frames):
    together about a tenth of encoding a whole request event. The C encoder
    it makes is kept and called directly; where there is none (or it takes
    other arguments), JSONEncoder.encode does the same work. Events are trees
    (no cycles), so the circular-reference check is skipped."""
    encoder = json.JSONEncoder(separators=(",", ":"), default=str, check_circular=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return encoder.encode
    try:
        c_encode = make(None, encoder.default, json.encoder.encode_basestring_ascii, None,
                        ":", ",", False, False, True)
        sample = {"a": [1.5, None, True, "\u00e9\n", {"b": 2}], "c": float("nan"), "d": b"x"}
        if "".join(c_encode(sample, 0)) != encoder.encode(sample):
            return encoder.encode
    except (TypeError, ValueError):
        return encoder.encode
    join = "".join

    def encode(value) -> str:
        return join(c_encode(value, 0))

    return encode


_encode = _make_encode()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    type: ClassVar[str] = "event"
    ts: float = dataclasses.field(default_factory=time.time)

    def to_dict(self) -> dict:
        cls = type(self)
        names, values = _getter(cls)
        out = {"type": self.type}
        out.update(zip(names, values(self) if cls not in _FILLING else _read_all(self, values)))
        return out

    def to_json(self) -> str:
        return _encode(self.to_dict())


_FIELDS: dict[type, tuple[tuple[str, ...], object]] = {}


def _getter(cls: type):
    """(field names, attrgetter returning their values as a tuple), cached per class."""
    got = _FIELDS.get(cls)
    if got is None:
        names = tuple(f.name for f in dataclasses.fields(cls) if not f.name.startswith("_"))
        getter = operator.attrgetter(*names)
        values = getter if len(names) > 1 else (lambda obj, _g=getter: (_g(obj),))
        got = _FIELDS[cls] = (names, values)
    return got


def _field_names(cls: type) -> tuple[str, ...]:
    return _getter(cls)[0]


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
    # gRPC: {status, message} from the backend's grpc-status / grpc-message.
    grpc: dict | None = None
    # Waited in the pool's queue (every eligible backend at its limit):
    # {position (1 = first in line; None: the queue was full), outcome
    # (served|timeout|full|left), waited_ms, max_length}; None = never queued.
    queue: dict | None = None
    # Pools with backup backends: {used, eligible_primaries, primaries, threshold,
    # reason}: whether the backups were in this pick, and why.
    backup: dict | None = None
    # Pools with a retry_budget, when a retry was due: {allowed, active_requests,
    # active_retries, limit, reason}; allowed false = skipped by the budget.
    retry_budget: dict | None = None
    # The client address believed, when it is not simply the peer (proxy/trust.py):
    # {ip, from: peer|x-forwarded-for|forwarded|proxy_protocol, trusted_peer,
    # reason, dropped?: headers not believed, proxy_protocol?: {version, via, ...}}.
    client_address: dict | None = None
    # A listener with a zone: {listener_zone, cross_zone, zones (picked among),
    # fallback, reason} (proxy/zones.py).
    zone: dict | None = None
    # "h2" for a request that came as an HTTP/2 stream (None: HTTP/1.x), with its stream id.
    protocol: str | None = None
    stream_id: int | None = None
    # Not part of the event: (build, *args) of a lazy event's fields not set yet
    # (see lazy_request). Never serialised, never compared.
    _lazy: tuple | None = dataclasses.field(default=None, init=False, repr=False,
                                            compare=False)
    # Not part of the event: `candidates` already in JSON, when the pick made it
    # (proxy.runtime.Choice.candidates_json, given as the builder's `_choice`, see
    # _fill), so to_json need not encode it again.
    _candidates_json: str | None = dataclasses.field(default=None, init=False, repr=False,
                                                     compare=False)

    def to_json(self) -> str:
        # The same text as _encode(self.to_dict()), character for character
        # (tests/proxy/test_event_json.py), made with less work when the pick
        # made the candidates' JSON (see _JsonParts).
        lazy = self._lazy
        if lazy is not None:
            values = lazy[0](*lazy[1:])
            choice = values.get("_choice")
            candidates = choice.candidates_json() if choice is not None else None
            if candidates is not None:
                # Not built into the event: the line needs only the values.
                return _REQUEST_JSON.from_values(self, values, candidates)
            _fill(self, values)
        candidates = self._candidates_json
        if candidates is None:
            return _encode(self.to_dict())
        return _REQUEST_JSON.from_fields(self, candidates)


class _JsonParts:
    """A request event's JSON as the fields before `candidates`, the candidates'
    JSON (made by the pick: proxy.runtime.Choice.candidates_json, each
    candidate's text kept), and the fields after: two small encodings joined,
    not one that encodes every candidate again.

    `from_values` makes the line of a lazy event from its builder's values
    without building the event (filling some 20 slots and reading them back
    costs as much as encoding them): the fields it already has, and the
    builder's values (else each field's default) in field order."""

    def __init__(self, cls: type, eager: tuple[str, ...]):
        names = _field_names(cls)
        at = names.index("candidates")
        self.before, self.after = names[:at], names[at + 1:]
        get_before = operator.attrgetter(*self.before)
        get_after = operator.attrgetter(*self.after)
        self.read_all = lambda ev: (get_before(ev), get_after(ev))
        defaults = {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING
                             else f.default) for f in dataclasses.fields(cls)}
        self.head = {"type": cls.type, **{name: defaults[name] for name in self.before}}
        self.tail = {name: defaults[name] for name in self.after}
        self.head_eager = tuple(name for name in self.before if name in eager)
        self.tail_eager = tuple(name for name in self.after if name in eager)
        self.read_head_eager = operator.attrgetter(*self.head_eager)
        self.read_tail_eager = operator.attrgetter(*self.tail_eager)
        self.head_lazy = frozenset(self.before) - frozenset(eager)
        self.tail_lazy = frozenset(self.after) - frozenset(eager)

    def joined(self, head: dict, candidates: str, tail: dict) -> str:
        return "".join((_encode(head)[:-1], ',"candidates":', candidates, ",",
                        _encode(tail)[1:]))

    def from_fields(self, ev: Event, candidates: str) -> str:
        before, after = _read_all(ev, self.read_all)
        head = {"type": ev.type}
        head.update(zip(self.before, before))
        return self.joined(head, candidates, dict(zip(self.after, after)))

    def from_values(self, ev: Event, values: dict, candidates: str) -> str:
        head = self.head.copy()
        head.update(zip(self.head_eager, self.read_head_eager(ev)))
        tail = self.tail.copy()
        tail.update(zip(self.tail_eager, self.read_tail_eager(ev)))
        head_lazy, tail_lazy = self.head_lazy, self.tail_lazy
        for name, value in values.items():
            if name in head_lazy:
                head[name] = value
            elif name in tail_lazy:
                tail[name] = value
        return self.joined(head, candidates, tail)


def encode_json(value) -> str:
    """`value` in JSON exactly as events are written (compact, ASCII, str() of the rest)."""
    return _encode(value)


class _LazySlot:
    """A lazy event's field that is set only when first read (a class attribute in
    place of the slot's own descriptor, which it wraps).

    Reading it reads the slot; an empty slot means the event's rich part is not
    built yet: it is built now, then read. (A `__getattr__` would do the same,
    but a class with one reads *every* attribute through a slower path: the
    counted fields that the metrics and the sampled subscriptions read on every
    request too.) The class's twin (see _Filling) keeps the plain slots."""

    __slots__ = ("slot",)

    def __init__(self, slot):
        self.slot = slot

    def __get__(self, ev, owner=None):
        if ev is None:
            return self.slot
        try:
            return self.slot.__get__(ev, owner)
        except AttributeError:
            lazy = ev._lazy
            if lazy is None:
                raise
            _materialise(ev, lazy)
            return self.slot.__get__(ev, owner)

    def __set__(self, ev, value) -> None:
        self.slot.__set__(ev, value)

    def __delete__(self, ev) -> None:
        self.slot.__delete__(ev)


def _wrap_lazy_fields(cls: type) -> None:
    """Put a _LazySlot on each field of `cls` its lazy constructor leaves unset; its
    twin (_FILLING[cls]) gets the plain slots, for filling and for reading all."""
    twin = _FILLING[cls]
    eager = _LAZY_EAGER[cls]
    for f in dataclasses.fields(cls):
        if f.name in eager or f.name == "_lazy":
            continue
        slot = cls.__dict__[f.name]
        setattr(cls, f.name, _LazySlot(slot))
        setattr(twin, f.name, slot)


def _read_all(ev: Event, getter):
    """getter(ev) for an event of a lazy class: built first if lazy, then read through
    its twin's plain slots (one class switch, not a descriptor call per field)."""
    cls = type(ev)
    lazy = ev._lazy
    if lazy is not None:
        _materialise(ev, lazy)
    _setattr(ev, "__class__", _FILLING[cls])
    try:
        return getter(ev)
    finally:
        ev.__class__ = cls


# The fields a lazy RequestEvent has from the start: what the data plane's own
# readers use on every request (metrics, passive health, drains, sampled
# subscriptions' counters, the request store).
_EAGER = ("ts", "request_id", "pool", "backend", "status", "latency_ms", "bytes_in",
          "bytes_out", "termination", "proxy_error", "error", "retries", "retry_budget",
          "zone", "queue")
_setattr = object.__setattr__
_new = object.__new__


class _Filling(RequestEvent):
    """A RequestEvent while lazy_request fills its slots, then made a RequestEvent.

    Frozen dataclasses route every attribute store through a Python-level
    `__setattr__` (object.__setattr__ from outside costs about as much): 16 of
    them cost more than the rest of the event. This twin has the same slots and
    plain stores (both hooks reset, as they share one type slot), and adds none,
    so the object can be given its real class the moment it is filled: no one
    ever sees a _Filling, and a RequestEvent stays frozen."""

    __slots__ = ()
    __setattr__ = object.__setattr__
    __delattr__ = object.__delattr__


def lazy_request(lazy: tuple, ts: float, request_id: str, pool: str | None,
                 backend: str | None, status: int, latency_ms: float, bytes_in: int,
                 bytes_out: int, termination: str, proxy_error: bool, error: str | None,
                 retries: list, retry_budget: dict | None, zone: dict | None,
                 queue: dict | None) -> RequestEvent:
    """A RequestEvent whose other fields are `build(*args)` (a dict), made on first read;
    `lazy` is `(build, *args)` (one tuple kept per event, not two).

    Building the whole event (candidates, timings, TLS views...) costs more than
    proxying a small request; most are never read in full (no subscriber, no
    access log, never looked up). The values in `args` are the decision-time
    ones, so the event reads the same whenever it is built. Its type is
    RequestEvent, so every reader is unchanged."""
    ev = _new(_Filling)
    ev.ts = ts
    ev.request_id = request_id
    ev.pool = pool
    ev.backend = backend
    ev.status = status
    ev.latency_ms = latency_ms
    ev.bytes_in = bytes_in
    ev.bytes_out = bytes_out
    ev.termination = termination
    ev.proxy_error = proxy_error
    ev.error = error
    ev.retries = retries
    ev.retry_budget = retry_budget
    ev.zone = zone
    ev.queue = queue
    ev._lazy = lazy
    ev.__class__ = RequestEvent
    return ev


def with_lazy_fields(ev: Event, **fields) -> Event:
    """`ev` with more of its lazily built fields given (an HTTP/2 stream's request:
    protocol and stream_id), still lazy: nothing is built until someone reads it.

    `dataclasses.replace` would read every field, building the whole event on
    every request. An event already built (or not lazy) is copied with them."""
    lazy = ev._lazy
    if lazy is None:
        return dataclasses.replace(ev, **fields)
    _setattr(ev, "_lazy", (_extended, lazy, fields))
    return ev


def _extended(lazy: tuple, fields: dict) -> dict:
    return {**lazy[0](*lazy[1:]), **fields}


# Per lazy event class: the fields its lazy constructor sets, and (built on first
# use) the others with their defaults.
_LAZY_EAGER: dict[type, tuple[str, ...]] = {RequestEvent: _EAGER}
_LAZY_DEFAULTS: dict[type, list] = {}
_FILLING: dict[type, type] = {RequestEvent: _Filling}  # each lazy class's twin


def _lazy_defaults(cls: type) -> list:
    """(name, default, default_factory) of each field a lazy `cls` fills when built."""
    defaults = _LAZY_DEFAULTS.get(cls)
    if defaults is None:
        eager = _LAZY_EAGER[cls]
        defaults = _LAZY_DEFAULTS[cls] = [
            (f.name, f.default, f.default_factory) for f in dataclasses.fields(cls)
            if f.name not in eager and f.name != "_lazy"]
    return defaults


def _materialise(ev: Event, lazy: tuple) -> None:
    _setattr(ev, "_lazy", None)
    _fill(ev, lazy[0](*lazy[1:]))


def _fill(ev: Event, values: dict) -> None:
    """Set a lazy event's unset fields from its builder's `values` (else defaults).

    A request's builder may give, in place of `candidates`, the pick itself as
    `_choice` (proxy.runtime.Choice): its `candidates` are then read here, only
    when the event is built, with their JSON (`candidates_json()`)."""
    _setattr(ev, "_lazy", None)
    cls = type(ev)
    defaults = _lazy_defaults(cls)
    choice = values.get("_choice")
    if choice is not None:
        values = dict(values, candidates=choice.candidates,
                      _candidates_json=choice.candidates_json())
    _setattr(ev, "__class__", _FILLING[cls])  # plain stores while filling (see _Filling)
    try:
        for name, default, factory in defaults:
            if name in values:
                value = values[name]
            elif factory is not dataclasses.MISSING:
                value = factory()
            else:
                value = default
            setattr(ev, name, value)
    finally:
        ev.__class__ = cls


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
    backup: dict | None = None  # as RequestEvent.backup
    zone: dict | None = None  # as RequestEvent.zone
    # Not part of the event: a lazy one's fields not set yet (see lazy_connection_open).
    _lazy: tuple | None = dataclasses.field(default=None, init=False, repr=False,
                                            compare=False)


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
    streams: int | None = None  # kind h2: how many streams (requests) it carried
    # Not part of the event: a lazy one's fields not set yet (see lazy_connection).
    _lazy: tuple | None = dataclasses.field(default=None, init=False, repr=False,
                                            compare=False)


# What the data plane's own readers use of an L4 connection's events (metrics,
# drains, sampled subscriptions' counters, the admin stream's pairing of an open
# with its close): set at once by the lazy constructors below; the rest (client,
# candidates, inputs, TLS...) is built from decision-time values on first read.
_LAZY_EAGER[ConnectionOpen] = ("ts", "connection_id", "listener", "pool", "backend")
_LAZY_EAGER[ConnectionEvent] = ("ts", "connection_id", "listener", "pool", "backend",
                                "bytes_in", "bytes_out", "duration_ms", "connect_ms",
                                "closed_by", "error")


class _FillingOpen(ConnectionOpen):
    """ConnectionOpen's twin while being filled (as _Filling is RequestEvent's)."""

    __slots__ = ()
    __setattr__ = object.__setattr__
    __delattr__ = object.__delattr__


class _FillingConnection(ConnectionEvent):
    """ConnectionEvent's twin while being filled (as _Filling is RequestEvent's)."""

    __slots__ = ()
    __setattr__ = object.__setattr__
    __delattr__ = object.__delattr__


_FILLING[ConnectionOpen] = _FillingOpen
_FILLING[ConnectionEvent] = _FillingConnection
for _cls in _FILLING:
    _wrap_lazy_fields(_cls)
_REQUEST_JSON = _JsonParts(RequestEvent, _EAGER)


def lazy_connection_open(lazy: tuple, ts: float, connection_id: str, listener: str,
                         pool: str | None, backend: str | None) -> ConnectionOpen:
    """A ConnectionOpen whose other fields are `build(*args)` (a dict), made on first
    read; as lazy_request, `lazy` is `(build, *args)`, decision-time values."""
    ev = _new(_FillingOpen)
    ev.ts = ts
    ev.connection_id = connection_id
    ev.listener = listener
    ev.pool = pool
    ev.backend = backend
    ev._lazy = lazy
    ev.__class__ = ConnectionOpen
    return ev


def lazy_connection(lazy: tuple, ts: float, connection_id: str, listener: str,
                    pool: str | None, backend: str | None, bytes_in: int, bytes_out: int,
                    duration_ms: float, connect_ms: float | None, closed_by: str,
                    error: str | None) -> ConnectionEvent:
    """A ConnectionEvent whose other fields are `build(*args)` (a dict), made on first
    read; as lazy_request, `lazy` is `(build, *args)`, the values at the close."""
    ev = _new(_FillingConnection)
    ev.ts = ts
    ev.connection_id = connection_id
    ev.listener = listener
    ev.pool = pool
    ev.backend = backend
    ev.bytes_in = bytes_in
    ev.bytes_out = bytes_out
    ev.duration_ms = duration_ms
    ev.connect_ms = connect_ms
    ev.closed_by = closed_by
    ev.error = error
    ev._lazy = lazy
    ev.__class__ = ConnectionEvent
    return ev


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

# Data-plane events a sampled subscription counts (and sends only within budget).
SAMPLED_TYPES = frozenset({"request", "connection", "connection_open"})
_CONNECTION_TYPES = frozenset({"connection", "connection_open"})
# The access log: every request and connection, and every warning (an unverified TLS
# backend, an untrusted PROXY header, refused HTTP/2 streams): an operator reading the log
# must see what the proxy warned about beside the traffic it concerns.
_ACCESS_LOGGED = (RequestEvent, ConnectionEvent, Warning)
# Lines only a stream makes (never published on the bus), valid in ?types=.
STREAM_TYPES = frozenset({"request_stats", "stream_gap"})
REQUEST_MODES = ("all", "sample", "summary")

# Latency histogram: bucket i holds [MIN * 2**(i/PER_OCTAVE), MIN * 2**((i+1)/PER_OCTAVE))
# ms (bucket 0 also everything below MIN). 16 per octave: a bucket is 4.4% wide,
# so a percentile read from it is within ~2.2% of the exact one.
LATENCY_MIN_MS = 0.01
LATENCY_PER_OCTAVE = 16
LATENCY_MAX_BUCKET = 26 * LATENCY_PER_OCTAVE  # 0.01 ms * 2**26 = 11 minutes
_STATUS_CLASS = ("none", "1xx", "2xx", "3xx", "4xx", "5xx")
_log2 = math.log2


def latency_bucket(ms: float) -> int:
    if ms <= LATENCY_MIN_MS:
        return 0
    return min(LATENCY_MAX_BUCKET, int(math.log2(ms / LATENCY_MIN_MS) * LATENCY_PER_OCTAVE))


class _Row:
    """Counts of one (kind, pool, backend) since the last request_stats line."""

    __slots__ = ("count", "errors", "proxy_errors", "opened", "classes", "outcomes",
                 "bytes_in", "bytes_out", "n", "total", "low", "high", "buckets")

    def __init__(self):
        self.count = self.errors = self.proxy_errors = self.opened = 0
        self.bytes_in = self.bytes_out = 0
        self.classes: dict[str, int] = {}  # connections' closed_by (requests': see outcomes)
        # Requests: (status, proxy_error, termination) -> count. One dict update per
        # request; the status classes, terminations and error counts the line reports
        # are derived from it when the line is made (see _fold_outcomes).
        self.outcomes: dict[tuple, int] = {}
        self.n = 0  # latencies seen (a connection that never connected has none)
        self.total = 0.0
        self.low = math.inf
        self.high = 0.0
        self.buckets: dict[int, int] = {}

    def latency(self, ms: float) -> None:
        self.n += 1
        self.total += ms
        if ms < self.low:
            self.low = ms
        if ms > self.high:
            self.high = ms
        i = latency_bucket(ms)  # per connection (requests: RequestStats.count_request)
        self.buckets[i] = self.buckets.get(i, 0) + 1

    def add_outcome(self, outcome: tuple, counted: "_Outcome") -> None:
        """Fold one outcome's requests (RequestStats.count_request) into this row."""
        self.count += counted.count
        self.outcomes[outcome] = counted.count
        self.bytes_in += counted.bytes_in
        self.bytes_out += counted.bytes_out
        self.n += counted.count
        self.total += counted.total
        if counted.low < self.low:
            self.low = counted.low
        if counted.high > self.high:
            self.high = counted.high
        buckets = self.buckets
        for i, n in counted.buckets.items():
            buckets[i] = buckets.get(i, 0) + n

    def request_counts(self) -> tuple[dict, dict]:
        """(status classes, terminations) with their counts, each in first-seen order
        (as counted one by one), and sets errors and proxy_errors, from `outcomes`."""
        statuses: dict[str, int] = {}
        terminations: dict[str, int] = {}
        errors = proxy_errors = 0
        for (status, proxy_error, termination), n in self.outcomes.items():
            if proxy_error or status >= 500 or status <= 0:
                errors += n
            if proxy_error:
                proxy_errors += n
            klass = _STATUS_CLASS[status // 100] if 0 < status < 600 else "none"
            statuses[klass] = statuses.get(klass, 0) + n
            terminations[termination] = terminations.get(termination, 0) + n
        self.errors = errors
        self.proxy_errors = proxy_errors
        return statuses, terminations

    def latency_dict(self) -> dict:
        return {"n": self.n, "sum": round(self.total, 3),
                "min": None if not self.n else round(self.low, 3),
                "max": None if not self.n else round(self.high, 3),
                "buckets": sorted(self.buckets.items())}


class _Outcome:
    """The requests of one (pool, backend, status, proxy_error, termination) since
    the last request_stats line: what a sampled subscription updates per request
    (one lookup by the event's own fields, no call), folded into the line's
    per-backend rows (_Row.add_outcome) only when the line is made."""

    __slots__ = ("count", "bytes_in", "bytes_out", "total", "low", "high", "buckets")

    def __init__(self):
        self.count = self.bytes_in = self.bytes_out = 0
        self.total = 0.0
        self.low = math.inf
        self.high = 0.0
        self.buckets: dict[int, int] = {}


class RequestStats:
    """Exact counts of the data-plane events one subscription saw, between two lines.

    `count(event)` is called from `EventBus.publish` for every request,
    connection and connection_open event: a few dict and integer updates, no
    JSON. `line(now)` renders the counts since the previous line and restarts.
    """

    def __init__(self, mode: str, max_per_s: float, interval: float, now: float):
        self.mode = mode
        self.max_per_s = max_per_s
        self.interval = interval
        self.since = now
        self.rows: dict[tuple, _Row] = {}  # connections': (kind, pool, backend)
        self.requests: dict[tuple, _Outcome] = {}  # see count_request
        self.sent: dict[str, int] = {}  # other kinds than requests
        self.not_sent: dict[str, int] = {}
        self.requests_sent = self.requests_not_sent = 0

    def _row(self, key: tuple) -> _Row:
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = _Row()
        return row

    def count_request(self, event) -> None:
        key = (event.pool, event.backend, event.status, event.proxy_error, event.termination)
        counted = self.requests.get(key)
        if counted is None:
            counted = self.requests[key] = _Outcome()
        ms = event.latency_ms or 0.0
        counted.count += 1
        counted.bytes_in += event.bytes_in
        counted.bytes_out += event.bytes_out
        counted.total += ms
        if ms < counted.low:
            counted.low = ms
        if ms > counted.high:
            counted.high = ms
        # latency_bucket(ms), inlined: this runs per request.
        i = 0 if ms <= LATENCY_MIN_MS else int(
            _log2(ms / LATENCY_MIN_MS) * LATENCY_PER_OCTAVE)
        if i > LATENCY_MAX_BUCKET:
            i = LATENCY_MAX_BUCKET
        buckets = counted.buckets
        buckets[i] = buckets.get(i, 0) + 1

    def count(self, event) -> None:
        kind = event.type
        if kind == "request":
            self.count_request(event)
        elif kind == "connection":
            row = self._row(("connection", event.pool, event.backend))
            row.count += 1
            if event.error:
                row.errors += 1
            closed = "c:" + (event.closed_by or "-")
            classes = row.classes
            classes[closed] = classes.get(closed, 0) + 1
            row.bytes_in += event.bytes_in
            row.bytes_out += event.bytes_out
            if event.connect_ms is not None:
                row.latency(event.connect_ms)
        elif kind == "connection_open":
            self._row(("connection", event.pool, event.backend)).opened += 1

    def empty(self) -> bool:
        return not (self.rows or self.requests or self.sent or self.not_sent
                    or self.requests_sent or self.requests_not_sent)

    def _request_rows(self) -> dict[tuple, _Row]:
        """(pool, backend) -> its requests' row, folded from the outcomes counted."""
        rows: dict[tuple, _Row] = {}
        for (pool, backend, status, proxy_error, termination), counted in self.requests.items():
            row = rows.get((pool, backend))
            if row is None:
                row = rows[(pool, backend)] = _Row()
            row.add_outcome((status, proxy_error, termination), counted)
        return rows

    def line(self, now: float) -> str:
        """The request_stats line for the counts since the last one; counting restarts."""
        rows = []
        every = [(("request", pool, backend), row)
                 for (pool, backend), row in self._request_rows().items()]
        every += self.rows.items()
        for (kind, pool, backend), row in every:
            if kind == "request":
                statuses, terminations = row.request_counts()  # sets row.errors
            out = {"kind": kind, "pool": pool, "backend": backend, "count": row.count,
                   "errors": row.errors}
            if kind == "request":
                out["proxy_errors"] = row.proxy_errors
                out["status"] = statuses
                out["termination"] = terminations
                out["bytes_in"], out["bytes_out"] = row.bytes_in, row.bytes_out
                out["latency_ms"] = row.latency_dict()
            else:
                out["opened"] = row.opened
                out["closed_by"] = {k[2:]: v for k, v in row.classes.items()
                                    if k.startswith("c:")}
                out["bytes_in"], out["bytes_out"] = row.bytes_in, row.bytes_out
                out["connect_ms"] = row.latency_dict()
            rows.append(out)
        line = _encode({
            "type": "request_stats", "ts": now, "since": self.since,
            "mode": self.mode, "max_per_s": self.max_per_s, "interval_s": self.interval,
            "sent": _with_requests(self.sent, self.requests_sent),
            "not_sent": _with_requests(self.not_sent, self.requests_not_sent),
            "latency_buckets": {"min_ms": LATENCY_MIN_MS, "per_octave": LATENCY_PER_OCTAVE},
            "rows": rows,
        })
        self.since = now
        self.rows = {}
        self.requests = {}
        self.sent = {}
        self.not_sent = {}
        self.requests_sent = self.requests_not_sent = 0
        return line


def _with_requests(counts: dict[str, int], requests: int) -> dict[str, int]:
    return dict(counts, request=requests) if requests else counts


class Subscription:
    """A bounded buffer of JSON lines for one stream reader.

    `requests="all"` (the default): every event of the chosen types, as
    published. `"sample"`: data-plane events are counted into `stats` and sent
    in full only up to `max_per_s` a second; `"summary"`: counted, never sent.
    In both, a `request_stats` line is added every `interval` seconds while the
    subscription runs inside an event loop (else call `flush_stats()`).
    """

    def __init__(self, bus: "EventBus", types: frozenset[str] | None, maxlen: int,
                 requests: str = "all", max_per_s: float = 200.0, interval: float = 0.25):
        if requests not in REQUEST_MODES:
            raise ValueError(f"requests must be one of {', '.join(REQUEST_MODES)}, "
                             f"not {requests!r}")
        self._bus = bus
        self.types = types
        self._lines: collections.deque[str] = collections.deque(maxlen=maxlen)
        # The stream's reader waiting for a line (next_batch), woken by _append.
        self._waiter: asyncio.Future | None = None
        self.dropped = 0
        self.requests = requests
        self.stats: RequestStats | None = None
        self._timer: asyncio.TimerHandle | None = None
        if requests != "all":
            rate = 0.0 if requests == "summary" else float(max_per_s)
            now = time.time()
            self.stats = RequestStats(requests, rate, interval, now)
            self._rate = rate
            # A burst of up to one interval's budget, at least one event.
            self._capacity = max(1.0, rate * interval) if rate > 0 else 0.0
            self._tokens = self._capacity
            self._last = now
            self._open_sent: set[str] = set()
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                self._timer = loop.call_later(interval, self._tick, loop)

    # -------------------------------------------------------- filtering

    def wants(self, event: Event) -> bool:
        """Count `event` if sampled; True when it is to be sent in full."""
        kind = event.type
        stats = self.stats
        if stats is not None and kind in SAMPLED_TYPES:
            if kind == "request":  # RequestStats.count's first case, one call saved
                stats.count_request(event)
            else:
                stats.count(event)
            if self.types is not None and kind not in self.types:
                return False
            if kind == "request":
                if self._open_sent:
                    send = self._admit(event, kind)
                else:
                    # _admit's common case, with _take inlined (this runs per request).
                    send = False
                    if self._rate > 0.0:
                        ts = event.ts
                        elapsed = ts - self._last
                        if elapsed > 0.0:
                            self._last = ts
                            tokens = self._tokens + elapsed * self._rate
                            self._tokens = tokens if tokens < self._capacity else self._capacity
                        if self._tokens >= 1.0:
                            self._tokens -= 1.0
                            send = True
                if send:
                    stats.requests_sent += 1
                else:
                    stats.requests_not_sent += 1
                return send
            send = self._admit(event, kind)
            table = stats.sent if send else stats.not_sent
            table[kind] = table.get(kind, 0) + 1
            return send
        return self.types is None or kind in self.types

    def _admit(self, event, kind: str) -> bool:
        if kind == "connection_open":
            if self._take(event.ts):
                if len(self._open_sent) < 10_000:
                    self._open_sent.add(event.connection_id)
                return True
            return False
        if self._open_sent:
            # The end of a connection whose start was sent is always sent.
            key = event.connection_id if kind == "connection" else event.request_id
            if key in self._open_sent:
                self._open_sent.discard(key)
                return True
        return self._take(event.ts)

    def _take(self, ts: float) -> bool:
        """Token bucket on the events' own clock: `max_per_s`, bursts of one interval."""
        if self._rate <= 0.0:
            return False
        elapsed = ts - self._last
        if elapsed > 0.0:
            self._last = ts
            tokens = self._tokens + elapsed * self._rate
            self._tokens = tokens if tokens < self._capacity else self._capacity
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    # -------------------------------------------------------- buffer

    def push(self, event_type: str, line: str) -> None:
        if self.types is not None and event_type not in self.types:
            return
        self._append(line)

    def _append(self, line: str) -> None:
        if len(self._lines) == self._lines.maxlen:
            self.dropped += 1
        self._lines.append(line)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(True)

    def stats_line(self, now: float | None = None) -> str | None:
        """The request_stats line since the last one (None when not sampling)."""
        if self.stats is None:
            return None
        return self.stats.line(time.time() if now is None else now)

    def flush_stats(self, now: float | None = None) -> None:
        """Queue a request_stats line when something was counted since the last one."""
        if self.stats is None or self.stats.empty():
            return
        if self.types is not None and "request_stats" not in self.types:
            self.stats.line(time.time() if now is None else now)  # restart the counts
            return
        self._append(self.stats.line(time.time() if now is None else now))

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self.flush_stats()
        self._timer = loop.call_later(self.stats.interval, self._tick, loop)

    async def next_batch(self, timeout: float | None = None) -> list[str] | None:
        """Wait for at least one line; return all buffered lines (None when `timeout`
        seconds pass first).

        One future and one timer per wait, no task: a stream waits once per batch,
        up to a few hundred times a second while the proxy is busy."""
        if not self._lines:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(timeout, _expire, waiter) if timeout is not None else None
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None
                if timer is not None:
                    timer.cancel()
            if not self._lines:
                return None
        batch = list(self._lines)
        self._lines.clear()
        if self.dropped:
            gap = json.dumps({"type": "stream_gap", "ts": time.time(), "dropped": self.dropped})
            batch.insert(0, gap)
            self.dropped = 0
        return batch

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._bus._subscribers.discard(self)


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(False)


class RequestStore:
    """The newest `history` request events in arrival order, found by id.

    Storing one costs an append and a count: the index by id is brought up to
    date only when someone looks a request up (the site, now and then; under
    load, seldom), not on every request. A lookup first indexes the requests
    stored since the previous lookup, oldest first, so an id sent twice (a
    client's X-Request-Id) finds its newest request; each entry keeps its
    arrival number, and one that has left the ring is not found. Indexing is a
    dict store per request, paid once, by the lookup after it; the first lookup
    after `history` or more new requests rebuilds the index from the ring (about
    1 ms per 10,000 kept). A scan per lookup instead would hold the event loop
    for every lookup (request_history may be a million).
    """

    def __init__(self, history: int):
        self.ring: collections.deque[RequestEvent] = collections.deque(maxlen=history)
        self.history = history
        self.stored = 0  # requests stored so far: the arrival number of the next one
        self._indexed = 0  # how many of them the index has seen
        self._index: dict[str, tuple[int, RequestEvent]] = {}

    def add(self, event: RequestEvent) -> None:
        self.ring.append(event)
        self.stored += 1

    def find(self, request_id: str) -> RequestEvent | None:
        self._catch_up()
        hit = self._index.get(request_id)
        if hit is None or hit[0] < self.stored - len(self.ring):
            return None  # never kept, or left the ring since
        return hit[1]

    def _catch_up(self) -> None:
        new = self.stored - self._indexed
        if not new:
            return
        ring, index = self.ring, self._index
        if new >= len(ring) or len(index) > 2 * self.history:
            index.clear()  # also drops the entries of requests that left the ring
            new = len(ring)
        fresh = list(itertools.islice(reversed(ring), new))
        fresh.reverse()
        for number, event in enumerate(fresh, self.stored - new):
            index[event.request_id] = (number, event)
        self._indexed = self.stored


class EventBus:
    def __init__(self, history: int = 10_000, access_log=None):
        self._subscribers: set[Subscription] = set()
        # Request lookup by id: the newest `history` requests (RequestStore).
        self._requests = RequestStore(history)
        # Recent non-request events (health, admin, drain...) for the site's first paint.
        self._recent: collections.deque[Event] = collections.deque(maxlen=1000)
        # L4 connections (and their opens) apart: at two a connection they would push the
        # rare events (health, admin, drain) out of the ring above within seconds.
        self._connections: collections.deque[Event] = collections.deque(maxlen=1000)
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
        if type(event) is RequestEvent:
            self._requests.add(event)
        elif event.type in _CONNECTION_TYPES:
            self._connections.append(event)
        else:
            self._recent.append(event)
        for sink in self._sinks:
            sink(event)
        log = self.access_log
        if not self._subscribers and log is None:
            return
        # Serialised once, and only if someone is sent it.
        line = None
        if log is not None and isinstance(event, _ACCESS_LOGGED):
            line = event.to_json()
            log.write(line + "\n")
        for sub in self._subscribers:
            if sub.wants(event):
                if line is None:
                    line = event.to_json()
                sub._append(line)

    def subscribe(self, types: Iterable[str] | None = None, maxlen: int = 10_000,
                  requests: str = "all", max_per_s: float = 200.0,
                  interval: float = 0.25) -> Subscription:
        sub = Subscription(self, frozenset(types) if types else None, maxlen,
                           requests=requests, max_per_s=max_per_s, interval=interval)
        self._subscribers.add(sub)
        return sub

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def request(self, request_id: str) -> RequestEvent | None:
        """The newest kept request with this id (a client may send the same one twice)."""
        return self._requests.find(request_id)

    def recent_requests(self, limit: int = 100) -> list[RequestEvent]:
        kept = self._requests.ring
        if limit <= 0 or limit >= len(kept):
            return list(kept)
        return list(itertools.islice(kept, len(kept) - limit, None))

    def recent(self, limit: int = 200) -> list[Event]:
        return list(self._recent)[-limit:]

    def recent_connections(self, limit: int = 200) -> list[Event]:
        return list(self._connections)[-limit:]


def open_access_log(target: str | None):
    """'-' is stdout, a path is appended to (line-buffered), None is no log."""
    if target is None:
        return None
    if target == "-":
        return sys.stdout
    return open(target, "a", buffering=1, encoding="utf-8")
