"""Helpers for the anchor-feature tests: a gated backend, clients in threads, /state polls.

- `GatedBackend`: a RecordingBackend whose answers wait until the test opens
  the gate (`release()`), so a test holds backend slots as long as it needs
  without sleeping; each answer names the backend (`name`).
- `Client`: one request on a new connection, run in a thread; `.result()`.
- `wait_for(fn)`: poll a condition (bounded) - a wait, never a timed assertion.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request

from tests.proxy.edge.harness import EdgeProxy, RecordingBackend, exchange


class GatedBackend(RecordingBackend):
    def __init__(self, name: str = "b", gated: bool = True):
        self.name = name
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.arrived = 0
        self.headers_seen: list[bytes] = []
        super().__init__(reply=self._reply)

    def _reply(self, target: bytes, conn) -> bytes:
        self.arrived += 1
        self.gate.wait(20)
        body = self.name.encode() + b" " + target
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)

    def release(self) -> None:
        self.gate.set()


class Client(threading.Thread):
    def __init__(self, port: int, path: str = "/", headers: str = "", source: str | None = None):
        super().__init__(daemon=True)
        self.port = port
        self.data = (f"GET {path} HTTP/1.1\r\nHost: h\r\nX-Request-Id: {path.strip('/') or 'r'}"
                     f"\r\n{headers}Connection: close\r\n\r\n").encode()
        self.replies = None
        self.start()

    def run(self) -> None:
        self.replies, _ = exchange(self.port, self.data, count=1, timeout=20)

    def result(self):
        self.join(25)
        assert self.replies, "no response"
        return self.replies[0]


def wait_for(condition, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"waited {timeout}s for {what}")


def state(proxy: EdgeProxy) -> dict:
    async def read():
        return proxy.server.runtime.state()
    return proxy.call(read())


def admin_get(proxy: EdgeProxy, path: str) -> bytes:
    port = proxy.server.admin.port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return resp.read()


def admin_json(proxy: EdgeProxy, path: str) -> dict:
    return json.loads(admin_get(proxy, path))


def event(proxy: EdgeProxy, request_id: str):
    found = wait_for(lambda: proxy.requests(request_id), what=f"event {request_id}")
    return found[0]


def config(pools: dict, listener: dict | None = None, routes: dict | None = None) -> dict:
    return {
        "admin": {"listen": "127.0.0.1:0"},
        "listeners": {"web": {"bind": "127.0.0.1:0", "routes": ["all"], **(listener or {})}},
        "routes": routes or {"all": {"forward": "p"}},
        "pools": pools,
    }


def backend_entry(name: str, backend: RecordingBackend, **extra) -> dict:
    host, port = backend.address
    return {"name": name, "address": f"{host}:{port}", **extra}


__all__ = ["asyncio"]
