"""Reading HTTP/1.x messages with llhttp (httptools), with the proxy's limits.

`RequestReader` turns bytes from a client into `RequestHead` objects and body
pieces, handed to a sink (`on_request_head`, `on_request_body`,
`on_request_complete`). It enforces what makes a request safe to forward and
raises `RequestError(code, message)` otherwise, with a code from
`proxy.errors`:

- a head larger than max_header_bytes -> headers-too-large (431), checked as
  headers complete and, against slow endless heads, on every read;
- a body larger than max_body_bytes -> body-too-large (413), up front from
  Content-Length or while a chunked body streams;
- Content-Length with Transfer-Encoding, duplicate Content-Length, a
  Transfer-Encoding not ending in chunked, Transfer-Encoding in HTTP/1.0 ->
  ambiguous-length (400): these are how request smuggling works, so the
  connection must be closed after;
- a transfer coding before chunked (`gzip, chunked`) -> transfer-coding (501):
  the proxy re-frames bodies and would silently drop the coding;
- a header name with `_` that reads as a header the proxy manages once `_` is
  taken for `-` (`Transfer_Encoding`, `Content_Length`, `X_Forwarded_For`...)
  -> underscore-header (400): CGI/WSGI backends map both to one variable;
- a Host (or absolute-form authority) with characters no host can have
  (spaces, quotes, `/`...) -> bad-request (400, RFC 9112 3.2);
- an upgrade request with a body -> bad-request (400): llhttp would hand the
  body over as tunnel bytes, and the backend would wait for it forever;
- the HTTP/2 preface (`PRI * HTTP/2.0`) -> http-version (505);
- a broken chunk, or chunk framing (sizes, extensions, trailers) out of
  proportion to the data it carries -> bad-chunk (400); anything else
  malformed -> bad-request.

Leniencies kept on purpose (llhttp's defaults, all harmless because the proxy
re-serialises what it forwards): leading whitespace of a value is removed by
llhttp and trailing whitespace here; chunk extensions are read and dropped;
trailer fields are read (bounded by max_header_bytes) and dropped.

One parser serves a whole keep-alive connection: llhttp resets itself after
each message. Pipelined requests arrive as successive heads in one `feed`.
A request that ends the connection (`Connection: close`, HTTP/1.0 without
keep-alive) is the last one read: whatever follows it is ignored, so the
request itself is still answered (llhttp would otherwise fail the whole read).

`ResponseReader` does the same for a backend's responses, handing
`on_response_head`, `on_response_body`, `on_response_complete` (and
`on_response_interim` for 1xx) to the exchange attached to it. llhttp cannot
be told that a response answers a HEAD request, so after a HEAD response head
the reader simply starts a fresh parser.
"""
from __future__ import annotations

import httptools
from httptools import HttpParserCallbackError, HttpParserError, HttpParserUpgrade

from proxy.http1.headers import connection_tokens

# A response head larger than this is refused as a bad response (the
# backend's head is not configurable: this only guards the proxy's memory).
MAX_RESPONSE_HEAD = 64 * 1024


_METHODS: dict[bytes, str] = {}  # b"GET" -> "GET", decoded once (llhttp knows ~40 methods)

# Lower-case names the proxy reads or writes itself: a client header whose name
# becomes one of these when `_` is read as `-` is refused (see underscore_alias).
MANAGED_NAMES = frozenset({
    b"content-length", b"transfer-encoding", b"host", b"connection", b"keep-alive",
    b"proxy-connection", b"te", b"trailer", b"upgrade", b"expect", b"x-forwarded-for",
    b"x-forwarded-host", b"x-forwarded-proto", b"forwarded", b"x-request-id",
    b"x-client-verify", b"x-client-cert-subject",
})
_DASHES = bytes.maketrans(b"_", b"-")
# RFC 3986 authority characters (reg-name, IP literals, port): anything else in
# a Host (space, quote, slash, backslash, control) is refused.
_HOST_CHARS = (b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
               b"-._~!$&'()*+,;=:[]%")
