"""A connection that ends is freed at once, by reference counting, not by the cyclic GC.

Each connection's objects point at each other (a protocol and its deadline's
callback, a reader and llhttp's parser holding the reader's bound methods, a
backend protocol and its client connection). Left as they are, every closed
connection would be a reference cycle: freed only by the next pass of the
cyclic GC, which then walks them all, and under connection churn runs every few
dozen connections. The proxy breaks these links when a connection ends; this
drives real connections through a real proxy (http and tcp listeners, a real
toy backend) and asks the GC what it would have had to collect.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc

import pytest

from labs.backend.testing import free_port, start_backends
from proxy.config import parse_config
from proxy.http2.server import H2Exchange, H2Stream
from proxy.http1.parse import RequestReader, ResponseReader
from proxy.io import Deadline
from proxy.io.l4 import L4Connection, L4Upstream
from proxy.io.l7 import L7Connection
from proxy.io.upstream import UpstreamConnection
from proxy.server import ProxyServer
from tests.proxy.test_drain import wait_for

OURS = (L7Connection, L4Connection, L4Upstream, UpstreamConnection, RequestReader,
        ResponseReader, Deadline, H2Stream, H2Exchange)


@pytest.fixture
def backend():
    [handle] = start_backends(["c1"])
    yield handle
    handle.stop()


async def one_exchange(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await writer.wait_closed()
    return data


@contextlib.asynccontextmanager
async def nothing_left_for_the_gc(server: ProxyServer):
    """Around traffic through a started `server`: when it is done, its connections
    ended and the server stopped, no object of the proxy's is cyclic garbage."""
    gc.collect()
    flags = gc.get_debug()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds is kept in gc.garbage
    try:
        yield
        await wait_for(lambda: not server.connections)
        await server.stop(grace=0)  # also closes the pooled backend connections
        await asyncio.sleep(0.05)  # their connection_lost callbacks
        gc.collect()
        left = sorted({type(o).__name__ for o in gc.garbage if isinstance(o, OURS)})
        assert left == [], f"reference cycles left by ended connections: {left}"
    finally:
        gc.set_debug(flags)
        gc.garbage.clear()


def pool(backend) -> dict:
    return {"app": {"backends": [{"name": "c1", "address": f"127.0.0.1:{backend.port}"}]}}


@pytest.mark.asyncio
async def test_closed_connections_leave_nothing_for_the_cyclic_gc(backend):
    http_port, tcp_port = free_port(), free_port()
    server = ProxyServer(parse_config({
        "admin": {"listen": f"127.0.0.1:{free_port()}"},
        "listeners": {
            "web": {"bind": f"127.0.0.1:{http_port}", "routes": ["all"]},
            "raw": {"bind": f"127.0.0.1:{tcp_port}", "protocol": "tcp", "pool": "app"}},
        "routes": {"all": {"forward": "app"}},
        "pools": pool(backend)}))
    await server.start()
    async with nothing_left_for_the_gc(server):
        for _ in range(10):
            for port in (http_port, tcp_port):
                data = await one_exchange(port)
                assert data.startswith(b"HTTP/1.1 200"), data[:100]


def h2_requests(port: int, count: int) -> list[int]:
    """`count` GETs as streams of one HTTP/2 connection (blocking: run in a thread)."""
    from tests.proxy.http2.h2client import H2Client

    client = H2Client(port)
    try:
        statuses = []
        for _ in range(count):
            headers, _ = client.response(client.get("/"))
            statuses.append(int(headers[b":status"]))
        return statuses
    finally:
        client.close()


@pytest.mark.asyncio
async def test_ended_http2_streams_leave_nothing_for_the_cyclic_gc(backend):
    port = free_port()
    server = ProxyServer(parse_config({
        "admin": {"listen": f"127.0.0.1:{free_port()}"},
        "listeners": {"web": {"bind": f"127.0.0.1:{port}", "routes": ["all"],
                              "http2": {"max_concurrent_streams": 100}}},
        "routes": {"all": {"forward": "app"}},
        "pools": pool(backend)}))
    await server.start()
    async with nothing_left_for_the_gc(server):
        assert await asyncio.to_thread(h2_requests, port, 20) == [200] * 20
