"""Re-encryption: an http listener speaking TLS to toy HTTPS backends, verified against the
lab CA; a wrong certificate is a clean 502; verify off works but warns every connection.
"""
from __future__ import annotations

import pytest

from tests.proxy.e2e.support import Session, request
from tests.proxy.l4.support import recent_events


def config(pools: dict, tls_listener: dict | None = None) -> dict:
    routes = {name: {"match": {"path_prefix": f"/{name}"}, "forward": name} for name in pools}
    return {"admin": {"listen": "127.0.0.1:0"},
            "listeners": {"web": {"bind": "127.0.0.1:0", "routes": list(routes)}},
            "routes": routes, "pools": pools}


def pool(handle, name: str, tls: dict | None, **extra) -> dict:
    backend = {"name": name, "address": f"127.0.0.1:{handle.port}", **extra}
    out = {"backends": [backend], "retries": 0}
    if tls is not None:
        out["tls"] = tls
    return out


@pytest.fixture(scope="module")
def proxy(tls_proxy, tls_backends, backends):
    b = tls_backends
    return tls_proxy(config({
        # Config backend names are what the proxy checks by default: b1's certificate is b1's.
        "good": pool(b["t1"], "b1", {}),
        "byname": pool(b["t2"], "b2x", {"server_name": "localhost"}),
        "wrongname": pool(b["tw-name"], "b3", {}),
        "selfsigned": pool(b["tw-self"], "b4", {}),
        "plain": pool(backends["b2"], "b5", {}),  # HTTP, not HTTPS, on that port
        "unverified": pool(b["tw-self"], "b6", {"verify": False}),
        "perbackend": {"tls": {"verify": False}, "retries": 0, "backends": [
            {"name": "t1again", "address": f"127.0.0.1:{b['t1'].port}",
             "tls": {"verify": True, "server_name": "b1.lab.test"}}]},
    }))


def test_verified_tls_to_the_backend(proxy):
    resp = request(proxy.port(), path="/good/x")
    assert resp.status == 200, resp
    echo = resp.json()
    assert echo["backend"] == "t1" and echo["tls"]["version"].startswith("TLSv1.")
    assert echo["x_forwarded_proto"] == "http"
    event = proxy.event(resp.request_id)
    assert event["backend_tls"] == {"server_name": "b1", "verified": True,
                                    "version": echo["tls"]["version"], "subject": "CN=b1,O=LBLab"}


def test_server_name_override(proxy):
    resp = request(proxy.port(), path="/byname")
    assert resp.status == 200, resp
    assert proxy.event(resp.request_id)["backend_tls"]["server_name"] == "localhost"


@pytest.mark.parametrize("path, reason", [
    ("/wrongname", "Hostname mismatch, certificate is not valid for 'b3'"),
    ("/selfsigned", "self-signed certificate"),
    ("/plain", "wrong version number"),
])
def test_a_failed_backend_handshake_is_a_clean_502(proxy, path, reason):
    resp = request(proxy.port(), path=path)
    assert resp.status == 502, resp
    assert resp.headers["x-lblab-error"] == "backend-tls"
    body = resp.json()
    assert body["error"] == "backend-tls" and reason in body["message"]
    event = proxy.event(resp.request_id)
    assert event["status"] == 502 and event["proxy_error"] is True
    assert reason in event["error"] and "TLS handshake with" in event["error"]
    assert event["termination"] == "SC"


def test_verify_off_works_and_warns_on_every_connection(proxy):
    with Session(proxy.port()) as s:
        answers = [s.get("/unverified") for _ in range(3)]
    assert all(r.status == 200 for r in answers)
    backend_connections = {r.json()["connection_id"] for r in answers}
    for r in answers:
        assert proxy.event(r.request_id)["backend_tls"]["verified"] is False
    second = request(proxy.port(), path="/unverified")  # may reuse the pooled connection
    backend_connections.add(second.json()["connection_id"])
    warnings = [w for w in recent_events(proxy, "warning") if w.get("backend") == "b6"]
    assert len(warnings) == len(backend_connections) >= 1, (warnings, backend_connections)
    assert all(w["source"] == "tls" and "NOT verified" in w["message"] and w["pool"] == "unverified"
               for w in warnings)


def test_backend_settings_override_the_pool(proxy):
    resp = request(proxy.port(), path="/perbackend")
    assert resp.status == 200
    assert proxy.event(resp.request_id)["backend_tls"]["verified"] is True
