"""The bridge: the proxy's event stream in, one coalesced tick per ~250 ms out.

Theory of operation. A busy proxy emits thousands of request events a
second; a browser wants a few updates a second. The bridge reads GET /events
(NDJSON, aiohttp streaming) and GET /state (every second), and feeds both
into a `Coalescer`, a plain object with no I/O that is unit-tested alone:

* per backend it keeps a rolling window of (time, latency, error) samples
  (an L4 connection counts as one sample, its latency the TCP connect time),
  from which each tick reports requests/s, errors/s, p50 and p99, plus the
  tick's own counts and, from the latest state, requests in flight;
* it keeps the newest N decisions (request and connection events) per tick,
  counting the ones it dropped, so the page sees real decisions, never a
  flood;
* it keeps every lifecycle event (state_change, pool, drain, admin, warning,
  stream_gap): they are rare and each one matters;
* it keeps the `connection_open` events (an L4 connection or a WebSocket
  tunnel began), so the page lists a new connection at once, before the next
  GET /connections poll;
* it folds health probes to the latest result per backend, with counts.

The bridge subscribes with `?requests=sample` (docs/admin-api.md): the proxy
then sends only about `decisions_per_tick` full request/connection events per
tick, and every tick a `request_stats` line with the exact counts since the
previous one (per pool and backend: requests, errors, status classes, a
latency histogram). The counts, rates and percentiles come from those lines;
the sampled events only fill the decision list. The proxy starts each such
subscription with an empty `request_stats` line, after any replayed history:
events before it (the replay after a reconnect, or everything from a proxy
that does not know the option) are counted one by one, as samples.

With each state poll it also reads GET /connections (the live L4 connections
and tunnels, with age, client, backend and bytes); a proxy without that
endpoint (404/501) is asked once and then left alone.

Every tick (or every second when nothing happens, as a heartbeat) `Bridge`
group_sends `{"type": "lab.tick", ...}` to the Channels group
`sandbox.<id>`; consumers forward it to browsers. When the proxy goes away
the bridge says so in the tick (`proxy.reachable` false, with the reason),
and reconnects with backoff; ticks keep flowing so the page can show it.

The tick (group message; the consumer forwards it with "kind": "tick" instead of
"type"):

    {"type": "lab.tick", "v": 1, "sandbox": id, "seq": n, "ts": unix time,
     "proxy": {"reachable": bool|None, "detail": str, "since": ts},
     "stream": {"connected": bool, "detail": str},
     "decisions": [request/connection events, newest N], "decisions_dropped": int,
     "events": [state_change/pool/drain/admin/warning/stream_gap events], "events_dropped": int,
     "opened": [connection_open events of this tick],
     "probes": {backend: {"pool", "ok": n, "failed": n, "last": {"ok", "detail", "latency_ms", "ts"}}},
     "stats": {"window_s": 5, "totals": {"requests", "errors", "2xx".., "no_backend"},
               "backends": {name: {"rps", "eps", "p50_ms", "p99_ms", "in_flight",
                                   "connections", "requests", "errors"}}},
     "state": GET /state without "config", or null when not polled this tick,
     "connections": GET /connections ({"count", "connections": [...], "ts"}) with the
                    state, or {"unavailable": why}, or null when not polled this tick,
     "diagram": topology Mermaid text with the state, else null,
     "parts": SandboxService.parts() when it changed, else null}

Two ways to run it: `python manage.py bridge` as its own process (needs a
shared channel layer: REDIS_URL), or embedded in the web process
(`EmbeddedBridges`, the default with the in-memory layer), started by the
first consumer of a sandbox and stopped a little after the last leaves.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from typing import Awaitable, Callable

from typing import AsyncIterator

import aiohttp

from labs import diagrams
from labs.sandbox.admin_client import (AdminError, AsyncAdminClient, LineSplitter, Refused,
                                             Unreachable, _why, refused_from)
from explainer.services.sandboxes import SandboxError, group_name

log = logging.getLogger("explainer.bridge")

TICK_VERSION = 1
DECISION_TYPES = ("request", "connection")
OPEN_TYPES = ("connection_open",)
OPENED_PER_TICK = 200
LIFECYCLE_TYPES = ("state_change", "pool", "drain", "admin", "warning", "stream_gap")
STATS_TYPE = "request_stats"
# The proxy's latency histogram (request_stats "latency_buckets"), until a line says otherwise.
DEFAULT_BUCKETS = {"min_ms": 0.01, "per_octave": 16}
# After the stream breaks, ask the proxy for this many past events and keep the
# ones newer than the last one seen: a blip loses nothing the proxy still holds.
REPLAY_ON_RECONNECT = 2000


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), math.ceil(q * len(sorted_values) / 100.0 - 1e-9)))
    return sorted_values[rank - 1]


def _is_error(event: dict) -> bool:
    if event.get("type") == "connection":
        return bool(event.get("error"))
    status = event.get("status") or 0
    return bool(event.get("proxy_error")) or status >= 500 or status == 0


def status_class(event: dict) -> str:
    if event.get("type") == "connection":
        return "err" if event.get("error") else "ok"
    status = event.get("status") or 0
    if status == 0:
        return "none"
    return f"{status // 100}xx"


class BackendWindow:
    """Rolling figures of one backend: single samples (ts, latency_ms, error) and the
    proxy's per-interval counts (ts, count, errors, {bucket: n}, min, max)."""

    __slots__ = ("samples", "max_samples", "aggregates")

    def __init__(self, max_samples: int = 20_000):
        self.samples: collections.deque[tuple[float, float, bool]] = collections.deque()
        self.max_samples = max_samples
        self.aggregates: collections.deque[tuple] = collections.deque()

    def add(self, ts: float, latency_ms: float, error: bool) -> None:
        self.samples.append((ts, latency_ms, error))
        if len(self.samples) > self.max_samples:
            self.samples.popleft()

    def add_counts(self, ts: float, count: int, errors: int, buckets: dict[int, int],
                   low: float | None, high: float | None) -> None:
        self.aggregates.append((ts, count, errors, buckets, low, high))

    def trim(self, oldest: float) -> None:
        while self.samples and self.samples[0][0] < oldest:
            self.samples.popleft()
        while self.aggregates and self.aggregates[0][0] < oldest:
            self.aggregates.popleft()

    def empty(self) -> bool:
        return not self.samples and not self.aggregates

    def figures(self, buckets: dict) -> tuple[int, int, float | None, float | None]:
        """(count, errors, p50, p99) over what the window holds."""
        samples = self.samples
        if not self.aggregates:  # single samples only: exact percentiles
            latencies = sorted(s[1] for s in samples)
            errors = sum(1 for s in samples if s[2])
            return (len(samples), errors, percentile(latencies, 50),
                    percentile(latencies, 99))
        count = len(samples) + sum(a[1] for a in self.aggregates)
        errors = sum(1 for s in samples if s[2]) + sum(a[2] for a in self.aggregates)
        merged: collections.Counter = collections.Counter()
        lows, highs = [], []
        for _, _, _, hist, low, high in self.aggregates:
            merged.update(hist)
            if low is not None:
                lows.append(low)
                highs.append(high)
        for s in samples:
            merged[bucket_of(s[1], buckets)] += 1
            lows.append(s[1])
            highs.append(s[1])
        low, high = (min(lows), max(highs)) if lows else (None, None)
        return (count, errors, hist_percentile(merged, 50, buckets, low, high),
                hist_percentile(merged, 99, buckets, low, high))


