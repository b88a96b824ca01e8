"""PROXY protocol headers, versions 1 and 2 (HAProxy's spec), parsed and built without I/O.

Theory of operation
-------------------
A proxy that speaks the PROXY protocol writes one header at the very start of each
connection it opens to a backend, before any byte of the client's own stream (before a TLS
ClientHello too), telling the backend who the real client was. Two encodings exist:

* v1, text: ``PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\\r\\n`` (``TCP6`` for IPv6,
  ``UNKNOWN`` when the proxy cannot tell); at most 107 bytes including the CRLF.
* v2, binary: the 12-byte signature ``\\r\\n\\r\\n\\0\\r\\nQUIT\\n``, one byte version (2) and
  command (``LOCAL`` = a connection of the proxy's own, e.g. a health check, or ``PROXY``),
  one byte address family and transport, a 16-bit big-endian length, then the addresses
  (12 bytes IPv4, 36 IPv6, 216 UNIX) and optional TLVs (type, 16-bit length, value).

The two start with different bytes (``P`` and ``\\r``), so the version is detected from
the first byte. ``parse(data)`` looks at the bytes received so far and answers one of:

* a ``ProxyHeader`` whose ``length`` says how many bytes the header took (the client's
  stream starts right after),
* ``None``: everything so far is a valid beginning, wait for more bytes,
* ``ProxyProtocolError``: this cannot be a valid header; the message says why.

For ``LOCAL`` (v2) and ``UNKNOWN`` (v1, and v2 ``AF_UNSPEC``) the spec says to use the real
connection endpoints: ``source`` and ``destination`` are then None. ``v1()``, ``v2()`` and
``v2_local()`` build headers (tests, and a proxy that wants to send one).

Shared by the toy backends (labs/backend/listen.py, through the name
labs.backend.proxy_protocol) and the proxy's own listeners that accept the
header from trusted sources (proxy/trust.py).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Any

SIGNATURE_V2 = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX_LENGTH = 107          # the spec's worst case, "PROXY TCP6 <39> <39> 65535 65535\r\n"
V2_HEADER_LENGTH = 16        # signature, version/command, family/transport, length

LOCAL = "LOCAL"
PROXY = "PROXY"

_FAMILIES = {0: "UNSPEC", 1: "INET", 2: "INET6", 3: "UNIX"}
_TRANSPORTS = {0: "UNSPEC", 1: "STREAM", 2: "DGRAM"}
_ADDRESS_SIZES = {1: 12, 2: 36, 3: 216}
_PROTOCOL_NAMES = {
    (1, 1): "TCP4", (1, 2): "UDP4", (2, 1): "TCP6", (2, 2): "UDP6",
    (3, 1): "UNIX_STREAM", (3, 2): "UNIX_DGRAM",
}

TLV_NAMES = {
    0x01: "alpn", 0x02: "authority", 0x03: "crc32c", 0x04: "noop", 0x05: "unique_id",
    0x20: "ssl", 0x30: "netns",
}
_SSL_SUB_TLVS = {0x21: "version", 0x22: "cn", 0x23: "cipher", 0x24: "sig_alg", 0x25: "key_alg"}
_TEXT_TLVS = {"alpn", "authority", "netns", "version", "cn", "cipher", "sig_alg", "key_alg"}


class ProxyProtocolError(ValueError):
    """The bytes cannot be a PROXY protocol header; the message says what is wrong."""


Address = tuple[str, int | None]   # (host, port); for UNIX sockets (path, None)


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    version: int                 # 1 or 2
    command: str                 # "PROXY" or "LOCAL" (v1 is always PROXY)
    protocol: str                # TCP4, TCP6, UDP4, UDP6, UNIX_STREAM, UNIX_DGRAM, UNKNOWN
    source: Address | None       # None: use the real peer (LOCAL, UNKNOWN, AF_UNSPEC)
    destination: Address | None
    length: int                  # bytes the header took on the wire
    tlvs: tuple[tuple[int, bytes], ...] = field(default=())

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly view (what the toy backend reports in its echo)."""
        view: dict[str, Any] = {
            "version": self.version,
            "command": self.command,
            "protocol": self.protocol,
            "source": format_address(self.source),
            "destination": format_address(self.destination),
        }
        if self.tlvs:
            view["tlvs"] = describe_tlvs(self.tlvs)
        return view


