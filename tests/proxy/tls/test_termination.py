"""TLS termination on an http listener: certificates by SNI, default vs strict, versions,
ALPN, mTLS, X-Forwarded-Proto, and what the events say. Real proxy process, real clients
(Python's ssl and `openssl s_client`), the lab PKI from `proxy.pki`.
"""
from __future__ import annotations

import ssl

import pytest

from tests.proxy.e2e.support import backend_entry
from tests.proxy.tls.conftest import client_context
from tests.proxy.tls.support import peer_certificate, s_client, tls_request


def terminate(backends, **listeners) -> dict:
    """Listeners `name: tls settings`, every one forwarding to pool p (toy backend b1)."""
    return {
        "admin": {"listen": "127.0.0.1:0"},
        "listeners": {name: {"bind": "127.0.0.1:0", "routes": ["all"],
                             **({"tls": tls} if tls is not None else {})}
                      for name, tls in listeners.items()},
        "routes": {"all": {"forward": "p"}},
        "pools": {"p": {"backends": [backend_entry(backends["b1"])]}},
    }


CERTS = [{"pki": "www.lab.test"}, {"pki": "api.lab.test"}]


@pytest.fixture(scope="module")
def proxy(tls_proxy, backends):
    return tls_proxy(terminate(
        backends,
        web={"certificates": CERTS},
        strict={"certificates": CERTS, "unknown_sni": "refuse"},
        modern={"certificates": CERTS, "min_version": "1.3"},
        mtls={"certificates": CERTS, "client_ca": "pki:ca.pem"},
        mtls_optional={"certificates": CERTS, "client_ca": "pki:ca.pem",
                       "client_auth": "optional"},
    ))


def tls_events(proxy, **match):
    return proxy.wait_events(lambda e: e.get("type") == "connection" and e.get("kind") == "tls"
                             and all(e.get(k) == v for k, v in match.items()))


# ---------------------------------------------------------------- certificates by name

@pytest.mark.parametrize("name", ["www.lab.test", "api.lab.test"])
def test_each_name_gets_its_certificate(proxy, lab_pki, name):
    result = tls_request(proxy.port("web"), name, client_context(lab_pki), path="/hello")
    assert result.subject["commonName"] == name
    assert result.response.status == 200
    echo = result.response.json()
    assert echo["x_forwarded_proto"] == "https" and echo["backend"] == "b1"
    assert "proto=https" in echo["forwarded"]
    event = proxy.event(result.response.request_id)
    assert event["tls"]["sni"] == name and event["tls"]["certificate"] == name
    assert event["tls"]["matched"] == "exact" and event["tls"]["version"] == result.version


def test_unknown_name_gets_the_default_certificate_and_the_client_sees_a_mismatch(proxy, lab_pki):
    with pytest.raises(ssl.SSLCertVerificationError) as err:
        tls_request(proxy.port("web"), "shop.lab.test", client_context(lab_pki))
    assert "Hostname mismatch" in str(err.value)
    subject, _ = peer_certificate(proxy.port("web"), "shop.lab.test")
    assert "CN=www.lab.test" in subject["subject"], "the first certificate is the default"
    subject, _ = peer_certificate(proxy.port("web"), None)  # no SNI at all: the default too
    assert "CN=www.lab.test" in subject["subject"]
    event = tls_events(proxy, closed_by="client")[0]
    assert event["tls"]["sni"] == "shop.lab.test" and event["tls"]["matched"] == "default"
    assert "alert" in event["error"]  # the client refused our certificate


def test_openssl_s_client_sees_the_right_certificate(proxy, lab_pki):
    out = s_client(proxy.port("web"), "api.lab.test", ca=str(lab_pki / "ca.pem"))
    assert "CN = api.lab.test" in out or "CN=api.lab.test" in out, out
    assert "Verification: OK" in out, out
    out = s_client(proxy.port("web"), "shop.lab.test", ca=str(lab_pki / "ca.pem"))
    assert "hostname mismatch" in out.lower(), out