# Chunked framing allowance: sizes, CRLFs, extensions and trailers may take
# this many bytes plus CHUNK_OVERHEAD_PER_BYTE per body byte (1-byte chunks
# need 5), so extensions cannot stream unbounded bytes past max_body_bytes.
CHUNK_OVERHEAD_FREE = 64 * 1024
CHUNK_OVERHEAD_PER_BYTE = 8


def underscore_alias(name: bytes) -> bytes | None:
    """`Transfer_Encoding` -> b"transfer-encoding" when that is a managed name, else None.

    Only called for names that contain `_` (rare): one translate and one lookup."""
    alias = name.translate(_DASHES).lower()
    if alias in MANAGED_NAMES or alias.startswith(b"proxy-"):
        return alias
    return None


_GOOD_HOSTS: set[bytes] = set()  # Host values already checked (a few per deployment)


def check_host(value: bytes, where: str = "Host") -> None:
    """RFC 9112 3.2: a Host that is not a valid authority is a 400."""
    if value in _GOOD_HOSTS:
        return
    if not value.translate(None, _HOST_CHARS):
        if len(_GOOD_HOSTS) >= 4096:  # bounded: random hosts cannot grow it
            _GOOD_HOSTS.clear()
        _GOOD_HOSTS.add(value)
        return
    raise RequestError("bad-request",
                           f"{where} {value[:100]!r} is not a host name[:port]: it contains "
                           "characters no host can have (spaces, quotes, slashes...)")


_NO_NAMES: frozenset[bytes] = frozenset()  # shared: a head names nothing in Connection
_CONNECTION_NAMES: dict[bytes, frozenset[bytes]] = {}  # Connection value -> its names


def connection_names(value: bytes, named: frozenset[bytes]) -> frozenset[bytes]:
    """`named` plus the names a Connection header value lists, worked out once per
    value (almost every response says `keep-alive`, many requests `close`)."""
    names = _CONNECTION_NAMES.get(value)
    if names is None:
        if len(_CONNECTION_NAMES) >= 1024:  # bounded: random values cannot grow it
            _CONNECTION_NAMES.clear()
        names = _CONNECTION_NAMES[value] = frozenset(connection_tokens(value))
    return names if not named else named | names


