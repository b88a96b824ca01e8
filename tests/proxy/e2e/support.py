"""End-to-end helpers: a real proxy process, configs, clients (fixtures: conftest.py).

- `ProxyProcess(config)`: `python -m proxy --config FILE` with listeners and
  the admin API on port 0; the ports are read from its "listening" line. The
  access log goes to a temp file, one JSON event per line (`.events()`,
  `.event(request_id)`), which is how tests see termination codes.
- Client helpers: `request` (http.client, optional source address so tests
  can be "different clients"), `Session` (one keep-alive connection) and
  `raw` (exact bytes in, bytes out, for malformed input).

Every socket operation has a timeout and every wait is bounded.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from labs.backend.testing import BackendHandle, free_port
from proxy.http1.chunked import decode_chunked

REPO = Path(__file__).resolve().parents[3]
LISTENING = re.compile(r"lblab proxy listening: (.*)")
TIMEOUT = 10.0


# ====================================================================== proxy process

class ProxyProcess:
    def __init__(self, config_path: Path, access_log: Path):
        self.config_path = config_path
        self.access_log = access_log
        self.ports: dict[str, int] = {}
        self.admin_port: int | None = None
        self._lines: deque[str] = deque(maxlen=400)
        self._ready = threading.Event()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "--config", str(config_path), "--grace", "1"],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT)
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self._lines.append(line)
            m = LISTENING.search(line)
            if m and not self._ready.is_set():
                for part in m.group(1).split(";"):
                    words = part.split()
                    if words[0] == "admin":
                        self.admin_port = int(words[1].rpartition(":")[2])
                    else:
                        self.ports[words[0]] = int(words[2].rpartition(":")[2])
                self._ready.set()

    def wait_ready(self, timeout: float = 20.0) -> "ProxyProcess":
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self.process.poll() is not None:
                self._reader.join(1.0)
                raise RuntimeError(f"proxy exited with {self.process.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"proxy did not start in {timeout}s:\n{self.output()}")
        return self

    def output(self) -> str:
        return "\n".join(self._lines)

    @property
    def pid(self) -> int:
        return self.process.pid

    def port(self, listener: str = "web") -> int:
        return self.ports[listener]

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self._reader.join(2.0)
        return self.process.returncode

    # ------------------------------------------------------------ observing

    def events(self) -> list[dict]:
        if not self.access_log.exists():
            return []
        out = []
        # The proxy may be writing the last line right now: only complete lines count.
        complete = self.access_log.read_text(encoding="utf-8").split("\n")[:-1]
        for line in complete:
            if line.strip():
                out.append(json.loads(line))
        return out

    def event(self, request_id: str, timeout: float = 5.0) -> dict:
        """The request event with this id (waits for the access log line)."""
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events():
                if ev.get("request_id") == request_id:
                    return ev
            if time.monotonic() > deadline:
                raise AssertionError(f"no event for request {request_id} in {self.access_log}")
            time.sleep(0.02)

    def wait_events(self, predicate, count: int = 1, timeout: float = 5.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            found = [ev for ev in self.events() if predicate(ev)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} matching events, found {len(found)}: "
                                     f"{found[-3:]}")
            time.sleep(0.02)

    def admin(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=TIMEOUT)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=payload,
                         headers={"Content-Type": "application/json"} if payload else {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, json.loads(data) if data else {}
        finally:
            conn.close()

    def backend_state(self, pool: str, name: str) -> dict:
        status, state = self.admin("GET", "/state")
        assert status == 200, state
        for b in state["pools"][pool]["backends"]:
            if b["name"] == name:
                return b
        raise KeyError(name)

    def rss_kb(self, field: str = "VmRSS") -> int:
        with open(f"/proc/{self.pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise RuntimeError(f"no {field} for {self.pid}")


def base_config(pools: dict, routes: dict | None = None, listeners: dict | None = None,
                access_log: Path | None = None) -> dict:
    """A config with one `web` listener (all routes, in order) unless `listeners` is given."""
    routes = routes if routes is not None else {"all": {"forward": next(iter(pools))}}
    config = {
        "admin": {"listen": "127.0.0.1:0"},
        "listeners": listeners or {"web": {"bind": "127.0.0.1:0", "routes": list(routes)}},
        "routes": routes,
        "pools": pools,
    }
    if access_log is not None:
        config["access_log"] = str(access_log)
    return config


def backend_entry(handle: BackendHandle, name: str | None = None, **extra) -> dict:
    return {"name": name or handle.name, "address": f"127.0.0.1:{handle.port}", **extra}


# ====================================================================== clients

class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes,
                 raw_headers: list[tuple[str, str]] | None = None):
        self.status = status
        self.headers = headers  # lower-case names
        self.body = body
        self.raw_headers = raw_headers or []

    def json(self):
        return json.loads(self.body)

    @property
    def request_id(self) -> str:
        return self.headers.get("x-request-id", "")

    @property
    def backend(self) -> str | None:
        return self.headers.get("x-backend")

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.headers.get('x-lblab-error', '')} {self.body[:120]!r}>"


def _wrap(resp: http.client.HTTPResponse) -> Response:
    body = resp.read()
    items = resp.getheaders()
    return Response(resp.status, {k.lower(): v for k, v in items}, body, items)


def request(port: int, method: str = "GET", path: str = "/", headers: dict | None = None,
            body=None, source: str | None = None, timeout: float = TIMEOUT,
            encode_chunked: bool = False) -> Response:
    """One request on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request(method, path, body=body, headers=headers or {},
                     encode_chunked=encode_chunked)
        return _wrap(conn.getresponse())
    finally:
        conn.close()


