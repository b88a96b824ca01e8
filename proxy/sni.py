"""Read a TLS ClientHello without decrypting anything: the server name (SNI) and friends.

Theory of operation
-------------------
A TLS connection starts with the client's ClientHello, sent in the clear in
one or more TLS *records* (RFC 8446 section 5.1):

    record:     content_type(1)=22 handshake | legacy_version(2) | length(2) | fragment
    handshake:  msg_type(1)=1 client_hello | length(3) | body
    body:       legacy_version(2) | random(32) | session_id<0..32>
                | cipher_suites<2..2^16-2> | compression_methods<1..2^8-1>
                | extensions<0..2^16-1>
    extension:  type(2) | length(2) | data
      server_name (0):          list_len(2) | name_type(1)=0 host_name | len(2) | name
      alpn (16):                list_len(2) | (len(1) | protocol)*
      supported_versions (43):  len(1) | version(2)*

A proxy doing TLS *passthrough* reads those bytes as they arrive, finds the
server name, chooses a pool by it, and relays every byte (ClientHello
included) to the backend, which does the real handshake with its own
certificate. The proxy never has a key and never sees plaintext.

`parse_client_hello(data)` is pure (no I/O): it returns None while more bytes
are needed, a `ClientHello` once the whole message is there, or raises
`NotTLS` when the bytes cannot be a TLS ClientHello (a plain HTTP request on a
TLS port is the classic case). The hello may be split over several records
(large post-quantum key shares do that) and the records over several reads.

`match_name(name, patterns)` is the name matching shared by passthrough
routing and certificate choice: an exact name, else a `*.example.com`
wildcard covering exactly one label (as in certificates, RFC 6125).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

HANDSHAKE = 22
CLIENT_HELLO = 1
EXT_SERVER_NAME = 0
EXT_ALPN = 16
EXT_SUPPORTED_VERSIONS = 43
HOST_NAME = 0
# A ClientHello larger than this is refused (a real one is well under 2 KiB,
# 16 KiB with every extension a browser knows). Bounds what the proxy buffers.
MAX_HELLO = 64 * 1024

VERSIONS = {0x0300: "SSL 3.0", 0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2",
            0x0304: "TLS 1.3"}


class NotTLS(ValueError):
    """The bytes are not a TLS ClientHello; the message says what they look like."""


@dataclass(frozen=True, slots=True)
class ClientHello:
    sni: str | None  # lower case, no trailing dot; None when the client sent no name
    alpn: tuple[str, ...] = ()  # protocols offered, in the client's order
    versions: tuple[str, ...] = ()  # "TLS 1.3", "TLS 1.2"... (supported_versions, else legacy)
    size: int = 0  # bytes of the records that carried the hello

    def to_dict(self) -> dict:
        return {"sni": self.sni, "alpn": list(self.alpn), "versions": list(self.versions)}


def _looks_like(data: bytes) -> str:
    head = bytes(data[:8])
    if head[:1] == b"\x80" or head[:1] == b"\x00":
        return "an SSLv2-style hello (not supported)"
    if head.isascii() and head[:1].isalpha():
        word = head.split(b" ")[0].decode("ascii", "replace")
        if word in ("GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH", "PRI"):
            return f"plain HTTP ({word} ...): the client is not speaking TLS to a TLS port"
        return f"plain text starting {head!r}"
    return f"bytes starting {head.hex()}"


def _version(v: int) -> str:
    return VERSIONS.get(v, f"0x{v:04x}")


def _handshake_bytes(data: bytes) -> tuple[bytes, int] | None:
    """Concatenate the handshake records' fragments until one whole handshake message.

    Returns (message, bytes of records used) or None when more bytes are needed.
    """
    pos = 0
    out = bytearray()
    need = None  # total handshake message length, once known
    while True:
        if len(data) < pos + 5:
            return None
        ctype = data[pos]
        if ctype != HANDSHAKE:
            if pos == 0:
                raise NotTLS(f"not a TLS handshake record: {_looks_like(data)}")
            raise NotTLS(f"record type {ctype} inside the ClientHello (expected 22, handshake)")
        if data[pos + 1] != 3:
            raise NotTLS(f"record version {data[pos + 1]}.{data[pos + 2]} is not TLS")
        length = int.from_bytes(data[pos + 3:pos + 5], "big")
        if length == 0 or length > 16384 + 2048:
            raise NotTLS(f"record length {length} is out of range")
        if len(data) < pos + 5 + length:
            if pos + 5 + length > MAX_HELLO:
                raise NotTLS(f"ClientHello larger than {MAX_HELLO} bytes")
            return None
        out += data[pos + 5:pos + 5 + length]
        pos += 5 + length
        if need is None and len(out) >= 4:
            if out[0] != CLIENT_HELLO:
                raise NotTLS(f"first handshake message is type {out[0]}, not ClientHello (1)")
            need = 4 + int.from_bytes(out[1:4], "big")
            if need > MAX_HELLO:
                raise NotTLS(f"ClientHello of {need} bytes is larger than {MAX_HELLO}")
        if need is not None and len(out) >= need:
            return bytes(out[:need]), pos


class _Reader:
    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf: bytes, pos: int = 0, end: int | None = None):
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > self.end:
            raise NotTLS(f"ClientHello truncated in {what}")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "big")

    def vec(self, size_bytes: int, what: str) -> "_Reader":
        n = int.from_bytes(self.take(size_bytes, what), "big")
        start = self.pos
        self.take(n, what)
        return _Reader(self.buf, start, start + n)

    def take_all(self) -> bytes:
        return self.take(self.left, "value")

    @property
    def left(self) -> int:
        return self.end - self.pos


def _server_name(ext: _Reader) -> str | None:
    names = ext.vec(2, "server_name list")
    while names.left:
        kind = names.u8("server_name type")
        value = names.vec(2, "server_name").take_all()
        if kind == HOST_NAME:
            try:
                name = value.decode("ascii")
            except UnicodeDecodeError:
                raise NotTLS("server_name is not ASCII (IDNs are sent as xn--...)") from None
            return name.rstrip(".").lower() or None
    return None


def _alpn(ext: _Reader) -> tuple[str, ...]:
    protos = ext.vec(2, "alpn list")
    out = []
    while protos.left:
        out.append(protos.vec(1, "alpn protocol").take_all().decode("ascii", "replace"))
    return tuple(out)


def _supported_versions(ext: _Reader) -> tuple[str, ...]:
    versions = ext.vec(1, "supported_versions")
    out = []
    while versions.left >= 2:
        v = versions.u16("version")
        if (v & 0x0F0F) != 0x0A0A:  # GREASE values (RFC 8701) are noise
            out.append(_version(v))
    return tuple(out)


def parse_client_hello(data: bytes) -> ClientHello | None:
    """The ClientHello at the start of `data`, None if incomplete; NotTLS if it cannot be one."""
    found = _handshake_bytes(data)
    if found is None:
        return None
    message, used = found
    body = _Reader(message, 4)
    legacy = body.u16("version")
    body.take(32, "random")
    body.vec(1, "session_id")
    body.vec(2, "cipher_suites")
    body.vec(1, "compression_methods")
    sni = None
    alpn: tuple[str, ...] = ()
    versions: tuple[str, ...] = ()
    if body.left:
        exts = body.vec(2, "extensions")
        while exts.left:
            kind = exts.u16("extension type")
            ext = exts.vec(2, "extension")
            if kind == EXT_SERVER_NAME:
                sni = _server_name(ext)
            elif kind == EXT_ALPN:
                alpn = _alpn(ext)
            elif kind == EXT_SUPPORTED_VERSIONS:
                versions = _supported_versions(ext)
    return ClientHello(sni=sni, alpn=alpn, versions=versions or (_version(legacy),), size=used)


# ---------------------------------------------------------------- name matching

def normalise(name: str) -> str:
    return name.strip().rstrip(".").lower()


def wildcard_covers(pattern: str, name: str) -> bool:
    """`*.lab.test` covers `www.lab.test`, not `lab.test` nor `a.b.lab.test`."""
    if not pattern.startswith("*."):
        return False
    suffix = pattern[1:]  # ".lab.test"
    return name.endswith(suffix) and "." not in name[: -len(suffix)] and len(name) > len(suffix)


def match_name(name: str | None, patterns: Iterable[str]) -> str | None:
    """The pattern that serves `name`: exact first, then a one-label wildcard; else None."""
    if not name:
        return None
    name = normalise(name)
    patterns = list(patterns)
    for p in patterns:
        if normalise(p) == name:
            return p
    for p in patterns:
        if wildcard_covers(normalise(p), name):
            return p
    return None