def test_strict_refuses_a_name_without_certificate(proxy, lab_pki):
    ok = tls_request(proxy.port("strict"), "www.lab.test", client_context(lab_pki))
    assert ok.response.status == 200
    with pytest.raises(ssl.SSLError) as err:
        tls_request(proxy.port("strict"), "shop.lab.test", client_context(lab_pki))
    assert "UNRECOGNIZED_NAME" in str(err.value).upper()
    out = s_client(proxy.port("strict"), "shop.lab.test")
    assert "unrecognized name" in out, out  # the alert reaches the client (alert 112)
    event = tls_events(proxy, listener="strict")[0]
    assert event["closed_by"] == "proxy" and event["tls"]["matched"] == "refused"
    assert "tls.unknown_sni: refuse" in event["error"] and "shop.lab.test" in event["error"]


def test_minimum_version(proxy, lab_pki):
    old = client_context(lab_pki, maximum_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(ssl.SSLError):
        tls_request(proxy.port("modern"), "www.lab.test", old)
    assert tls_request(proxy.port("web"), "www.lab.test", old).version == "TLSv1.2"
    assert tls_request(proxy.port("modern"), "www.lab.test",
                       client_context(lab_pki)).version == "TLSv1.3"
    event = tls_events(proxy, listener="modern")[0]
    assert "tls.min_version" in event["error"] and "1.3" in event["error"], event


def test_alpn_http11(proxy, lab_pki):
    ctx = client_context(lab_pki)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    result = tls_request(proxy.port("web"), "www.lab.test", ctx)
    assert result.alpn == "http/1.1"
    assert proxy.event(result.response.request_id)["tls"]["alpn"] == "http/1.1"


# ---------------------------------------------------------------- mTLS

def test_mtls_required_refuses_a_client_without_a_certificate(proxy, lab_pki):
    with pytest.raises((ssl.SSLError, ConnectionError)):
        # TLS 1.3: the refusal may only show on the first read, after the request is sent.
        tls_request(proxy.port("mtls"), "www.lab.test", client_context(lab_pki))
    event = tls_events(proxy, listener="mtls")[0]
    assert event["closed_by"] == "proxy"
    assert "sent no certificate" in event["error"], event


def test_mtls_required_accepts_a_lab_client_and_tells_the_backend(proxy, lab_pki):
    result = tls_request(proxy.port("mtls"), "www.lab.test",
                         client_context(lab_pki, cert="client-alice"),
                         headers={"X-Client-Cert-Subject": "CN=mallory"})  # spoof: dropped
    assert result.response.status == 200
    headers = {k.lower(): v for k, v in result.response.json()["headers"].items()}
    assert headers["x-client-verify"] == "SUCCESS"
    assert headers["x-client-cert-subject"] == "CN=alice,O=LBLab"
    event = proxy.event(result.response.request_id)
    assert event["tls"]["client_cert"] == "CN=alice,O=LBLab"


def test_mtls_optional_lets_a_client_without_certificate_in(proxy, lab_pki):
    result = tls_request(proxy.port("mtls_optional"), "www.lab.test", client_context(lab_pki))
    assert result.response.status == 200
    headers = {k.lower(): v for k, v in result.response.json()["headers"].items()}
    assert headers["x-client-verify"] == "NONE" and "x-client-cert-subject" not in headers


def test_mtls_refuses_a_certificate_from_another_ca(proxy, lab_pki):
    with pytest.raises((ssl.SSLError, ConnectionError)):
        tls_request(proxy.port("mtls"), "www.lab.test",
                    client_context(lab_pki, cert="wrong-selfsigned"))


# ---------------------------------------------------------------- state and files

def test_state_shows_the_tls_mode_of_each_listener(proxy):
    state = proxy.admin("GET", "/state")[1]
    web = state["tls"]["web"]
    assert web["mode"] == "terminate" and web["unknown_sni"] == "default"
    assert [c["names"] for c in web["certificates"]] == [["www.lab.test"], ["api.lab.test"]]
    assert web["certificates"][0]["default"] is True
    assert state["tls"]["strict"]["unknown_sni"] == "refuse"
    assert state["tls"]["mtls"]["client_auth"] == "required"
    assert state["config"]["listeners"]["web"]["tls"]["mode"] == "terminate"


def test_a_missing_certificate_refuses_the_config_with_its_path(proxy):
    status, body = proxy.admin("GET", "/config?format=json")
    body["listeners"]["web"]["tls"]["certificates"].append({"pki": "nowhere.lab.test"})
    status, refused = proxy.admin("PUT", "/config", body)
    assert status == 422, refused
    (error,) = refused["errors"]
    assert error["path"] == "listeners.web.tls.certificates[2].pki"
    assert "nowhere.lab.test.pem" in error["message"] and "pki init" in error["message"]


def test_a_proxy_with_a_missing_certificate_does_not_start(tls_proxy, backends):
    config = terminate(backends, web={"certificates": [{"cert": "/nonexistent/x.pem",
                                                        "key": "/nonexistent/x.key"}]})
    with pytest.raises(RuntimeError) as err:
        tls_proxy(config, name="broken")
    assert "listeners.web.tls.certificates[0].cert: cannot read certificate" in str(err.value)


def test_tls_can_be_switched_on_by_put_config(tls_proxy, backends, lab_pki):
    from tests.proxy.e2e.support import request

    proxy = tls_proxy(terminate(backends, web=None), name="switch")
    assert request(proxy.port("web")).status == 200  # plain HTTP first
    status, config = proxy.admin("GET", "/config?format=json")
    config["listeners"]["web"]["tls"] = {"certificates": [{"pki": "api.lab.test"}]}
    status, body = proxy.admin("PUT", "/config", config)
    assert status == 200, body
    assert body["tls"]["web"]["mode"] == "terminate"
    result = tls_request(proxy.port("web"), "api.lab.test", client_context(lab_pki))
    assert result.response.status == 200 and result.subject["commonName"] == "api.lab.test"


def test_websocket_over_tls(tls_proxy, lab_pki):
    import asyncio

    import aiohttp

    from tests.proxy.l4.test_websocket import WsServer

    server = WsServer("wss1")
    try:
        proxy = tls_proxy({
            "admin": {"listen": "127.0.0.1:0"},
            "listeners": {"web": {"bind": "127.0.0.1:0", "routes": ["all"],
                                  "tls": {"certificates": CERTS}}},
            "routes": {"all": {"forward": "ws"}},
            "pools": {"ws": {"backends": [{"name": "wss1",
                                           "address": f"127.0.0.1:{server.port}"}]}},
        }, name="wss")
        ctx = client_context(lab_pki)

        async def talk():
            connector = aiohttp.TCPConnector(ssl=ctx, resolver=_Local())
            async with aiohttp.ClientSession(connector=connector) as session:
                async with session.ws_connect(
                        f"wss://www.lab.test:{proxy.port('web')}/ws") as ws:
                    await ws.send_str("over tls")
                    return (await ws.receive(timeout=10)).data

        assert asyncio.run(talk()) == "wss1: over tls"
        event = proxy.wait_events(lambda e: e.get("status") == 101)[0]
        assert event["tls"]["sni"] == "www.lab.test"
    finally:
        server.stop()


class _Local:
    """An aiohttp resolver that sends every name to 127.0.0.1 (SNI keeps the name)."""

    async def resolve(self, host, port=0, family=0):
        import socket

        return [{"hostname": host, "host": "127.0.0.1", "port": port, "family": socket.AF_INET,
                 "proto": 0, "flags": 0}]

    async def close(self):
        pass
