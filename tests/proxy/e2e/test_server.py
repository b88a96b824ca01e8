"""ProxyServer in-process: listener (re)binding, the drain hooks, upgrades (real sockets)."""
from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time

import pytest

from proxy.config import ConfigError, parse_config, to_data
from proxy.model import Intent
from proxy.server import ProxyServer
from tests.proxy.e2e.support import RawConn, backend_entry, base_config, free_port, request

pytestmark = pytest.mark.timeout(60)


@contextlib.asynccontextmanager
async def running(config: dict):
    server = ProxyServer(parse_config(config))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=0.5)


def get(port: int, path: str = "/", **kw):
    return asyncio.to_thread(request, port, path=path, **kw)


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


class ScriptedServer(threading.Thread):
    """A one-connection-at-a-time backend that answers with fixed bytes, then does `after`."""

    def __init__(self, answer: bytes, after: str = "hold"):
        super().__init__(daemon=True)
        self.answer = answer
        # "hold": keep the socket open; "echo": echo every byte back;
        # "close": close as soon as the next request arrives (the keep-alive race);
        # "eof": close right after the answer (a body that ends with the connection).
        self.after = after
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop_flag = threading.Event()

    def run(self):
        while not self.stop_flag.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            with conn:
                conn.settimeout(0.2)
                head = b""
                try:
                    while b"\r\n\r\n" not in head and not self.stop_flag.is_set():
                        try:
                            data = conn.recv(65536)
                        except socket.timeout:
                            continue
                        if not data:
                            break
                        head += data
                    conn.sendall(self.answer)
                    while self.after != "eof" and not self.stop_flag.is_set():
                        try:
                            data = conn.recv(65536)
                        except socket.timeout:
                            continue
                        if not data:
                            break
                        if self.after == "echo":
                            conn.sendall(data)
                        elif self.after == "close":
                            break
                    if self.after == "eof":
                        pass
                except OSError:
                    pass

    def stop(self):
        self.stop_flag.set()
        self.join(3)
        self.sock.close()


@pytest.fixture
def scripted():
    servers = []

    def make(answer: bytes, after: str = "hold") -> ScriptedServer:
        server = ScriptedServer(answer, after)
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


