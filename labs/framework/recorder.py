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
    def __init__(self, admin_url: str, token: str | None = None):
        parts = urlsplit(admin_url)
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
        deadline = time.monotonic() + timeout
        last = self.requests_seen
        still_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            n = self.requests_seen
            if n != last:
                last, still_since = n, time.monotonic()
            elif time.monotonic() - still_since >= quiet:
                return

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
