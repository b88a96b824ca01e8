"""L4 connection events built on first read: what a reader sees is the connection as it was.

The L4 relay publishes a connection_open and a connection event per connection
with only what the data plane's own readers count (pool, backend, bytes,
duration, who closed, error) set at once; the client, candidates, the
algorithm's inputs, TLS and retries are built when something reads them (a
/events subscriber, the access log, a replay). These tests run a real proxy
in-process with a real echo backend, and pin that such an event reads exactly
as an eager one would, with the candidates' counts of the moment of the pick,
even when it is read after later connections changed them.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest
import pytest_asyncio

from labs.backend.testing import free_port
from proxy.config import parse_config
from proxy.events import ConnectionEvent, ConnectionOpen
from proxy.server import ProxyServer


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _start(backends: list[int]) -> tuple[ProxyServer, int]:
    port = free_port()
    server = ProxyServer(parse_config({
        "admin": {"listen": f"127.0.0.1:{free_port()}"},
        "listeners": {"game": {"bind": f"127.0.0.1:{port}", "protocol": "tcp", "pool": "e"}},
        "pools": {"e": {"balancer": {"algorithm": "round_robin"},
                        "backends": [{"name": f"e{i}", "address": f"127.0.0.1:{p}"}
                                     for i, p in enumerate(backends, 1)]}}}))
    await server.start()
    return server, port


async def _wait_for(predicate, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def _ping(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    host, client_port = writer.get_extra_info("sockname")[:2]
    return reader, writer, f"{host}:{client_port}"


@pytest_asyncio.fixture
async def echoes():
    servers = [await asyncio.start_server(_echo, "127.0.0.1", 0) for _ in range(2)]
    yield [s.sockets[0].getsockname()[1] for s in servers]
    for s in servers:
        s.close()
        await s.wait_closed()


@pytest.mark.asyncio
async def test_events_read_after_the_close_show_the_pick_as_it_was(echoes):
    server, port = await _start(echoes)
    seen: list = []
    server.bus.add_sink(seen.append)
    try:
        # The first connection stays open while the second is picked: the second's
        # candidates count it on e1; by the time anything reads, both are closed.
        _, w1, client1 = await _ping(port)
        _, w2, client2 = await _ping(port)
        w2.close()
        await _wait_for(lambda: sum(type(e) is ConnectionEvent for e in seen) == 1)
        w1.close()
        await _wait_for(lambda: sum(type(e) is ConnectionEvent for e in seen) == 2)
    finally:
        await server.stop(grace=0)

    opens = [e for e in seen if type(e) is ConnectionOpen]
    closes = {e.connection_id: e for e in seen if type(e) is ConnectionEvent}
    assert [o.backend for o in opens] == ["e1", "e2"]
    second = opens[1]
    assert (second.listener, second.client, second.kind, second.pool) == (
        "game", client2, "tcp", "e")
    assert second.algorithm == "round_robin" and second.inputs == {"index": 1, "of": 2}
    assert [(c["name"], c["connections"], c["outstanding"]) for c in second.candidates] == [
        ("e1", 1, 1), ("e2", 0, 0)]
    assert second.tls is None and second.proxy_protocol is None and second.zone is None

    first_closed = closes[opens[0].connection_id]
    assert (first_closed.client, first_closed.backend, first_closed.closed_by) == (
        client1, "e1", "client")
    assert (first_closed.bytes_in, first_closed.bytes_out, first_closed.error) == (4, 4, None)
    assert first_closed.retries == [] and first_closed.connect_ms is not None
    assert [(c["name"], c["connections"]) for c in first_closed.candidates] == [
        ("e1", 0), ("e2", 0)]
    # Read whole (as the stream and the access log do): the same as an eager event.
    whole = json.loads(first_closed.to_json())
    eager = ConnectionEvent(**{k: v for k, v in whole.items() if k != "type"})
    assert whole == eager.to_dict() and first_closed == eager
    assert dataclasses.replace(first_closed, streams=1).streams == 1


@pytest.mark.asyncio
async def test_the_proxys_own_readers_leave_the_rich_part_unbuilt(echoes):
    """Metrics and drains count a connection from the fields set at once: with no
    subscriber and no access log, no candidate list or client text is ever made."""
    server, port = await _start(echoes)
    seen: list = []
    server.bus.add_sink(seen.append)
    try:
        _, writer, _ = await _ping(port)
        writer.close()
        await _wait_for(lambda: any(type(e) is ConnectionEvent for e in seen))
        text = server.metrics.render()[0].decode()
    finally:
        await server.stop(grace=0)
    events = [e for e in seen if type(e) in (ConnectionOpen, ConnectionEvent)]
    assert len(events) == 2
    assert all(e._lazy is not None for e in events), "something read the rich part"
    assert 'lblab_connections_total{backend="e1",closed_by="client",listener="game",' in text
