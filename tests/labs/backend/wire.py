"""Raw-socket helpers for the toy backend tests: every operation has a timeout."""

from __future__ import annotations

import json
import socket
import time
from typing import Callable

TIMEOUT = 3.0


def connect(port: int, host: str = "127.0.0.1", timeout: float = TIMEOUT) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


class Incomplete(Exception):
    def __init__(self, expected: int, got: bytes):
        super().__init__(f"body cut short: {len(got)} of {expected} bytes")
        self.expected = expected
        self.partial = got


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Reply {self.status} {self.body[:120]!r}>"


def read_response(f, head: bool = False) -> Reply:
    """Read exactly one response from a buffered socket file (Content-Length bodies)."""
    line = f.readline()
    if not line:
        raise EOFError("connection closed before a response")
    status = int(line.split()[1])
    headers: dict[str, str] = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    if not head and status >= 200 and "content-length" in headers:
        n = int(headers["content-length"])
        body = f.read(n)
        if len(body) < n:
            raise Incomplete(n, body)
    return Reply(status, headers, body)


def exchange(port: int, raw: bytes, host: str = "127.0.0.1", timeout: float = TIMEOUT) -> Reply:
    with connect(port, host, timeout) as sock:
        sock.sendall(raw)
        with sock.makefile("rb") as f:
            return read_response(f)


def eventually(check: Callable[[], object], timeout: float = 3.0, interval: float = 0.02):
    """Poll ``check`` until it returns a truthy value; fail with its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {value!r})")
        time.sleep(interval)