def format_address(addr: Address | None) -> str | None:
    """``ip:port``, ``[ipv6]:port``, or a UNIX path; None stays None."""
    if addr is None:
        return None
    host, port = addr
    if port is None:  # a UNIX socket path
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- parsing ---------------------------------------------------------------------------------


def parse(data: bytes) -> ProxyHeader | None:
    """Parse the header at the start of ``data``; None if more bytes are needed.

    Raises ProxyProtocolError when ``data`` cannot start a valid header.
    """
    if not data:
        return None
    first = data[:1]
    if first == b"\r":
        return _parse_v2(data)
    if first == b"P":
        return _parse_v1(data)
    raise ProxyProtocolError(_not_a_header(data))


def _not_a_header(data: bytes) -> str:
    return (f"no PROXY protocol header: the connection starts with {bytes(data[:24])!r}, "
            f"expected 'PROXY ' (v1) or the v2 signature {SIGNATURE_V2!r} "
            "(is the proxy configured to send the PROXY protocol to this backend?)")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    if len(data) < len(V1_PREFIX):
        if V1_PREFIX.startswith(data):
            return None
        raise ProxyProtocolError(_not_a_header(data))
    if data[:6] != V1_PREFIX:
        raise ProxyProtocolError(_not_a_header(data))
    end = data.find(b"\r\n", 0, V1_MAX_LENGTH)
    if end < 0:
        lf = data.find(b"\n", 0, V1_MAX_LENGTH)
        if lf >= 0:
            raise ProxyProtocolError("malformed PROXY v1 header: the line must end with CRLF, "
                                     f"found a bare LF in {bytes(data[:lf + 1])!r}")
        if len(data) >= V1_MAX_LENGTH:
            raise ProxyProtocolError(f"malformed PROXY v1 header: no CRLF within "
                                     f"{V1_MAX_LENGTH} bytes ({bytes(data[:40])!r}...)")
        return None
    raw = bytes(data[:end])
    try:
        line = raw.decode("ascii")
    except UnicodeDecodeError:
        raise ProxyProtocolError(f"malformed PROXY v1 header: not ASCII: {raw!r}") from None
    parts = line.split(" ")
    proto = parts[1] if len(parts) > 1 else ""
    length = end + 2
    if proto == "UNKNOWN":
        # The proxy does not know the addresses: the rest of the line is to be ignored.
        return ProxyHeader(1, PROXY, "UNKNOWN", None, None, length)
    if proto not in ("TCP4", "TCP6"):
        raise ProxyProtocolError(f"malformed PROXY v1 header: protocol must be TCP4, TCP6 or "
                                 f"UNKNOWN, got {proto!r} in {line!r}")
    if len(parts) != 6:
        raise ProxyProtocolError(f"malformed PROXY v1 header: expected 'PROXY {proto} "
                                 f"<source ip> <destination ip> <source port> "
                                 f"<destination port>', got {line!r}")
    _, _, src, dst, sport, dport = parts
    cls = ipaddress.IPv4Address if proto == "TCP4" else ipaddress.IPv6Address
    source = (_v1_ip(cls, src, proto, line), _v1_port(sport, line))
    destination = (_v1_ip(cls, dst, proto, line), _v1_port(dport, line))
    return ProxyHeader(1, PROXY, proto, source, destination, length)


def _v1_ip(cls, text: str, proto: str, line: str) -> str:
    try:
        return str(cls(text))
    except ValueError:
        kind = "IPv4" if proto == "TCP4" else "IPv6"
        raise ProxyProtocolError(f"malformed PROXY v1 header: {text!r} is not an {kind} address "
                                 f"(protocol {proto}) in {line!r}") from None