async def wait_for(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------- listeners follow the config

@pytest.mark.asyncio
async def test_put_config_opens_and_closes_listeners(backends):
    config = base_config({"p": {"backends": [backend_entry(backends["b1"])]}})
    async with running(config) as server:
        port = server.addresses()["web"][1]
        assert (await get(port)).status == 200
        extra_port = free_port()
        data = to_data(server.runtime.config)
        data["listeners"]["extra"] = {"bind": f"127.0.0.1:{extra_port}", "routes": ["all"]}
        server.runtime.apply_data(data, "put_config", "config")
        await wait_for(lambda: server.listeners["extra"].server is not None)
        assert (await get(extra_port)).status == 200
        assert (await get(port)).status == 200  # the untouched listener kept its socket
        assert "extra http 127.0.0.1:" in server.listening_line()

        del data["listeners"]["extra"]
        server.runtime.apply_data(data, "put_config", "config")
        await wait_for(lambda: refused(extra_port))
        assert (await get(port)).status == 200


@pytest.mark.asyncio
async def test_a_bind_that_fails_refuses_the_whole_change(backends):
    config = base_config({"p": {"backends": [backend_entry(backends["b1"])]}})
    async with running(config) as server:
        port = server.addresses()["web"][1]
        generation = server.runtime.generation
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen(1)
            busy = holder.getsockname()[1]
            data = to_data(server.runtime.config)
            data["listeners"]["other"] = {"bind": f"127.0.0.1:{busy}", "routes": ["all"]}
            data["pools"]["p"]["retries"] = 3
            with pytest.raises(ConfigError) as info:
                server.runtime.apply_data(data, "put_config", "config")
        assert info.value.errors[0][0] == "listeners.other.bind"
        assert f"127.0.0.1:{busy}" in info.value.errors[0][1]
        assert server.runtime.generation == generation  # nothing changed
        assert server.runtime.config.pools["p"].retries == 1
        assert set(server.listeners) == {"web"}
        assert (await get(port)).status == 200


@pytest.mark.asyncio
async def test_route_changes_apply_to_the_next_request(backends):
    config = base_config({"p": {"backends": [backend_entry(backends["b1"])]}})
    async with running(config) as server:
        port = server.addresses()["web"][1]
        data = to_data(server.runtime.config)
        data["routes"]["all"] = {"respond": {"status": 418, "body": "teapot"}}
        server.runtime.apply_data(data, "put_config", "config")
        resp = await get(port)
        assert resp.status == 418 and resp.body == b"teapot"


# ---------------------------------------------------------------- drain hooks

@pytest.mark.asyncio
async def test_cut_before_the_response_head_is_a_502(backends, tmp_path):
    config = base_config({"p": {"backends": [backend_entry(backends["b2"])]}},
                         access_log=tmp_path / "access.log")
    backends["b2"].control({"latency_ms": 3000})
    async with running(config) as server:
        port = server.addresses()["web"][1]
        backend = server.runtime.pools["p"].backends["b2"]
        pending = asyncio.ensure_future(get(port, "/slow", headers={"X-Request-Id": "cut-1"}))
        await wait_for(lambda: server.inflight(backend))
        (exchange,) = server.inflight(backend)
        assert exchange.request_id == "cut-1"
        assert server.inflight("b2") == [exchange]
        exchange.cut("drain deadline")
        resp = await pending
        assert resp.status == 502 and resp.headers["x-lblab-error"] == "drain-cut"
        event = server.bus.request("cut-1")
        assert event.termination == "PD" and event.error == "cut by drain deadline"
        assert event.proxy_error
        assert backend.outstanding == 0 and backend.active_connections == 0
        assert backend.failures == 0  # a drain is not the backend's fault
        assert server.inflight(backend) == []


@pytest.mark.asyncio
async def test_cut_after_the_response_head_closes_the_client(scripted):
    slow = scripted(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
    config = base_config({"p": {"backends": [{"name": "slow", "address": f"127.0.0.1:{slow.port}"}]}})
    async with running(config) as server:
        port = server.addresses()["web"][1]
        backend = server.runtime.pools["p"].backends["slow"]
        conn = await asyncio.to_thread(RawConn, port)
        try:
            await asyncio.to_thread(conn.send, b"GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: cut-2\r\n\r\n")
            await wait_for(lambda: server.bus.request("cut-2") is None and server.inflight(backend))
            await asyncio.sleep(0.1)
            for exchange in server.inflight(backend):
                exchange.cut("drain deadline")
            out = await asyncio.to_thread(conn.rest)
        finally:
            conn.close()
        assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"abc")
        event = server.bus.request("cut-2")
        assert event.termination == "PD" and event.status == 200


@pytest.mark.asyncio
async def test_close_pooled_and_draining_backends_are_not_reused(backends):
    config = base_config({"p": {"backends": [backend_entry(backends["b1"])]}})
    async with running(config) as server:
        port = server.addresses()["web"][1]
        backend = server.runtime.pools["p"].backends["b1"]
        key = (backend.host, backend.port)
        assert (await get(port)).status == 200
        assert server.upstreams.idle_count(key) == 1  # kept for reuse
        assert server.close_pooled(backend) == 1
        assert server.upstreams.idle_count(key) == 0

        backends["b1"].control({"latency_ms": 300})
        pending = asyncio.ensure_future(get(port, "/during-drain"))
        await wait_for(lambda: server.inflight(backend))
        server.runtime.pools["p"].set_intent(backend, Intent.DRAINING, "test drain")
        resp = await pending
        assert resp.status == 200  # the request in flight finishes ...
        assert server.upstreams.idle_count(key) == 0  # ... and its connection is closed


# ---------------------------------------------------------------- upgrade

@pytest.mark.asyncio
async def test_upgrade_becomes_a_tunnel(scripted, tmp_path):
    echo = scripted(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n"
                    b"Connection: Upgrade\r\n\r\n", after="echo")
    config = base_config({"p": {"backends": [{"name": "ws", "address": f"127.0.0.1:{echo.port}"}]}},
                         access_log=tmp_path / "access.log")
    async with running(config) as server:
        port = server.addresses()["web"][1]

        def talk():
            with RawConn(port) as conn:
                conn.send(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: echo\r\n"
                          b"X-Request-Id: ws-1\r\n\r\n")
                while b"\r\n\r\n" not in conn.buf:
                    conn._fill()
                head, _, conn.buf = conn.buf.partition(b"\r\n\r\n")
                conn.send(b"ping")
                while len(conn.buf) < 4:
                    conn._fill()
                return head, conn.buf

        head, echoed = await asyncio.to_thread(talk)
        assert head.startswith(b"HTTP/1.1 101 ")
        assert b"Upgrade: echo" in head
        assert echoed == b"ping"
        await wait_for(lambda: server.bus.request("ws-1") is not None)
        event = server.bus.request("ws-1")
        assert event.status == 101 and event.bytes_in == 4 and event.bytes_out == 4
        assert event.termination == "--"


# ---------------------------------------------------------------- the keep-alive race

@pytest.mark.asyncio
async def test_reused_connection_closed_by_the_backend_is_retried_for_get(scripted, tmp_path):
    racer = scripted(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", after="close")
    config = base_config({"p": {"retries": 1, "backends": [
        {"name": "racer", "address": f"127.0.0.1:{racer.port}"}]}})
    async with running(config) as server:
        port = server.addresses()["web"][1]
        first = await get(port, "/1")
        assert first.status == 200
        # The pooled connection is reused; the backend closes it on the next request.
        second = await get(port, "/2", headers={"X-Request-Id": "race-get"})
        assert second.status == 200 and second.body == b"ok"
        event = server.bus.request("race-get")
        assert len(event.retries) == 1 and "keep-alive race" in event.retries[0]["error"]

        third = await get(port, "/3")  # pool a connection again
        assert third.status == 200
        post = await asyncio.to_thread(request, port, "POST", "/4", body=b"data",
                                       headers={"X-Request-Id": "race-post"})
        assert post.status == 502 and post.headers["x-lblab-error"] == "backend-closed"
        assert server.bus.request("race-post").retries == []  # not idempotent: never resent


# ---------------------------------------------------------------- re-framing

@pytest.mark.asyncio
async def test_body_until_close_is_rechunked_for_http11_and_streamed_to_http10(scripted):
    eof = scripted(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close", after="eof")
    config = base_config({"p": {"backends": [{"name": "eof", "address": f"127.0.0.1:{eof.port}"}]}})
    async with running(config) as server:
        port = server.addresses()["web"][1]

        def http11():
            with RawConn(port) as conn:
                conn.send(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
                first = conn.response()
                conn.send(b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n")  # still kept alive
                return first, conn.response()

        first, second = await asyncio.to_thread(http11)
        for resp in (first, second):
            assert resp.headers["transfer-encoding"] == "chunked"
            assert resp.body == b"until close"


        def http10():
            with RawConn(port) as conn:
                conn.send(b"GET /c HTTP/1.0\r\n\r\n")
                return conn.rest()
        out = await asyncio.to_thread(http10)
        head, _, body = out.partition(b"\r\n\r\n")
        assert b"Transfer-Encoding" not in head and b"Connection: close" in head
        assert body == b"until close"


@pytest.mark.asyncio
async def test_broken_chunked_response_mid_body_closes_the_client(scripted, tmp_path):
    broken = scripted(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"5\r\nhello\r\nZZZ\r\n")
    config = base_config({"p": {"backends": [{"name": "broken", "address": f"127.0.0.1:{broken.port}"}]}})
    async with running(config) as server:
        port = server.addresses()["web"][1]

        def fetch():
            with RawConn(port) as conn:
                conn.send(b"GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: broken-1\r\n\r\n")
                return conn.rest()

        out = await asyncio.to_thread(fetch)
        assert out.startswith(b"HTTP/1.1 200 OK")
        assert not out.endswith(b"0\r\n\r\n")  # never a clean end
        await wait_for(lambda: server.bus.request("broken-1") is not None)
        assert server.bus.request("broken-1").termination == "SD"
