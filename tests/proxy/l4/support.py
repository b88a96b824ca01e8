"""L4 test helpers: configs, game clients through the proxy, small byte-level servers.

Every socket has a timeout and every wait is bounded (a loaded 2-core machine is slow,
never wrong).
"""
from __future__ import annotations

import hashlib
import json
import socket
import threading
import time

from labs.backend.testing import GameClient

TIMEOUT = 10.0


def tcp_config(pools: dict, listener: dict | None = None, pool: str | None = None,
               extra_listeners: dict | None = None) -> dict:
    """One tcp listener `game` relaying to `pool` (default: the first pool)."""
    lst = {"bind": "127.0.0.1:0", "protocol": "tcp", "pool": pool or next(iter(pools))}
    lst.update(listener or {})
    return {"admin": {"listen": "127.0.0.1:0"},
            "listeners": {"game": lst, **(extra_listeners or {})},
            "pools": pools}


def game_backends(handles) -> list[dict]:
    return [{"name": h.name, "address": f"127.0.0.1:{h.port}"} for h in handles]


def game(port: int, source: str | None = None, timeout: float = TIMEOUT) -> GameClient:
    return GameClient("127.0.0.1", port, timeout=timeout,
                      source_address=(source, 0) if source else None)


def backend_of(client: GameClient) -> str:
    """'HELLO from g2' -> 'g2'."""
    assert client.greeting.startswith("HELLO from "), client.greeting
    return client.greeting.rsplit(" ", 1)[1]


def connection_events(proxy, count: int = 1, timeout: float = TIMEOUT, **match) -> list[dict]:
    """Wait for `count` connection events (from the access log) matching `match`."""
    def ok(ev):
        return ev.get("type") == "connection" and all(ev.get(k) == v for k, v in match.items())
    return proxy.wait_events(ok, count=count, timeout=timeout)


def wait_for(predicate, timeout: float = TIMEOUT, interval: float = 0.02, what: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def live_connections(proxy) -> list[dict]:
    status, body = proxy.admin("GET", "/connections")
    assert status == 200, body
    return body["connections"]


def recent_events(proxy, types: str, replay: int = 500, timeout: float = 3.0) -> list[dict]:
    """The past events of `types` from GET /events?replay=N (read until quiet)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", proxy.admin_port, timeout=timeout)
    out = []
    try:
        conn.request("GET", f"/events?types={types}&replay={replay}")
        resp = conn.getresponse()
        assert resp.status == 200
        conn.sock.settimeout(0.5)  # the stream never ends: stop when it is quiet
        while True:
            try:
                line = resp.readline()
            except (socket.timeout, TimeoutError):
                break
            if not line:
                break
            if line.strip():
                out.append(json.loads(line))
    finally:
        conn.close()
    return out


# ---------------------------------------------------------------- tiny servers

class ThreadServer:
    """A listening socket on 127.0.0.1 with one thread per connection running `handle(sock)`."""

    def __init__(self, handle):
        self.handle = handle
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(30)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn):
        try:
            self.handle(conn)
        except BaseException as exc:  # reported by the test through .errors
            self.errors.append(exc)
        finally:
            conn.close()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self):
        self.closed = True
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def echo(conn: socket.socket) -> None:
    """Every byte back (blocking sends: a slow reader stalls this server, as it should)."""
    while True:
        data = conn.recv(65536)
        if not data:
            conn.shutdown(socket.SHUT_WR)
            return
        conn.sendall(data)


def reply_after_eof(conn: socket.socket) -> None:
    """Read until the client's EOF, then say how many bytes and which hash, and close."""
    h = hashlib.sha256()
    n = 0
    while True:
        data = conn.recv(65536)
        if not data:
            break
        h.update(data)
        n += len(data)
    conn.sendall(f"got {n} bytes sha256 {h.hexdigest()}\n".encode())


def pattern(size: int) -> bytes:
    block = bytes(range(256)) * 256
    return (block * (size // len(block) + 1))[:size]