class RequestError(Exception):
    """A request the proxy refuses; `code` is a key of proxy.errors.ERRORS."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class ResponseError(Exception):
    """A backend response that cannot be relayed (garbage, broken framing)."""


class RequestHead:
    """Everything the proxy needs from a request line and its headers."""

    __slots__ = ("method", "target", "path", "query", "version", "headers", "host",
                 "keep_alive", "content_length", "chunked", "upgrade", "expect_continue",
                 "request_id", "cookies", "connection_named", "head_bytes", "_target_str",
                 "http11")

    def __init__(self, method: str, target: bytes, version: str,
                 headers: list[tuple[bytes, bytes]]):
        self.method = method
        self.target = target  # origin-form, as sent upstream
        self.path = "/"
        self.query = ""
        self.version = version
        self.http11 = version == "1.1"
        self.headers = headers
        self.host: str | None = None
        self.keep_alive = False
        self.content_length: int | None = None
        self.chunked = False
        self.upgrade: bytes | None = None  # Upgrade value when Connection names upgrade
        self.expect_continue = False
        self.request_id: bytes | None = None
        self.cookies: list[str] = []
        self.connection_named: frozenset[bytes] = _NO_NAMES
        self.head_bytes = 0
        self._target_str: str | None = None

    @property
    def target_str(self) -> str:
        """The target (path and query) as text, decoded once."""
        text = self._target_str
        if text is None:
            text = self._target_str = self.target.decode("latin-1")
        return text

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    def __repr__(self) -> str:
        return f"<RequestHead {self.method} {self.target!r} HTTP/{self.version}>"


def split_target(target: bytes) -> tuple[bytes, str, str, str | None]:
    """Request target -> (origin-form target, path, query, host from absolute-form).

    Raises RequestError for a target that is neither origin-form (`/p?q`),
    absolute-form (`http://h/p`) nor `*`.
    """
    if target[:1] == b"/" and b"?" not in target and b"#" not in target:
        return target, target.decode("latin-1"), "", None  # the common case: a bare path
    authority = None
    if not target.startswith(b"/"):
        if target == b"*":
            return target, "*", "", None
        scheme, sep, rest = target.partition(b"://")
        if not sep or scheme.lower() not in (b"http", b"https"):
            raise RequestError("bad-request",
                               f"request target {target[:100]!r} is not a path (/...) "
                               "or an absolute http:// URL")
        slash = rest.find(b"/")
        if slash < 0:
            authority, target = rest, b"/"
        else:
            authority, target = rest[:slash], rest[slash:]
        authority = authority.rpartition(b"@")[2].decode("latin-1")
    raw_path, _, query = target.partition(b"?")
    raw_path = raw_path.partition(b"#")[0]
    return target, raw_path.decode("latin-1"), query.decode("latin-1"), authority


class RequestReader:
    """llhttp callbacks for requests; see the module docstring."""

    __slots__ = ("sink", "parser", "max_header_bytes", "max_body_bytes", "in_head",
                 "_url", "_headers", "_head_size", "_head_fed", "_body_bytes", "head",
                 "upgraded", "messages", "ended", "_wire")

    def __init__(self, sink, max_header_bytes: int = 16384,
                 max_body_bytes: int = 100 * 1024 * 1024):
        self.sink = sink
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self.parser = httptools.HttpRequestParser(self)
        self.in_head = False
        self._url: list[bytes] = []
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._head_fed = 0
        self._body_bytes = 0
        self.head: RequestHead | None = None  # the request being read
        self.upgraded = False
        self.messages = 0
        self.ended = False  # a request that closes the connection was read: ignore the rest
        self._wire = 0  # 1 + bytes fed inside a chunked body (framing bound); 0 outside

    def close(self) -> None:
        """The connection is over. llhttp's parser holds this reader's bound methods
        and this reader holds the parser (and the sink, its connection, holds this
        reader): let go of both, so all of it is freed by reference counting, not by
        the cyclic GC. `feed` reads nothing more."""
        self.ended = True
        self.parser = None
        self.sink = None

    # ------------------------------------------------------------ input

    def feed(self, data: bytes) -> bytes | None:
        """Parse `data`; returns the bytes after an upgrade request's head, else None."""
        if self.ended:
            return None
        in_chunked = self._wire  # > 0 while inside a chunked body (set by on_headers_complete)
        if in_chunked:
            self._wire += len(data)
        if self.in_head:
            # A head spread over many reads: bound it before it completes
            # (the read in which it began is not counted; it is bounded by
            # the transport's read size).
            self._head_fed += len(data)
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as exc:
            self.upgraded = True
            offset = exc.args[0] if exc.args else len(data)
            return data[offset:]
        except HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Ended):
                # Its traceback holds this frame, which holds it: a cycle, left for
                # the cyclic GC (with the connection) unless let go of here.
                cause = None
                return None
            if isinstance(cause, RequestError):
                raise cause from None
            if cause is not None:
                raise cause
            raise RequestError("bad-request", str(exc)) from None
        except HttpParserError as exc:
            raise self._classify(exc) from None
        if self.in_head and self._head_fed > self.max_header_bytes:
            raise RequestError("headers-too-large",
                               f"request head over {self.max_header_bytes} bytes "
                               "(limits.max_header_bytes) and still not complete")
        if in_chunked and self._wire:
            # Still inside the same chunked body: all of `data` was its framing or data
            # (the 1 that marks "inside" is counted as framing: harmless).
            if self._wire - self._body_bytes > (CHUNK_OVERHEAD_FREE
                                                + CHUNK_OVERHEAD_PER_BYTE * self._body_bytes):
                raise RequestError("bad-chunk",
                                   f"chunked framing (sizes, extensions, trailers) of "
                                   f"{self._wire - self._body_bytes} bytes for "
                                   f"{self._body_bytes} bytes of data")
        return None

    def _classify(self, exc: HttpParserError) -> RequestError:
        text = str(exc)
        if "PRI" in text:
            return RequestError("http-version",
                                "HTTP/2 connection preface (PRI * HTTP/2.0) on a listener that "
                                "speaks HTTP/1.1 only: connect with HTTP/1.1 (no prior "
                                "knowledge), or use a listener that serves HTTP/2")
        if "Content-Length" in text or "Transfer-Encoding" in text:
            # Also "chunked<TAB>": llhttp reads a coding other than chunked there.
            return RequestError("ambiguous-length", f"ambiguous body length: {text}")
        head = self.head
        if not self.in_head and head is not None and head.chunked:
            return RequestError("bad-chunk", f"bad chunked body: {text}")
        return RequestError("bad-request", f"malformed request: {text}")

    # ------------------------------------------------------------ llhttp callbacks

    def on_message_begin(self) -> None:
        self.in_head = True
        self._url = []
        self._headers = []
        self._head_size = 0
        self._head_fed = 0
        self._body_bytes = 0
        self._wire = 0
        self.head = None

    def on_url(self, url: bytes) -> None:
        self._url.append(url)
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        size = self._head_size + len(name) + len(value) + 4
        self._head_size = size
        if size > self.max_header_bytes:
            raise RequestError("headers-too-large",
                               f"request head over {self.max_header_bytes} bytes "
                               "(limits.max_header_bytes)")
        if not self.in_head:
            return  # a trailer field (after a chunked body): counted, then dropped
        # llhttp drops leading whitespace; trailing whitespace is not part of the
        # value either (RFC 9112 5.1). rstrip returns the same object when there is none.
        self._headers.append((name, value.rstrip(b" \t")))

    def on_headers_complete(self) -> None:
        self.in_head = False
        parser = self.parser
        if self._head_size + 16 > self.max_header_bytes:
            raise RequestError("headers-too-large",
                               f"request head over {self.max_header_bytes} bytes "
                               "(limits.max_header_bytes)")
        version = parser.get_http_version()
        raw_method = parser.get_method()
        method = _METHODS.get(raw_method)
        if method is None:
            method = _METHODS.setdefault(raw_method, raw_method.decode("ascii", "replace"))
        if version != "1.1" and version != "1.0":
            raise RequestError("http-version", f"HTTP/{version} is not supported here; "
                               "speak HTTP/1.1 or HTTP/1.0")
        if method == "CONNECT":
            raise RequestError("unsupported-method",
                               "CONNECT is for forward proxies; this is a reverse proxy")
        url = self._url[0] if len(self._url) == 1 else b"".join(self._url)
        target, path, query, authority = split_target(url)
        head = RequestHead(method, target, version, self._headers)
        head.path = path
        head.query = query
        head.head_bytes = self._head_size
        head.keep_alive = parser.should_keep_alive()
        self._scan_headers(head)
        if authority is not None:
            check_host(authority.encode("latin-1"), "absolute-form authority")
            head.host = authority  # absolute-form wins over Host (RFC 9112 3.2.2)
        elif head.host is None and version == "1.1":
            raise RequestError("bad-request", "HTTP/1.1 request without a Host header")
        if head.content_length is not None and head.content_length > self.max_body_bytes:
            raise RequestError("body-too-large",
                               f"Content-Length {head.content_length} is over "
                               f"{self.max_body_bytes} bytes (limits.max_body_bytes)")
        self.head = head
        self.messages += 1
        if head.chunked:
            self._wire = 1  # framing bound on (see feed)
        self.sink.on_request_head(head)

    def _scan_headers(self, head: RequestHead) -> None:
        """One pass over the headers for the few the proxy acts on."""
        host_seen = False
        upgrade = None
        te = None
        for name, value in head.headers:
            n = len(name)
            if 95 in name:  # "_" (an int needle is a plain memchr, far cheaper)
                alias = underscore_alias(name)
                if alias is not None:
                    raise RequestError(
                        "underscore-header",
                        f"header {name[:60]!r} reads as {alias.decode()!r} to backends "
                        "that treat '_' and '-' alike (CGI, WSGI)")
                continue
            # Length first: most headers are skipped without lower().
            if n == 4 and name.lower() == b"host":
                if host_seen:
                    raise RequestError("bad-request", "more than one Host header")
                host_seen = True
                check_host(value)
                head.host = value.decode("latin-1")
            elif n == 6:
                lname = name.lower()
                if lname == b"cookie":
                    head.cookies.append(value.decode("latin-1"))
                elif lname == b"expect" and value.lower() == b"100-continue":
                    head.expect_continue = True
            elif n == 14 and name.lower() == b"content-length":
                try:
                    head.content_length = int(value)
                except ValueError:
                    raise RequestError("ambiguous-length",
                                       f"Content-Length {value[:40]!r} is not a number") from None
            elif n == 17 and name.lower() == b"transfer-encoding":
                te = value if te is None else te + b"," + value
            elif n == 10 and name.lower() == b"connection":
                head.connection_named = connection_names(value, head.connection_named)
            elif n == 12 and name.lower() == b"x-request-id":
                head.request_id = value
            elif n == 7 and name.lower() == b"upgrade":
                upgrade = value
        if te is not None:
            if head.version == "1.0":
                # RFC 9112 6.1: framing of an HTTP/1.0 message with Transfer-Encoding
                # is faulty (an HTTP/1.0 hop may not have understood it).
                raise RequestError("ambiguous-length",
                                   "Transfer-Encoding in an HTTP/1.0 request")
            if head.content_length is not None:
                raise RequestError("ambiguous-length",
                                   "Content-Length together with Transfer-Encoding")
            codings = te.lower().split(b",")
            if codings[-1].strip() != b"chunked":
                raise RequestError("ambiguous-length",
                                   f"Transfer-Encoding {te[:60]!r} does not end in chunked")
            if len(codings) > 1:
                raise RequestError("transfer-coding",
                                   f"Transfer-Encoding {te[:60]!r}: only chunked is "
                                   "implemented (other codings would be lost on the way)")
            head.chunked = True
        if upgrade is not None and b"upgrade" in head.connection_named:
            head.upgrade = upgrade
            if head.chunked or head.content_length:
                raise RequestError("bad-request",
                                   "an upgrade request (Upgrade + Connection: upgrade) with a "
                                   "body: send the body without Upgrade, or upgrade without "
                                   "a body")

    def on_body(self, data: bytes) -> None:
        total = self._body_bytes + len(data)
        self._body_bytes = total
        if total > self.max_body_bytes:
            raise RequestError("body-too-large",
                               f"request body over {self.max_body_bytes} bytes "
                               "(limits.max_body_bytes)")
        self.sink.on_request_body(data)

    def on_message_complete(self) -> None:
        self._wire = 0
        head = self.head
        if head is not None and not head.keep_alive and not head.upgrade:
            # The connection ends with this request: what follows is never read
            # (llhttp would refuse it and fail this request's whole read).
            self.ended = True
            self.sink.on_request_complete()
            raise _Ended()
        self.sink.on_request_complete()


