"""The PROXY protocol on a listener that terminates TLS: the header first, in cleartext,
then the TLS handshake on the same connection (HAProxy's `accept-proxy` on an ssl bind).

Real proxy process (uvloop), real clients: Python's ssl over a raw socket, the h2
library over TLS, and `curl --haproxy-protocol` over https. Sources 127.0.0.3 (trusted)
and 127.0.0.1 (not) stand for the balancer in front and a stranger.
"""
from __future__ import annotations

import socket
import ssl
import subprocess
import time

import pytest

from proxy import proxyproto
from tests.proxy.e2e.support import backend_entry, parse_response, read_until_close
from tests.proxy.tls.conftest import client_context

pytestmark = pytest.mark.timeout(90)

TRUSTED = "127.0.0.3"
CERTS = [{"pki": "www.lab.test"}]


@pytest.fixture(scope="module")
def proxy(tls_proxy, backends):
    listener = {"routes": ["all"], "http2": True,
                "tls": {"certificates": CERTS, "alpn": ["h2", "http/1.1"]},
                "proxy_protocol": {"trusted": [f"{TRUSTED}/32"]}}
    return tls_proxy({
        "admin": {"listen": "127.0.0.1:0"},
        "listeners": {"web": {"bind": "127.0.0.1:0", **listener}},
        "routes": {"all": {"forward": "p"}},
        "pools": {"p": {"backends": [backend_entry(backends["b1"])]}},
    })


