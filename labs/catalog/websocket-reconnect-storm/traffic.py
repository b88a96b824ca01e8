"""Chat users: each holds one WebSocket to /ws open and reconnects when it is cut.

    LBLAB_SETTINGS='{"reconnect": {"delay_ms": 0, "jitter": false, "max_ms": 10000}}' \
    locust -f labs/catalog/websocket-reconnect-storm/traffic.py --headless -u 48 -t 7s \
        --host URL

A user opens ``ws://HOST/ws?user=uN`` (websocket-client), reads the backend's greeting
and sends a heartbeat message every LBLAB_HEARTBEAT_S (default 0.25 s), reading its echo.
When the tunnel breaks (a close, a reset, no echo within 2 s) the user waits and connects
again, as the lab's ``reconnect`` setting says:

- ``delay_ms`` x 2^(n-1) before the n-th attempt after a cut, capped at ``max_ms``
  (0: at once, what a naive chat client does);
- ``jitter: true``: a uniform wait in [0, that] instead (the AWS Architecture Blog's
  "full jitter"), so users cut at the same instant do not come back at the same instant.

Locust counts "connect" (the handshake and the greeting), "heartbeat" (the echo's round
trip; a failure when the tunnel was cut) and "back after a cut" (how long the user was
without chat).
"""
import itertools
import json
import os
import random
import time

import websocket
from locust import User, events, task

from lblab_common import env_float

HEARTBEAT_S = env_float("LBLAB_HEARTBEAT_S", 0.25)
_SETTINGS = json.loads(os.environ.get("LBLAB_SETTINGS") or "{}").get("reconnect") or {}
DELAY_MS = max(0.0, min(60_000.0, float(_SETTINGS.get("delay_ms", 0))))
MAX_MS = max(0.0, min(60_000.0, float(_SETTINGS.get("max_ms", 10_000))))
JITTER = bool(_SETTINGS.get("jitter", False))
_users = itertools.count(1)


def reconnect_delay(attempt: int) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (1 is the first after a cut)."""
    ceiling = min(MAX_MS, DELAY_MS * 2 ** (attempt - 1)) / 1000.0
    return random.uniform(0, ceiling) if JITTER else ceiling


def fire(name: str, started: float, exc: Exception | None = None) -> None:
    events.request.fire(request_type="WS", name=name,
                        response_time=(time.perf_counter() - started) * 1000,
                        response_length=0, exception=exc, context={})


class ChatUser(User):
    def on_start(self):
        self.url = self.host.replace("http://", "ws://", 1).rstrip("/") + \
            f"/ws?user=u{next(_users)}"
        self.ws = None

    def on_stop(self):
        if self.ws is not None:
            self.ws.close()

    def connect(self, cut: float | None = None) -> None:
        """Connect; after a cut (at ``cut``) wait first, and retry with the lab's backoff."""
        attempt = 0 if cut is None else 1
        while True:
            if attempt:
                time.sleep(reconnect_delay(attempt))
            started = time.perf_counter()
            try:
                self.ws = websocket.create_connection(self.url, timeout=2)
                self.ws.recv()  # the backend's greeting: {"backend": ...}
                fire("connect", started)
                if cut is not None:
                    fire("back after a cut", cut)
                return
            except (OSError, websocket.WebSocketException) as exc:
                fire("connect", started, exc)
                self.ws = None
            attempt += 1

    @task
    def chat(self):
        if self.ws is None:
            self.connect()
        started = time.perf_counter()
        try:
            self.ws.settimeout(2)
            self.ws.send("heartbeat")
            self.ws.recv()
            fire("heartbeat", started)
            # Between heartbeats the client keeps reading, as a chat app does: a cut is
            # seen the moment it happens, not at the next heartbeat.
            self.ws.settimeout(HEARTBEAT_S)
            try:
                self.ws.recv()
            except websocket.WebSocketTimeoutException:
                pass
        except (OSError, websocket.WebSocketException) as exc:
            cut = time.perf_counter()
            fire("heartbeat", started, exc)
            self.ws.close()
            self.ws = None
            self.connect(cut=cut)
