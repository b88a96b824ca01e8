"""Record the proxy's events while a lab runs: one thread reading ``GET /events`` (NDJSON).

The stream is opened before the runner changes anything, so the config change, the
health checks that follow and every request are all in the recording. Listeners
(the runner's watchers) are called for each event from the reader thread; they must be
quick. A ``stream_gap`` line (the proxy dropped lines for a slow reader) is kept as a
note: the grader's evidence then says the recording is incomplete.
"""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from typing import Callable
from urllib.parse import urlsplit


class EventRecorder:
    def __init__(self, admin_url: str, token: str | None = None, tag: str | None = None):
        parts = urlsplit(admin_url)
        self.tag = tag  # several balancers: each event gets "proxy": tag
        self.host, self.port = parts.hostname, parts.port or 80
        self.token = token
        self.events: list[dict] = []
        self.gaps = 0
        self.requests_seen = 0
        self.error: str | None = None
        self.ended_at: float | None = None  # wall time the stream broke, if it did
        self._lock = threading.Lock()
        self._listeners: list[Callable[[dict], None]] = []
        self._conn: http.client.HTTPConnection | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._opened = threading.Event()

    def add_listener(self, fn: Callable[[dict], None]) -> None:
        self._listeners.append(fn)

    def start(self, timeout: float = 5.0) -> "EventRecorder":
        self._thread = threading.Thread(target=self._run, name="lab-events", daemon=True)
        self._thread.start()
        if not self._opened.wait(timeout):
            raise RuntimeError(f"the proxy's event stream at {self.host}:{self.port}/events did "
                               f"not open within {timeout:g}s: {self.error or 'no answer'}")
        if self.error:
            raise RuntimeError(self.error)
        return self

    def _run(self) -> None:
        try:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            self._conn = conn
            headers = {"Accept": "application/x-ndjson"}
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            conn.request("GET", "/events", headers=headers)
            resp = conn.getresponse()
            if resp.status != 200:
                self.error = f"GET /events answered {resp.status}: {resp.read(300)!r}"
                self._opened.set()
                return
            conn.sock.settimeout(None)
            self._opened.set()
            while not self._stopping:
                line = resp.readline()
                if not line:
                    break
                line = line.strip()
                if not line:
                    continue
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if event.get("type") == "stream_gap":
                    self.gaps += int(event.get("dropped") or 0)
                    continue
                if self.tag is not None:
                    event["proxy"] = self.tag
                with self._lock:
                    self.events.append(event)
                    if event.get("type") in ("request", "connection"):
                        self.requests_seen += 1
                for fn in self._listeners:
                    try:
                        fn(event)
                    except Exception as exc:  # a watcher bug must not stop the recording
                        self.error = f"a watcher failed on an event: {exc!r}"
            if not self._stopping and self._opened.is_set() and self.error is None:
                # The proxy closed the stream while the run still wanted it: it stopped.
                self.ended_at = time.time()
                self.error = "the proxy's event stream ended (the proxy closed it)"
        except Exception as exc:  # closing the socket under readline() ends up here too
            if not self._stopping:
                self.ended_at = time.time()
                self.error = f"event stream ended: {type(exc).__name__}: {exc}"
        finally:
            self._opened.set()

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self.events)

    def since(self, ts: float) -> list[dict]:
        with self._lock:
            return [e for e in self.events if e.get("ts", 0) >= ts]

    def wait_quiet(self, quiet: float = 0.3, timeout: float = 3.0) -> None:
        """Wait until no request event arrived for ``quiet`` seconds (the last requests
        are in; health probes go on forever and do not count)."""
        wait_until_quiet(lambda: self.requests_seen, quiet, timeout)

    def stop(self) -> list[dict]:
        self._stopping = True
        conn = self._conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        if self._thread is not None:
            self._thread.join(timeout=3)
        return self.snapshot()


class MultiRecorder:
    """The event streams of several balancers as one recording, each event tagged with
    ``proxy`` (its balancer's name). Same interface as EventRecorder for the runner.

    A balancer the lab crashes on purpose ends its stream: ``expect_end(name)`` first, so
    that end is not an error; ``reopen(name)`` records it again once it is back."""

    def __init__(self, admin_urls: dict[str, str], token: str | None = None):
        self.urls = dict(admin_urls)
        self.token = token
        self.parts: list[EventRecorder] = []
        self._listeners: list[Callable[[dict], None]] = []
        self._ending: set[str] = set()

    def _open(self, name: str) -> EventRecorder:
        rec = EventRecorder(self.urls[name], token=self.token, tag=name)
        for fn in self._listeners:
            rec.add_listener(fn)
        rec.start()
        self.parts.append(rec)
        return rec

    def start(self, timeout: float = 5.0) -> "MultiRecorder":
        for name in self.urls:
            self._open(name)
        return self

    def add_listener(self, fn: Callable[[dict], None]) -> None:
        self._listeners.append(fn)
        for rec in self.parts:
            rec.add_listener(fn)

    def expect_end(self, name: str) -> None:
        self._ending.add(name)

    def reopen(self, name: str) -> None:
        self._ending.discard(name)
        self._open(name)

    def _merged(self, events: list[dict]) -> list[dict]:
        return sorted(events, key=lambda e: e.get("ts", 0))

    def snapshot(self) -> list[dict]:
        return self._merged([e for rec in self.parts for e in rec.snapshot()])

    def since(self, ts: float) -> list[dict]:
        return self._merged([e for rec in self.parts for e in rec.since(ts)])

    @property
    def requests_seen(self) -> int:
        return sum(rec.requests_seen for rec in self.parts)

    @property
    def gaps(self) -> int:
        return sum(rec.gaps for rec in self.parts)

    def _unplanned(self) -> list[EventRecorder]:
        return [rec for rec in self.parts if rec.error and rec.tag not in self._ending
                and rec is self._latest(rec.tag)]

    def _latest(self, name: str) -> EventRecorder:
        return [rec for rec in self.parts if rec.tag == name][-1]

    @property
    def error(self) -> str | None:
        bad = self._unplanned()
        return "; ".join(f"{rec.tag}: {rec.error}" for rec in bad) if bad else None

    @property
    def ended_at(self) -> float | None:
        ends = [rec.ended_at for rec in self._unplanned() if rec.ended_at is not None]
        return min(ends) if ends else None

    def wait_quiet(self, quiet: float = 0.3, timeout: float = 3.0) -> None:
        wait_until_quiet(lambda: self.requests_seen, quiet, timeout)

    def stop(self) -> list[dict]:
        for rec in self.parts:
            rec.stop()
        return self.snapshot()


def wait_until_quiet(count, quiet: float, timeout: float) -> None:
    """Return once ``count()`` (requests seen) has not moved for ``quiet`` seconds, or at
    ``timeout``."""
    deadline = time.monotonic() + timeout
    last, still_since = count(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        n = count()
        if n != last:
            last, still_since = n, time.monotonic()
        elif time.monotonic() - still_since >= quiet:
            return