def wait_logged(proxy, *words: str, timeout: float = 10.0) -> str:
    """The proxy's log line (its proxy_protocol Warning) holding every word."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in proxy.output().splitlines():
            if all(w in line for w in words):
                return line
        time.sleep(0.02)
    raise AssertionError(f"no log line with {words}:\n{proxy.output()[-2000:]}")


def _pump(sock: socket.socket, sslobj: ssl.SSLObject, incoming: ssl.MemoryBIO,
          outgoing: ssl.MemoryBIO, step) -> object:
    """Run `step()` on the SSLObject, moving bytes over the socket until it completes."""
    while True:
        try:
            result = step()
        except ssl.SSLWantReadError:
            if outgoing.pending:
                sock.sendall(outgoing.read())
            data = sock.recv(65536)
            if not data:
                incoming.write_eof()
            else:
                incoming.write(data)
            continue
        if outgoing.pending:
            sock.sendall(outgoing.read())
        return result


def proxied_https(ctx: ssl.SSLContext, port: int, header: bytes, path: str, request_id: str,
                  source: str = TRUSTED, alpn: list[str] | None = None,
                  one_write: bool = True) -> tuple[bytes, ssl.SSLObject]:
    """GET over TLS after a PROXY header. `one_write`: the header and the ClientHello
    leave in one segment (the proxy reads both at once); else the header goes alone."""
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    sslobj = ctx.wrap_bio(incoming, outgoing, server_hostname="www.lab.test")
    sock = socket.create_connection(("127.0.0.1", port), timeout=10,
                                    source_address=(source, 0))
    try:
        try:
            sslobj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hello = outgoing.read()
        if one_write:
            sock.sendall(header + hello)
        else:
            sock.sendall(header)
            sock.sendall(hello)
        _pump(sock, sslobj, incoming, outgoing, sslobj.do_handshake)
        request = (f"GET {path} HTTP/1.1\r\nHost: www.lab.test\r\nX-Request-Id: {request_id}"
                   "\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n").encode()
        _pump(sock, sslobj, incoming, outgoing, lambda: sslobj.write(request))
        data = b""
        while True:
            try:
                piece = _pump(sock, sslobj, incoming, outgoing, lambda: sslobj.read(65536))
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break
            if not piece:
                break
            data += piece
        return data, sslobj
    finally:
        sock.close()


@pytest.mark.parametrize("one_write", [True, False], ids=["with-hello", "header-alone"])
def test_v1_header_then_tls_names_the_client(proxy, lab_pki, one_write):
    port = proxy.port()
    rid = f"pp-tls-v1-{int(one_write)}"
    header = proxyproto.v1(("198.51.100.7", 5555), ("127.0.0.1", port))
    data, sslobj = proxied_https(client_context(lab_pki), port, header, "/pp", rid, one_write=one_write)
    response = parse_response(data)
    assert response.status == 200
    echo = response.json()
    assert echo["backend"] == "b1" and echo["x_forwarded_proto"] == "https"
    # The backend sees the PROXY-given client, not the client's own header.
    assert echo["x_forwarded_for"] == "198.51.100.7"
    event = proxy.event(rid)
    assert event["client"] == "198.51.100.7:5555"
    assert event["client_address"]["from"] == "proxy_protocol"
    assert event["client_address"]["proxy_protocol"]["version"] == 1
    assert event["client_address"]["proxy_protocol"]["via"].startswith(f"{TRUSTED}:")
    assert event["client_address"]["dropped"] == ["X-Forwarded-For"]
    assert event["tls"]["sni"] == "www.lab.test"


def test_v2_header_then_tls_with_alpn_h2(proxy, lab_pki):
    import h2.config
    import h2.connection
    import h2.events

    port = proxy.port()
    header = proxyproto.v2(("2001:db8::7", 6000), ("::1", port))
    raw = socket.create_connection(("127.0.0.1", port), timeout=10,
                                   source_address=(TRUSTED, 0))
    raw.sendall(header)
    ctx = client_context(lab_pki)
    ctx.set_alpn_protocols(["h2"])
    with ctx.wrap_socket(raw, server_hostname="www.lab.test") as sock:
        assert sock.selected_alpn_protocol() == "h2"
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                    header_encoding=None))
        conn.initiate_connection()
        conn.send_headers(1, [(b":method", b"GET"), (b":scheme", b"https"),
                              (b":authority", b"www.lab.test"), (b":path", b"/pp2"),
                              (b"x-request-id", b"pp-tls-v2")], end_stream=True)
        sock.sendall(conn.data_to_send())
        status, body, ended = None, b"", False
        while not ended:
            data = sock.recv(65536)
            assert data, "the proxy closed before the response ended"
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    status = dict(ev.headers)[b":status"]
                elif isinstance(ev, h2.events.DataReceived):
                    body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    ended = True
            sock.sendall(conn.data_to_send())
    assert status == b"200" and b'"backend": "b1"' in body.replace(b'":"', b'": "')
    event = proxy.event("pp-tls-v2")
    assert event["client"] == "[2001:db8::7]:6000"
    assert event["client_address"]["proxy_protocol"]["version"] == 2
    assert event["tls"]["alpn"] == "h2"


def test_untrusted_source_is_refused_before_the_handshake(proxy, lab_pki):
    port = proxy.port()
    header = proxyproto.v1(("198.51.100.7", 5555), ("127.0.0.1", port))
    with pytest.raises((ssl.SSLError, OSError)):
        proxied_https(client_context(lab_pki), port, header, "/intruder", "pp-intruder", source="127.0.0.1")
    wait_logged(proxy, "127.0.0.1:", "not in listeners.web.proxy_protocol.trusted")
    assert not [e for e in proxy.events() if e.get("request_id") == "pp-intruder"]


def test_trusted_source_without_a_header_is_refused(proxy, lab_pki):
    """A ClientHello where the header should be: not a PROXY header, refused."""
    port = proxy.port()
    raw = socket.create_connection(("127.0.0.1", port), timeout=10,
                                   source_address=(TRUSTED, 0))
    with pytest.raises((ssl.SSLError, OSError)):
        with client_context(lab_pki).wrap_socket(raw, server_hostname="www.lab.test") as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            read_until_close(s)
    wait_logged(proxy, f"{TRUSTED}:", "no PROXY protocol header")


@pytest.mark.parametrize("http", ["--http1.1", "--http2"])
def test_curl_haproxy_protocol_over_https(proxy, lab_pki, http):
    """curl sends a v1 header with its own address (7.88 cannot name another), then TLS."""
    port = proxy.port()
    rid = f"pp-curl{http.replace('-', '').replace('.', '')}"
    done = subprocess.run(
        ["curl", "-sS", "--haproxy-protocol", http, "--interface", TRUSTED,
         "--cacert", str(lab_pki / "ca.pem"),
         "--resolve", f"www.lab.test:{port}:127.0.0.1", "-H", f"X-Request-Id: {rid}",
         "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
         f"https://www.lab.test:{port}/curl"],
        capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    code, version = done.stdout.split()
    assert code == "200" and version == ("2" if http == "--http2" else "1.1")
    event = proxy.event(rid)
    assert event["client_address"]["from"] == "proxy_protocol"
    assert event["client"].startswith(f"{TRUSTED}:")
    assert event["tls"]["alpn"] == ("h2" if http == "--http2" else "http/1.1")


def test_header_and_hello_in_one_read_on_the_asyncio_loop(lab_pki, backends):
    """The same, in-process on asyncio's own loop, whose TLS layer is a BufferedProtocol
    (uvloop's is not): the ClientHello read with the header reaches it either way."""
    from tests.proxy.anchors.support import wait_for
    from tests.proxy.edge.harness import EdgeProxy
    from tests.proxy.tls.conftest import state_dir

    cfg = {"listeners": {"web": {"bind": "127.0.0.1:0", "routes": ["all"],
                                 "tls": {"certificates": CERTS},
                                 "proxy_protocol": {"trusted": [f"{TRUSTED}/32"]}}},
           "routes": {"all": {"forward": "p"}},
           "pools": {"p": {"backends": [backend_entry(backends["b1"])]}}}
    with state_dir(lab_pki), EdgeProxy(cfg) as proxy:
        port = proxy.port()
        header = proxyproto.v2(("198.51.100.9", 7000), ("127.0.0.1", port))
        data, _ = proxied_https(client_context(lab_pki), port, header, "/aio", "pp-aio")
        assert parse_response(data).status == 200
        found = wait_for(lambda: proxy.requests("pp-aio"), what="the request event")
        assert found[0].client == "198.51.100.9:7000"


def test_a_failed_handshake_after_the_header_names_the_proxied_client(proxy):
    """The TLS failure event (kind tls) carries the client the header named."""
    port = proxy.port()
    header = proxyproto.v1(("198.51.100.77", 4242), ("127.0.0.1", port))
    stranger = ssl.create_default_context()  # does not trust the lab CA: refuses the cert
    with pytest.raises(ssl.SSLError):
        proxied_https(stranger, port, header, "/never", "pp-never")
    failed = proxy.wait_events(lambda e: e.get("type") == "connection"
                               and e.get("kind") == "tls"
                               and e.get("client") == "198.51.100.77:4242")
    assert failed[0]["closed_by"] == "client" and "TLS handshake failed" in failed[0]["error"]