class _Ended(Exception):
    """Stops llhttp after a request that closes the connection (never escapes feed)."""


# ---------------------------------------------------------------- responses

class _Discard:
    """The sink of a response reader with no exchange attached: drops everything."""

    def on_response_interim(self, head) -> None:
        pass

    def on_response_head(self, head) -> None:
        pass

    def on_response_body(self, data) -> None:
        pass

    def on_response_complete(self) -> None:
        pass


DISCARD = _Discard()


class ResponseHead:
    __slots__ = ("status", "reason", "version", "headers", "keep_alive", "content_length",
                 "chunked", "set_cookies", "no_body", "until_close", "connection_named")

    def __init__(self, status: int, reason: bytes, version: str,
                 headers: list[tuple[bytes, bytes]]):
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers
        self.keep_alive = False
        self.content_length: int | None = None
        self.chunked = False
        self.set_cookies: list[bytes] = []
        self.no_body = False  # HEAD, 204, 304, 1xx
        self.until_close = False  # body ends when the backend closes
        self.connection_named: frozenset[bytes] = _NO_NAMES

    def __repr__(self) -> str:
        return f"<ResponseHead {self.status} HTTP/{self.version}>"


class ResponseReader:
    """llhttp callbacks for responses of one backend connection."""

    __slots__ = ("sink", "parser", "_reason", "_headers", "_size", "_head_done",
                 "_head_request", "_reset", "_discard", "head", "complete")

    def __init__(self, sink=None):
        self.sink = sink if sink is not None else DISCARD
        self.parser = httptools.HttpResponseParser(self)
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._size = 0
        self._head_done = False
        self._head_request = False
        self._reset = False
        self._discard = False
        self.head: ResponseHead | None = None
        self.complete = False

    def close(self) -> None:
        """The backend connection is over: let go of the parser (see
        RequestReader.close) and of the sink. Nothing is fed after this."""
        self.parser = None
        self.sink = DISCARD

    def expect(self, method: str) -> None:
        """Before sending a request: the next response answers `method`."""
        self._head_request = method == "HEAD"
        self._head_done = False
        self._discard = False
        self.head = None
        self.complete = False

    @property
    def started(self) -> bool:
        """Some bytes of the current response arrived (its head may be incomplete)."""
        return self._size > 0 or self._head_done

    def feed(self, data: bytes) -> bytes | None:
        """Parse `data`; after a 101 head returns the bytes that follow it, else None."""
        try:
            self.parser.feed_data(data)
        except HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, ResponseError):
                raise cause from None
            if cause is not None:
                raise cause
            raise ResponseError(str(exc)) from None
        except HttpParserUpgrade as exc:
            # 101 Switching Protocols: the rest is the tunnel's business.
            offset = exc.args[0] if exc.args else len(data)
            return data[offset:]
        except HttpParserError as exc:
            if self._discard:
                return
            where = "body" if self._head_done else "head"
            raise ResponseError(f"invalid response {where} from the backend: {exc}") from None
        finally:
            if self._reset:
                self._reset = False
                self.parser = httptools.HttpResponseParser(self)
        return None

    def eof(self) -> bool:
        """The backend closed cleanly: True when that ends the current response."""
        head = self.head
        if head is not None and head.until_close and not self.complete:
            self.complete = True
            return True
        return False

    # ------------------------------------------------------------ llhttp callbacks

    def on_message_begin(self) -> None:
        self._reason = b""
        self._headers = []
        self._size = 1

    def on_status(self, reason: bytes) -> None:
        self._reason += reason
        self._size += len(reason)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._size += len(name) + len(value) + 4
        if self._size > MAX_RESPONSE_HEAD:
            raise ResponseError(f"response head over {MAX_RESPONSE_HEAD} bytes")
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._discard:
            return
        parser = self.parser
        status = parser.get_status_code()
        head = ResponseHead(status, self._reason, parser.get_http_version(), self._headers)
        head.keep_alive = parser.should_keep_alive()
        te = None
        for name, value in self._headers:
            n = len(name)
            if n == 14 and name.lower() == b"content-length":
                try:
                    head.content_length = int(value)
                except ValueError:
                    raise ResponseError(f"bad Content-Length {value[:40]!r}") from None
            elif n == 17 and name.lower() == b"transfer-encoding":
                te = value
            elif n == 10:
                lname = name.lower()
                if lname == b"set-cookie":
                    head.set_cookies.append(value)
                elif lname == b"connection":
                    head.connection_named = connection_names(value, head.connection_named)
        if te is not None and te.rsplit(b",", 1)[-1].strip().lower() == b"chunked":
            head.chunked = True
        if 100 <= status < 200 and status != 101:
            self._size = 0
            self.sink.on_response_interim(head)
            return
        self._head_done = True
        self.head = head
        if status == 101:
            # Switching protocols: what follows is not HTTP (see feed()).
            head.no_body = True
            self._discard = True
            self.sink.on_response_head(head)
            return
        if self._head_request or status in (204, 304):
            head.no_body = True
        elif head.content_length is None and not head.chunked:
            head.until_close = True
            head.keep_alive = False
        self.sink.on_response_head(head)
        if self._head_request:
            # llhttp would wait for Content-Length bytes that never come.
            self._reset = True
            self._discard = True
            self._finish()

    def on_body(self, data: bytes) -> None:
        if self._discard:
            return
        self.sink.on_response_body(data)

    def on_message_complete(self) -> None:
        if self._discard or not self._head_done:
            return  # 1xx interim responses end here too
        self._finish()

    def _finish(self) -> None:
        self.complete = True
        self._head_done = False
        self._size = 0
        self.sink.on_response_complete()
