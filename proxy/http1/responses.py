"""Responses the proxy writes itself: status lines, errors, fixed answers, redirects.

Every error the proxy makes has the same shape (see proxy/errors.py): the
status of its table row, `X-LBLab-Error: <code>`, `X-Request-Id`, and a small
JSON body `{"error", "status", "message", "request_id"}` that says what
happened and what to change.
"""
from __future__ import annotations

import json
from http import HTTPStatus

from proxy.errors import ProxyError

_STATUS_LINES: dict[int, bytes] = {}


def reason_phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b"Unknown"


def status_line(status: int, reason: bytes | None = None) -> bytes:
    """`HTTP/1.1 200 OK\\r\\n` (always 1.1: an HTTP/1.0 client reads it as well)."""
    if reason:
        return b"HTTP/1.1 %d %b\r\n" % (status, reason)
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d %b\r\n" % (status, reason_phrase(status))
    return line


def render(status: int, headers: list[tuple[bytes, bytes]], body: bytes,
           keep_alive: bool, http11: bool, head_only: bool = False) -> bytes:
    """A complete response with a known body, as one bytes object."""
    parts = [status_line(status)]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    if status >= 200 and status not in (204, 304):
        parts.append(b"Content-Length: %d\r\n" % len(body))
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    elif not http11:
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    if body and not head_only:
        parts.append(body)
    return b"".join(parts)


def error_body(error: ProxyError, message: str, request_id: str, **extra) -> bytes:
    data = {"error": error.code, "status": error.status, "message": message,
            "request_id": request_id}
    data.update(extra)
    return json.dumps(data, separators=(",", ":")).encode("utf-8") + b"\n"


def error_response(error: ProxyError, message: str, request_id: str, keep_alive: bool,
                   http11: bool, head_only: bool = False, **extra) -> bytes:
    headers = [
        (b"Content-Type", b"application/json"),
        (b"X-LBLab-Error", error.code.encode("ascii")),
        (b"X-Request-Id", request_id.encode("latin-1")),
    ]
    body = error_body(error, message, request_id, **extra)
    return render(error.status, headers, body, keep_alive and not error.closes, http11,
                  head_only)


CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"
