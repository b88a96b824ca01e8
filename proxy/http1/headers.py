"""Header utilities: hop-by-hop removal, X-Forwarded-*/Forwarded, request ids, cookies.

Headers travel as the parser gives them: a list of (name, value) byte pairs in
arrival order, names in the client's spelling. Only names are compared
(lower-cased); values are passed through untouched, so a header the proxy
does not care about costs one `lower()` and one set lookup.

Hop-by-hop headers (RFC 9110 7.6.1) describe one connection, not the message,
so a proxy must not forward them: Connection and every header it names,
Keep-Alive, Proxy-*, TE, Trailer, Transfer-Encoding (the proxy re-frames the
body itself) and Upgrade (kept only while upgrading).
"""
from __future__ import annotations

import itertools
import os
import re
from collections.abc import Mapping
from typing import Iterator

# Always removed, in both directions. Transfer-Encoding and Content-Length are
# removed too because the proxy writes the framing of what it sends.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate",
    b"proxy-authorization", b"te", b"trailer", b"transfer-encoding", b"upgrade",
})
FRAMING = frozenset({b"content-length", b"transfer-encoding"})
# Connection options that are not header names (nothing to strip for them).
CONNECTION_OPTIONS = frozenset({b"close", b"keep-alive", b"upgrade"})


def connection_tokens(value: bytes) -> set[bytes]:
    """`Connection: close, X-Foo` -> {b"close", b"x-foo"}."""
    return {t.strip().lower() for t in value.split(b",") if t.strip()}


def is_hop_by_hop(lname: bytes, named: set[bytes] | frozenset = frozenset()) -> bool:
    """`lname` is lower-case; `named` holds the names listed in Connection."""
    return lname in HOP_BY_HOP or lname.startswith(b"proxy-") or lname in named


def strip_hop_by_hop(headers: list[tuple[bytes, bytes]],
                     keep: frozenset = frozenset()) -> list[tuple[bytes, bytes]]:
    """A copy without hop-by-hop headers (and without the ones Connection names).

    `keep` holds lower-case names to keep anyway (b"upgrade" while upgrading).
    """
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named |= connection_tokens(value)
    named -= CONNECTION_OPTIONS
    return [(n, v) for n, v in headers
            if (ln := n.lower()) in keep or not is_hop_by_hop(ln, named)]


# ---------------------------------------------------------------- host

def host_name(value: str | None) -> str | None:
    """`Example.COM:8080` -> `example.com`; `[::1]:80` -> `::1`; None stays None."""
    if not value:
        return None
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    host, sep, port = value.rpartition(":")
    if sep and port.isdigit():
        value = host
    return value.rstrip(".")


# ---------------------------------------------------------------- forwarding

def forwarded_node(ip: str) -> str:
    """RFC 7239 node: IPv6 addresses are bracketed and quoted."""
    return f'"[{ip}]"' if ":" in ip else ip


def forwarded_element(client_ip: str, host: str | None, proto: str) -> str:
    """One RFC 7239 element: `for=1.2.3.4;host=example.com;proto=http`."""
    parts = [f"for={forwarded_node(client_ip)}"]
    if host:
        parts.append(f"host={_quote_if_needed(host)}")
    parts.append(f"proto={proto}")
    return ";".join(parts)


_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def _quote_if_needed(value: str) -> str:
    if _TOKEN.match(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def append_list(existing: bytes | None, item: bytes) -> bytes:
    """Append to a comma-separated list header (X-Forwarded-For, Forwarded)."""
    if existing:
        return existing + b", " + item
    return item


# ---------------------------------------------------------------- request ids

# A sane id is short and made of token-ish characters: it ends up in logs,
# JSON and URLs (GET /requests/<id>), so nothing that needs escaping.
_SANE_ID = re.compile(rb"^[A-Za-z0-9][A-Za-z0-9._:@+=\-]{0,127}$")


def sane_request_id(value: bytes | None) -> bool:
    return bool(value) and _SANE_ID.match(value) is not None


class RequestIds:
    """Cheap unique ids: a random per-process prefix and a counter (`3f9a1c2e-1a`)."""

    def __init__(self, prefix: str | None = None):
        self.prefix = prefix or os.urandom(4).hex()
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}-{next(self._counter):x}"


# ---------------------------------------------------------------- cookies

def parse_cookies(values: list[str] | str | None) -> dict[str, str]:
    """Cookie header value(s) -> {name: value}; the first of a repeated name wins.

    Lenient like browsers and servers are: pairs without '=' are skipped,
    surrounding double quotes are removed.
    """
    if not values:
        return {}
    if isinstance(values, str):
        values = [values]
    out: dict[str, str] = {}
    for header in values:
        for pair in header.split(";"):
            name, eq, value = pair.partition("=")
            if not eq:
                continue
            name = name.strip()
            if not name or name in out:
                continue
            value = value.strip()
            if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
                value = value[1:-1]
            out[name] = value
    return out


class LazyHeaders(Mapping):
    """Lower-case str -> str view of raw headers, decoded only when first read.

    Most balancers never look at headers; those that do (hashing on a header,
    stickiness, routing on headers) pay for the decoding once. Repeated
    headers are joined with ", " (with "; " for Cookie).
    """

    __slots__ = ("_raw", "_d")

    def __init__(self, raw: list[tuple[bytes, bytes]]):
        self._raw = raw
        self._d: dict[str, str] | None = None

    def _dict(self) -> dict[str, str]:
        d = self._d
        if d is None:
            d = {}
            for name, value in self._raw:
                key = name.decode("latin-1").lower()
                text = value.decode("latin-1")
                if key in d:
                    d[key] = d[key] + ("; " if key == "cookie" else ", ") + text
                else:
                    d[key] = text
            self._d = d
        return d

    def __getitem__(self, key: str) -> str:
        return self._dict()[key]

    def get(self, key, default=None):
        return self._dict().get(key, default)

    def __contains__(self, key) -> bool:
        return key in self._dict()

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())

    def __repr__(self) -> str:
        return f"LazyHeaders({self._dict()!r})"


class LazyCookies(Mapping):
    """The Cookie header parsed on first read."""

    __slots__ = ("_raw", "_d")

    def __init__(self, raw: list[str]):
        self._raw = raw
        self._d: dict[str, str] | None = None

    def _dict(self) -> dict[str, str]:
        if self._d is None:
            self._d = parse_cookies(self._raw)
        return self._d

    def __getitem__(self, key: str) -> str:
        return self._dict()[key]

    def get(self, key, default=None):
        return self._dict().get(key, default)

    def __contains__(self, key) -> bool:
        return key in self._dict()

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())

    def __repr__(self) -> str:
        return f"LazyCookies({self._dict()!r})"


def header_block(first_line: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """`first_line` + headers + blank line, as one bytes object (one join)."""
    parts = [first_line]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)
