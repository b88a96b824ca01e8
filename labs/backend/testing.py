"""Spawn real toy backends from tests: ``start_backend`` and ``free_port``.

    from labs.backend.testing import start_backend

    with start_backend("b1") as b1:                     # any free port on 127.0.0.1
        b1.control({"latency_ms": 50})                  # PUT /_control/faults
        status, headers, body = b1.request("GET", "/x")
        assert b1.stats()["requests_total"] == 1        # GET /_control
    # stopped (SIGTERM, then SIGKILL) on leaving the block

    b2 = start_backend("b2", 9002, "127.0.0.2", "--error-rate", "0.5", "--seed", "1")
    ...
    b2.stop()

Theory of operation: the backend runs as ``python -m labs.backend`` in a child process
(cwd and PYTHONPATH point at the repository root). Without a port it is started with
``--port 0`` and the port is read from its first stdout line, so there is no race for a free
port. Its output is drained by a daemon thread into ``handle.output()`` (useful in failure
messages). ``start_backend`` returns once ``GET /health/live`` answers (200, unless the
backend was started with ``--live-fail``), and raises
``BackendError`` with the child's output if it exits or does not come up in time.

Everything here is synchronous (stdlib ``http.client``, bounded timeouts), so it works from
plain and async tests alike; ``acontrol``/``astats`` run the same calls in a thread for
tests that must not block their event loop.

Other modes (read from the backend's first line and its flags):

* ``--tls``: requests use HTTPS with ``ssl_context`` (default: an unverifying context,
  fine for talking to one's own child process; pass a real one to check certificates).
* ``--proxy-protocol``: requests start with a v2 ``LOCAL`` header (what a proxy sends for
  its own health checks), or ``proxy_header=`` bytes of your choice.
* ``--control-port``: control calls and ``wait_ready`` go there (plain HTTP); in
  ``--mode tcp`` (control port always on) ``request`` goes there too, and
  ``handle.game()`` opens a ``GameClient`` on the game port.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(r"listening on ([a-z+]+)://\[?([^\]\s]+?)\]?:(\d+)")
_CONTROL = re.compile(r"control http://\[?([^\]\s]+?)\]?:(\d+)")


class BackendError(RuntimeError):
    """The backend did not start, or refused a control request (message says why)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (bind to port 0 and release it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Response:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def __iter__(self):  # status, headers, body = b.request(...)
        return iter((self.status, self.headers, self.body))

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.body[:200]!r}>"


