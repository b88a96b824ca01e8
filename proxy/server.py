"""ProxyServer: the running proxy process, holding every part together.

Theory of operation. `ProxyServer(config)` builds the shared state (an
EventBus with the access log, a Runtime with the pools and balancers, one
Router per HTTP listener, a pool of backend connections) and `start()` binds
the listeners, then starts the optional parts: metrics (a bus sink), the
admin API, health checks and draining. Each part receives the server and
reads what it needs from it (`runtime`, `bus`, `inflight`, `close_pooled`...).

Listeners follow the config. Changes arrive through `Runtime.apply` (a PUT
/config or an admin verb): before the swap (`before_apply`) every bind that
is new is opened, so a bind that fails refuses the whole change with a
ConfigError and nothing moves; after the swap (`on_apply`) the new sockets
start serving, listeners that disappeared stop accepting (their open
connections finish the request in flight and close), and routers are
rebuilt. A listener whose bind did not change keeps its socket, even when its
routes, timeouts or protocol changed: new connections see the new config.

Drain support: `inflight(backend)` lists the exchanges in flight to a backend
(each with `.request_id` and `.cut(reason)`), `close_pooled(backend)` closes
its idle keep-alive connections. L4 connections (proxy.io.l4) and WebSocket
tunnels are in it too (an L4Connection has `.connection_id` and `.cut`).

TLS (proxy/tls.py): a listener that terminates TLS has `bound.tls` (its
ServerTLS: certificates by server name) and accepts through `TLSAccept`;
pools that speak TLS to their backends have a ClientTLS per backend in
`upstream_tls`. Both are built from files when the server starts and before
a config is applied (`_before_apply`), so a missing or wrong certificate
refuses the change (ConfigError with the path) or the start (ListenError).

Views for the admin API: `live_connections()` (L4 connections and tunnels
with age, client, backend, bytes), `connection_counts()`, `tls_view()`.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import random
import socket
import sys
import time
from typing import Callable

from proxy.config import Config, ConfigError, ListenerConfig
from proxy.events import EventBus, Warning as WarningEvent, open_access_log
from proxy.http1.headers import RequestIds
from proxy.io.upstream import UpstreamPool
from proxy.metrics import Metrics
from proxy.model import BackendState
from proxy.routing import build_routers
from proxy.runtime import Runtime
from proxy.tls import build_server_tls, build_upstream_tls, listener_view

log = logging.getLogger("proxy.server")

BACKLOG = 1024


class ListenError(OSError):
    """A listener (or the admin API) cannot bind its address; the message says what to do."""


class BoundListener:
    """One listening socket and the listener config it currently serves."""

    __slots__ = ("name", "config", "sock", "server", "address", "active", "closed", "tls")

    def __init__(self, name: str, config: ListenerConfig, sock: socket.socket, tls=None):
        self.name = name
        self.config = config
        self.sock = sock
        self.server: asyncio.AbstractServer | None = None
        self.address: tuple[str, int] = sock.getsockname()[:2]
        self.active = 0  # open client connections
        self.closed = False
        self.tls = tls  # proxy.tls.ServerTLS when the listener terminates TLS

    def __repr__(self) -> str:
        return f"<BoundListener {self.name} {self.config.protocol} {self.address}>"


def bind_socket(name: str, config: ListenerConfig) -> socket.socket:
    host, port = config.bind
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    udp = config.protocol == "udp"
    sock = socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        if not udp:
            sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ListenError(exc.errno, listen_error_message(f"listener {name}", host, port, exc,
                                                          f"listeners.{name}.bind")) from exc
    return sock


def listen_error_message(what: str, host: str, port: int, exc: OSError, setting: str) -> str:
    reason = exc.strerror or str(exc)
    hint = (f"change {setting} (another port), or stop the process using it "
            f"(`ss -ltnp 'sport = :{port}'` shows which)")
    if exc.errno is not None and exc.errno in (99,):  # EADDRNOTAVAIL
        hint = f"{host} is not an address of this machine; change {setting}"
    return f"cannot listen on {host}:{port} for {what}: {reason}; {hint}"


class ProxyServer:
    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None):
        self.config = config
        self.clock = clock
        self.rng = rng or random.Random()
        self.bus = EventBus(history=config.admin.request_history,
                            access_log=open_access_log(config.access_log))
        self._access_log_target = config.access_log
        self.runtime = Runtime(config, bus=self.bus, clock=clock, rng=self.rng)
        self.routers = build_routers(config, self.rng)
        self.request_ids = RequestIds()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.upstreams: UpstreamPool | None = None
        self.connections: set = set()  # open client connections (L7Connection, L4 ...)
        self.listeners: dict[str, BoundListener] = {}
        self._plan: dict | None = None  # prepared by before_apply, used by on_apply
        self._inflight: dict[BackendState, set] = {}
        # (pool, backend) -> proxy.tls.ClientTLS for backends spoken to over TLS.
        self.upstream_tls: dict = {}
        self._tasks: set[asyncio.Task] = set()
        self.started = False
        self.stopping = False
        # Optional parts (None when not running); the admin API reads them.
        self.metrics = Metrics(self.runtime)
        self.bus.add_sink(self.metrics.sink)
        self.admin = None
        # Built now, not at start: it marks backends of checked pools as
        # "not checked yet" before the first client can be routed to them.
        from proxy.health import HealthManager

        self.health = HealthManager(self)
        self.drains = None
        self.runtime.before_apply.append(self._before_apply)
        self.runtime.on_apply.append(self._on_apply)

    # ------------------------------------------------------------ start / stop

    async def start(self) -> None:
        """Bind every listener, then start the admin API, health checks and draining.

        Raises ListenError (nothing left open) when an address cannot be bound.
        """
        self.loop = asyncio.get_running_loop()
        self.upstreams = UpstreamPool(self.loop)
        try:
            tls, self.upstream_tls = self._build_tls(self.config)
        except ConfigError as exc:
            raise ListenError(None, "TLS files cannot be used: " + "; ".join(exc.lines())) from None
        socks: dict[str, socket.socket] = {}
        try:
            for name, lc in self.config.listeners.items():
                socks[name] = bind_socket(name, lc)
        except ListenError:
            for sock in socks.values():
                sock.close()
            raise
        for name, sock in socks.items():
            bound = BoundListener(name, self.config.listeners[name], sock, tls[name])
            self.listeners[name] = bound
            await self._serve(bound)
        try:
            await self._start_parts()
        except BaseException:
            await self.stop(grace=0)
            raise
        self.started = True

    async def _start_parts(self) -> None:
        from proxy.control import start_admin

        try:
            self.admin = await start_admin(self)
        except OSError as exc:
            host, port = self.config.admin.listen
            message = str(exc) if "admin" in str(exc) else listen_error_message(
                "the admin API", host, port, exc, "admin.listen")
            raise ListenError(exc.errno, message) from exc
        await _maybe_await(self.health.start())
        from proxy.drain import DrainManager

        self.drains = DrainManager(self)
        await _maybe_await(self.drains.start())

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, let requests in flight finish (up to `grace`), close the rest."""
        if self.stopping:
            return
        self.stopping = True
        for bound in self.listeners.values():
            self._close_listener(bound)
        for part in (self.drains, self.health):
            if part is not None:
                try:
                    await _maybe_await(part.stop())
                except Exception:
                    log.exception("stopping %s failed", type(part).__name__)
        for conn in list(self.connections):
            conn.shutdown()
        deadline = time.monotonic() + grace
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            conn.abort()
        if self.upstreams is not None:
            self.upstreams.close_all()
        if getattr(self, "h2_upstreams", None) is not None:  # proxy.http2.upstream
            self.h2_upstreams.close_all()
        if self.admin is not None:
            try:
                await self.admin.stop()
            except Exception:
                log.exception("stopping the admin API failed")
            self.admin = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._close_access_log()

    def spawn(self, coro) -> asyncio.Task:
        """A background task the server keeps a reference to (and cancels on stop)."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------ listeners

    async def _serve(self, bound: BoundListener) -> None:
        if bound.config.protocol == "udp":
            from proxy.io.udp import serve  # datagrams: flows instead of connections

            bound.server = await serve(self, bound)
            return
        bound.server = await self.loop.create_server(
            lambda: self._protocol(bound), sock=bound.sock, backlog=BACKLOG)

    def _protocol(self, bound: BoundListener):
        if bound.config.proxy_protocol is not None:
            # A PROXY header first, from trusted networks only (proxy/io/accept.py).
            from proxy.io.accept import ProxyHeaderAccept

            return ProxyHeaderAccept(self, bound, lambda: self._own_protocol(bound))
        return self._own_protocol(bound)

    def _own_protocol(self, bound: BoundListener):
        if bound.config.protocol == "http":
            from proxy.http2.serve import http_protocol  # HTTP/1.1, and HTTP/2 when enabled

            return http_protocol(self, bound)
        return self._l4_protocol(bound)

    # proxy.io.l4.L4Connection, imported on the first tcp connection (an import
    # statement per accepted connection costs more than the lookup).
    _l4_class = None

    def _l4_protocol(self, bound: BoundListener):
        cls = ProxyServer._l4_class
        if cls is None:
            from proxy.io.l4 import L4Connection as cls

            ProxyServer._l4_class = cls
        return cls(self, bound)

    def _close_listener(self, bound: BoundListener) -> None:
        bound.closed = True
        if bound.server is not None:
            bound.server.close()
        else:
            bound.sock.close()

    def _before_apply(self, old: Config, new: Config) -> None:
        """Open the sockets a new config needs; refuse it (ConfigError) if one fails."""
        if self._plan:
            self._discard_plan()
        if self.loop is None:  # not started: nothing is bound yet
            self._plan = None
            return
        plan: dict[str, tuple[str, object]] = {}
        taken: set[str] = set()
        opened: list[socket.socket] = []
        # Certificates and CAs first: a file that cannot be used refuses the change.
        tls, upstream_tls = self._build_tls(new)
        try:
            for name, lc in new.listeners.items():
                current = self.listeners.get(name)
                if current is not None and _same_socket(current.config, lc):
                    plan[name] = ("keep", current)
                    taken.add(current.name)
                    continue
                donor = next((b for b in self.listeners.values()
                              if _same_socket(b.config, lc) and lc.bind[1] != 0
                              and b.name not in taken and b.name not in new.listeners), None)
                if donor is not None:
                    plan[name] = ("keep", donor)
                    taken.add(donor.name)
                    continue
                sock = bind_socket(name, lc)
                opened.append(sock)
                plan[name] = ("new", sock)
        except ListenError as exc:
            for sock in opened:
                sock.close()
            raise ConfigError([(f"listeners.{name}.bind", str(exc))]) from None
        plan["__tls__"] = ("tls", (tls, upstream_tls))
        self._plan = plan

    def _build_tls(self, config: Config) -> tuple[dict, dict]:
        """Listener ServerTLS (by name) and backend ClientTLS contexts for `config`, reusing
        the current ones whose settings and files did not change; ConfigError lists every
        file that cannot be used."""
        errors: list = []
        tls: dict = {}
        for name, lc in config.listeners.items():
            current = self.listeners.get(name)
            try:
                tls[name] = build_server_tls(name, lc, current.tls if current else None)
            except ConfigError as exc:
                errors += exc.errors
        upstream_tls: dict = {}
        try:
            upstream_tls = build_upstream_tls(config, self.upstream_tls)
        except ConfigError as exc:
            errors += exc.errors
        if errors:
            raise ConfigError(errors)
        return tls, upstream_tls

    def _discard_plan(self) -> None:
        for kind, item in (self._plan or {}).values():  # "tls" holds no socket
            if kind == "new":
                item.close()
        self._plan = None

    def _on_apply(self, old: Config, new: Config) -> None:
        self.config = new
        self.routers = build_routers(new, self.rng)
        self._reopen_access_log(new.access_log)
        plan, self._plan = self._plan, None
        if plan is None:
            return
        tls, self.upstream_tls = plan.pop("__tls__")[1]
        listeners: dict[str, BoundListener] = {}
        for name, lc in new.listeners.items():
            kind, item = plan[name]
            if kind == "keep":
                bound = item
                flipped = bound.config.protocol != lc.protocol
                bound.name = name
                bound.config = lc
                bound.tls = tls[name]
                if flipped:
                    # L7 <-> L4: connections opened under the old mode cannot be
                    # served by the new one. HTTP ones close after the response in
                    # flight (idle ones now); L4 ones keep their relay to the end.
                    for conn in list(self.connections):
                        if getattr(conn, "bound", None) is bound:
                            conn.shutdown()
            else:
                bound = BoundListener(name, lc, item, tls[name])
                self.spawn(self._serve(bound))
            listeners[name] = bound
        kept = {id(b) for b in listeners.values()}
        for bound in self.listeners.values():
            if id(bound) not in kept:
                self._close_listener(bound)
                for conn in list(self.connections):
                    if getattr(conn, "bound", None) is bound:
                        conn.shutdown()
        self.listeners = listeners

    # ------------------------------------------------------------ access log

    def _reopen_access_log(self, target: str | None) -> None:
        if target == self._access_log_target:
            return
        self._close_access_log()
        try:
            self.bus.access_log = open_access_log(target)
            self._access_log_target = target
        except OSError as exc:
            self.bus.access_log = None
            self._access_log_target = None
            self.bus.publish(WarningEvent(source="server",
                                          message=f"cannot open access_log {target}: {exc}"))

    def _close_access_log(self) -> None:
        log_file = self.bus.access_log
        self.bus.access_log = None
        if log_file is not None and log_file is not sys.stdout:
            log_file.close()

    # ------------------------------------------------------------ in flight (drain)

    def track(self, exchange, backend: BackendState) -> None:
        self._inflight.setdefault(backend, set()).add(exchange)

    def untrack(self, exchange, backend: BackendState) -> None:
        items = self._inflight.get(backend)
        if items is not None:
            items.discard(exchange)
            if not items:
                del self._inflight[backend]

    def inflight(self, backend: BackendState | str) -> list:
        """Exchanges in flight to `backend` (a BackendState, or a backend name)."""
        if isinstance(backend, str):
            return [ex for b, items in self._inflight.items() if b.name == backend
                    for ex in items]
        return list(self._inflight.get(backend, ()))

    def close_pooled(self, backend: BackendState) -> int:
        """Close the idle keep-alive connections to `backend`; returns how many."""
        if self.upstreams is None:
            return 0
        key = (backend.host, backend.port)
        h2 = getattr(self, "h2_upstreams", None)  # proxy.http2.upstream
        return self.upstreams.close_idle(key) + (h2.close_idle(key) if h2 is not None else 0)

    # ------------------------------------------------------------ views

    def live_connections(self) -> list[dict]:
        """Open L4 connections and WebSocket tunnels, oldest first (GET /connections)."""
        now = self.clock()
        out = []
        for conn in list(self.connections):
            live = getattr(conn, "live", None)
            view = live(now) if live is not None else None
            if view is not None:
                out.append(view)
        out.sort(key=lambda v: -v["age_s"])
        return out

    def connection_counts(self) -> dict:
        """How many client connections are open, by listener and kind (GET /state)."""
        by_listener: dict[str, dict] = {}
        for conn in list(self.connections):
            bound = getattr(conn, "bound", None)
            name = bound.name if bound is not None else "?"
            kind = getattr(conn, "kind", None)
            if kind is None:  # L7 (or a TLS handshake in progress)
                kind = "websocket" if getattr(conn, "tunnel", None) is not None else "http"
            counts = by_listener.setdefault(name, {})
            counts[kind] = counts.get(kind, 0) + 1
        total = {}
        for counts in by_listener.values():
            for kind, n in counts.items():
                total[kind] = total.get(kind, 0) + n
        return {"total": sum(total.values()), "by_kind": total, "by_listener": by_listener}

    def tls_view(self) -> dict:
        """Per listener: TLS mode (none | terminate | passthrough) and its settings."""
        out = {}
        for name, lc in self.config.listeners.items():
            bound = self.listeners.get(name)
            out[name] = listener_view(name, lc, bound.tls if bound is not None else None)
        return out

    def addresses(self) -> dict[str, tuple[str, int]]:
        return {name: b.address for name, b in self.listeners.items()}

    def listening_line(self) -> str:
        parts = [f"{name} {b.config.protocol} {_fmt(b.address)}"
                 + (f" tls-{b.config.tls.mode}" if b.config.tls is not None else "")
                 for name, b in self.listeners.items()]
        if self.admin is not None:
            parts.append(f"admin {_fmt((self.admin.host, self.admin.port))}")
        return "lblab proxy listening: " + "; ".join(parts)


def _same_socket(old: ListenerConfig, new: ListenerConfig) -> bool:
    """The bound socket can serve `new`: same address, and both TCP or both UDP (a
    listener switched to or from udp needs a socket of the other type)."""
    return old.bind == new.bind and (old.protocol == "udp") == (new.protocol == "udp")


def _fmt(address: tuple[str, int]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _maybe_await(value) -> None:
    if inspect.isawaitable(value):
        await value
