"""Passive and active health inside the real ProxyServer, with toy backend processes."""
from __future__ import annotations

import asyncio

import pytest

from labs.backend.testing import free_port, start_backends
from proxy.config import parse_config
from proxy.model import Health
from proxy.server import ProxyServer

from tests.proxy.health.helpers import Recorder


async def http_get(port: int, path: str = "/") -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def wait_for(predicate, timeout: float = 10.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.fixture
def backends():
    handles = start_backends(["o1", "o2"])
    yield handles
    for h in handles:
        h.stop()


async def start_proxy(backends, **pool):
    listen = free_port()
    config = parse_config({
        "admin": {"listen": f"127.0.0.1:{free_port()}"},
        "listeners": {"main": {"bind": f"127.0.0.1:{listen}", "routes": ["all"]}},
        "routes": {"all": {"forward": "web"}},
        "pools": {"web": {"backends": [{"name": h.name, "address": f"127.0.0.1:{h.port}"}
                                       for h in backends], "retries": 0, **pool}}})
    server = ProxyServer(config)
    await server.start()
    return server, listen


@pytest.mark.asyncio
async def test_outlier_detection_ejects_a_failing_backend_and_brings_it_back(backends):
    o1, o2 = backends
    await o1.acontrol({"error_rate": 1.0, "error_status": 500})
    server, port = await start_proxy(
        backends, outlier={"consecutive_5xx": 3, "base_ejection": "600ms",
                           "max_ejection_percent": 50})
    rec = Recorder(server.bus)
    try:
        statuses = [(await http_get(port))[0] for _ in range(12)]
        [ejected] = rec.changes(kind="ejection", new="ejected")
        assert ejected.backend == "o1"
        assert ejected.cause == "3 consecutive 5xx: ejected for 600 ms (ejection 1)"
        assert statuses.count(500) == 3  # round robin: o1's third 500 ejected it
        assert statuses[-4:] == [200] * 4  # since then only o2
        await o1.acontrol({"error_rate": 0.0})
        await wait_for(lambda: rec.changes(kind="ejection", new="included"))
        [back] = rec.changes(kind="ejection", new="included")
        assert back.cause == "ejection time 600 ms elapsed"
        bodies = [(await http_get(port))[1] for _ in range(4)]
        assert any(b'"backend": "o1"' in b for b in bodies)
    finally:
        await server.stop(grace=0)


@pytest.mark.asyncio
async def test_active_checks_gate_traffic_in_the_real_proxy(backends):
    o1, o2 = backends
    server, port = await start_proxy(
        backends, health={"interval": "100ms", "timeout": "200ms", "healthy_threshold": 2,
                          "unhealthy_threshold": 2})
    try:
        runtime = server.runtime
        await wait_for(lambda: all(b.health is Health.HEALTHY
                                   for b in runtime.pools["web"].backends.values()))
        await o1.acontrol({"health_fail": True})
        await wait_for(lambda: runtime.backend("web", "o1").health is Health.UNHEALTHY)
        bodies = [(await http_get(port))[1] for _ in range(4)]
        assert all(b'"backend": "o2"' in b for b in bodies)
        state = server.health.state()["pools"]["web"]["backends"]["o1"]
        assert state["health"] == "unhealthy"
        assert state["last_probe"]["detail"].startswith("status 503 (expected 200)")
    finally:
        await server.stop(grace=0)
