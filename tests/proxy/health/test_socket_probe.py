"""The callback prober and the shared scheduler, against small real servers on 127.0.0.1.

Each server here is a few lines of asyncio that answers exactly what a test
needs (a bad status line, a close before the response, a chunked body, a
keep-alive close), which the toy backend cannot be told to do.
"""
from __future__ import annotations

import asyncio
import socket
import time

import pytest

from labs.backend.testing import free_port
from proxy.config import ConfigError, HealthCheckConfig
from proxy.health.active import BackendChecker, ProbeResult, SocketProbe, numeric_family
from proxy.health.scheduler import Scheduler
from proxy.model import Health

from tests.proxy.health.helpers import Recorder, fake_server, make_runtime, pool_data
from proxy.health.manager import HealthManager


def cfg(**kw) -> HealthCheckConfig:
    # Generous by default so a loaded machine never turns a pass into a timeout;
    # the tests about timeouts set their own.
    return HealthCheckConfig.model_validate({"timeout": "2s", **kw})


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n\"ready\""


class Server:
    """Answers every request with `reply(request_number)`; counts connections."""

    def __init__(self, reply, close_after: bool = False):
        self.reply = reply
        self.close_after = close_after
        self.connections = 0
        self.requests: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, port: int = 0) -> "Server":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader, writer):
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                out = self.reply(len(self.requests))
                if out is None:  # hang
                    await asyncio.sleep(10)
                    return
                writer.write(out)
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def drop_connections(self):
        for w in self.writers:
            w.close()

    async def stop(self):
        self.server.close()
        self.drop_connections()
        await self.server.wait_closed()


async def probe(port: int, config: HealthCheckConfig, sp: SocketProbe | None = None):
    loop = asyncio.get_running_loop()
    if sp is None:
        sp = SocketProbe("127.0.0.1", port, socket.AF_INET, config, time.monotonic,
                         Scheduler(loop), loop)
    done = loop.create_future()
    sp.start(done.set_result)
    return await asyncio.wait_for(done, 5), sp


@pytest.mark.asyncio
async def test_http_pass_status_and_body_verdicts_match_the_coroutine_prober():
    srv = await Server(lambda n: OK, close_after=True).start()
    try:
        r, _ = await probe(srv.port, cfg())
        assert r.ok and r.detail.endswith(" ms") and r.detail.startswith("200 in ")
        assert srv.requests[0].startswith(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:")
        assert b"Connection: close\r\n" in srv.requests[0]
        r, _ = await probe(srv.port, cfg(expect_status=[204, 299]))
        assert not r.ok and r.detail.startswith("status 200 (expected 204, 299) in ")
        r, _ = await probe(srv.port, cfg(body_contains='"ready"'))
        assert r.ok
        r, _ = await probe(srv.port, cfg(body_contains="nope"))
        assert (r.ok, r.detail) == (False, "status 200 but body lacks 'nope'")
    finally:
        await srv.stop()


@pytest.mark.asyncio
async def test_body_chunked_and_delimited_by_the_close():
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"4\r\nall \r\n4\r\ngood\r\n0\r\n\r\n")
    until_close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nstatus: all good"
    for raw in (chunked, until_close):
        srv = await Server(lambda n, raw=raw: raw, close_after=True).start()
        try:
            r, _ = await probe(srv.port, cfg(body_contains="all good"))
            assert r.ok, (raw, r)
        finally:
            await srv.stop()


@pytest.mark.asyncio
async def test_malformed_closed_refused_and_timeout_details():
    bad = await Server(lambda n: b"SMTP ready\r\n\r\n", close_after=True).start()
    closed = await Server(lambda n: b"", close_after=True).start()
    hang = await Server(lambda n: None).start()
    try:
        r, _ = await probe(bad.port, cfg())
        assert not r.ok and r.detail.startswith("malformed response: ")
        r, _ = await probe(bad.port, cfg(body_contains="x"))
        assert not r.ok and r.detail.startswith("malformed response: ")
        r, _ = await probe(closed.port, cfg())
        assert (r.ok, r.detail) == (False, "connection closed before a response")
        r, _ = await probe(free_port(), cfg())
        assert (r.ok, r.detail) == (False, "connection refused")
        started = time.monotonic()
        r, _ = await probe(hang.port, cfg(timeout="150ms"))
        assert (r.ok, r.detail) == (False, "timeout after 150 ms")
        assert time.monotonic() - started >= 0.14
    finally:
        for s in (bad, closed, hang):
            await s.stop()


