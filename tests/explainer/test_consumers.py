"""The dashboard's WebSocket, through Channels' WebsocketCommunicator."""
import asyncio
import urllib.request

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from explainer import live
from explainer.consumers import LabConsumer
from lblab.asgi import application


def communicator(sandbox="default"):
    app = LabConsumer.as_asgi()
    comm = WebsocketCommunicator(app, f"/ws/lab/{sandbox}/")
    comm.scope["url_route"] = {"kwargs": {"sandbox": sandbox}}
    return comm


async def receive_until(comm, predicate, timeout=10.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        if left <= 0:
            raise TimeoutError("no matching message")
        message = await comm.receive_json_from(timeout=left)
        if predicate(message):
            return message


@pytest.mark.asyncio
async def test_first_paint_says_the_proxy_is_unreachable(site_on, dead_admin_url):
    site_on(admin_url=dead_admin_url)
    comm = communicator()
    connected, _ = await comm.connect()
    assert connected
    paint = await comm.receive_json_from(timeout=5)
    assert paint["kind"] == "first_paint" and paint["sandbox"] == "default"
    assert paint["proxy"]["reachable"] is False
    assert "does not answer" in paint["proxy"]["detail"] and dead_admin_url in paint["proxy"]["detail"]
    assert paint["state"] is None and paint["diagram"] is None
    await comm.disconnect()


@pytest.mark.asyncio
async def test_group_ticks_are_forwarded_to_the_browser(site_on, dead_admin_url):
    site_on(admin_url=dead_admin_url)
    comm = communicator()
    await comm.connect()
    await comm.receive_json_from(timeout=5)  # first paint
    layer = get_channel_layer()
    await layer.group_send("sandbox.default", {"type": "lab.tick", "seq": 7, "decisions": [],
                                               "proxy": {"reachable": True}})
    tick = await comm.receive_json_from(timeout=5)
    assert tick == {"kind": "tick", "seq": 7, "decisions": [], "proxy": {"reachable": True}}
    # another sandbox's group does not reach this page
    await layer.group_send("sandbox.other", {"type": "lab.tick", "seq": 8})
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()


@pytest.mark.asyncio
async def test_first_paint_and_live_decisions_with_the_embedded_bridge(site_on, lab):
    site_on(lab, embedded=True)
    urllib.request.urlopen(f"{lab.proxy_url}/before", timeout=3).read()
    comm = communicator()
    await comm.connect()
    try:
        paint = await receive_until(comm, lambda m: m["kind"] == "first_paint")
        assert paint["proxy"]["reachable"] is True and paint["bridge"] == "embedded"
        assert paint["proxy_url"] == lab.proxy_url
        assert paint["diagram"].startswith("flowchart LR") and "pool web" in paint["diagram"]
        assert [b["name"] for b in paint["state"]["pools"]["web"]["backends"]] == ["b1", "b2"]
        assert "config" not in paint["state"] and paint["config"]["pools"]["web"]
        assert [r["path"] for r in paint["requests"]] == ["/before"]
        assert any(e["type"] == "state_change" and e["new"] == "healthy" for e in paint["events"])
        assert live.bridges().running() == ["default"]

        def fetch():
            with urllib.request.urlopen(f"{lab.proxy_url}/during", timeout=3) as resp:
                return resp.headers["X-Request-Id"]
        request_id = await asyncio.to_thread(fetch)
        tick = await receive_until(comm, lambda m: m["kind"] == "tick" and any(
            d["request_id"] == request_id for d in m["decisions"]))
        assert tick["sandbox"] == "default" and "type" not in tick
        decision = next(d for d in tick["decisions"] if d["request_id"] == request_id)
        assert decision["path"] == "/during" and decision["candidates"]
    finally:
        await comm.disconnect()
        await live.bridges().stop_all()


@pytest.mark.asyncio
async def test_websocket_from_another_site_is_refused(settings):
    settings.ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
    comm = WebsocketCommunicator(application, "/ws/lab/default/",
                                 headers=[(b"origin", b"http://evil.example"),
                                          (b"host", b"127.0.0.1")])
    connected, _ = await comm.connect()
    assert not connected


@pytest.mark.asyncio
async def test_bad_sandbox_ids_do_not_route(settings):
    comm = WebsocketCommunicator(application, "/ws/lab/..%2Fetc/",
                                 headers=[(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")])
    with pytest.raises(ValueError):
        await comm.connect()
