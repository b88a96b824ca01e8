"""--tls: a real backend process serving the HTTP app over TLS (trustme certificates)."""

import json
import socket
import ssl

import pytest

from labs.backend import proxy_protocol as pp
from labs.backend.testing import start_backend

from .wire import read_response

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def tls_backend(tls_files):
    ctx = tls_files.client_context()
    with start_backend("tls1", None, "127.0.0.1", *tls_files.server_args(),
                       ssl_context=ctx) as backend:
        yield backend


def tls_get(port, ctx, server_hostname, path="/", alpn=True, preamble=b""):
    """One GET over TLS on a raw socket; returns (reply, the client's SSLSocket facts)."""
    if alpn:
        ctx.set_alpn_protocols(["http/1.1"])
    with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
        raw.sendall(preamble)
        with ctx.wrap_socket(raw, server_hostname=server_hostname) as sock:
            facts = {"version": sock.version(), "cipher": sock.cipher()[0], "local": sock.getsockname()}
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {server_hostname}\r\n"
                         "Connection: close\r\n\r\n".encode())
            with sock.makefile("rb") as f:
                return read_response(f), facts


def test_echo_reports_tls_version_cipher_and_sni(tls_backend, tls_files):
    reply, facts = tls_get(tls_backend.port, tls_files.client_context(), "shop.example", "/x?y=1")
    assert reply.status == 200 and reply.headers["x-backend"] == "tls1"
    echo = reply.json()
    assert echo["path"] == "/x" and echo["client"] == "127.0.0.1:%d" % facts["local"][1]
    assert echo["tls"] == {"version": facts["version"], "cipher": facts["cipher"],
                           "sni": "shop.example", "alpn": "http/1.1", "client_cert": None}
    assert echo["tls"]["version"] in ("TLSv1.2", "TLSv1.3")
    assert "proxy_protocol" not in echo and "peer" not in echo


def test_sni_is_recorded_per_connection(tls_backend, tls_files):
    seen = [tls_get(tls_backend.port, tls_files.client_context(), name)[0].json()["tls"]["sni"]
            for name in ("api.example", "localhost", "shop.example")]
    assert seen == ["api.example", "localhost", "shop.example"]
    # Connecting by IP address: Python sends no SNI at all.
    assert tls_get(tls_backend.port, tls_files.client_context(), "127.0.0.1")[0].json()["tls"]["sni"] is None


def test_tls_1_2_is_accepted(tls_backend, tls_files):
    ctx = tls_files.client_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    reply, facts = tls_get(tls_backend.port, ctx, "shop.example")
    assert facts["version"] == "TLSv1.2" and reply.json()["tls"]["version"] == "TLSv1.2"


def test_client_trusting_another_ca_fails_verification(tls_backend, tls_files):
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        tls_get(tls_backend.port, tls_files.client_context(cafile=tls_files.wrong_ca), "shop.example")
    # ... and a name the certificate does not cover fails too.
    with pytest.raises(ssl.SSLCertVerificationError, match="match|mismatch"):
        tls_get(tls_backend.port, tls_files.client_context(), "other.example")


def test_plain_http_on_the_tls_port_gets_no_http_answer(tls_backend):
    with socket.create_connection(("127.0.0.1", tls_backend.port), timeout=3) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = sock.recv(100)
        except ConnectionResetError:
            data = b""
    assert not data.startswith(b"HTTP/")


def test_control_api_and_health_work_over_tls(tls_backend):
    # The handle talks HTTPS with a context that verifies against the trustme CA.
    assert tls_backend.url.startswith("https://")
    assert tls_backend.control({"latency_ms": 1})["latency_ms"] == 1
    view = tls_backend.stats()
    assert (view["mode"], view["tls"], view["proxy_protocol"]) == ("http", True, False)
    assert tls_backend.get("/health/live").status == 200
    assert tls_backend.clear_faults()["latency_ms"] == 0


