"""WebSocket (a long-lived upgraded connection) through an L7 listener, end to end.

The server is a small real aiohttp WebSocket app in a thread; the client is aiohttp's.
Checked: the relay after 101 both ways, the tunnel visible while open (GET
/connections, a connection_open event) and reported when closed (the request event),
the idle timeout, and a drain cutting the tunnel at its deadline.
"""
from __future__ import annotations

import asyncio
import threading
import time

import aiohttp
import pytest
from aiohttp import web

from tests.proxy.e2e.support import base_config
from tests.proxy.l4.support import live_connections, recent_events, wait_for


class WsServer:
    """aiohttp app on 127.0.0.1:0 in its own thread: /ws echoes text as '<name>: <text>'."""

    def __init__(self, name: str):
        self.name = name
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.closed_by_peer = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10), "WebSocket test server did not start"

    async def _ws(self, request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(f"{self.name}: {msg.data}")
        self.closed_by_peer += 1
        return ws

    def _run(self):
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_get("/ws", self._ws)
        self.runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = self.runner.addresses[0][1]
        self.ready.set()
        self.loop.run_forever()

    def stop(self):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def ws_server():
    server = WsServer("ws1")
    yield server
    server.stop()


def ws_config(server: WsServer, **pool_extra) -> dict:
    config = base_config({"ws": {"backends": [
        {"name": "ws1", "address": f"127.0.0.1:{server.port}"}], **pool_extra}})
    return config


async def _session(url: str, body):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        async with session.ws_connect(url, autoping=True, heartbeat=None) as ws:
            return await body(ws)


def test_websocket_relays_both_ways_and_is_visible_while_open(proxy_factory, ws_server):
    proxy = proxy_factory(ws_config(ws_server))
    url = f"http://127.0.0.1:{proxy.port()}/ws"
    seen = {}

    async def body(ws):
        for i in range(3):
            await ws.send_str(f"hello {i}")
            msg = await ws.receive(timeout=10)
            assert msg.data == f"ws1: hello {i}"
        live = await asyncio.to_thread(live_connections, proxy)
        seen["live"] = live
        await ws.send_str("x" * 100_000)  # a large frame, relayed as bytes
        msg = await ws.receive(timeout=10)
        assert msg.data == "ws1: " + "x" * 100_000

    asyncio.run(_session(url, body))
    (tunnel,) = seen["live"]
    assert tunnel["kind"] == "websocket" and tunnel["backend"] == "ws1"
    assert tunnel["path"] == "/ws" and tunnel["bytes_in"] > 0 and tunnel["bytes_out"] > 0
    rid = tunnel["connection_id"]
    event = proxy.event(rid)
    assert event["status"] == 101 and event["termination"] == "--"
    assert event["bytes_in"] > 100_000 and event["bytes_out"] > 100_000
    opened = [e for e in recent_events(proxy, "connection_open") if e["connection_id"] == rid]
    assert opened and opened[0]["kind"] == "websocket" and opened[0]["backend"] == "ws1"
    wait_for(lambda: not live_connections(proxy), what="the tunnel to leave /connections")


def test_websocket_idle_timeout_closes_the_tunnel(proxy_factory, ws_server):
    config = ws_config(ws_server)
    config["listeners"]["web"]["timeouts"] = {"tunnel_idle": "1s"}
    proxy = proxy_factory(config)
    url = f"http://127.0.0.1:{proxy.port()}/ws"

    async def body(ws):
        await ws.send_str("one")
        assert (await ws.receive(timeout=10)).data == "ws1: one"
        started = time.monotonic()
        msg = await ws.receive(timeout=15)  # nothing sent: the proxy closes at 1s idle
        return msg.type, time.monotonic() - started

    kind, waited = asyncio.run(_session(url, body))
    assert kind in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR)
    assert 0.5 < waited < 10, waited
    event = proxy.wait_events(lambda e: e.get("status") == 101)[0]
    assert "tunnel idle for 1s" in event["error"] and "timeouts.tunnel_idle" in event["error"]


def test_drain_cuts_a_tunnel_at_the_deadline(proxy_factory, ws_server):
    proxy = proxy_factory(ws_config(ws_server, deregistration_delay="1500ms"))
    url = f"http://127.0.0.1:{proxy.port()}/ws"

    async def body(ws):
        await ws.send_str("before")
        assert (await ws.receive(timeout=10)).data == "ws1: before"
        started = time.monotonic()
        status, result = await asyncio.to_thread(proxy.admin, "POST", "/pools/ws/backends/ws1/drain")
        assert status == 202, result
        await asyncio.sleep(0.5)
        await ws.send_str("during")  # still relayed while the drain waits
        assert (await ws.receive(timeout=10)).data == "ws1: during"
        msg = await ws.receive(timeout=15)
        return msg.type, time.monotonic() - started

    kind, waited = asyncio.run(_session(url, body))
    assert kind in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR)
    assert 1.4 < waited < 12, waited  # deregistration_delay is 1500ms
    event = proxy.wait_events(lambda e: e.get("status") == 101)[0]
    assert event["termination"] == "PD" and event["error"] == "cut by drain deadline"
    cuts = [e for e in recent_events(proxy, "drain") if e["what"] == "cut"]
    assert [e["request_id"] for e in cuts] == [event["request_id"]]
