"""PROXY protocol v1/v2 parsing on real header bytes (no sockets).

The v2 headers are written out byte by byte from the spec (haproxy doc/proxy-protocol.txt,
section 2.2), not produced by our own builder, so a bug shared by builder and parser
cannot hide; the builder is checked separately against the parser.
"""

import pytest

from labs.backend import proxy_protocol as pp
from labs.backend.proxy_protocol import ProxyProtocolError, parse

SIG = b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"   # \r\n\r\n\0\r\nQUIT\n

# v2, PROXY command (0x21), TCP over IPv4 (0x11), 12 bytes of addresses:
# 192.168.0.1:56324 -> 192.168.0.11:443
V2_TCP4 = (SIG + b"\x21\x11\x00\x0c"
           + b"\xc0\xa8\x00\x01" + b"\xc0\xa8\x00\x0b" + b"\xdc\x04" + b"\x01\xbb")

# v2, PROXY, TCP over IPv6 (0x21), 36 bytes: [2001:db8::1]:40000 -> [2001:db8::2]:8443
V2_TCP6 = (SIG + b"\x21\x21\x00\x24"
           + bytes.fromhex("20010db8000000000000000000000001")
           + bytes.fromhex("20010db8000000000000000000000002")
           + b"\x9c\x40" + b"\x20\xfb")


# -- v1 ---------------------------------------------------------------------------------------


def test_v1_tcp4_and_the_stream_after_it():
    data = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n\r\n"
    h = parse(data)
    assert (h.version, h.command, h.protocol) == (1, "PROXY", "TCP4")
    assert h.source == ("192.168.0.1", 56324)
    assert h.destination == ("192.168.0.11", 443)
    assert data[h.length:] == b"GET / HTTP/1.1\r\n\r\n"
    assert h.describe() == {"version": 1, "command": "PROXY", "protocol": "TCP4",
                            "source": "192.168.0.1:56324", "destination": "192.168.0.11:443"}


def test_v1_tcp6():
    h = parse(b"PROXY TCP6 2001:db8::1 2001:0db8:0:0:0:0:0:2 40000 8443\r\n")
    assert h.protocol == "TCP6"
    assert h.source == ("2001:db8::1", 40000)
    assert h.destination == ("2001:db8::2", 8443)    # normalised
    assert h.describe()["source"] == "[2001:db8::1]:40000"


def test_v1_unknown_means_use_the_real_peer():
    for raw in (b"PROXY UNKNOWN\r\n",
                # the spec's longest possible header: exactly 107 bytes with the CRLF
                b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
                b"PROXY UNKNOWN " + b"f" * 91 + b"\r\n"):
        h = parse(raw)
        assert (h.protocol, h.source, h.destination, h.length) == ("UNKNOWN", None, None, len(raw))


def test_v1_needs_more_bytes_until_the_crlf():
    full = b"PROXY TCP4 10.0.0.1 10.0.0.2 1234 80\r\n"
    for n in range(len(full)):
        assert parse(full[:n]) is None, full[:n]
    assert parse(full).length == len(full)


