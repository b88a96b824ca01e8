"""HTTP/2 towards TLS backends (`protocol: h2` with `tls`): ALPN h2, verified like the
HTTP/1.1 re-encryption path, trailers and grpc-status through it.

The origins are real: nginx with `listen ... ssl http2` and the lab PKI's b1 certificate
(answering itself, or passing gRPC on to toy gRPC backends with `grpc_pass`), and an nginx
listener without http2 (ALPN http/1.1 only) for the refusal. Clients: curl and grpcio.
"""
from __future__ import annotations

import collections
import shutil
import subprocess
import time

import grpc
import pytest

from labs.backend.grpc_mode import parse_fields
from labs.backend.testing import free_port, start_backends
from tests.proxy.http2.test_grpc import IDENTITY

pytestmark = pytest.mark.timeout(120)

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@pytest.fixture(scope="module")
def grpc_pair():
    handles = start_backends(["g1", "g2"], "--mode", "grpc")
    yield {h.name: h for h in handles}
    for h in handles:
        h.stop()


@pytest.fixture(scope="module")
def nginx(lab_pki, tmp_path_factory, grpc_pair):
    """nginx TLS origins: `h2` (HTTP/2 by ALPN), `h1` (no http2), `g1`/`g2` (gRPC over TLS
    in front of the toy gRPC backends g1, g2)."""
    work = tmp_path_factory.mktemp("nginx-h2")
    ports = {name: free_port() for name in ("h2", "h1", "g1", "g2")}
    cert, key = lab_pki / "b1.pem", lab_pki / "b1.key"
    tls = f"ssl_certificate {cert}; ssl_certificate_key {key};"
    text = f"""daemon off;
master_process on;
worker_processes 1;
user root;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    server {{
        listen 127.0.0.1:{ports['h2']} ssl http2; {tls}
        location / {{ default_type text/plain;
            return 200 "nginx $server_protocol $scheme xff=$http_x_forwarded_for id=$http_x_request_id conn=$connection"; }}
    }}
    server {{
        listen 127.0.0.1:{ports['h1']} ssl; {tls}
        location / {{ return 200 "nginx http/1.1 only"; }}
    }}
    server {{
        listen 127.0.0.1:{ports['g1']} ssl http2; {tls}
        location / {{ grpc_pass grpc://127.0.0.1:{grpc_pair['g1'].port}; }}
    }}
    server {{
        listen 127.0.0.1:{ports['g2']} ssl http2; {tls}
        location / {{ grpc_pass grpc://127.0.0.1:{grpc_pair['g2'].port}; }}
    }}
}}
"""
    conf = work / "nginx.conf"
    conf.write_text(text)
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(work)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_listening(list(ports.values()), proc, work)
        yield ports
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _wait_listening(ports, proc, work, timeout: float = 15.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {proc.stdout.read().decode()} "
                                   f"{(work / 'error.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@pytest.fixture(scope="module")
def proxy(tls_proxy, nginx):
    def backend(name, port, **extra):
        return {"name": name, "address": f"127.0.0.1:{port}", **extra}

    return tls_proxy({
        "admin": {"listen": "127.0.0.1:0"},
        "listeners": {
            "web": {"bind": "127.0.0.1:0", "http2": True, "routes": ["web"]},
            "webtls": {"bind": "127.0.0.1:0", "http2": True, "routes": ["web"],
                       "tls": {"certificates": [{"pki": "www.lab.test"}],
                               "alpn": ["h2", "http/1.1"]}},
            "h1only": {"bind": "127.0.0.1:0", "routes": ["h1only"]},
            "wrong": {"bind": "127.0.0.1:0", "routes": ["wrong"]},
            "grpc": {"bind": "127.0.0.1:0", "http2": True, "routes": ["grpc"]},
        },
        "routes": {"web": {"forward": "h2tls"}, "h1only": {"forward": "h1only"},
                   "wrong": {"forward": "wrong"}, "grpc": {"forward": "grpc"}},
        "pools": {
            # The backend's name is b1: the name checked on the lab's b1 certificate.
            "h2tls": {"protocol": "h2", "tls": {}, "backends": [backend("b1", nginx["h2"])]},
            "h1only": {"protocol": "h2", "tls": {"server_name": "b1"}, "retries": 0,
                       "backends": [backend("h1", nginx["h1"])]},
            "wrong": {"protocol": "h2", "retries": 0,
                      "tls": {"server_name": "api.lab.test"},
                      "backends": [backend("w1", nginx["h2"])]},
            "grpc": {"protocol": "h2", "tls": {"server_name": "localhost"},
                     "backends": [backend("n1", nginx["g1"]), backend("n2", nginx["g2"])]},
        },
    })


def curl(port: int, *flags: str, rid: str, path: str = "/") -> tuple[str, str]:
    done = subprocess.run(["curl", "-sS", *flags, "-H", f"X-Request-Id: {rid}",
                           "-w", "\n%{http_code}", f"http://127.0.0.1:{port}{path}"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    body, _, code = done.stdout.rpartition("\n")
    return code, body


@pytest.mark.parametrize("flag", ["--http2-prior-knowledge", "--http1.1"])
def test_requests_reach_a_tls_backend_over_h2(proxy, flag):
    rid = f"h2tls{flag.replace('-', '').replace('.', '')}"
    code, body = curl(proxy.port("web"), flag, rid=rid, path="/x")
    assert code == "200"
    # nginx saw HTTP/2 over TLS, the client's address and the request's id.
    assert body.startswith(f"nginx HTTP/2.0 https xff=127.0.0.1 id={rid} conn=")
    event = proxy.event(rid)
    assert event["status"] == 200 and event["backend"] == "b1"
    assert event["backend_tls"]["alpn"] == "h2"
    assert event["backend_tls"]["verified"] is True
    assert event["backend_tls"]["server_name"] == "b1"


def test_h2_over_tls_on_both_sides(proxy, lab_pki):
    """TLS terminated (h2 by ALPN), then TLS again to the backend (h2 by ALPN)."""
    port = proxy.port("webtls")
    done = subprocess.run(
        ["curl", "-sS", "--http2", "--cacert", str(lab_pki / "ca.pem"),
         "--resolve", f"www.lab.test:{port}:127.0.0.1", "-H", "X-Request-Id: h2tls-both",
         "-w", "\n%{http_version}", f"https://www.lab.test:{port}/both"],
        capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    body, _, version = done.stdout.rpartition("\n")
    assert version == "2" and body.startswith("nginx HTTP/2.0 https xff=127.0.0.1 id=h2tls-both")
    event = proxy.event("h2tls-both")
    assert event["tls"]["alpn"] == "h2" and event["backend_tls"]["alpn"] == "h2"


def test_many_streams_share_one_tls_connection(proxy, tmp_path):
    """Requests in flight together ride one TLS connection to the backend, as streams
    (nginx's $connection: the serial number of the connection it served them on)."""
    port = proxy.port("web")
    curl(port, "--http1.1", rid="h2tls-warm")  # the connection exists before the burst
    args = []
    for i in range(6):
        args += ["-o", str(tmp_path / f"s{i}"), f"http://127.0.0.1:{port}/s{i}"]
    done = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "--parallel",
                           "--parallel-immediate", *args],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    bodies = [(tmp_path / f"s{i}").read_text() for i in range(6)]
    assert all(b.startswith("nginx HTTP/2.0 https") for b in bodies), bodies
    assert len({b.partition("conn=")[2] for b in bodies}) == 1, bodies


def test_a_backend_that_does_not_choose_h2_is_backend_tls(proxy):
    """nginx without http2 answers an h2-only ALPN offer with a no_application_protocol
    alert (RFC 7301 section 3.2)."""
    code, body = curl(proxy.port("h1only"), "--http1.1", "-i", rid="h2tls-noalpn")
    assert code == "502" and "x-lblab-error: backend-tls" in body.lower()
    event = proxy.event("h2tls-noalpn")
    assert event["proxy_error"] is True and event["termination"] == "SC"
    assert "no application protocol" in event["error"]
    assert "did not agree to HTTP/2" in event["error"]


def test_a_certificate_for_another_name_is_refused(proxy):
    code, body = curl(proxy.port("wrong"), "--http1.1", "-i", rid="h2tls-wrong")
    assert code == "502" and "x-lblab-error: backend-tls" in body.lower()
    event = proxy.event("h2tls-wrong")
    assert event["termination"] == "SC"
    assert "certificate verify failed" in event["error"]
    assert "'api.lab.test'" in event["error"]


def test_grpcio_through_the_proxy_to_tls_grpc_backends(proxy):
    with grpc.insecure_channel(f"127.0.0.1:{proxy.port('grpc')}") as channel:
        call = channel.unary_unary("/lblab.toy.Echo/Whoami", **IDENTITY)
        names = collections.Counter(parse_fields(call(b"", timeout=10))[1] for _ in range(20))
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/lblab.toy.Nope/Missing", **IDENTITY)(b"", timeout=10)
    assert names == {b"g1": 10, b"g2": 10}  # per call, over TLS h2 to each backend
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    events = proxy.wait_events(lambda e: e.get("type") == "request" and e.get("pool") == "grpc",
                               count=21)
    assert all(e["backend_tls"]["alpn"] == "h2" for e in events)
    assert {e["grpc"]["status"] for e in events} == {0, 12}
