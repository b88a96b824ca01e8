"""The floor of a Python L4 relay: uvloop, round robin, and nothing else.

bench/l4.py's target "bare-relay" runs this beside LBLab's tcp listener: accept,
connect to the next backend, relay bytes both ways with half-close, close. No
events, metrics, timeouts, drains, limits or retries: what one connection costs
in Python on uvloop before any of LBLab's features, so what is left to cut in
proxy/io/l4.py is the difference.

    python bench/bare_l4_relay.py PORT HOST:PORT [HOST:PORT ...]
"""
from __future__ import annotations

import asyncio
import itertools
import signal
import sys

import uvloop

READY = "bare relay listening"


class Upstream(asyncio.Protocol):
    def __init__(self, client: "Client"):
        self.client = client
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.client.transport.write(data)

    def eof_received(self) -> bool:
        if self.client.transport.can_write_eof():
            self.client.transport.write_eof()
        return True

    def connection_lost(self, exc) -> None:
        self.client.transport.close()


class Client(asyncio.Protocol):
    backends: itertools.cycle

    def __init__(self):
        self.transport = None
        self.upstream: Upstream | None = None
        self.buf: list[bytes] = []
        self.eof = False  # the client's EOF came while connecting: passed on once connected

    def connection_made(self, transport) -> None:
        self.transport = transport
        asyncio.get_running_loop().create_task(self.connect())

    async def connect(self) -> None:
        host, port = next(self.backends)
        try:
            transport, self.upstream = await asyncio.get_running_loop().create_connection(
                lambda: Upstream(self), host, port)
        except OSError:
            self.transport.abort()
            return
        for data in self.buf:
            transport.write(data)
        self.buf = []
        if self.eof:
            transport.write_eof()

    def data_received(self, data: bytes) -> None:
        if self.upstream is None:
            self.buf.append(data)
        else:
            self.upstream.transport.write(data)

    def eof_received(self) -> bool:
        if self.upstream is None:
            self.eof = True
        elif self.upstream.transport.can_write_eof():
            self.upstream.transport.write_eof()
        return True

    def connection_lost(self, exc) -> None:
        if self.upstream is not None:
            self.upstream.transport.close()


async def main(port: int, backends: list[tuple[str, int]]) -> None:
    Client.backends = itertools.cycle(backends)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Client, "127.0.0.1", port, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(READY, flush=True)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__.rstrip().splitlines()[-1].strip())
    addresses = [(a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])) for a in sys.argv[2:]]
    uvloop.install()
    asyncio.run(main(int(sys.argv[1]), addresses))