class BackendHandle:
    def __init__(self, name: str, host: str, process: subprocess.Popen, port: int | None,
                 ssl_context=None, proxy_protocol: bool = False):
        self.name = name
        self.host = host
        self.process = process
        self.port: int = port or 0
        self.scheme = "http"                   # http, https, tcp or tcp+tls (from its output)
        self.control_port: int | None = None   # --control-port (always in tcp mode)
        self.ssl_context = ssl_context         # client side, for https
        self.proxy_protocol = proxy_protocol
        self._lines: deque[str] = deque(maxlen=200)
        self._listening = threading.Event()
        self._reader = threading.Thread(target=self._drain, name=f"backend-{name}-output",
                                        daemon=True)
        self._reader.start()

    # -- process -------------------------------------------------------------------------

    def _drain(self) -> None:
        for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self._lines.append(line)
            if not self._listening.is_set():
                m = _LISTENING.search(line)
                if m:
                    self.scheme = m.group(1)
                    self.port = int(m.group(3))
                    c = _CONTROL.search(line)
                    if c:
                        self.control_port = int(c.group(2))
                    self._listening.set()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def control_url(self) -> str:
        """Where the control API answers: the control port if any, else the main URL."""
        if self.control_port is None:
            return self.url
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.control_port}"

    @property
    def mode(self) -> str:
        if self.scheme in ("grpc", "udp"):
            return self.scheme
        return "tcp" if self.scheme.startswith("tcp") else "http"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        """What the backend printed (stdout and stderr, last 200 lines)."""
        return "\n".join(self._lines)

    def wait_ready(self, timeout: float = 10.0) -> "BackendHandle":
        deadline = time.monotonic() + timeout
        while not self._listening.wait(0.02):
            if not self.alive:
                self._reader.join(1.0)
                raise BackendError(f"backend {self.name} exited with {self.process.returncode}:\n"
                                   f"{self.output()}")
            if time.monotonic() > deadline:
                self.stop()
                raise BackendError(f"backend {self.name} did not start in {timeout}s:\n{self.output()}")
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                # Any HTTP answer means it is serving (503 only if started with --live-fail).
                self.control_request("GET", "/health/live", timeout=1.0)
                return self
            except (OSError, http.client.HTTPException) as exc:
                last_error = exc
            if not self.alive:
                break
            time.sleep(0.02)
        self.stop()
        raise BackendError(f"backend {self.name} never answered on /health/live "
                           f"({last_error}):\n{self.output()}")

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self._reader.join(1.0)
        if self.process.stdout:
            self.process.stdout.close()
        return self.process.returncode

    def kill(self) -> int | None:
        """SIGKILL at once (a crash the backend cannot see coming)."""
        if self.process.poll() is None:
            self.process.kill()
        return self.stop()

    def wait_exit(self, timeout: float = 5.0) -> int:
        return self.process.wait(timeout)

    def __enter__(self) -> "BackendHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- HTTP ----------------------------------------------------------------------------

    def request(self, method: str, path: str, body: bytes | str | dict | None = None,
                headers: dict[str, str] | None = None, timeout: float = 5.0,
                proxy_header: bytes | None = None) -> Response:
        """One request on a fresh connection to the main port; ``dict`` bodies go as JSON.

        HTTPS with ``--tls``; with ``--proxy-protocol`` the connection starts with
        ``proxy_header`` (default: a v2 LOCAL header). In tcp mode: the control port.
        """
        if self.mode in ("tcp", "grpc", "udp"):  # the main port does not speak HTTP/1.1
            return self._http(self.control_port, False, None, method, path, body, headers, timeout)
        if self.proxy_protocol and proxy_header is None:
            from .proxy_protocol import v2_local
            proxy_header = v2_local()
        return self._http(self.port, self.scheme == "https", proxy_header, method, path, body,
                          headers, timeout)

    def control_request(self, method: str, path: str, body: bytes | str | dict | None = None,
                        headers: dict[str, str] | None = None, timeout: float = 5.0) -> Response:
        """Like ``request``, but on the control port when there is one."""
        if self.control_port is not None:
            return self._http(self.control_port, False, None, method, path, body, headers, timeout)
        return self.request(method, path, body, headers, timeout)

    def _http(self, port: int, tls: bool, proxy_header: bytes | None, method: str, path: str,
              body, headers, timeout: float) -> Response:
        headers = dict(headers or {})
        if isinstance(body, dict):
            body = json.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        if isinstance(body, str):
            body = body.encode()
        if tls:
            ctx = self.ssl_context or _unverified_context()
            conn = _HTTPSWithPreamble(self.host, port, timeout=timeout, context=ctx)
        else:
            conn = _HTTPWithPreamble(self.host, port, timeout=timeout)
        conn.preamble = proxy_header or b""
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return Response(resp.status, resp.headers, resp.read())
        finally:
            conn.close()

    def get(self, path: str, **kwargs) -> Response:
        return self.request("GET", path, **kwargs)

    def control(self, faults: dict[str, Any]) -> dict[str, Any]:
        """Partially update the faults; returns the new settings. BackendError on a 400."""
        resp = self.control_request("PUT", "/_control/faults", body=faults)
        if resp.status != 200:
            raise BackendError(f"{self.name} refused {faults}: {resp.status} {resp.body.decode()}")
        return resp.json()["faults"]

    def clear_faults(self) -> dict[str, Any]:
        return self.control_request("DELETE", "/_control/faults").json()["faults"]

    def faults(self) -> dict[str, Any]:
        return self.control_request("GET", "/_control/faults").json()["faults"]

    def stats(self) -> dict[str, Any]:
        return self.control_request("GET", "/_control").json()

    def reset_stats(self) -> None:
        self.control_request("DELETE", "/_control/stats")

    def crash(self, code: int = 1, timeout: float = 5.0) -> int:
        """POST /_control/crash and wait for the process to exit; returns its exit status."""
        try:
            self.control_request("POST", f"/_control/crash?code={code}", timeout=timeout)
        except (OSError, http.client.HTTPException):
            pass  # it may die before the answer arrives: the exit status is what counts
        return self.process.wait(timeout)

    async def acontrol(self, faults: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(self.control, faults)

    async def astats(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.stats)

    def game(self, timeout: float = 5.0, proxy_header: bytes | None = None,
             server_hostname: str | None = None) -> "GameClient":
        """A connected ``GameClient`` on the game port (tcp mode), greeting already read."""
        if self.proxy_protocol and proxy_header is None:
            from .proxy_protocol import v2_local
            proxy_header = v2_local()
        ctx = None
        if self.scheme == "tcp+tls":
            ctx = self.ssl_context or _unverified_context()
        return GameClient(self.host, self.port, timeout=timeout, ssl_context=ctx,
                          server_hostname=server_hostname, proxy_header=proxy_header)

    def __repr__(self) -> str:
        return f"<BackendHandle {self.name} {self.url} pid={self.pid}>"


class GameClient:
    """A line client for ``--mode tcp`` backends (or a proxy in front of them).

        with GameClient("127.0.0.1", port) as g:
            g.greeting                  # 'HELLO from b1'
            g.command("JOIN alice")     # 'WELCOME alice on b1, players here: 1'

    ``proxy_header`` bytes are sent first; with ``ssl_context`` TLS is started after them.
    """

    def __init__(self, host: str, port: int, timeout: float = 5.0, ssl_context=None,
                 server_hostname: str | None = None, proxy_header: bytes | None = None,
                 source_address: tuple[str, int] | None = None):
        sock = socket.create_connection((host, port), timeout=timeout,
                                        source_address=source_address)
        try:
            if proxy_header:
                sock.sendall(proxy_header)
            if ssl_context is not None:
                sock = ssl_context.wrap_socket(sock, server_hostname=server_hostname or host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.file = sock.makefile("rb")
        self.greeting = self.readline()

    def readline(self) -> str:
        """The next line, without its CRLF; EOFError when the backend closed."""
        line = self.file.readline()
        if not line:
            raise EOFError("the backend closed the connection")
        return line.decode("utf-8").rstrip("\r\n")

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode("utf-8") + b"\r\n")

    def command(self, line: str) -> str:
        self.send(line)
        return self.readline()

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> "GameClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _unverified_context():
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _HTTPWithPreamble(http.client.HTTPConnection):
    """Sends ``preamble`` (a PROXY header) right after connecting, before any HTTP or TLS."""

    preamble = b""

    def connect(self):
        super().connect()
        if self.preamble:
            self.sock.sendall(self.preamble)


class _HTTPSWithPreamble(http.client.HTTPSConnection, _HTTPWithPreamble):
    # MRO: HTTPSConnection.connect -> _HTTPWithPreamble.connect (TCP + preamble) -> TLS wrap.
    pass


def spawn_backend(name: str, port: int | None = None, host: str = "127.0.0.1", *extra_args: str,
                  env: dict[str, str] | None = None, ssl_context=None) -> BackendHandle:
    """Start the process without waiting for it (call ``.wait_ready()``)."""
    cmd = [sys.executable, "-m", "labs.backend", "--name", name,
           "--port", str(port if port is not None else 0), "--host", host, *map(str, extra_args)]
    child_env = dict(os.environ if env is None else env)
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), child_env.get("PYTHONPATH", "")) if p)
    child_env["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen(cmd, cwd=REPO_ROOT, env=child_env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return BackendHandle(name, host, process, port, ssl_context=ssl_context,
                         proxy_protocol="--proxy-protocol" in extra_args)


def start_backend(name: str, port: int | None = None, host: str = "127.0.0.1", *extra_args: str,
                  timeout: float = 10.0, env: dict[str, str] | None = None,
                  ssl_context=None) -> BackendHandle:
    """Start ``python -m labs.backend`` and return once /health/live answers.

    ``extra_args`` are CLI flags, e.g. ``"--redis-url", url`` or ``"--latency-ms", "50"``.
    ``ssl_context``: the client context for ``--tls`` backends (default: no verification).
    The handle is a context manager that stops the backend on exit.
    """
    return spawn_backend(name, port, host, *extra_args, env=env,
                         ssl_context=ssl_context).wait_ready(timeout)


def start_backends(names: list[str], *extra_args: str, host: str = "127.0.0.1",
                   timeout: float = 10.0) -> list[BackendHandle]:
    """Start several backends in parallel (each on a free port); all or none."""
    handles = [spawn_backend(n, None, host, *extra_args) for n in names]
    try:
        for h in handles:
            h.wait_ready(timeout)
    except BaseException:
        for h in handles:
            h.stop()
        raise
    return handles
