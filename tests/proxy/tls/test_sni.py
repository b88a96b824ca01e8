"""proxy.sni: the ClientHello parser, on real ClientHello bytes (pure, no sockets but one).

The bytes come from Python's ssl (OpenSSL) three ways: captured once and kept below (so
the test does not depend on today's library), made fresh at test time with and without a
server name, and sent by `openssl s_client` to a socket that only records them.
"""
from __future__ import annotations

import socket
import ssl
import subprocess
import threading

import pytest

from proxy.sni import MAX_HELLO, ClientHello, NotTLS, match_name, parse_client_hello, wildcard_covers

# Python 3.11 / OpenSSL 3.0 ClientHello for server_hostname="api.lab.test", ALPN h2,http/1.1.
CAPTURED = bytes.fromhex(
    "1603010200010001fc03032895e11428f8a3e923d9ad84269b6c6c94a155776a987ff8a843127935b5e07120"
    "b73f790770c5410637b605e5e780f25142d7513e8cb96fd14225c55f2d0e76b80024130213031301c02cc030"
    "c02bc02fcca9cca8c024c028c023c027009f009e006b006700ff0100018f00000011000f00000c6170692e6c"
    "61622e74657374000b000403000102000a00160014001d0017001e0019001801000101010201030104002300"
    "000010000e000c02683208687474702f312e310016000000170000000d002a00280403050306030807080808"
    "09080a080b080408050806040105010601030303010302040205020602002b00050403040303002d00020101"
    "003300260024001d002064e2926c1480f0e0a860e00ae96137a74f14d1e74701e93c88895f9081b17d250015"
    "00cf000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000"
)


def fresh_hello(server_hostname: str | None, alpn=None, max_version=None) -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if max_version:
        ctx.maximum_version = max_version
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_captured_hello():
    hello = parse_client_hello(CAPTURED)
    assert hello == ClientHello(sni="api.lab.test", alpn=("h2", "http/1.1"),
                                versions=("TLS 1.3", "TLS 1.2"), size=len(CAPTURED))


def test_fresh_hello_with_and_without_a_name():
    data = fresh_hello("WWW.Lab.Test.")
    assert parse_client_hello(data).sni == "www.lab.test"  # lower case, no trailing dot
    nameless = parse_client_hello(fresh_hello(None))
    assert nameless.sni is None and nameless.size > 0
    assert parse_client_hello(fresh_hello("b1")).sni == "b1"


def test_tls12_only_client_offers_no_supported_versions():
    hello = parse_client_hello(fresh_hello("x.lab.test", max_version=ssl.TLSVersion.TLSv1_2))
    assert hello.versions == ("TLS 1.2",)


def test_every_prefix_needs_more_bytes_and_extra_bytes_are_ignored():
    for cut in range(len(CAPTURED)):
        assert parse_client_hello(CAPTURED[:cut]) is None, cut
    hello = parse_client_hello(CAPTURED + b"\x17\x03\x03\x00\x05hello")
    assert hello.sni == "api.lab.test" and hello.size == len(CAPTURED)


def refragment(record: bytes, first: int) -> bytes:
    """The same handshake message split over two TLS records."""
    header, body = record[:5], record[5:]
    a, b = body[:first], body[first:]
    return (header[:3] + len(a).to_bytes(2, "big") + a
            + header[:3] + len(b).to_bytes(2, "big") + b)


@pytest.mark.parametrize("first", [1, 3, 4, 40, 100, 300])
def test_hello_split_over_two_records(first):
    data = refragment(CAPTURED, first)
    for cut in range(len(data)):
        assert parse_client_hello(data[:cut]) is None
    hello = parse_client_hello(data)
    assert hello.sni == "api.lab.test" and hello.size == len(data)


@pytest.mark.parametrize("data, says", [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "plain HTTP (GET ...)"),
    (b"SSH-2.0-OpenSSH_9.2\r\n", "plain text"),
    (b"\x80\x2e\x01\x03\x01", "SSLv2"),
    (b"\x17\x03\x03\x00\x10" + b"x" * 16, "not a TLS handshake record"),
    (b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", "not ClientHello"),
    (b"\x16\x03\x01\x00\x00", "record length 0"),
])
def test_not_tls(data, says):
    with pytest.raises(NotTLS, match=None) as err:
        parse_client_hello(data)
    assert says in str(err.value)


def test_truncated_extensions_are_refused_not_crashed():
    # Claim a longer handshake body than the record holds, then cut inside the extensions.
    broken = bytearray(CAPTURED)
    ext_len_at = CAPTURED.find(bytes.fromhex("0000001100"))  # server_name extension
    broken[ext_len_at + 3] = 0xFF  # its length now runs past the end
    with pytest.raises(NotTLS):
        parse_client_hello(bytes(broken))


def test_oversized_hello_is_refused():
    record = b"\x16\x03\x01\x40\x00" + b"\x01" + (MAX_HELLO + 10).to_bytes(3, "big")
    with pytest.raises(NotTLS, match="larger than"):
        parse_client_hello(record + b"\x00" * (0x4000 - 4))


def test_openssl_s_client_hello(tmp_path):
    """What the openssl command line tool sends, recorded by a socket that answers nothing."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(20)
    port = server.getsockname()[1]
    got = {}

    def record():
        conn, _ = server.accept()
        conn.settimeout(10)
        data = b""
        while parse_client_hello(data) is None:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        got["data"] = data
        conn.close()

    t = threading.Thread(target=record, daemon=True)
    t.start()
    subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
                    "www.lab.test", "-alpn", "http/1.1"], input=b"", capture_output=True,
                   timeout=30)
    t.join(20)
    server.close()
    hello = parse_client_hello(got["data"])
    assert hello.sni == "www.lab.test" and hello.alpn == ("http/1.1",)


# ---------------------------------------------------------------- names

@pytest.mark.parametrize("pattern, name, covers", [
    ("*.lab.test", "www.lab.test", True),
    ("*.lab.test", "lab.test", False),
    ("*.lab.test", "a.b.lab.test", False),
    ("*.lab.test", "wwwlab.test", False),
    ("www.lab.test", "www.lab.test", False),  # not a wildcard
])
def test_wildcard_covers_one_label(pattern, name, covers):
    assert wildcard_covers(pattern, name) is covers


def test_match_name_prefers_exact_then_wildcard():
    patterns = ["*.lab.test", "api.lab.test"]
    assert match_name("API.lab.test", patterns) == "api.lab.test"
    assert match_name("www.lab.test", patterns) == "*.lab.test"
    assert match_name("www.other.test", patterns) is None
    assert match_name(None, patterns) is None
