"""Endpoints of a toy backend: routing, fault injection around handlers, statistics.

Theory of operation
-------------------
``BackendApp.dispatch(request)`` is called by the server for each request, in order per
connection. It routes on the exact path:

* ``/_control...``  control API, never faulted (``_control``).
* ``/health/live``  liveness; ``/health`` and ``/health/ready`` readiness (deep: each probe
  waits for the dependency query); ``/health/ready/cached`` readiness from the cached
  dependency status (what the instance owns, answered at once; see faults.py).
* ``/work``, ``/upload``, ``/login``, ``/logout``, ``/profile`` (alias ``/me``): app endpoints.
* anything else: the echo endpoint, so a load balancer lab can route any path.

App endpoints run inside ``_app_request``, which asks ``FaultState.decide_app`` what to do
(warm-up 503, RST, hang, latency, CPU burn, dependency down, injected error, crash mid-
response) and applies it around the real handler. Handlers return ``(status, body, extra)``
and never touch faults.

The fast path: a body-less request to the echo endpoint (or to /health/live) while no fault
touches it is answered synchronously inside the parser callback: no task, no decision
object, one ``json.dumps``. Everything else becomes one coroutine the server runs.

Every response carries ``X-Backend: <name>`` (pre-encoded in ``static_headers``, added by
the server) and JSON bodies carry ``"backend": <name>``.

``ControlPortApp`` fronts the same app on ``--control-port``: it lets ``/_control...`` and
``/health...`` through and answers 404 to the rest (in tcp mode the main port is not HTTP).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import sys
import time
from typing import Any, Callable
from urllib.parse import parse_qs

from .faults import FaultError, FaultState
from .server import BodyTooLarge, ClientGone, Connection, Request
from .sessions import SessionStore, StoreUnavailable

JSON = b"application/json"
CONTROL_BODY_LIMIT = 64 * 1024
MAX_WORK_MS = 600_000
COOKIE = "SESSIONID"

CONTROL_ENDPOINTS = {
    "/_control": "GET: this backend's own view (requests, in-flight, sessions, faults)",
    "/_control/faults": "GET: current faults; PUT/POST: partial update (JSON object); DELETE: clear all",
    "/_control/stats": "DELETE: reset the counters",
    "/_control/crash": "POST: exit the process at once (os._exit), ?code=N sets the exit status (default 1)",
    "/_control/kill": "POST: same as /_control/crash",
}


def pinned_cost(raw: str | None) -> tuple[float, int, str] | None:
    """``X-LBLab-Replay-Cost: delay_ms=12.5;status=200[;fault=reset|crash]`` (sent by
    labs/framework/replay.py in pinned mode) as (delay_ms, status, fault); None when the
    header is absent or malformed (the request is then served normally)."""
    if not raw:
        return None
    fields = dict(part.strip().partition("=")[::2] for part in raw.split(";"))
    if "delay_ms" not in fields:
        return None
    try:
        delay = float(fields.get("delay_ms", "0"))
        status = int(fields.get("status", "200"))
    except ValueError:
        return None
    fault = fields.get("fault", "")
    if not (0 <= delay <= MAX_WORK_MS and 100 <= status <= 599) or fault not in ("", "reset",
                                                                                 "crash"):
        return None
    return delay, status, fault


def burn_cpu(ms: float) -> None:
    """Busy-loop for ``ms`` of wall time: blocks this single-threaded process, on purpose."""
    end = time.perf_counter() + ms / 1000.0
    while time.perf_counter() < end:
        pass


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _query(req: Request) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(req.query, keep_blank_values=True).items()}


def _cookie(req: Request, name: str) -> str | None:
    raw = req.headers.get("cookie")
    if not raw:
        return None
    for part in raw.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def _number_param(query: dict[str, str], name: str, default: float, maximum: float) -> float:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of milliseconds, got {raw!r}") from None
    if not 0 <= value <= maximum:
        raise ValueError(f"{name} must be between 0 and {maximum:g}, got {raw}")
    return value


class Stats:
    def __init__(self, started: float):
        self.started = started
        self.reset()

    def reset(self) -> None:
        self.requests_total = 0
        self.by_status: dict[int, int] = {}
        self.by_kind = {"app": 0, "health": 0}
        self.control_requests = 0
        self.connections_total = 0
        self.sessions_created = 0
        self.uploads_completed = 0
        self.upload_bytes = 0
        self.aborted_uploads = 0
        self.proxy_protocol_refused = 0
        self.injected = {"warming_up": 0, "reset": 0, "hang": 0, "dependency_down": 0,
                         "error": 0, "crash_mid_response": 0, "health_fail": 0, "live_fail": 0,
                         "shed": 0}


class BackendApp:
    def __init__(self, name: str, store: SessionStore, faults: FaultState, rng,
                 host: str = "127.0.0.1", port: int = 0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Any] = asyncio.sleep,
                 exit: Callable[[int], Any] = os._exit):
        self.name = name
        self.host = host
        self.port = port
        self.store = store
        self.faults = faults
        self.rng = rng
        self.clock = clock
        self.sleep = sleep
        self.exit = exit
        self.stats = Stats(clock())
        # How this backend listens, reported by /_control (set by __main__.run).
        self.listen_info: dict[str, Any] = {"mode": "http", "tls": False,
                                            "proxy_protocol": False, "control_port": None}
        self.extra_snapshot: Callable[[], dict[str, Any]] | None = None  # tcp mode: the game
        self.in_flight = 0
        self.app_in_flight = 0  # app requests being worked on (max_in_flight counts these)
        self.connections_open = 0
        self.static_headers = f"X-Backend: {name}\r\nServer: lblab-backend\r\n".encode("latin-1")
        self._name_json = json.dumps(name)
        self._routes = {
            "/work": self._work,
            "/upload": self._upload,
            "/login": self._login,
            "/logout": self._logout,
            "/profile": self._profile,
            "/me": self._profile,
            "/ws": self._websocket,
        }

    # -- server hooks --------------------------------------------------------------------

    def connection_opened(self, conn: Connection) -> None:
        self.connections_open += 1
        self.stats.connections_total += 1

    def connection_closed(self, conn: Connection) -> None:
        self.connections_open -= 1

    def dispatch(self, req: Request):
        path = req.path
        if path.startswith("/_control") and (len(path) == 9 or path[9] == "/"):
            req.kind = "control"
            self.stats.control_requests += 1
            return self._control(req)
        self.stats.requests_total += 1
        if path.startswith("/health"):
            if path == "/health/live":
                self.stats.by_kind["health"] += 1
                req.kind = "health"
                if self.faults.live_quiet():
                    self._answer(req, 200, self._live_body())
                    return None
                return self._guarded(self._live(req))
            if path == "/health" or path == "/health/ready" or path == "/health/ready/cached":
                self.stats.by_kind["health"] += 1
                req.kind = "health"
                return self._guarded(self._ready(req, cached=path.endswith("/cached")))
        self.stats.by_kind["app"] += 1
        req.kind = "app"
        handler = self._routes.get(path)
        if handler is None:
            if not req.has_body and self.faults.app_quiet(self.clock()):
                self._answer(req, 200, self._echo_body(req, 0), self._rid_header(req))
                return None
            handler = self._echo
        return self._guarded(self._app_request(req, handler))

    async def _guarded(self, coro) -> None:
        self.in_flight += 1
        try:
            await coro
        finally:
            self.in_flight -= 1

    def _answer(self, req: Request, status: int, body: bytes, extra: bytes = b"") -> None:
        by_status = self.stats.by_status
        by_status[status] = by_status.get(status, 0) + 1
        req.conn.send(req, status, body, extra)

    def _error(self, req: Request, code: int, message: str, extra: bytes = b"", **more) -> None:
        payload = {"error": message, "backend": self.name, **more}
        if req.kind == "control":
            req.conn.send(req, code, dumps(payload), extra)
        else:
            self._answer(req, code, dumps(payload), extra)

    @staticmethod
    def _rid_header(req: Request) -> bytes:
        rid = req.headers.get("x-request-id")
        return b"X-Request-Id: " + rid.encode("latin-1") + b"\r\n" if rid else b""

    # -- app requests and their faults ---------------------------------------------------

    async def _app_request(self, req: Request, handler) -> None:
        pinned = pinned_cost(req.headers.get("x-lblab-replay-cost"))
        if pinned is not None:
            return await self._pinned(req, *pinned)
        shed = self.faults.decide_overload(self.app_in_flight)
        if shed is not None:
            return self._shed(req, *shed)
        self.app_in_flight += 1
        try:
            await self._app_work(req, handler)
        finally:
            self.app_in_flight -= 1

    def _shed(self, req: Request, how: str, status: int) -> None:
        """A request over max_in_flight: dropped, or refused politely with Retry-After."""
        self.stats.injected["shed"] += 1
        if how == "reset":
            return req.conn.reset(req)
        retry = int(self.faults.settings["shed_retry_after_s"])
        return self._error(req, status, "overloaded", self._rid_header(req)
                           + f"Retry-After: {retry}\r\n".encode(),
                           in_flight=self.app_in_flight, retry_after_s=retry)

    async def _app_work(self, req: Request, handler) -> None:
        decision = self.faults.decide_app(self.clock(), self._rng_for(req))
        injected = self.stats.injected
        rid = self._rid_header(req)
        if decision.warming_up:
            injected["warming_up"] += 1
            retry = max(1, math.ceil(decision.warming_up))
            return self._error(req, 503, "warming up", rid + f"Retry-After: {retry}\r\n".encode(),
                               remaining_s=round(decision.warming_up, 3))
        if decision.reset:
            injected["reset"] += 1
            return req.conn.reset(req)
        if decision.hang:
            injected["hang"] += 1
            req.conn.hang(req)
            # Never answer; the server cancels this when the client goes away.
            await asyncio.get_running_loop().create_future()
        if decision.delay_s:
            await self.sleep(decision.delay_s)
        if decision.cpu_ms:
            burn_cpu(decision.cpu_ms)
        if decision.dependency_down:
            injected["dependency_down"] += 1
            return self._error(req, 503, "dependency down", rid)
        if decision.error_status is not None:
            injected["error"] += 1
            return self._error(req, decision.error_status, "injected error", rid,
                               status=decision.error_status)
        answer = await handler(req)
        if answer is None:
            return  # the handler answered itself (a WebSocket's 101)
        status, body, extra = answer
        extra += rid
        if decision.crash:
            injected["crash_mid_response"] += 1
            return req.conn.crash(req, status, body, extra)
        self._answer(req, status, body, extra)

    async def _pinned(self, req: Request, delay_ms: float, status: int, fault: str) -> None:
        """A replay in "pinned" cost mode: answer after exactly the recorded time, with the
        recorded status (or the recorded reset / cut response), whatever this backend's
        faults and the endpoint would do."""
        await req.body.drain()
        if delay_ms:
            await self.sleep(delay_ms / 1000.0)
        if fault == "reset":
            return req.conn.reset(req)
        body = dumps({"backend": self.name, "pinned_ms": delay_ms, "status": status})
        if fault == "crash":
            return req.conn.crash(req, status, body, self._rid_header(req))
        self._answer(req, status, body, self._rid_header(req))

    def _rng_for(self, req: Request):
        """A replayed request (labs/framework/replay.py) brings its own seed, so its fault
        draws (jitter, error_rate, reset and crash rates) are the same whichever backend
        and algorithm it meets; any other request uses the backend's random source."""
        seed = req.headers.get("x-lblab-replay-seed")
        if seed is not None and seed.isdigit() and len(seed) <= 18:
            return random.Random(int(seed))
        return self.rng

    def _echo_body(self, req: Request, body_bytes: int) -> bytes:
        h = req.headers
        raw = req.raw_headers
        if len(raw) == len(h):
            headers = dict(raw)
        else:  # repeated headers: join them as a proxy would see them
            headers = {}
            for name, value in raw:
                headers[name] = headers[name] + ", " + value if name in headers else value
        echo = {
            "backend": self.name,
            "method": req.method,
            "path": req.path,
            "query": req.query,
            "http_version": req.version,
            "client": req.conn.peer,
            "host": h.get("host"),
            "x_forwarded_for": h.get("x-forwarded-for"),
            "x_forwarded_proto": h.get("x-forwarded-proto"),
            "x_forwarded_host": h.get("x-forwarded-host"),
            "forwarded": h.get("forwarded"),
            "request_id": h.get("x-request-id"),
            "connection_id": req.conn.id,
            "connection_request": req.number,
            "body_bytes": body_bytes,
            "headers": headers,
        }
        extra = req.conn.echo_extra   # tls / peer / proxy_protocol, only with those modes
        if extra is not None:
            echo.update(extra)
        return json.dumps(echo).encode()

    async def _echo(self, req: Request):
        size = await req.body.drain()
        return 200, self._echo_body(req, size), b""

    async def _websocket(self, req: Request):
        """GET /ws: a WebSocket handshake becomes a WebSocket (labs/backend/websocket.py)
        once the faults let it through (latency_ms is its cost: loading the user's
        session; max_in_flight sheds handshakes beyond it); anything else is echoed."""
        if req.websocket_key is None:
            return await self._echo(req)
        req.conn.accept_websocket(req)
        return None

    async def _work(self, req: Request):
        await req.body.drain()
        q = _query(req)
        try:
            ms = _number_param(q, "ms", 100, MAX_WORK_MS)
            cpu_ms = _number_param(q, "cpu_ms", 0, MAX_WORK_MS)
        except ValueError as exc:
            return 400, dumps({"error": f"{exc} (try /work?ms=200)", "backend": self.name}), b""
        started = time.perf_counter()
        if ms:
            await self.sleep(ms / 1000.0)
        if cpu_ms:
            burn_cpu(cpu_ms)
        took = (time.perf_counter() - started) * 1000.0
        return 200, dumps({
            "backend": self.name, "work_ms": ms, "cpu_ms": cpu_ms, "took_ms": round(took, 3),
            "request_id": req.headers.get("x-request-id"),
        }), b""

    async def _upload(self, req: Request):
        if req.method not in ("POST", "PUT"):
            return 405, dumps({"error": "use POST or PUT /upload with a body", "backend": self.name}), \
                b"Allow: POST, PUT\r\n"
        started = time.perf_counter()
        size = chunks = 0
        try:
            async for chunk in req.body:   # chunk by chunk: the body is never held whole
                size += len(chunk)
                chunks += 1
        except (ClientGone, asyncio.CancelledError):
            self.stats.aborted_uploads += 1
            raise
        duration = (time.perf_counter() - started) * 1000.0
        self.stats.uploads_completed += 1
        self.stats.upload_bytes += size
        return 200, dumps({
            "backend": self.name, "bytes": size, "chunks": chunks,
            "duration_ms": round(duration, 3), "chunked": req.body.chunked,
            "content_length": req.headers.get("content-length"),
            "request_id": req.headers.get("x-request-id"),
        }), b""

    async def _login(self, req: Request):
        await req.body.drain()
        if req.method != "POST":
            return 405, dumps({"error": "use POST /login?user=NAME", "backend": self.name}), \
                b"Allow: POST\r\n"
        user = _query(req).get("user", "")
        if not user or len(user) > 64 or not all(c.isalnum() or c in "._@-" for c in user):
            return 400, dumps({
                "error": "give a user name of 1-64 letters, digits or ._@- : POST /login?user=alice",
                "backend": self.name}), b""
        try:
            session = await self.store.create(user, self.name)
        except StoreUnavailable as exc:
            return 503, dumps({"error": str(exc), "backend": self.name}), b""
        self.stats.sessions_created += 1
        cookie = f"Set-Cookie: {COOKIE}={session.id}; Path=/; HttpOnly; SameSite=Lax\r\n"
        return 200, dumps({
            "backend": self.name, "user": user, "session_id": session.id,
            "session_store": self.store.kind,
        }), cookie.encode("latin-1")

    async def _logout(self, req: Request):
        await req.body.drain()
        if req.method != "POST":
            return 405, dumps({"error": "use POST /logout", "backend": self.name}), b"Allow: POST\r\n"
        sid = _cookie(req, COOKIE)
        try:
            deleted = await self.store.delete(sid) if sid else False
        except StoreUnavailable as exc:
            return 503, dumps({"error": str(exc), "backend": self.name}), b""
        clear = f"Set-Cookie: {COOKIE}=; Path=/; Max-Age=0\r\n".encode()
        return 200, dumps({"backend": self.name, "logged_out": deleted}), clear

    async def _profile(self, req: Request):
        await req.body.drain()
        sid = _cookie(req, COOKIE)
        if not sid:
            return 401, dumps({
                "error": f"not logged in: no {COOKIE} cookie; POST /login?user=NAME first",
                "backend": self.name, "session_store": self.store.kind}), b""
        try:
            session = await self.store.get(sid)
        except StoreUnavailable as exc:
            return 503, dumps({"error": str(exc), "backend": self.name}), b""
        if session is None:
            if self.store.kind == "memory":
                why = (f"backend {self.name} keeps sessions in its own memory, so a session "
                       "created on another backend (or before a restart) is unknown here: "
                       "use sticky sessions or a shared store (--redis-url)")
            else:
                why = "the session expired or was logged out"
            return 401, dumps({"error": f"not logged in: no session {sid!r} here; {why}",
                               "backend": self.name, "session_store": self.store.kind}), b""
        return 200, dumps({
            "backend": self.name, "user": session.user, "session_id": session.id,
            "created_by": session.created_by, "session_store": self.store.kind,
        }), b""

    # -- health --------------------------------------------------------------------------

    def _live_body(self) -> bytes:
        return b'{"status": "alive", "backend": ' + self._name_json.encode() + b"}"

    async def _live(self, req: Request) -> None:
        decision = self.faults.decide_live()
        if decision.delay_s:
            await self.sleep(decision.delay_s)
        if decision.fail:
            self.stats.injected["live_fail"] += 1
            return self._answer(req, 503, dumps({"status": "failing", "backend": self.name,
                                                 "reason": "live_fail fault is set"}))
        self._answer(req, 200, self._live_body())

    async def _ready(self, req: Request, cached: bool = False) -> None:
        await req.body.drain()
        decision = self.faults.decide_ready(self.clock(), cached)
        if decision.warming_up:
            self.stats.injected["warming_up"] += 1
            retry = max(1, math.ceil(decision.warming_up))
            return self._answer(req, 503, dumps({
                "status": "warming up", "error": "warming up", "backend": self.name,
                "remaining_s": round(decision.warming_up, 3)}), f"Retry-After: {retry}\r\n".encode())
        if decision.delay_s:
            await self.sleep(decision.delay_s)
        if decision.fail:
            self.stats.injected["health_fail"] += 1
            return self._answer(req, 503, dumps({"status": "failing", "backend": self.name,
                                                 "reason": "health_fail fault is set"}))
        checks = {"dependency": "down" if decision.dependency_down else "ok"}
        if self.store.kind == "redis":
            try:
                await asyncio.wait_for(self.store.ping(), 1.0)
                checks["redis"] = "ok"
            except StoreUnavailable as exc:
                checks["redis"] = str(exc)
            except asyncio.TimeoutError:
                checks["redis"] = "no answer within 1 s"
        ok = all(v == "ok" for v in checks.values())
        self._answer(req, 200 if ok else 503, dumps({
            "status": "ready" if ok else "not ready", "backend": self.name, "checks": checks}))

    # -- control API (never faulted) -----------------------------------------------------

    async def _control(self, req: Request) -> None:
        path = req.path.rstrip("/") or "/"
        method = req.method
        if path == "/_control":
            if method not in ("GET", "HEAD"):
                return self._not_allowed(req, "GET")
            await req.body.drain()
            return req.conn.send(req, 200, dumps(await self.snapshot()))
        if path == "/_control/faults":
            if method in ("GET", "HEAD"):
                await req.body.drain()
                return req.conn.send(req, 200, dumps(self._faults_view()))
            if method in ("PUT", "POST", "PATCH"):
                return await self._set_faults(req)
            if method == "DELETE":
                await req.body.drain()
                self.faults.clear()
                return req.conn.send(req, 200, dumps({**self._faults_view(), "cleared": True}))
            return self._not_allowed(req, "GET, PUT, POST, DELETE")
        if path == "/_control/stats":
            if method != "DELETE":
                return self._not_allowed(req, "DELETE")
            await req.body.drain()
            self.stats.reset()
            return req.conn.send(req, 200, dumps({"backend": self.name, "stats_reset": True}))
        if path in ("/_control/crash", "/_control/kill"):
            if method != "POST":
                return self._not_allowed(req, "POST")
            return await self._crash(req)
        self._error(req, 404, f"no control endpoint {req.path}", endpoints=CONTROL_ENDPOINTS)

    def _not_allowed(self, req: Request, allow: str) -> None:
        self._error(req, 405, f"{req.method} not allowed on {req.path}; use {allow}",
                    f"Allow: {allow}\r\n".encode())

    def _faults_view(self) -> dict[str, Any]:
        return {"backend": self.name, "faults": self.faults.snapshot(),
                "warmup_remaining_s": round(self.faults.warmup_remaining(), 3)}

    async def _set_faults(self, req: Request) -> None:
        try:
            raw = await req.body.read(CONTROL_BODY_LIMIT)
        except BodyTooLarge:
            return self._error(req, 413, f"control body larger than {CONTROL_BODY_LIMIT} bytes")
        example = 'send a JSON object, e.g. {"latency_ms": 200, "error_rate": 0.1}'
        if not raw.strip():
            return self._error(req, 400, f"empty body: {example}")
        try:
            patch = json.loads(raw)
        except ValueError as exc:   # includes UnicodeDecodeError
            return self._error(req, 400, f"malformed JSON ({exc}): {example}")
        try:
            changed = self.faults.apply(patch)
        except FaultError as exc:
            return self._error(req, 400, str(exc), errors=exc.errors,
                               faults=self.faults.snapshot())
        req.conn.send(req, 200, dumps({**self._faults_view(), "changed": changed}))

    async def _crash(self, req: Request) -> None:
        await req.body.drain()
        raw = _query(req).get("code", "1")
        try:
            code = int(raw)
            if not 0 <= code <= 255:
                raise ValueError
        except ValueError:
            return self._error(req, 400, f"code must be an integer 0..255, got {raw!r}")
        req.conn.send(req, 200, dumps({"backend": self.name, "crashing": True, "exit_code": code}))
        # Give the answer a moment to leave the socket buffer, then die without cleanup.
        transport = req.conn.transport
        for _ in range(20):
            if transport.is_closing() or not transport.get_write_buffer_size():
                break
            await asyncio.sleep(0.005)
        self.exit(code)

    async def snapshot(self) -> dict[str, Any]:
        st = self.stats
        try:
            sessions: int | None = await asyncio.wait_for(self.store.count(), 1.0)
            sessions_error = None
        except (StoreUnavailable, asyncio.TimeoutError) as exc:
            sessions, sessions_error = None, str(exc) or "session store did not answer within 1 s"
        view = {
            "name": self.name,
            "backend": self.name,
            "host": self.host,
            "port": self.port,
            "pid": os.getpid(),
            "uptime_s": round(self.clock() - st.started, 3),
            "requests_total": st.requests_total,
            "requests_by_status": {str(k): v for k, v in sorted(st.by_status.items())},
            "requests_by_kind": dict(st.by_kind),
            "control_requests": st.control_requests,
            "in_flight": self.in_flight,
            "connections_open": self.connections_open,
            "connections_total": st.connections_total,
            "session_store": self.store.kind,
            "sessions": sessions,
            "sessions_created": st.sessions_created,
            "uploads_completed": st.uploads_completed,
            "upload_bytes": st.upload_bytes,
            "aborted_uploads": st.aborted_uploads,
            "faults": self.faults.snapshot(),
            "warmup_remaining_s": round(self.faults.warmup_remaining(), 3),
            "faults_injected": dict(st.injected),
            **self.listen_info,
            "proxy_protocol_refused": st.proxy_protocol_refused,
        }
        if sessions_error:
            view["sessions_error"] = sessions_error
        if self.extra_snapshot is not None:
            view.update(self.extra_snapshot())
        return view

    def proxy_protocol_refused(self, peer: str, reason: str) -> None:
        """A connection without a valid PROXY header was closed: count it and say why."""
        self.stats.proxy_protocol_refused += 1
        print(f"labs.backend {self.name}: refused a connection from {peer}: {reason}",
              file=sys.stderr, flush=True)


class ControlPortApp:
    """The app behind ``--control-port``: only ``/_control...`` and ``/health...``.

    A plain HTTP port beside the main one (no TLS, no PROXY header), sharing the backend's
    faults and counters, so the control API and HTTP health checks still work when the main
    port speaks the game protocol (``--mode tcp``) or wants a PROXY header.
    """

    ROUTES = ("/_control", "/health", "/health/ready", "/health/ready/cached", "/health/live")

    def __init__(self, app: BackendApp, main_port_text: str):
        self.app = app
        self.static_headers = app.static_headers
        self._main = main_port_text

    def connection_opened(self, conn: Connection) -> None:
        pass  # connections_open counts the main port's connections

    def connection_closed(self, conn: Connection) -> None:
        pass

    def dispatch(self, req: Request):
        path = req.path
        if path in self.ROUTES or path.startswith("/_control/"):
            return self.app.dispatch(req)
        req.kind = "control"
        self.app.stats.control_requests += 1
        self.app._error(req, 404, f"{req.path} is not served on the control port of "
                                  f"{self.app.name}: only /_control..., /health, /health/ready and "
                                  f"/health/live are; the backend itself is {self._main}",
                        endpoints=CONTROL_ENDPOINTS)
        return None