@pytest.mark.asyncio
async def test_tcp_probe_connects_only():
    srv = await Server(lambda n: OK).start()
    try:
        r, _ = await probe(srv.port, cfg(type="tcp"))
        assert r.ok and r.detail.startswith("connected in ")
        await asyncio.sleep(0.05)
        assert srv.connections == 1 and srv.requests == []
        r, _ = await probe(free_port(), cfg(type="tcp"))
        assert (r.ok, r.detail) == (False, "connection refused")
    finally:
        await srv.stop()


# ---------------------------------------------------------------- reuse_connection

@pytest.mark.asyncio
async def test_reuse_sends_every_probe_on_one_connection():
    srv = await Server(lambda n: OK).start()
    try:
        c = cfg(reuse_connection=True, body_contains="ready")
        r, sp = await probe(srv.port, c)
        assert r.ok, r
        for _ in range(4):
            r, sp = await probe(srv.port, c, sp)
            assert r.ok, r
        assert srv.connections == 1 and len(srv.requests) == 5
        assert b"Connection: close" not in srv.requests[0]
        sp.abort()
    finally:
        await srv.stop()


@pytest.mark.asyncio
async def test_reuse_a_kept_connection_the_backend_closed_is_not_a_failure():
    srv = await Server(lambda n: OK).start()
    try:
        c = cfg(reuse_connection=True)
        r, sp = await probe(srv.port, c)
        assert r.ok
        srv.drop_connections()  # the backend's idle timeout, say
        await asyncio.sleep(0.05)
        r, sp = await probe(srv.port, c, sp)
        assert r.ok, r
        assert srv.connections == 2
        # closed while the probe was being sent (not yet noticed): reconnect, still a pass
        srv.drop_connections()
        r, sp = await probe(srv.port, c, sp)
        assert r.ok, r
        assert srv.connections == 3
        sp.abort()
    finally:
        await srv.stop()


@pytest.mark.asyncio
async def test_reuse_still_sees_a_dead_backend_on_the_next_probe():
    port = free_port()
    srv = await Server(lambda n: OK).start(port)
    c = cfg(reuse_connection=True)
    r, sp = await probe(port, c)
    assert r.ok
    await srv.stop()  # the process died: listener and connections gone
    r, sp = await probe(port, c, sp)
    assert (r.ok, r.detail) == (False, "connection refused")


@pytest.mark.asyncio
async def test_reuse_honours_connection_close_and_hangs_time_out():
    srv = await Server(lambda n: OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"),
                       close_after=True).start()
    hang = await Server(lambda n: OK if n == 1 else None).start()
    try:
        c = cfg(reuse_connection=True)
        r, sp = await probe(srv.port, c)
        r, sp = await probe(srv.port, c, sp)
        assert r.ok and srv.connections == 2 and sp.reconnects == 0  # never kept
        r, sp = await probe(hang.port, cfg(reuse_connection=True, timeout="100ms"))
        assert r.ok
        r, sp = await probe(hang.port, cfg(reuse_connection=True, timeout="100ms"), sp)
        assert (r.ok, r.detail) == (False, "timeout after 100 ms")  # not a reconnect
        assert sp.sock is None  # dropped after a timeout: the next probe starts afresh
    finally:
        await srv.stop()
        await hang.stop()


def test_reuse_connection_is_for_http_checks_only():
    with pytest.raises(ConfigError) as info:
        make_runtime({"web": pool_data([("b1", 9001)],
                                       health={"type": "tcp", "reuse_connection": True})})
    assert any(path.startswith("pools.web.health") and "reuse_connection" in msg
               for path, msg in info.value.errors)
    assert cfg().reuse_connection is False


# ---------------------------------------------------------------- scheduler and checker

