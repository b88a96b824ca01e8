"""Body framing: how many bytes belong to a message, and how to write them again.

The parser (llhttp) removes the framing of what it reads: a chunked body
arrives as plain data. The proxy therefore writes the framing of what it
sends itself, choosing one of three forms:

- LENGTH: the sender gave Content-Length; the bytes pass through unchanged.
- CHUNKED: re-encode each piece as an HTTP/1.1 chunk (size in hex, CRLF,
  data, CRLF) and end with the zero-size chunk.
- CLOSE: the end of the body is the end of the connection (the only way to
  send a body of unknown length to an HTTP/1.0 client).
- NONE: no body at all (HEAD, 204, 304, a request without body).
"""
from __future__ import annotations

LENGTH = "length"
CHUNKED = "chunked"
CLOSE = "close"
NONE = "none"

LAST_CHUNK = b"0\r\n\r\n"
CRLF = b"\r\n"


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (never call with empty data: that ends the body)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def chunk_parts(data: bytes) -> tuple[bytes, bytes, bytes]:
    """The same as three pieces, for writelines without copying a large `data`."""
    return b"%x\r\n" % len(data), data, CRLF


def encode_chunked(pieces) -> bytes:
    """A whole chunked body from pieces (for tests and small bodies)."""
    return b"".join(chunk(p) for p in pieces if p) + LAST_CHUNK


def request_framing(content_length: int | None, chunked: bool) -> str:
    """How the proxy frames a request body towards the backend (always HTTP/1.1)."""
    if chunked:
        return CHUNKED
    if content_length:
        return LENGTH
    return NONE


def response_framing(status: int, method: str, content_length: int | None,
                     chunked: bool, client_http11: bool) -> str:
    """How the proxy frames the response body towards the client.

    A body of unknown length (the backend sent neither Content-Length nor
    chunked, it ends when the backend closes) goes out chunked to an HTTP/1.1
    client, and until close to an HTTP/1.0 one, who cannot read chunks.
    """
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return NONE
    if content_length is not None and not chunked:
        return LENGTH
    return CHUNKED if client_http11 else CLOSE


def decode_chunked(data: bytes) -> tuple[bytes, bool]:
    """Decode a complete chunked body held in memory: (body, complete).

    Only for tests and diagnostics; the data plane lets llhttp decode. Raises
    ValueError on a malformed size line.
    """
    out = []
    pos = 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return b"".join(out), False
        size_text = data[pos:end].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ValueError(f"bad chunk size {size_text!r}") from None
        if size_text.startswith((b"-", b"+", b"0x", b"0X")):
            raise ValueError(f"bad chunk size {size_text!r}")
        pos = end + 2
        if size == 0:
            return b"".join(out), True
        if len(data) < pos + size + 2:
            out.append(data[pos:pos + size])
            return b"".join(out), False
        out.append(data[pos:pos + size])
        if data[pos + size:pos + size + 2] != b"\r\n":
            raise ValueError("missing CRLF after chunk data")
        pos += size + 2