def _v1_port(text: str, line: str) -> int:
    # Decimal, no sign, no leading zero (the spec), 0..65535.
    if (not text.isdigit() or not text.isascii() or len(text) > 5
            or (len(text) > 1 and text[0] == "0") or int(text) > 65535):
        raise ProxyProtocolError(f"malformed PROXY v1 header: {text!r} is not a port "
                                 f"(0..65535, no leading zeros) in {line!r}")
    return int(text)


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < len(SIGNATURE_V2):
        if SIGNATURE_V2.startswith(data):
            return None
        raise ProxyProtocolError(_not_a_header(data))
    if data[:12] != SIGNATURE_V2:
        raise ProxyProtocolError(_not_a_header(data))
    if len(data) < V2_HEADER_LENGTH:
        return None
    ver_cmd, fam_proto, size = struct.unpack_from("!BBH", data, 12)
    version, command = ver_cmd >> 4, ver_cmd & 0x0F
    if version != 2:
        raise ProxyProtocolError(f"malformed PROXY v2 header: version {version} in byte 13 "
                                 f"(0x{ver_cmd:02x}), only 2 exists")
    if command not in (0, 1):
        raise ProxyProtocolError(f"malformed PROXY v2 header: command {command} in byte 13 "
                                 f"(0x{ver_cmd:02x}), expected 0 (LOCAL) or 1 (PROXY)")
    family, transport = fam_proto >> 4, fam_proto & 0x0F
    if family not in _FAMILIES:
        raise ProxyProtocolError(f"malformed PROXY v2 header: address family {family} in byte 14 "
                                 f"(0x{fam_proto:02x}), expected 0 (UNSPEC), 1 (INET), "
                                 "2 (INET6) or 3 (UNIX)")
    if transport not in _TRANSPORTS:
        raise ProxyProtocolError(f"malformed PROXY v2 header: transport {transport} in byte 14 "
                                 f"(0x{fam_proto:02x}), expected 0 (UNSPEC), 1 (STREAM) or 2 (DGRAM)")
    total = V2_HEADER_LENGTH + size
    if len(data) < total:
        return None
    body = bytes(data[V2_HEADER_LENGTH:total])
    if command == 0:
        # LOCAL: the proxy's own connection (a health check...). The spec says to use the
        # real endpoints and skip the rest of the block, whatever it holds.
        return ProxyHeader(2, LOCAL, _PROTOCOL_NAMES.get((family, transport), "UNSPEC"),
                           None, None, total)
    if family == 0:
        return ProxyHeader(2, PROXY, "UNKNOWN", None, None, total,
                           _parse_tlvs(body, 0))
    need = _ADDRESS_SIZES[family]
    if size < need:
        raise ProxyProtocolError(f"malformed PROXY v2 header: family {_FAMILIES[family]} needs "
                                 f"{need} bytes of addresses, the length field says {size}")
    if transport == 0:
        raise ProxyProtocolError(f"malformed PROXY v2 header: command PROXY with family "
                                 f"{_FAMILIES[family]} needs transport STREAM or DGRAM, got UNSPEC")
    if family == 1:
        src = str(ipaddress.IPv4Address(body[0:4]))
        dst = str(ipaddress.IPv4Address(body[4:8]))
        sport, dport = struct.unpack_from("!HH", body, 8)
        source, destination = (src, sport), (dst, dport)
    elif family == 2:
        src = str(ipaddress.IPv6Address(body[0:16]))
        dst = str(ipaddress.IPv6Address(body[16:32]))
        sport, dport = struct.unpack_from("!HH", body, 32)
        source, destination = (src, sport), (dst, dport)
    else:
        source = (_unix_path(body[0:108]), None)
        destination = (_unix_path(body[108:216]), None)
    return ProxyHeader(2, PROXY, _PROTOCOL_NAMES[(family, transport)], source, destination,
                       total, _parse_tlvs(body, need))


