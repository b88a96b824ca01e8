"""UDP (L4) listeners: datagrams balanced per flow, with a flow table.

Theory of operation
-------------------
UDP has no connections, so the proxy makes its own: a *flow* is every
datagram from one client address and port. The first datagram of a flow is
one pick of the pool's balancer (hash algorithms see the client address, as
at TCP L4); every later datagram of the flow goes to the same backend, and
the backend's replies go back to that client. A flow ends when no datagram
has passed either way for `udp.flow_idle` (the only way to know a UDP client
is gone), when a drain reaches its deadline (`cut`), or when the backend's
host says the port is unreachable (ICMP, seen as a refused receive).

Each flow has its own connected UDP socket towards the backend (as nginx's
stream proxy does), so a reply is matched to its flow by the socket it
arrives on and the backend sees one source port per client. Sockets are read
with `loop.add_reader` callbacks: no task or transport per flow.

`FlowTable` is the pure part: flows by client address, the limit
(`udp.max_flows`: the first datagram of a new client beyond it is dropped and
counted), and which flows are idle at a given time. A datagram dropped for
the limit or for want of a backend is a `connection` event (kind udp, no
backend, `error: "datagram dropped: <why>"`), at most one per second.

Counters and events, like TCP connections: an open flow counts in its
backend's `active_connections` and `outstanding` (least_connections sees
flows) and in `server.inflight(backend)` (drain); `ConnectionOpen` (kind udp:
pool, candidates, the balancer's inputs, the backend chosen) when it starts,
one `ConnectionEvent` (kind udp, datagrams and bytes each way, `closed_by`
idle | backend | proxy, why) when it ends.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import time

from proxy.balancers.base import PickContext
from proxy.events import ConnectionEvent, ConnectionOpen

log = logging.getLogger("proxy.udp")

MAX_DATAGRAM = 65_535
SWEEP_MAX = 1.0  # the idle sweep runs at least this often (seconds)


class FlowTable:
    """Flows by client (address, port); pure: the caller passes the time."""

    def __init__(self, max_flows: int, idle: float):
        self.max_flows = max_flows
        self.idle = idle
        self.flows: dict[tuple, "UDPFlow"] = {}
        self.dropped = 0  # datagrams of new clients refused at the limit

    def get(self, client: tuple):
        return self.flows.get(client)

    def full(self) -> bool:
        return len(self.flows) >= self.max_flows

    def add(self, client: tuple, flow) -> None:
        self.flows[client] = flow

    def remove(self, client: tuple, flow) -> None:
        if self.flows.get(client) is flow:
            del self.flows[client]

    def idle_flows(self, now: float) -> list:
        """Flows with no datagram either way for `idle` seconds at `now`."""
        limit = self.idle
        return [f for f in self.flows.values() if now - f.last_seen >= limit]

    def __len__(self) -> int:
        return len(self.flows)


class UDPFlow:
    """One client address and port, pinned to one backend."""

    kind = "udp"

    def __init__(self, listener: "UDPListener", client: tuple, pool, choice, connection_id: str):
        self.listener = listener
        self.server = listener.server
        self.bound = listener.bound
        self.client_addr = client
        self.client = f"[{client[0]}]:{client[1]}" if ":" in client[0] else \
            f"{client[0]}:{client[1]}"
        self.pool = pool
        self.pool_name = pool.name
        self.choice = choice
        self.backend = choice.backend
        self.connection_id = connection_id
        self.sock: socket.socket | None = None
        self.opened = self.server.clock()
        self.last_seen = listener.loop.time()
        self.datagrams_in = self.datagrams_out = 0
        self.bytes_in = self.bytes_out = 0
        self.done = False
        self.acquired = False

    def start(self) -> str | None:
        """Open the socket to the backend; None, or why it cannot be opened."""
        backend = self.backend
        family = socket.AF_INET6 if ":" in backend.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect((backend.host, backend.port))  # no packet: fixes the peer
        except OSError as exc:
            sock.close()
            return f"cannot open a UDP socket to {backend.name} ({backend.address}): " \
                   f"{exc.strerror or exc}"
        self.sock = sock
        self.listener.loop.add_reader(sock.fileno(), self._readable)
        backend.request_started()
        backend.active_connections += 1
        self.pool.balancer.acquire(backend)
        self.acquired = True
        self.server.track(self, backend)
        self.server.connections.add(self)
        return None

    def to_backend(self, data: bytes) -> None:
        self.last_seen = self.listener.loop.time()
        self.datagrams_in += 1
        self.bytes_in += len(data)
        try:
            self.sock.send(data)
        except BlockingIOError:
            self.listener.dropped_send += 1  # kernel buffer full: UDP may drop, so do we
        except OSError as exc:
            self.end("backend", _refused(exc, self))

    def _readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        for _ in range(64):  # bounded per callback: other flows get their turn
            try:
                data = sock.recv(MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError as exc:
                self.end("backend", _refused(exc, self))
                return
            self.last_seen = self.listener.loop.time()
            self.datagrams_out += 1
            self.bytes_out += len(data)
            self.listener.reply(data, self.client_addr)

    # ------------------------------------------------------------ the end

    def cut(self, reason: str = "drain deadline") -> None:
        self.end("proxy", reason if reason.startswith("cut") else f"cut by {reason}")

    def shutdown(self) -> None:
        self.end("proxy", "the proxy is stopping")

    def abort(self) -> None:
        self.end("proxy", "the proxy is stopping")

    def end(self, closed_by: str, error: str | None) -> None:
        if self.done:
            return
        self.done = True
        listener = self.listener
        listener.table.remove(self.client_addr, self)
        self.server.connections.discard(self)
        if self.sock is not None:
            try:
                listener.loop.remove_reader(self.sock.fileno())
            except (ValueError, OSError):  # loop closing: the fd goes with it
                pass
            self.sock.close()
            self.sock = None
        if self.acquired:
            self.acquired = False
            backend = self.backend
            backend.request_finished(self.server.clock() - self.opened,
                                     failed=closed_by == "backend")
            backend.active_connections -= 1
            self.pool.balancer.release(backend)
            self.server.untrack(self, backend)
        choice = self.choice
        try:
            self.server.bus.publish(ConnectionEvent(
                connection_id=self.connection_id, listener=self.bound.name,
                client=self.client, kind="udp", pool=self.pool_name,
                algorithm=choice.algorithm, candidates=choice.candidates,
                inputs=choice.inputs, sticky=choice.sticky, backend=self.backend.name,
                bytes_in=self.bytes_in, bytes_out=self.bytes_out,
                duration_ms=round((self.server.clock() - self.opened) * 1000, 3),
                closed_by=closed_by, error=error,
                streams=None))
        except Exception:
            log.exception("publishing the event of UDP flow %s failed", self.connection_id)

    def live(self, now: float) -> dict:
        return {
            "connection_id": self.connection_id, "kind": "udp", "listener": self.bound.name,
            "client": self.client, "pool": self.pool_name, "backend": self.backend.name,
            "phase": "flow", "age_s": round(now - self.opened, 3),
            "idle_s": round(max(0.0, self.listener.loop.time() - self.last_seen), 3),
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
            "datagrams_in": self.datagrams_in, "datagrams_out": self.datagrams_out,
        }


def _refused(exc: OSError, flow: UDPFlow) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return (f"backend {flow.backend.name} ({flow.backend.address}) is unreachable: "
                "ICMP port unreachable (nothing listens on that UDP port)")
    return f"UDP error with backend {flow.backend.name}: {exc.strerror or exc}"


class UDPListener(asyncio.DatagramProtocol):
    """The listening socket of a udp listener: client datagrams in, replies out."""

    def __init__(self, server, bound):
        self.server = server
        self.bound = bound
        self.loop = server.loop
        settings = bound.config.udp
        self.table = FlowTable(settings.max_flows if settings else 10_000,
                               settings.flow_idle if settings else 30.0)
        self.transport = None
        self.dropped_send = 0
        self._warned_at = 0.0
        self._sweeper: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._arm_sweep()

    def datagram_received(self, data: bytes, addr) -> None:
        client = (addr[0], addr[1])
        flow = self.table.get(client)
        if flow is None:
            flow = self._open(client)
            if flow is None:
                return
        flow.to_backend(data)

    def error_received(self, exc) -> None:
        log.debug("udp listener %s: %s", self.bound.name, exc)

    def connection_lost(self, exc) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for flow in list(self.table.flows.values()):
            flow.end("proxy", "the listener closed")

    def reply(self, data: bytes, client: tuple) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, client)

    # ------------------------------------------------------------ new flows

    def _open(self, client: tuple) -> UDPFlow | None:
        settings = self.bound.config.udp
        if settings is not None:  # a reload may have changed them
            self.table.max_flows = settings.max_flows
            self.table.idle = settings.flow_idle
        server = self.server
        pool_name = self.bound.config.pool
        if self.table.full() or self.bound.closed:
            self.table.dropped += 1
            self._refused_flow(client, server.request_ids.next(), pool_name, None, (
                f"{len(self.table)} flows open on listener {self.bound.name} "
                f"(udp.max_flows {self.table.max_flows}): datagrams of new clients are "
                f"dropped ({self.table.dropped} so far)"))
            return None
        pool = server.runtime.pools.get(pool_name)
        connection_id = server.request_ids.next()
        ctx = PickContext(client_ip=client[0], now=server.clock(), zone=self.bound.config.zone)
        choice = pool.choose(ctx) if pool is not None else None
        if choice is None or choice.backend is None:
            why = (choice.reason if choice is not None and choice.reason
                   else f"no pool named {pool_name!r}" if pool is None
                   else f"no eligible backend in pool {pool_name}")
            self._refused_flow(client, connection_id, pool_name, choice, why)
            return None
        flow = UDPFlow(self, client, pool, choice, connection_id)
        error = flow.start()
        if error is not None:
            self._refused_flow(client, connection_id, pool_name, choice, error)
            return None
        self.table.add(client, flow)
        try:
            server.bus.publish(ConnectionOpen(
                connection_id=connection_id, listener=self.bound.name, client=flow.client,
                kind="udp", pool=pool_name, algorithm=choice.algorithm,
                candidates=choice.candidates, inputs=choice.inputs, sticky=choice.sticky,
                backend=choice.backend.name, backup=choice.backup,
                zone=dict(choice.zone, backend_zone=choice.backend.zone) if choice.zone
                else None))
        except Exception:
            log.exception("publishing connection_open of UDP flow %s failed", connection_id)
        return flow

    def _refused_flow(self, client, connection_id, pool_name, choice, why: str) -> None:
        """No backend: the datagram is dropped, and said so once per second at most."""
        now = time.monotonic()
        if now - self._warned_at < 1.0:
            return
        self._warned_at = now
        host, port = client
        try:
            self.server.bus.publish(ConnectionEvent(
                connection_id=connection_id, listener=self.bound.name,
                client=f"{host}:{port}", kind="udp", pool=pool_name,
                algorithm=choice.algorithm if choice is not None else None,
                candidates=choice.candidates if choice is not None else [],
                inputs=choice.inputs if choice is not None else {},
                closed_by="proxy", error=f"datagram dropped: {why}"))
        except Exception:
            log.exception("publishing a dropped UDP flow failed")

    # ------------------------------------------------------------ idle expiry

    def _arm_sweep(self) -> None:
        every = min(SWEEP_MAX, max(0.01, self.table.idle / 4))
        self._sweeper = self.loop.call_later(every, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        idle = self.table.idle
        for flow in self.table.idle_flows(self.loop.time()):
            flow.end("idle", f"no datagram either way for {idle:g}s (udp.flow_idle)")
        if self.transport is not None and not self.transport.is_closing():
            self._arm_sweep()


async def serve(server, bound) -> asyncio.DatagramTransport:
    """Start serving a bound UDP socket; returns the transport (closed to stop)."""
    transport, _ = await server.loop.create_datagram_endpoint(
        lambda: UDPListener(server, bound), sock=bound.sock)
    return transport


# ---------------------------------------------------------------- health probe

class _Probe(asyncio.DatagramProtocol):
    def __init__(self, done: asyncio.Future):
        self.done = done

    def datagram_received(self, data, addr) -> None:
        if not self.done.done():
            self.done.set_result(data)

    def error_received(self, exc) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


async def probe_udp(host: str, port: int, config, clock):
    """Send `health.send`; pass on a reply (containing `health.expect`, when set)."""
    from proxy.health.active import ProbeResult, _ms, await_answer

    loop = asyncio.get_running_loop()
    started = clock()
    done = loop.create_future()

    async def send():
        transport, _ = await loop.create_datagram_endpoint(lambda: _Probe(done),
                                                           remote_addr=(host, port))
        transport.sendto(config.send.encode("utf-8"))
        return transport

    reply, failed = await await_answer(send, done, config.timeout, clock, started,
                                       silent="no reply within")
    if failed is not None:
        return failed
    latency = clock() - started
    text = reply[:80].decode("utf-8", "replace")
    if config.expect is not None and config.expect.encode("utf-8") not in reply:
        return ProbeResult(False, f"reply {text!r} lacks {config.expect!r}", latency * 1000)
    return ProbeResult(True, f"reply {text!r} in {_ms(latency)}", latency * 1000)