def bucket_of(ms: float, buckets: dict) -> int:
    """The proxy's histogram bucket of a latency (proxy.events.latency_bucket)."""
    low, per_octave = buckets["min_ms"], buckets["per_octave"]
    if ms <= low:
        return 0
    return int(math.log2(ms / low) * per_octave)


def hist_percentile(hist: dict[int, int], q: float, buckets: dict, low: float | None,
                    high: float | None) -> float | None:
    """Nearest-rank percentile of a latency histogram: the bucket's geometric middle,
    kept within the window's real minimum and maximum (exact when all are alike)."""
    total = sum(hist.values())
    if total <= 0:
        return None
    rank = max(1, min(total, math.ceil(q * total / 100.0 - 1e-9)))
    seen = 0
    for index in sorted(hist):
        seen += hist[index]
        if seen >= rank:
            value = buckets["min_ms"] * 2 ** ((index + 0.5) / buckets["per_octave"])
            if low is not None:
                value = max(low, min(high, value))
            return value
    return None


class Coalescer:
    """Everything one tick says, built from events and state. No I/O, no clock of its own.

    Feed it with `add(event, now)`, `set_state(state, now)`, `set_proxy(...)`,
    `set_parts(...)`; call `tick(now)` every tick: it returns the message to
    send (or None when nothing happened and no heartbeat is due) and starts
    the next tick's counts.
    """

    def __init__(self, sandbox: str, decisions_per_tick: int = 50, window_s: float = 5.0,
                 events_cap: int = 500, heartbeat_s: float = 1.0, started: float = 0.0):
        self.sandbox = sandbox
        self.decisions_per_tick = decisions_per_tick
        self.window_s = window_s
        self.events_cap = events_cap
        self.heartbeat_s = heartbeat_s
        self.started = started
        self.seq = 0
        self.windows: dict[str, BackendWindow] = {}
        self.state: dict | None = None
        self.proxy = {"reachable": None, "detail": "not contacted yet", "since": started}
        self.stream = {"connected": False, "detail": "not connected yet"}
        self.parts: dict | None = None
        self.connections: dict | None = None
        # True once this stream's opening request_stats line came: from then on the
        # counts come from request_stats lines and decisions only fill the list.
        self.counts_from_stats = False
        self._samples: list[dict] = []  # sampled decisions waiting for their request_stats
        self._samples_cut = 0
        self.buckets = dict(DEFAULT_BUCKETS)
        self._last_sent = float("-inf")
        self._new_tick()

    def _new_tick(self) -> None:
        self._decisions: collections.deque[dict] = collections.deque(
            maxlen=self.decisions_per_tick)
        self._decisions_seen = 0
        self._events: list[dict] = []
        self._events_dropped = 0
        self._probes: dict[str, dict] = {}
        self._counts: dict[str, dict] = {}
        self._totals = collections.Counter()
        self._counted = 0  # requests and connections counted this tick (both ways)
        self._state_changed = False
        self._parts_changed = False
        self._status_changed = False
        self._opened: list[dict] = []
        self._connections_changed = False

    # ------------------------------------------------------------ inputs

    def add(self, event: dict, now: float) -> None:
        kind = event.get("type")
        if kind in DECISION_TYPES:
            self._add_decision(event, now)
        elif kind == STATS_TYPE:
            self._add_stats(event, now)
        elif kind == "health_probe":
            self._add_probe(event)
        elif kind in OPEN_TYPES:
            if len(self._opened) < OPENED_PER_TICK:
                self._opened.append(event)
        elif kind in LIFECYCLE_TYPES:
            if len(self._events) < self.events_cap:
                self._events.append(event)
            else:
                self._events_dropped += 1
        # Unknown types are ignored on purpose: newer proxies may say more.

    def stream_opened(self) -> None:
        """A new /events connection: count decisions until its opening request_stats."""
        self.counts_from_stats = False
        self._release_samples()  # their stats line was lost with the old stream

    def _release_samples(self) -> None:
        for event in self._samples:
            self._decisions_seen += 1
            self._decisions.append(event)
        self._decisions_seen += self._samples_cut
        self._samples = []
        self._samples_cut = 0

    def _add_decision(self, event: dict, now: float) -> None:
        if self.counts_from_stats:
            # A sample: the next request_stats line counts it (the proxy queues that
            # line after it); held until then, so a decision and its count share a tick.
            self._samples.append(event)
            if len(self._samples) > self.decisions_per_tick:
                self._samples.pop(0)
                self._samples_cut += 1  # seen, never shown (told with its count)
            return
        self._decisions_seen += 1
        self._decisions.append(event)
        if event.get("type") == "connection" and event.get("kind") == "h2":
            return  # an HTTP/2 connection carries requests: each stream is counted as one
        self._counted += 1
        error = _is_error(event)
        klass = status_class(event)
        self._totals["requests"] += 1
        self._totals[klass] += 1
        if error:
            self._totals["errors"] += 1
        backend = event.get("backend")
        if not backend:
            self._totals["no_backend"] += 1
            return
        if event.get("type") == "connection":
            # An L4 connection's duration is how long the client stayed, not how fast the
            # backend was: its "latency" is the TCP connect time (what least_response_time
            # averages at L4 too).
            latency = event.get("connect_ms") or 0.0
        else:
            latency = event.get("latency_ms") or 0.0
        window = self.windows.get(backend)
        if window is None:
            window = self.windows[backend] = BackendWindow()
        # The bridge's clock, not the event's: the window must line up with ticks.
        window.add(now, float(latency), error)
        counts = self._counts.setdefault(backend, {"requests": 0, "errors": 0})
        counts["requests"] += 1
        if error:
            counts["errors"] += 1

    def _add_stats(self, event: dict, now: float) -> None:
        """A request_stats line: the exact counts of one interval, per pool and backend."""
        self.counts_from_stats = True
        self._release_samples()
        if isinstance(event.get("latency_buckets"), dict):
            self.buckets = {**DEFAULT_BUCKETS, **event["latency_buckets"]}
        for row in event.get("rows") or []:
            count = int(row.get("count") or 0)
            if count <= 0:
                continue  # e.g. connections that opened but have not closed yet
            errors = int(row.get("errors") or 0)
            if (row.get("kind") == "connection" and not row.get("pool")
                    and not row.get("backend") and not errors):
                # HTTP/2 connections (no pool: each stream is routed on its own, and
                # counted as a request): counting them too would read as "no backend".
                continue
            self._counted += count
            self._totals["requests"] += count
            self._totals["errors"] += errors
            if row.get("kind") == "connection":
                self._totals["err"] += errors
                self._totals["ok"] += count - errors
                latency = row.get("connect_ms") or {}
            else:
                for klass, n in (row.get("status") or {}).items():
                    self._totals[klass] += n
                latency = row.get("latency_ms") or {}
            backend = row.get("backend")
            if not backend:
                self._totals["no_backend"] += count
                continue
            window = self.windows.get(backend)
            if window is None:
                window = self.windows[backend] = BackendWindow()
            hist = {int(i): int(n) for i, n in latency.get("buckets") or []}
            # A connection that never connected has no connect time: it counts, with
            # no latency (the histogram holds fewer entries than the count).
            window.add_counts(now, count, errors, hist, latency.get("min"), latency.get("max"))
            counts = self._counts.setdefault(backend, {"requests": 0, "errors": 0})
            counts["requests"] += count
            counts["errors"] += errors

    def _add_probe(self, event: dict) -> None:
        backend = event.get("backend") or "?"
        probe = self._probes.get(backend)
        count = int(event.get("count", 1) or 1)
        if probe is None:
            probe = self._probes[backend] = {"pool": event.get("pool"), "ok": 0, "failed": 0}
        probe["ok" if event.get("ok") else "failed"] += count
        probe["last"] = {"ok": bool(event.get("ok")), "detail": event.get("detail", ""),
                         "latency_ms": event.get("latency_ms", 0.0), "ts": event.get("ts")}

    def set_state(self, state: dict, now: float) -> None:
        self.state = state
        self._state_changed = True

    def set_connections(self, connections: dict | None, now: float) -> None:
        """GET /connections as read with the state (the page's open-connections panel)."""
        self.connections = connections
        self._connections_changed = True

    def set_proxy(self, reachable: bool, detail: str, now: float) -> None:
        if reachable != self.proxy["reachable"] or (not reachable and detail != self.proxy["detail"]):
            self.proxy = {"reachable": reachable, "detail": detail, "since": now}
            self._status_changed = True

    def set_stream(self, connected: bool, detail: str) -> None:
        if connected != self.stream["connected"]:
            self._status_changed = True
        self.stream = {"connected": connected, "detail": detail}

    def set_parts(self, parts: dict | None) -> None:
        if parts != self.parts:
            self.parts = parts
            self._parts_changed = True

    # ------------------------------------------------------------ output

    def stats(self, now: float) -> dict:
        span = max(1.0, min(self.window_s, now - self.started))
        oldest = now - self.window_s
        backends: dict[str, dict] = {}
        in_flight = {}
        for pool in ((self.state or {}).get("pools") or {}).values():
            for b in pool.get("backends") or []:
                in_flight[b.get("name")] = (b.get("outstanding", 0), b.get("active_connections", 0))
        names = list(dict.fromkeys([*in_flight, *self.windows]))
        for name in names:
            window = self.windows.get(name)
            if window is not None:
                window.trim(oldest)
                count, errors, p50, p99 = window.figures(self.buckets)
            else:
                count, errors, p50, p99 = 0, 0, None, None
            outstanding, conns = in_flight.get(name, (0, 0))
            tick = self._counts.get(name, {"requests": 0, "errors": 0})
            backends[name] = {
                "rps": round(count / span, 2),
                "eps": round(errors / span, 2),
                "p50_ms": None if p50 is None else round(p50, 2),
                "p99_ms": None if p99 is None else round(p99, 2),
                "in_flight": outstanding,
                "connections": conns,
                "requests": tick["requests"],
                "errors": tick["errors"],
            }
        for name in [n for n, w in self.windows.items() if w.empty() and n not in in_flight]:
            del self.windows[name]  # a removed backend, quiet for a whole window
        return {"window_s": self.window_s, "backends": backends,
                "totals": dict(self._totals)}

    def rates(self, stats: dict) -> dict[str, float]:
        return {name: s["rps"] for name, s in stats["backends"].items()}

    def tick(self, now: float, force: bool = False) -> dict | None:
        """The message for this tick, or None if there is nothing to say yet."""
        busy = (self._decisions_seen or self._counted or self._events or self._probes or self._state_changed
                or self._parts_changed or self._status_changed or self._opened
                or self._connections_changed)
        if not (busy or force or now - self._last_sent >= self.heartbeat_s):
            return None
        self.seq += 1
        stats = self.stats(now)
        message = {
            "type": "lab.tick",
            "v": TICK_VERSION,
            "sandbox": self.sandbox,
            "seq": self.seq,
            "ts": now,
            "proxy": dict(self.proxy),
            "stream": dict(self.stream),
            "decisions": list(self._decisions),
            # Not forwarded: came but did not fit, or (sampled) counted but not sent.
            "decisions_dropped": (max(self._decisions_seen, self._counted)
                                  - len(self._decisions)),
            "events": self._events,
            "events_dropped": self._events_dropped,
            "opened": self._opened,
            "probes": self._probes,
            "stats": stats,
            "state": None,
            "diagram": None,
            "connections": self.connections if self._connections_changed else None,
            "parts": self.parts if self._parts_changed else None,
        }
        if self._state_changed and self.state is not None:
            message["state"] = slim_state(self.state)
            message["diagram"] = diagrams.topology(self.state, self.rates(stats))
        self._last_sent = now
        self._new_tick()
        return message


