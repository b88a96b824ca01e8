"""``--mode udp``: answer each datagram with the backend's name, a space and the payload.

A UDP balancer forwards datagrams per flow (client address and port); this
backend makes the choice visible in every reply (``b1 hello``). Faults, per
datagram, from the same ``FaultState`` as HTTP: warm-up, dependency_down and
error_rate answer ``ERR <why>`` instead; hang and reset drop the datagram
(UDP has no reset: silence is what a client sees); latency/jitter delay the
reply; cpu_ms burns CPU. The HTTP control API and /health run on
--control-port, as in tcp mode.
"""
from __future__ import annotations

import asyncio

from .app import BackendApp, burn_cpu

MAX_DATAGRAM = 65_507


class UdpBackend(asyncio.DatagramProtocol):
    def __init__(self, app: BackendApp):
        self.app = app
        self.transport = None
        self.datagrams = 0
        self.clients: set[str] = set()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        app = self.app
        self.datagrams += 1
        app.stats.requests_total += 1
        app.stats.by_kind["app"] += 1
        self.clients.add(f"{addr[0]}:{addr[1]}")
        now = app.clock()
        if app.faults.app_quiet(now):
            self._reply(app.name.encode() + b" " + data, addr)
            return
        asyncio.get_running_loop().create_task(self._faulty(data, addr, now))

    async def _faulty(self, data: bytes, addr, now: float) -> None:
        app = self.app
        d = app.faults.decide_app(now, app.rng)
        injected = app.stats.injected
        if d.warming_up:
            injected["warming_up"] += 1
            self._reply(b"ERR warming up", addr)
            return
        if d.reset or d.hang:
            injected["reset" if d.reset else "hang"] += 1
            return
        if d.delay_s:
            await app.sleep(d.delay_s)
        if d.cpu_ms:
            burn_cpu(d.cpu_ms)
        if d.dependency_down:
            injected["dependency_down"] += 1
            self._reply(b"ERR dependency down", addr)
            return
        if d.error_status is not None:
            injected["error"] += 1
            self._reply(b"ERR injected error", addr)
            return
        self._reply(app.name.encode() + b" " + data, addr)

    def _reply(self, data: bytes, addr) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data[:MAX_DATAGRAM], addr)

    def snapshot(self) -> dict:
        return {"udp": {"datagrams": self.datagrams, "clients": len(self.clients)}}
