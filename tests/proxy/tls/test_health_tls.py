"""Active http and grpc checks over TLS (re-encrypting pools), against real TLS origins.

No proxy process: a real Runtime, the HealthManager's checkers and the ClientTLS contexts
the proxy builds (proxy.tls.build_upstream_tls), probing toy HTTPS backends (certificates
from the lab PKI, one with a certificate for another name) and nginx passing gRPC over
TLS to toy gRPC backends (the same nginx as tests/proxy/http2/test_h2_tls_upstream.py).
"""
from __future__ import annotations

import asyncio

import pytest

from labs.backend.testing import free_port
from proxy.events import HealthProbe, Warning  # noqa: A004
from proxy.health.manager import HealthManager
from proxy.model import Health
from proxy.tls import build_upstream_tls
from tests.proxy.health.helpers import Recorder, fake_server, make_runtime
from tests.proxy.http2.test_h2_tls_upstream import grpc_pair, nginx  # noqa: F401 - fixtures
from tests.proxy.tls.conftest import tls_backend

pytestmark = pytest.mark.timeout(120)

FAST = {"interval": "100ms", "timeout": "2s", "healthy_threshold": 2, "unhealthy_threshold": 2}


def tls_pool(name: str, port: int, lab_pki, health: dict, server_name: str | None = None,
             **pool) -> dict:
    """A pool of one TLS backend checked against the lab CA (backend names are unique
    across pools: `server_name` names the certificate when the backend's name cannot)."""
    tls = {"ca": str(lab_pki / "ca.pem")}
    if server_name is not None:
        tls["server_name"] = server_name
    return {"backends": [{"name": name, "address": f"127.0.0.1:{port}"}],
            "tls": tls, "health": {**FAST, **health}, **pool}


