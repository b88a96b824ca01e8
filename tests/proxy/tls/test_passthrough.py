"""TLS passthrough on a tcp listener: route on the ClientHello's name, never decrypt.

The backends are toy HTTPS servers holding the site certificates; the proxy has none.
A recording tap between the proxy and one backend shows what the proxy really sent:
TLS records, starting with the very ClientHello the client made, and no plaintext.
"""
from __future__ import annotations

import json
import socket
import ssl
import threading

import pytest

from proxy.sni import parse_client_hello
from tests.proxy.l4.support import connection_events
from tests.proxy.tls.conftest import client_context, tls_backend
from tests.proxy.tls.support import pem_der, s_client, tls_request

SECRET = "/only-the-backend-may-read-this-path"


class Tap:
    """Forwards one port to another and records both directions, byte for byte."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.to_backend = bytearray()
        self.to_client = bytearray()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            backend = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            for src, dst, buf in ((client, backend, self.to_backend),
                                  (backend, client, self.to_client)):
                threading.Thread(target=self._pipe, args=(src, dst, buf), daemon=True).start()

    @staticmethod
    def _pipe(src, dst, buf):
        try:
            while data := src.recv(65536):
                buf += data
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        self.sock.close()


@pytest.fixture(scope="module")
def sites(lab_pki):
    www = tls_backend(lab_pki, "site-www", "www.lab.test")
    api = tls_backend(lab_pki, "site-api", "api.lab.test")
    tap = Tap(www.port)
    yield {"www": www, "api": api, "tap": tap}
    tap.close()
    www.stop()
    api.stop()


@pytest.fixture(scope="module")
def proxy(tls_proxy, sites):
    sni = {"www.lab.test": "www", "*.api.lab.test": "api", "api.lab.test": "api"}
    return tls_proxy({
        "admin": {"listen": "127.0.0.1:0"},
        "listeners": {
            "edge": {"bind": "127.0.0.1:0", "protocol": "tcp", "pool": "www",
                     "tls": {"mode": "passthrough", "sni": sni}},
            "strict": {"bind": "127.0.0.1:0", "protocol": "tcp",
                       "tls": {"mode": "passthrough", "sni": sni, "unknown_sni": "refuse"},
                       "timeouts": {"tls_handshake": "1s"}},
        },
        "pools": {
            "www": {"backends": [{"name": "www1", "address": f"127.0.0.1:{sites['tap'].port}"}]},
            "api": {"backends": [{"name": "api1", "address": f"127.0.0.1:{sites['api'].port}"}]},
        },
    })


def test_each_name_reaches_its_backend_with_the_backends_own_certificate(proxy, sites, lab_pki):
    ctx = client_context(lab_pki)
    for name, site, backend in (("www.lab.test", "site-www", "www1"),
                                ("api.lab.test", "site-api", "api1")):
        result = tls_request(proxy.port("edge"), name, ctx, path=SECRET)
        assert result.response.status == 200
        echo = result.response.json()
        assert echo["backend"] == site and echo["path"] == SECRET
        # The very certificate the backend was started with: the proxy never had one.
        assert result.der == pem_der(lab_pki / f"{name}.pem")
        assert echo["tls"]["sni"] == name, "the backend did the handshake itself"
        event = connection_events(proxy, backend=backend)[-1]
        assert event["kind"] == "tls-passthrough" and event["pool"] == backend[:3]
        assert event["tls"]["sni"] == name and event["tls"]["mode"] == "passthrough"


def test_the_proxy_saw_no_plaintext(proxy, sites, lab_pki):
    tap = sites["tap"]
    before = len(tap.to_backend)
    ctx = client_context(lab_pki)
    ctx.set_alpn_protocols(["http/1.1"])
    result = tls_request(proxy.port("edge"), "www.lab.test", ctx, path=SECRET)
    assert result.response.status == 200
    sent = bytes(tap.to_backend[before:])
    # What the proxy relayed is TLS records: handshake first, then application data.
    assert sent[:3] in (b"\x16\x03\x01", b"\x16\x03\x03")
    hello = parse_client_hello(sent)
    assert hello.sni == "www.lab.test" and hello.alpn == ("http/1.1",)
    assert SECRET.encode() not in sent and b"HTTP/1.1" not in sent
    assert b"\x17\x03\x03" in sent[hello.size:]  # application data records
    # Nothing the proxy logged or published contains the path: it never knew it.
    log = proxy.access_log.read_text()
    assert SECRET not in log and SECRET not in proxy.output()
    status, state = proxy.admin("GET", "/state")
    assert SECRET not in json.dumps(state)
    assert state["tls"]["edge"]["mode"] == "passthrough"
    assert state["tls"]["edge"]["default_pool"] == "www"


def test_wildcard_and_unknown_names(proxy, sites, lab_pki):
    # *.api.lab.test -> the api pool; the backend's certificate does not cover the name,
    # which is the client's business, not the proxy's.
    noverify = ssl.create_default_context()
    noverify.check_hostname = False
    noverify.verify_mode = ssl.CERT_NONE
    result = tls_request(proxy.port("edge"), "eu.api.lab.test", noverify)
    assert result.response.json()["backend"] == "site-api"
    # An unknown name goes to the listener's pool (www): the classic mismatch.
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_request(proxy.port("edge"), "shop.lab.test", client_context(lab_pki))
    result = tls_request(proxy.port("edge"), "shop.lab.test", noverify)
    assert result.response.json()["backend"] == "site-www"
    event = connection_events(proxy, kind="tls-passthrough")[-1]
    assert event["tls"]["sni"] == "shop.lab.test" and event["tls"]["matched"] == "default"


def test_strict_closes_unknown_names_and_non_tls(proxy, lab_pki):
    with pytest.raises((ssl.SSLError, ConnectionError)):
        tls_request(proxy.port("strict"), "shop.lab.test", client_context(lab_pki))
    refused = connection_events(proxy, listener="strict", closed_by="proxy")[0]
    assert "no pool for server name 'shop.lab.test'" in refused["error"]
    assert "unknown_sni: refuse" in refused["error"] and refused["backend"] is None
    with socket.create_connection(("127.0.0.1", proxy.port("strict")), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: www.lab.test\r\n\r\n")
        assert sock.recv(100) == b""
    plain = connection_events(proxy, count=2, listener="strict", closed_by="proxy")[1]
    assert "not a TLS ClientHello" in plain["error"] and "plain HTTP" in plain["error"]
    with socket.create_connection(("127.0.0.1", proxy.port("strict")), timeout=10) as sock:
        assert sock.recv(100) == b""  # silent client: tls_handshake (1s) runs out
    silent = connection_events(proxy, count=3, listener="strict", closed_by="proxy")[2]
    assert "timeouts.tls_handshake" in silent["error"]


def test_openssl_s_client_through_passthrough(proxy, lab_pki):
    out = s_client(proxy.port("edge"), "api.lab.test", ca=str(lab_pki / "ca.pem"))
    assert ("CN = api.lab.test" in out or "CN=api.lab.test" in out) and "Verification: OK" in out