@pytest.mark.parametrize("raw, message", [
    (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "protocol must be TCP4, TCP6 or UNKNOWN, got 'TCP5'"),
    (b"PROXY TCP4 999.1.1.1 5.6.7.8 1 2\r\n", "'999.1.1.1' is not an IPv4 address"),
    (b"PROXY TCP4 ::1 ::2 1 2\r\n", "'::1' is not an IPv4 address (protocol TCP4)"),
    (b"PROXY TCP6 1.2.3.4 ::2 1 2\r\n", "'1.2.3.4' is not an IPv6 address"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 80\r\n", "'65536' is not a port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 0443 80\r\n", "'0443' is not a port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 80\r\n", "'-1' is not a port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 80\r\n", "expected 'PROXY TCP4 <source ip> <destination ip>"),
    (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "expected 'PROXY TCP4"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "must end with CRLF, found a bare LF"),
    (b"PROXY TCP4 " + b"1" * 120, "no CRLF within 107 bytes"),
    (b"PROXY UNKNOWN " + b"f" * 92 + b"\r\n", "no CRLF within 107 bytes"),
    (b"PROXY TCP4 1.2.3.\xc44 5.6.7.8 1 2\r\n", "not ASCII"),
    (b"PROXX TCP4", "no PROXY protocol header"),
    (b"PR0", "no PROXY protocol header"),
])
def test_v1_malformed_headers_say_what_is_wrong(raw, message):
    with pytest.raises(ProxyProtocolError, match=None) as info:
        parse(raw)
    assert message in str(info.value)


# -- v2 ---------------------------------------------------------------------------------------


def test_v2_tcp4():
    h = parse(V2_TCP4 + b"\x16\x03\x01")   # a TLS ClientHello would follow
    assert (h.version, h.command, h.protocol) == (2, "PROXY", "TCP4")
    assert h.source == ("192.168.0.1", 56324)
    assert h.destination == ("192.168.0.11", 443)
    assert h.length == 28 and h.tlvs == ()


def test_v2_tcp6():
    h = parse(V2_TCP6)
    assert (h.protocol, h.length) == ("TCP6", 52)
    assert h.source == ("2001:db8::1", 40000)
    assert h.destination == ("2001:db8::2", 8443)
    assert h.describe()["destination"] == "[2001:db8::2]:8443"


def test_v2_local_command_keeps_the_real_endpoints():
    # What HAProxy sends for its own health checks: LOCAL (0x20), AF_UNSPEC, no addresses.
    h = parse(SIG + b"\x20\x00\x00\x00GET /health HTTP/1.1\r\n")
    assert (h.version, h.command, h.source, h.destination, h.length) == (2, "LOCAL", None, None, 16)
    # LOCAL with an address block: the block is skipped, never used.
    h = parse(SIG + b"\x20\x11\x00\x0c" + V2_TCP4[16:])
    assert (h.command, h.source, h.length) == ("LOCAL", None, 28)
    assert parse(pp.v2_local()).command == "LOCAL"


def test_v2_unspec_family_with_proxy_command_is_unknown():
    h = parse(SIG + b"\x21\x00\x00\x00")
    assert (h.command, h.protocol, h.source) == ("PROXY", "UNKNOWN", None)


def test_v2_udp_and_unix():
    h = parse(SIG + b"\x21\x12\x00\x0c" + V2_TCP4[16:])
    assert h.protocol == "UDP4"
    src = b"/run/client.sock".ljust(108, b"\x00")
    dst = b"\x00abstract-name".ljust(108, b"\x00")
    h = parse(SIG + b"\x21\x31\x00\xd8" + src + dst)
    assert h.protocol == "UNIX_STREAM"
    assert h.source == ("/run/client.sock", None) and h.destination == ("@abstract-name", None)
    assert h.describe()["source"] == "/run/client.sock"


def test_v2_tlvs():
    tlvs = (b"\x02\x00\x0cshop.example"                 # PP2_TYPE_AUTHORITY (SNI)
            + b"\x01\x00\x02h2"                         # PP2_TYPE_ALPN
            + b"\x04\x00\x03\x00\x00\x00"               # PP2_TYPE_NOOP (padding)
            + b"\x20\x00\x0f" + b"\x01" + b"\x00\x00\x00\x00"   # PP2_TYPE_SSL: client, verify
            + b"\x21\x00\x07TLSv1.3"                    #   PP2_SUBTYPE_SSL_VERSION
            + b"\xe0\x00\x01\xff")                      # a custom TLV (0xE0..0xEF)
    addresses = V2_TCP4[16:]
    length = len(addresses) + len(tlvs)
    h = parse(SIG + b"\x21\x11" + length.to_bytes(2, "big") + addresses + tlvs)
    assert h.source == ("192.168.0.1", 56324)
    assert [k for k, _ in h.tlvs] == [0x02, 0x01, 0x04, 0x20, 0xE0]
    assert h.describe()["tlvs"] == {
        "authority": "shop.example", "alpn": "h2",
        "ssl": {"client": 1, "verify": 0, "version": "TLSv1.3"}, "0xe0": "ff",
    }


def test_v2_needs_more_bytes_until_the_announced_length():
    for n in range(len(V2_TCP6)):
        assert parse(V2_TCP6[:n]) is None, n
    assert parse(V2_TCP6).length == len(V2_TCP6)


@pytest.mark.parametrize("raw, message", [
    (SIG[:5] + b"X", "no PROXY protocol header"),
    (b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x00", "no PROXY protocol header"),
    (SIG + b"\x11\x11\x00\x0c" + V2_TCP4[16:], "version 1 in byte 13 (0x11), only 2 exists"),
    (SIG + b"\x22\x11\x00\x0c" + V2_TCP4[16:], "command 2 in byte 13 (0x22), expected 0 (LOCAL) or 1 (PROXY)"),
    (SIG + b"\x21\x41\x00\x0c" + V2_TCP4[16:], "address family 4 in byte 14 (0x41)"),
    (SIG + b"\x21\x13\x00\x0c" + V2_TCP4[16:], "transport 3 in byte 14 (0x13)"),
    (SIG + b"\x21\x11\x00\x08" + V2_TCP4[16:24], "family INET needs 12 bytes of addresses, the length field says 8"),
    (SIG + b"\x21\x21\x00\x0c" + V2_TCP4[16:], "family INET6 needs 36 bytes"),
    (SIG + b"\x21\x10\x00\x0c" + V2_TCP4[16:], "needs transport STREAM or DGRAM, got UNSPEC"),
    (SIG + b"\x21\x11\x00\x13" + V2_TCP4[16:] + b"\x02\x00\x09shop", "TLV 0x02 at offset 28 says 9 bytes, only 4 remain"),
    (SIG + b"\x21\x11\x00\x0e" + V2_TCP4[16:] + b"\x02\x00", "2 stray byte(s) at offset 28"),
])
def test_v2_malformed_headers_say_what_is_wrong(raw, message):
    with pytest.raises(ProxyProtocolError) as info:
        parse(raw)
    assert message in str(info.value)


# -- detection, and what the error says -------------------------------------------------------


def test_plain_http_and_tls_are_not_headers():
    with pytest.raises(ProxyProtocolError) as info:
        parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    msg = str(info.value)
    assert "no PROXY protocol header" in msg and "GET / HTTP/1.1" in msg
    assert "is the proxy configured to send the PROXY protocol" in msg
    with pytest.raises(ProxyProtocolError, match="no PROXY protocol header"):
        parse(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")   # a TLS ClientHello
    assert parse(b"") is None
    assert parse(b"P") is None and parse(b"\r\n") is None


# -- builders ---------------------------------------------------------------------------------


def test_builders_round_trip():
    assert pp.v1(("192.168.0.1", 56324), ("192.168.0.11", 443)) == \
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
    assert pp.v1(None) == b"PROXY UNKNOWN\r\n"
    assert parse(pp.v1(("2001:db8::1", 1), ("2001:db8::2", 2))).source == ("2001:db8::1", 1)
    assert pp.v2(("192.168.0.1", 56324), ("192.168.0.11", 443)) == V2_TCP4
    assert pp.v2(("2001:db8::1", 40000), ("2001:db8::2", 8443)) == V2_TCP6
    h = parse(pp.v2(("10.1.2.3", 9), ("10.0.0.1", 80), tlvs=((0x02, b"a.example"),)))
    assert h.describe()["tlvs"] == {"authority": "a.example"}
    with pytest.raises(ValueError, match="not the same IP version"):
        pp.v2(("10.0.0.1", 1), ("::1", 2))