async def wait_until(predicate, what: str, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


class Checks:
    """A Runtime with `pools`, the ClientTLS the proxy would build, and running checks."""

    def __init__(self, pools: dict):
        self.runtime = make_runtime(pools)
        self.recorder = Recorder(self.runtime.bus)
        server = fake_server(self.runtime, upstream_tls=build_upstream_tls(self.runtime.config))
        self.manager = HealthManager(server)

    async def __aenter__(self):
        await self.manager.start()
        return self

    async def __aexit__(self, *exc):
        await self.manager.stop()

    def backend(self, pool: str, name: str):
        return self.runtime.backend(pool, name)

    def probes(self, name: str) -> list[HealthProbe]:
        return self.recorder.of(HealthProbe, backend=name)

    def state(self, pool: str, name: str) -> dict:
        return self.manager.state()["pools"][pool]["backends"][name]


@pytest.fixture(scope="module")
def origins(lab_pki):
    """t1: HTTPS with b1's certificate (plain /health on a control port too);
    tw: HTTPS with a certificate for another name."""
    control = free_port()
    handles = {"t1": tls_backend(lab_pki, "t1", "b1", "--control-port", str(control)),
               "tw": tls_backend(lab_pki, "tw", "wrong-name")}
    handles["t1"].control = control
    yield handles
    for handle in handles.values():
        handle.stop()


@pytest.mark.asyncio
async def test_an_http_check_speaks_tls_to_a_tls_backend_and_passes(lab_pki, origins):
    pools = {"web": tls_pool("b1", origins["t1"].port, lab_pki, {"type": "http"})}
    async with Checks(pools) as checks:
        b1 = checks.backend("web", "b1")
        await wait_until(lambda: b1.health is Health.HEALTHY, "b1 healthy over TLS")
        passed = [p for p in checks.probes("b1") if p.ok]
        assert passed and passed[0].detail.startswith("200 in ")
        state = checks.state("web", "b1")
        assert state["tls"] == {"server_name": "b1", "verify": True}
        assert state["last_probe"]["ok"] is True


@pytest.mark.asyncio
async def test_a_wrong_certificate_fails_the_check_with_the_tls_reason(lab_pki, origins):
    # The backend is named b3 (the name checked); its certificate names someone else.
    pools = {"web": tls_pool("b3", origins["tw"].port, lab_pki, {"type": "http"})}
    async with Checks(pools) as checks:
        b3 = checks.backend("web", "b3")
        await wait_until(lambda: b3.health is Health.UNHEALTHY, "b3 marked down")
        failed = [p for p in checks.probes("b3") if not p.ok]
        assert failed[0].detail == ("TLS handshake failed: certificate verify failed: "
                                    "Hostname mismatch, certificate is not valid for 'b3'.")
        assert not b3.is_eligible(checks.runtime.clock())
        change = checks.recorder.changes(backend="b3", new="unhealthy")[0]
        assert "TLS handshake failed: certificate verify failed" in change.cause


@pytest.mark.asyncio
async def test_an_unverified_check_passes_an_impostor_and_warns_once(lab_pki, origins):
    # verify: false: the certificate for another name is accepted, and that is said aloud,
    # once for these settings rather than once per probe.
    pools = {"web": tls_pool("b3", origins["tw"].port, lab_pki, {"type": "http"})}
    pools["web"]["tls"]["verify"] = False
    async with Checks(pools) as checks:
        b3 = checks.backend("web", "b3")
        await wait_until(lambda: b3.health is Health.HEALTHY
                         and checks.state("web", "b3")["probes"] >= 4, "b3 healthy, 4 probes")
        assert checks.state("web", "b3")["tls"] == {"server_name": "b3", "verify": False}
        warnings = checks.recorder.of(Warning, backend="b3")
        assert len(warnings) == 1, warnings
        assert warnings[0].source == "tls" and warnings[0].pool == "web"
        assert "does NOT verify the certificate (tls.verify: false)" in warnings[0].message
        assert "set verify: true" in warnings[0].message


@pytest.mark.asyncio
async def test_a_health_port_is_cleartext_unless_tls_is_asked(lab_pki, origins):
    t1 = origins["t1"]
    pools = {
        # The toy backend serves /health as plain HTTP on its control port.
        "plainport": tls_pool("b1", t1.port, lab_pki, {"type": "http", "port": t1.control}),
        # tls: true on that cleartext port: the handshake meets plain HTTP.
        "forced": tls_pool("f1", t1.port, lab_pki,
                           {"type": "http", "port": t1.control, "tls": True}, "b1"),
        # tls: false on the TLS traffic port: plain HTTP meets a TLS server.
        "off": tls_pool("o1", t1.port, lab_pki, {"type": "http", "tls": False}, "b1"),
    }
    async with Checks(pools) as checks:
        plain, forced, off = (checks.backend(p, b) for p, b in
                              (("plainport", "b1"), ("forced", "f1"), ("off", "o1")))
        await wait_until(lambda: plain.health is Health.HEALTHY, "cleartext port check passes")
        await wait_until(lambda: forced.health is Health.UNHEALTHY and off.health is
                         Health.UNHEALTHY, "mismatched checks fail")
        assert checks.state("plainport", "b1")["tls"] is None
        assert checks.state("forced", "f1")["tls"] == {"server_name": "b1", "verify": True}
        forced_fails = [p.detail for p in checks.probes("f1") if not p.ok]
        assert forced_fails[0].startswith("TLS handshake failed: "), forced_fails
        off_fails = [p.detail for p in checks.probes("o1") if not p.ok]
        print(f"\nplain HTTP to the TLS port: {off_fails[0]}")


@pytest.mark.asyncio
async def test_a_grpc_check_speaks_h2_over_tls_through_nginx(lab_pki, nginx):  # noqa: F811
    # nginx serves b1's certificate and passes gRPC to the toy gRPC backend g1.
    pools = {"grpc": tls_pool("b1", nginx["g1"], lab_pki, {"type": "grpc"}, protocol="h2"),
             "h1only": tls_pool("h1", nginx["h1"], lab_pki, {"type": "grpc"}, "b1",
                                protocol="h2")}
    async with Checks(pools) as checks:
        g1, h1 = checks.backend("grpc", "b1"), checks.backend("h1only", "h1")
        await wait_until(lambda: g1.health is Health.HEALTHY, "gRPC over TLS healthy")
        ok = [p for p in checks.recorder.of(HealthProbe, pool="grpc") if p.ok]
        assert ok[0].detail.startswith("SERVING in ")
        await wait_until(lambda: h1.health is Health.UNHEALTHY, "no h2 by ALPN: down")
        failed = [p for p in checks.recorder.of(HealthProbe, pool="h1only") if not p.ok]
        assert failed[0].detail.startswith("TLS handshake failed: "), failed[0].detail
        assert "the backend refused ALPN h2" in failed[0].detail
        print(f"\ngrpc check, backend without h2: {failed[0].detail}")


def test_the_proxy_checks_tls_backends_over_tls_and_routes_around_a_bad_certificate(
        tls_proxy, lab_pki, origins):
    """The real proxy process: what GET /state, the event stream and a client see."""
    from tests.proxy.e2e.support import request
    from tests.proxy.l4.support import wait_for

    health = {**FAST, "type": "http", "path": "/health"}
    proxy = tls_proxy({
        "admin": {"listen": "127.0.0.1:0"},
        "listeners": {"web": {"bind": "127.0.0.1:0", "routes": ["all"]}},
        "routes": {"all": {"match": {}, "forward": "web"}},
        "pools": {"web": {"tls": {}, "health": health, "retries": 0, "backends": [
            {"name": "b1", "address": f"127.0.0.1:{origins['t1'].port}"},
            {"name": "b3", "address": f"127.0.0.1:{origins['tw'].port}"}]}}})

    def observed(name: str) -> str:
        return proxy.backend_state("web", name)["health"]

    wait_for(lambda: observed("b1") == "healthy" and observed("b3") == "unhealthy",
             timeout=30, what="b1 healthy and b3 down")
    status, state = proxy.admin("GET", "/state")
    checks = state["health"]["pools"]["web"]["backends"]
    assert checks["b1"]["tls"] == {"server_name": "b1", "verify": True}
    assert checks["b3"]["last_probe"]["detail"].startswith(
        "TLS handshake failed: certificate verify failed: Hostname mismatch")
    reason = proxy.backend_state("web", "b3")["health_reason"]
    assert "TLS handshake failed: certificate verify failed" in reason, reason
    answers = [request(proxy.port(), path="/x") for _ in range(6)]
    assert {a.status for a in answers} == {200}
    assert {a.json()["backend"] for a in answers} == {"t1"}
