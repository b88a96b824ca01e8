"""--proxy-protocol on a real HTTP backend: headers sent by a raw socket client."""

import socket
import time

import pytest

from labs.backend import proxy_protocol as pp
from labs.backend.testing import start_backend

from .wire import connect, eventually, read_response

pytestmark = pytest.mark.timeout(30)

GET = b"GET /who HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture(scope="module")
def pp_backend():
    with start_backend("pp1", None, "127.0.0.1", "--proxy-protocol", "--control-port", "0") as b:
        yield b


def send_with_header(port, header, request=GET, pieces=1):
    """Send ``header + request`` (split into ``pieces`` writes); return (echo, our address)."""
    with connect(port) as sock:
        data = header + request
        step = max(1, len(data) // pieces)
        for i in range(0, len(data), step):
            sock.sendall(data[i:i + step])
            if pieces > 1:
                time.sleep(0.01)
        with sock.makefile("rb") as f:
            return read_response(f).json(), sock.getsockname()


def assert_refused(port, data):
    """The backend closes the connection without an HTTP answer."""
    with connect(port) as sock:
        sock.sendall(data)
        try:
            got = sock.recv(1024)
        except ConnectionResetError:
            got = b""
    assert got == b"", got


def test_v1_header_sets_the_client_address(pp_backend):
    header = b"PROXY TCP4 203.0.113.7 192.0.2.10 51234 80\r\n"
    echo, local = send_with_header(pp_backend.port, header)
    assert echo["client"] == "203.0.113.7:51234"
    assert echo["peer"] == f"127.0.0.1:{local[1]}"      # the real socket peer: the "proxy"
    assert echo["proxy_protocol"] == {"version": 1, "command": "PROXY", "protocol": "TCP4",
                                      "source": "203.0.113.7:51234",
                                      "destination": "192.0.2.10:80"}
    assert echo["path"] == "/who"


def test_v2_header_ipv4_and_ipv6(pp_backend):
    v2_tcp4 = (pp.SIGNATURE_V2 + b"\x21\x11\x00\x0c" + bytes([198, 51, 100, 1])
               + bytes([192, 0, 2, 10]) + (40001).to_bytes(2, "big") + (8080).to_bytes(2, "big"))
    echo, _ = send_with_header(pp_backend.port, v2_tcp4)
    assert echo["client"] == "198.51.100.1:40001"
    assert echo["proxy_protocol"]["version"] == 2
    assert echo["proxy_protocol"]["destination"] == "192.0.2.10:8080"
    echo, _ = send_with_header(pp_backend.port, pp.v2(("2001:db8::7", 5000), ("2001:db8::1", 443)))
    assert echo["client"] == "[2001:db8::7]:5000"
    assert echo["proxy_protocol"]["protocol"] == "TCP6"


def test_header_arriving_in_pieces(pp_backend):
    header = b"PROXY TCP4 203.0.113.99 192.0.2.10 4000 80\r\n"
    echo, _ = send_with_header(pp_backend.port, header, pieces=12)
    assert echo["client"] == "203.0.113.99:4000"
    echo, _ = send_with_header(pp_backend.port, pp.v2(("203.0.113.98", 4001), ("192.0.2.1", 80)),
                               pieces=9)
    assert echo["client"] == "203.0.113.98:4001"


def test_local_and_unknown_keep_the_real_peer(pp_backend):
    for header in (pp.v2_local(), b"PROXY UNKNOWN\r\n"):
        echo, local = send_with_header(pp_backend.port, header)
        assert echo["client"] == echo["peer"] == f"127.0.0.1:{local[1]}"
        assert echo["proxy_protocol"]["source"] is None


def test_every_request_on_the_connection_keeps_the_header_client(pp_backend):
    with connect(pp_backend.port) as sock, sock.makefile("rb") as f:
        sock.sendall(pp.v1(("203.0.113.5", 1111), ("192.0.2.1", 80)))
        clients = []
        for _ in range(3):
            sock.sendall(GET)
            clients.append(read_response(f).json()["client"])
    assert clients == ["203.0.113.5:1111"] * 3


def test_missing_header_is_refused_and_logged(pp_backend):
    before = pp_backend.stats()["proxy_protocol_refused"]
    assert_refused(pp_backend.port, GET)
    eventually(lambda: "refused a connection from 127.0.0.1:" in pp_backend.output()
               and "no PROXY protocol header: the connection starts with b'GET /who" in pp_backend.output())
    assert pp_backend.stats()["proxy_protocol_refused"] == before + 1


def test_malformed_header_is_refused_with_the_reason(pp_backend):
    assert_refused(pp_backend.port, b"PROXY TCP4 203.0.113.300 192.0.2.1 1 2\r\n" + GET)
    eventually(lambda: "'203.0.113.300' is not an IPv4 address" in pp_backend.output())
    assert_refused(pp_backend.port, pp.SIGNATURE_V2 + b"\x31\x11\x00\x0c" + b"\x00" * 12 + GET)
    eventually(lambda: "version 3 in byte 13" in pp_backend.output())


def test_connect_and_close_is_a_quiet_health_check(pp_backend):
    before = pp_backend.stats()["proxy_protocol_refused"]
    for _ in range(3):
        socket.create_connection(("127.0.0.1", pp_backend.port), timeout=3).close()
    echo, _ = send_with_header(pp_backend.port, pp.v1(("203.0.113.1", 1), ("192.0.2.1", 2)))
    assert echo["client"] == "203.0.113.1:1"
    assert pp_backend.stats()["proxy_protocol_refused"] == before


def test_control_port_needs_no_header(pp_backend):
    r = pp_backend.control_request("GET", "/health/live")
    assert r.status == 200
    view = pp_backend.stats()
    assert view["proxy_protocol"] is True and view["control_port"] == pp_backend.control_port
    r = pp_backend.control_request("GET", "/not-here")
    assert r.status == 404 and "control port" in r.json()["error"]


def test_header_never_completed_times_out():
    """A client that stops mid-header is closed after the header timeout (5 s)."""
    with start_backend("pp2", None, "127.0.0.1", "--proxy-protocol") as b:
        with connect(b.port, timeout=8) as sock:
            sock.sendall(b"PROXY TCP4 ")
            started = time.monotonic()
            assert sock.recv(100) == b""
            assert 4 <= time.monotonic() - started < 7.5
        eventually(lambda: "no complete PROXY protocol header within 5s" in b.output())