@pytest.mark.asyncio
async def test_scheduler_runs_in_order_drops_cancelled_and_batches_by_tick():
    loop = asyncio.get_running_loop()
    sched = Scheduler(loop, tick=0.05)
    ran = []
    now = loop.time()
    for i, delay in enumerate([0.03, 0.01, 0.02, 0.2]):
        sched.call_at(now + delay, lambda i=i: ran.append((i, loop.time())))
    dead = sched.call_at(now + 0.015, lambda: ran.append(("dead", 0)))
    dead.cancel()
    await asyncio.sleep(0.12)
    assert [i for i, _ in ran] == [1, 2, 0]
    assert sched.fired <= 2  # 10, 20, 30 ms: at most one firing per 50 ms tick
    assert len(sched) == 1
    sched.close()
    await asyncio.sleep(0.15)
    assert [i for i, _ in ran] == [1, 2, 0]


@pytest.mark.asyncio
async def test_checker_intervals_stay_exact_on_average_and_hostnames_use_the_coroutine_path():
    srv = await Server(lambda n: OK, close_after=True).start()
    try:
        rt = make_runtime({
            "ip": pool_data([("a1", srv.port)], health={"interval": "50ms"}),
            "name": pool_data([{"name": "n1", "address": f"localhost:{srv.port}"}],
                              health={"interval": "50ms"})})
        rec = Recorder(rt.bus)
        manager = HealthManager(fake_server(rt))
        await manager.start()
        await asyncio.sleep(1.0)
        a1 = manager.checkers[("ip", "a1")]
        n1 = manager.checkers[("name", "n1")]
        assert a1._socket_probe is not None and n1._socket_probe is None
        assert rt.backend("ip", "a1").health is Health.HEALTHY
        assert rt.backend("name", "n1").health is Health.HEALTHY
        # ~20 probes in 1 s at 50 ms; late (batched) starts must not stretch the interval
        assert 15 <= a1.probes <= 21, a1.probes
        await manager.stop()
        assert all(p.ok for p in rec.probes())
        n = a1.probes
        await asyncio.sleep(0.15)
        assert a1.probes == n
    finally:
        await srv.stop()


def test_numeric_family():
    assert numeric_family("127.0.0.1") == socket.AF_INET
    assert numeric_family("::1") == socket.AF_INET6
    assert numeric_family("localhost") is None


@pytest.mark.asyncio
async def test_a_steady_pass_publishes_nothing_until_the_coalescer_flushes():
    rt = make_runtime({"web": pool_data([("b1", 9)], health={"interval": "100ms"})})
    pool = rt.pools["web"]
    backend = pool.backends["b1"]
    checker = BackendChecker("web", backend, pool.config.health, lambda: rt.pools.get("web"),
                             rt.bus, rt.clock, __import__("random").Random(0))
    pool.set_health(backend, Health.HEALTHY, "test")
    rec = Recorder(rt.bus)
    ok = ProbeResult(True, "200 in 1 ms", 1.0)
    checker.observe(ok, pool)  # first one publishes (nothing published before)
    for _ in range(5):
        checker.observe(ok, pool)
    assert [p.count for p in rec.probes()] == [1]
    await checker.stop()  # flushes what was folded
    assert [p.count for p in rec.probes()] == [1, 5]


@pytest.mark.asyncio
async def test_the_loop_poller_gives_the_same_verdicts_where_there_is_no_epoll():
    from proxy.health.scheduler import LoopPoller

    loop = asyncio.get_running_loop()
    srv = await Server(lambda n: OK).start()
    try:
        sched = Scheduler(loop)
        sched._poller = LoopPoller(loop)
        for c, ok in ((cfg(), True), (cfg(reuse_connection=True), True),
                      (cfg(type="tcp"), True), (cfg(expect_status=[204]), False)):
            sp = SocketProbe("127.0.0.1", srv.port, socket.AF_INET, c, time.monotonic,
                             sched, loop)
            for _ in range(2):
                r, sp = await probe(srv.port, c, sp)
                assert r.ok is ok, (c, r)
            sp.abort()
        r, _ = await probe(free_port(), cfg(), SocketProbe(
            "127.0.0.1", free_port(), socket.AF_INET, cfg(), time.monotonic, sched, loop))
        assert (r.ok, r.detail) == (False, "connection refused")
        assert sched.poller.handlers == {}
        sched.close()
    finally:
        await srv.stop()