def test_keep_alive_over_tls(tls_backend, tls_files):
    ctx = tls_files.client_context()
    with socket.create_connection(("127.0.0.1", tls_backend.port), timeout=3) as raw, \
            ctx.wrap_socket(raw, server_hostname="shop.example") as sock, sock.makefile("rb") as f:
        ids = []
        for path in ("/a", "/b", "/c"):
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            echo = read_response(f).json()
            ids.append((echo["connection_id"], echo["connection_request"], echo["tls"]["sni"]))
    assert [n for _, n, _ in ids] == [1, 2, 3]
    assert len({c for c, _, _ in ids}) == 1 and {s for _, _, s in ids} == {"shop.example"}


def test_client_certificates_required_with_client_ca(tls_files):
    args = tls_files.server_args("--client-ca", tls_files.client_ca, "--control-port", "0")
    with start_backend("mtls", None, "127.0.0.1", *args) as b:
        assert "client certificates required" in b.output()
        echo = tls_get(b.port, tls_files.client_context(with_cert=True), "shop.example")[0].json()
        cert = echo["tls"]["client_cert"]
        assert cert["subject"].startswith("CN=alice,")
        assert "O=trustme" in cert["subject"] and "Testing CA" in cert["issuer"]
        assert cert["serial"] and cert["not_after"]
        # No client certificate: the handshake (TLS 1.2) or the first read (TLS 1.3) fails.
        with pytest.raises((ssl.SSLError, ConnectionResetError, EOFError)):
            tls_get(b.port, tls_files.client_context(), "shop.example")
        # The plain control port still answers (no client certificate needed there).
        assert b.stats()["tls"] is True and b.control({"latency_ms": 2})["latency_ms"] == 2


def test_tls_after_a_proxy_protocol_header(tls_files):
    """The PROXY header comes first, in clear, then the TLS handshake (passthrough + PROXY)."""
    with start_backend("tlspp", None, "127.0.0.1",
                       *tls_files.server_args("--proxy-protocol"),
                       ssl_context=tls_files.client_context()) as b:
        header = pp.v2(("198.51.100.20", 61000), ("203.0.113.1", 443),
                       tlvs=((0x02, b"shop.example"),))
        reply, facts = tls_get(b.port, tls_files.client_context(), "shop.example", preamble=header)
        echo = reply.json()
        assert echo["client"] == "198.51.100.20:61000"
        assert echo["peer"] == "127.0.0.1:%d" % facts["local"][1]
        assert echo["tls"]["sni"] == "shop.example"
        assert echo["proxy_protocol"]["tlvs"] == {"authority": "shop.example"}
        # The handle's own calls send a LOCAL header before TLS, and still work.
        assert b.stats()["proxy_protocol"] is True
        assert json.loads(b.get("/").body)["proxy_protocol"]["command"] == "LOCAL"


def test_tls_proxy_protocol_and_tcp_mode_on_the_stock_event_loop(tls_files):
    """The same paths without uvloop (--no-uvloop): asyncio's own TLS and sockets."""
    ctx = tls_files.client_context()
    with start_backend("stock", None, "127.0.0.1", "--no-uvloop", "--proxy-protocol",
                       *tls_files.server_args(), ssl_context=ctx) as b:
        header = pp.v1(("203.0.113.77", 7777), ("192.0.2.1", 443))
        echo = tls_get(b.port, tls_files.client_context(), "api.example", preamble=header)[0].json()
        assert echo["client"] == "203.0.113.77:7777" and echo["tls"]["sni"] == "api.example"
        assert b.stop() == 0
    with start_backend("stockg", None, "127.0.0.1", "--no-uvloop", "--mode", "tcp",
                       *tls_files.server_args(), ssl_context=ctx) as b:
        with b.game(server_hostname="shop.example") as g:
            assert g.command("JOIN zoe") == "WELCOME zoe on stockg, players here: 1"
            assert json.loads(g.command("WHOAMI"))["tls"]["sni"] == "shop.example"
        assert b.stop() == 0