class Session:
    """One keep-alive client connection."""

    def __init__(self, port: int, source: str | None = None, timeout: float = TIMEOUT):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                               source_address=(source, 0) if source else None)

    def request(self, method: str = "GET", path: str = "/", headers: dict | None = None,
                body=None) -> Response:
        self.conn.request(method, path, body=body, headers=headers or {})
        return _wrap(self.conn.getresponse())

    def get(self, path: str = "/", **kw) -> Response:
        return self.request("GET", path, **kw)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def connect(port: int, timeout: float = TIMEOUT, source: str | None = None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                    source_address=(source, 0) if source else None)
    sock.settimeout(timeout)
    return sock


def read_until_close(sock: socket.socket, limit: int = 10 * 1024 * 1024) -> bytes:
    chunks = []
    size = 0
    while size < limit:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not data:
            break
        chunks.append(data)
        size += len(data)
    return b"".join(chunks)


def raw(port: int, data: bytes, timeout: float = TIMEOUT) -> bytes:
    """Send exact bytes, return everything the proxy sends until it closes (or timeout)."""
    with connect(port, timeout) as sock:
        sock.sendall(data)
        return read_until_close(sock)


def parse_response(data: bytes) -> Response:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    items = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:] if line]
    return Response(status, {k.lower(): v for k, v in items}, body, items)


def _chunked_end(buf: bytes) -> int | None:
    """Where a chunked body (without trailers) that starts buf ends, or None if incomplete."""
    pos = 0
    while True:
        end = buf.find(b"\r\n", pos)
        if end < 0:
            return None
        size = int(buf[pos:end].split(b";")[0], 16)
        pos = end + 2
        if size == 0:
            return pos + 2 if len(buf) >= pos + 2 else None
        if len(buf) < pos + size + 2:
            return None
        pos += size + 2


class RawConn:
    """A raw client socket with a read buffer: exact bytes out, responses in."""

    def __init__(self, port: int, timeout: float = TIMEOUT, source: str | None = None):
        self.sock = connect(port, timeout, source)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def response(self) -> Response:
        """Read exactly one response (Content-Length, chunked, or no body)."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise ConnectionError(f"closed before a response head: {self.buf!r}")
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        resp = parse_response(head + b"\r\n\r\n")
        if resp.headers.get("transfer-encoding", "").lower() == "chunked":
            while (end := _chunked_end(self.buf)) is None:
                if not self._fill():
                    raise ConnectionError(f"closed inside a chunked body: {self.buf[-200:]!r}")
            body, self.buf = self.buf[:end], self.buf[end:]
            resp.body = decode_chunked(body)[0]
            return resp
        length = int(resp.headers.get("content-length", "0"))
        while len(self.buf) < length:
            if not self._fill():
                break
        resp.body, self.buf = self.buf[:length], self.buf[length:]
        return resp

    def rest(self) -> bytes:
        """Everything until the peer closes (or the timeout)."""
        data = self.buf + read_until_close(self.sock)
        self.buf = b""
        return data

    def closed_by_peer(self, timeout: float = 3.0) -> bool:
        """True when the proxy closed the connection (EOF or reset) within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "RawConn":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def dead_port() -> int:
    """A port nothing listens on (connect is refused)."""
    return free_port()


__all__ = ["ProxyProcess", "Response", "Session", "base_config", "backend_entry", "connect",
           "dead_port", "free_port", "parse_response", "raw", "RawConn",
           "read_until_close", "request"]