def slim_state(state: dict) -> dict:
    """GET /state without the full config echo (the page reads pools, not config)."""
    return {k: v for k, v in state.items() if k != "config"}


# ---------------------------------------------------------------- the runner

Sender = Callable[[dict], Awaitable[None]]


class Bridge:
    """Runs the coalescer against a live admin API and sends each tick."""

    def __init__(self, sandbox: str, admin_url: str | Callable[[], str], send: Sender,
                 tick_s: float = 0.25, state_every_s: float = 1.0, parts_every_s: float = 2.0,
                 parts: Callable[[], dict | None] | None = None,
                 decisions_per_tick: int = 50, clock: Callable[[], float] = time.time,
                 sample: bool = True):
        self.sandbox = sandbox
        self._admin_url = admin_url
        self.send = send
        self.tick_s = tick_s
        self.state_every_s = state_every_s
        self.parts_every_s = parts_every_s
        self.parts = parts
        self.clock = clock
        self.coalescer = Coalescer(sandbox, decisions_per_tick=decisions_per_tick,
                                   started=clock())
        self.max_backoff = 5.0
        # Ask the proxy for about one tick's worth of decisions per tick, plus exact
        # counts every tick (False: every event, counted here one by one).
        self.sample = sample
        self._resolved: str | None = None
        self._connections_supported = True

    def admin_url(self) -> str:
        """The admin URL, resolved once and again after each failure (a sandbox may move)."""
        if self._resolved is None:
            self._resolved = (self._admin_url() if callable(self._admin_url)
                              else self._admin_url).rstrip("/")
        return self._resolved

    def _forget_url(self) -> None:
        self._resolved = None

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            tasks = [asyncio.create_task(self._events_loop(session), name="bridge-events"),
                     asyncio.create_task(self._state_loop(session), name="bridge-state"),
                     asyncio.create_task(self._tick_loop(), name="bridge-tick")]
            if self.parts is not None:
                tasks.append(asyncio.create_task(self._parts_loop(), name="bridge-parts"))
            try:
                await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    def _client(self) -> AsyncAdminClient:
        return AsyncAdminClient(self.admin_url())

    async def _events_loop(self, session: aiohttp.ClientSession) -> None:
        backoff = 0.25
        last_ts = None  # newest event seen: after a reconnect, replay what came since
        while True:
            try:
                client = self._client()
                replay = REPLAY_ON_RECONNECT if last_ts is not None else 0

                def opened(url=client.base_url):
                    self.coalescer.stream_opened()
                    self.coalescer.set_stream(True, f"reading {url}/events")

                async for event in self._stream(client, session, replay, opened):
                    ts = event.get("ts")
                    if replay and last_ts is not None and isinstance(ts, (int, float)):
                        if ts <= last_ts:
                            continue  # seen before the break
                    if isinstance(ts, (int, float)):
                        last_ts = ts if last_ts is None else max(last_ts, ts)
                    self.coalescer.add(event, self.clock())
                    backoff = 0.25
                detail = "the proxy closed the event stream"
            except (AdminError, SandboxError) as exc:
                detail = exc.message
            except Exception as exc:  # resolving the sandbox failed, or a bug: keep trying
                detail = f"{type(exc).__name__}: {exc}"
                log.exception("bridge %s: event stream failed", self.sandbox)
            self.coalescer.set_stream(False, detail)
            self._forget_url()
            log.info("bridge %s: %s; reconnecting in %.2fs", self.sandbox, detail, backoff)
            await asyncio.sleep(backoff)
            backoff = min(self.max_backoff, backoff * 2)

    def stream_query(self, replay: int) -> dict[str, str]:
        query = {"replay": str(replay)}
        if self.sample:
            per_tick = self.coalescer.decisions_per_tick
            query.update(requests="sample",
                         max_per_s=str(max(1, math.ceil(per_tick / self.tick_s))),
                         interval_ms=str(max(50, round(self.tick_s * 1000))))
        return query

    async def _stream(self, client: AsyncAdminClient, session: aiohttp.ClientSession,
                      replay: int, on_open) -> AsyncIterator[dict]:
        """GET /events with the sampling options, one dict per line (as client.stream)."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=client.timeout, sock_read=None)
        url = client.base_url + "/events"
        try:
            async with session.get(url, params=self.stream_query(replay),
                                   headers=client.headers, timeout=timeout) as resp:
                if resp.status >= 400:
                    raise refused_from(resp.status, await resp.read(),
                                       f"{client.what} at {client.base_url}")
                on_open()
                splitter = LineSplitter()
                async for chunk in resp.content.iter_any():
                    for event in splitter.feed(chunk):
                        yield event
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise Unreachable(f"the event stream at {url} broke: {_why(exc)}") from None

    async def _state_loop(self, session: aiohttp.ClientSession) -> None:
        while True:
            try:
                client = self._client()
                state = await client.state(session=session)
                self.coalescer.set_state(state, self.clock())
                self.coalescer.set_proxy(True, f"admin API at {client.base_url} answers",
                                         self.clock())
                await self._poll_connections(client, session)
            except Unreachable as exc:
                self._forget_url()
                self.coalescer.set_proxy(False, f"proxy unreachable: {exc.message}", self.clock())
            except AdminError as exc:
                self.coalescer.set_proxy(False, f"proxy answered with an error: {exc.message}",
                                         self.clock())
            except SandboxError as exc:
                self._forget_url()
                self.coalescer.set_proxy(False, exc.message, self.clock())
            except Exception as exc:
                log.exception("bridge %s: state poll failed", self.sandbox)
                self.coalescer.set_proxy(False, f"{type(exc).__name__}: {exc}", self.clock())
            await asyncio.sleep(self.state_every_s)

    async def _poll_connections(self, client: AsyncAdminClient,
                                session: aiohttp.ClientSession) -> None:
        if not self._connections_supported:
            return
        try:
            data = await client.connections(session=session)
        except Refused as exc:
            if exc.status in (404, 501):  # an older proxy, or no live view: stop asking
                self._connections_supported = False
                self.coalescer.set_connections({"unavailable": exc.message}, self.clock())
            return
        if isinstance(data, dict):
            self.coalescer.set_connections({**data, "ts": self.clock()}, self.clock())

    async def _parts_loop(self) -> None:
        while True:
            try:
                parts = await asyncio.to_thread(self.parts)
            except Exception as exc:
                parts = {"sandbox": {"alive": False, "detail": f"{type(exc).__name__}: {exc}"}}
            self.coalescer.set_parts(parts)
            await asyncio.sleep(self.parts_every_s)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            message = self.coalescer.tick(self.clock())
            if message is None:
                continue
            try:
                await self.send(message)
            except Exception:  # a full channel or a Redis hiccup: the next tick retries
                log.exception("bridge %s: sending tick %s failed", self.sandbox, message["seq"])


def channel_sender(sandbox: str, layer=None) -> Sender:
    """group_send each tick to `sandbox.<id>` on the (default) channel layer."""
    if layer is None:
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
    group = group_name(sandbox)

    async def send(message: dict) -> None:
        await layer.group_send(group, message)

    return send


# ---------------------------------------------------------------- embedded mode

class EmbeddedBridges:
    """Bridges running inside the web process, one per watched sandbox.

    With the in-memory channel layer a separate bridge process could not reach
    this process's consumers, so the first consumer of a sandbox starts its
    bridge here and the last one's departure stops it after `linger` seconds
    (a page reload must not restart the stream).
    """

    def __init__(self, factory: Callable[[str], Bridge], linger: float = 30.0):
        self.factory = factory
        self.linger = linger
        self.tasks: dict[str, asyncio.Task] = {}
        self.users: collections.Counter = collections.Counter()
        self._stoppers: dict[str, asyncio.TimerHandle] = {}

    def acquire(self, sandbox: str) -> None:
        self.users[sandbox] += 1
        stopper = self._stoppers.pop(sandbox, None)
        if stopper is not None:
            stopper.cancel()
        task = self.tasks.get(sandbox)
        if task is None or task.done():
            bridge = self.factory(sandbox)
            self.tasks[sandbox] = asyncio.get_running_loop().create_task(
                bridge.run(), name=f"embedded-bridge-{sandbox}")

    def release(self, sandbox: str) -> None:
        self.users[sandbox] -= 1
        if self.users[sandbox] > 0:
            return
        del self.users[sandbox]
        loop = asyncio.get_running_loop()
        self._stoppers[sandbox] = loop.call_later(self.linger, self._stop, sandbox)

    def _stop(self, sandbox: str) -> None:
        self._stoppers.pop(sandbox, None)
        if self.users.get(sandbox):
            return
        task = self.tasks.pop(sandbox, None)
        if task is not None:
            task.cancel()

    def running(self) -> list[str]:
        return [s for s, t in self.tasks.items() if not t.done()]


    async def stop_all(self) -> None:
        """Cancel every bridge now (shutdown, tests)."""
        for handle in self._stoppers.values():
            handle.cancel()
        self._stoppers.clear()
        tasks = list(self.tasks.values())
        self.tasks.clear()
        self.users.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