def _unix_path(raw: bytes) -> str:
    if raw[:1] == b"\x00" and raw.strip(b"\x00"):
        return "@" + raw[1:].split(b"\x00", 1)[0].decode("utf-8", "replace")  # abstract socket
    return raw.split(b"\x00", 1)[0].decode("utf-8", "replace")


def _parse_tlvs(body: bytes, offset: int) -> tuple[tuple[int, bytes], ...]:
    tlvs = []
    pos = offset
    while pos < len(body):
        if len(body) - pos < 3:
            raise ProxyProtocolError(f"malformed PROXY v2 header: {len(body) - pos} stray byte(s) "
                                     f"at offset {V2_HEADER_LENGTH + pos}, after the addresses "
                                     "and TLVs: too short for a TLV (type, 2-byte length)")
        kind, size = struct.unpack_from("!BH", body, pos)
        pos += 3
        if pos + size > len(body):
            raise ProxyProtocolError(f"malformed PROXY v2 header: TLV 0x{kind:02x} at offset "
                                     f"{V2_HEADER_LENGTH + pos - 3} says {size} bytes, only "
                                     f"{len(body) - pos} remain in the header")
        tlvs.append((kind, body[pos:pos + size]))
        pos += size
    return tuple(tlvs)


def describe_tlvs(tlvs: tuple[tuple[int, bytes], ...]) -> dict[str, Any]:
    """TLVs by name (``alpn``, ``authority``, ``ssl``...; unknown ones as ``0xNN``)."""
    out: dict[str, Any] = {}
    for kind, value in tlvs:
        name = TLV_NAMES.get(kind, f"0x{kind:02x}")
        if name == "noop":
            continue
        if name == "ssl":
            out[name] = _describe_ssl(value)
        elif name in _TEXT_TLVS:
            out[name] = value.decode("utf-8", "replace")
        else:
            out[name] = value.hex()
    return out


def _describe_ssl(value: bytes) -> dict[str, Any]:
    if len(value) < 5:
        return {"raw": value.hex()}
    client, verify = struct.unpack_from("!BI", value, 0)
    view: dict[str, Any] = {"client": client, "verify": verify}
    try:
        subs = _parse_tlvs(value, 5)
    except ProxyProtocolError:
        view["raw"] = value.hex()
        return view
    for kind, sub in subs:
        name = _SSL_SUB_TLVS.get(kind, f"0x{kind:02x}")
        view[name] = sub.decode("utf-8", "replace") if name in _TEXT_TLVS else sub.hex()
    return view


# -- building --------------------------------------------------------------------------------


def v1(source: Address | None, destination: Address | None = None) -> bytes:
    """A v1 header; without addresses ``PROXY UNKNOWN\\r\\n``."""
    if source is None or destination is None:
        return b"PROXY UNKNOWN\r\n"
    proto = "TCP6" if ":" in source[0] else "TCP4"
    return (f"PROXY {proto} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n"
            .encode("ascii"))


def v2(source: Address, destination: Address, tlvs: tuple[tuple[int, bytes], ...] = (),
       command: str = PROXY) -> bytes:
    """A v2 TCP header (IPv4 or IPv6 from the source address), with optional TLVs."""
    src = ipaddress.ip_address(source[0])
    dst = ipaddress.ip_address(destination[0])
    if src.version != dst.version:
        raise ValueError(f"source {src} and destination {dst} are not the same IP version")
    family = 0x11 if src.version == 4 else 0x21
    block = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
    block += b"".join(struct.pack("!BH", k, len(v)) + v for k, v in tlvs)
    ver_cmd = 0x21 if command == PROXY else 0x20
    return SIGNATURE_V2 + struct.pack("!BBH", ver_cmd, family, len(block)) + block


def v2_local() -> bytes:
    """A v2 LOCAL header: "this is the proxy's own connection" (health checks)."""
    return SIGNATURE_V2 + b"\x20\x00\x00\x00"
