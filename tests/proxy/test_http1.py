"""proxy.http1 and proxy.errors without sockets: parsing, limits, smuggling, framing, headers."""
from __future__ import annotations

import pathlib

import pytest

from proxy import errors
from proxy.http1 import chunked
from proxy.http1.headers import (
    LazyCookies,
    LazyHeaders,
    RequestIds,
    append_list,
    connection_tokens,
    forwarded_element,
    header_block,
    host_name,
    parse_cookies,
    sane_request_id,
    strip_hop_by_hop,
)
from proxy.http1.parse import (
    RequestError,
    RequestReader,
    ResponseError,
    ResponseReader,
    split_target,
)
from proxy.http1.responses import error_response, render, status_line

REPO = pathlib.Path(__file__).resolve().parents[2]


class Sink:
    def __init__(self):
        self.heads = []
        self.bodies = []
        self.completed = 0

    def on_request_head(self, head):
        self.heads.append(head)
        self.bodies.append(b"")

    def on_request_body(self, data):
        self.bodies[-1] += data

    def on_request_complete(self):
        self.completed += 1


def read(data: bytes | list[bytes], **limits):
    sink = Sink()
    reader = RequestReader(sink, **limits)
    for piece in [data] if isinstance(data, bytes) else data:
        reader.feed(piece)
    return sink, reader


def refused(data, **limits) -> RequestError:
    with pytest.raises(RequestError) as info:
        read(data, **limits)
    return info.value


# ---------------------------------------------------------------- requests

def test_simple_get():
    sink, _ = read(b"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: Example.com:8080\r\nX-A: 1\r\n\r\n")
    (head,) = sink.heads
    assert head.method == "GET"
    assert head.path == "/a/b" and head.query == "x=1&y=2"
    assert head.target == b"/a/b?x=1&y=2"
    assert head.host == "Example.com:8080"
    assert head.keep_alive and head.http11 and not head.has_body
    assert head.headers == [(b"Host", b"Example.com:8080"), (b"X-A", b"1")]
    assert sink.completed == 1


def test_head_split_over_many_reads():
    data = b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nX-Long: " + b"v" * 50 + \
        b"\r\n\r\nhello"
    pieces = [data[i:i + 7] for i in range(0, len(data), 7)]
    sink, _ = read(pieces)
    (head,) = sink.heads
    assert head.target == b"/up"
    assert dict(head.headers)[b"X-Long"] == b"v" * 50
    assert sink.bodies == [b"hello"]


def test_pipelined_requests_on_one_reader():
    sink, reader = read(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert [h.path for h in sink.heads] == ["/1", "/2"]
    assert reader.messages == 2 and sink.completed == 2


def test_chunked_body_is_decoded():
    sink, _ = read(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n")
    assert sink.heads[0].chunked and sink.heads[0].has_body
    assert sink.bodies == [b"hello world"]


def test_http10_keep_alive_only_when_asked():
    sink, _ = read(b"GET / HTTP/1.0\r\n\r\n")
    assert not sink.heads[0].keep_alive and sink.heads[0].host is None
    sink, _ = read(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert sink.heads[0].keep_alive


def test_connection_close_and_named_headers():
    sink, _ = read(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close, X-Secret\r\n\r\n")
    head = sink.heads[0]
    assert not head.keep_alive
    assert head.connection_named == {b"close", b"x-secret"}


def test_absolute_form_target_wins_over_host():
    sink, _ = read(b"GET http://other.example/p?q=1 HTTP/1.1\r\nHost: h\r\n\r\n")
    head = sink.heads[0]
    assert head.host == "other.example" and head.target == b"/p?q=1" and head.path == "/p"


def test_request_id_cookies_expect_upgrade_are_noted():
    sink, _ = read(b"PUT /x HTTP/1.1\r\nHost: h\r\nX-Request-Id: abc-1\r\nCookie: a=1\r\n"
                   b"Cookie: b=2\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n")
    head = sink.heads[0]
    assert head.request_id == b"abc-1"
    assert head.cookies == ["a=1", "b=2"]
    assert head.expect_continue


def test_upgrade_returns_the_bytes_after_the_head():
    sink = Sink()
    reader = RequestReader(sink)
    tail = reader.feed(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n"
                       b"Upgrade: websocket\r\n\r\nRAW")
    assert tail == b"RAW"
    assert sink.heads[0].upgrade == b"websocket"
    assert reader.upgraded


@pytest.mark.parametrize("data, code", [
    (b"GARBAGE\r\n\r\n", "bad-request"),
    (b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n", "bad-request"),
    (b"GET / HTTP/1.1\r\nHost x\r\n\r\n", "bad-request"),
    (b"GET / HTTP/1.1\r\nHost: a\x01b\r\n\r\n", "bad-request"),
    (b"GET / HTTP/1.1\r\n\r\n", "bad-request"),  # 1.1 without Host
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "bad-request"),
    (b"GET nowhere HTTP/1.1\r\nHost: a\r\n\r\n", "bad-request"),
    (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", "http-version"),
    (b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", "unsupported-method"),
])
def test_malformed_heads_are_refused(data, code):
    assert refused(data).code == code


@pytest.mark.parametrize("data", [
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 4\r\n\r\nabcd",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
])
def test_ambiguous_length_is_refused_before_any_body(data):
    sink = Sink()
    with pytest.raises(RequestError) as info:
        RequestReader(sink).feed(data)
    assert info.value.code == "ambiguous-length"
    assert sink.heads == []  # never reached the proxy: nothing was forwarded


def test_bad_chunk_size_after_the_head():
    sink = Sink()
    reader = RequestReader(sink)
    with pytest.raises(RequestError) as info:
        reader.feed(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"zz\r\nabc\r\n0\r\n\r\n")
    assert info.value.code == "bad-chunk"
    assert len(sink.heads) == 1  # the head was complete: the proxy must abort it


def test_header_limit_on_a_complete_head():
    data = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(
        b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(30)) + b"\r\n"
    assert refused(data, max_header_bytes=2048).code == "headers-too-large"
    sink, _ = read(data, max_header_bytes=8192)
    assert len(sink.heads) == 1


def test_header_limit_on_a_head_that_never_ends():
    sink = Sink()
    reader = RequestReader(sink, max_header_bytes=1024)
    reader.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: ")
    with pytest.raises(RequestError) as info:
        for _ in range(100):
            reader.feed(b"v" * 100)
    assert info.value.code == "headers-too-large"


def test_body_limit_by_content_length_up_front():
    err = refused(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2000\r\n\r\n",
                  max_body_bytes=1000)
    assert err.code == "body-too-large"


def test_body_limit_while_chunked_streams():
    sink = Sink()
    reader = RequestReader(sink, max_body_bytes=1000)
    reader.feed(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(RequestError) as info:
        for _ in range(10):
            reader.feed(chunked.chunk(b"x" * 300))
    assert info.value.code == "body-too-large"
    assert len(sink.bodies[0]) <= 1000


def test_split_target():
    assert split_target(b"/a?b") == (b"/a?b", "/a", "b", None)
    assert split_target(b"*") == (b"*", "*", "", None)
    assert split_target(b"https://u@h:1/x") == (b"/x", "/x", "", "h:1")
    assert split_target(b"http://h") == (b"/", "/", "", "h")
    with pytest.raises(RequestError):
        split_target(b"ftp://h/x")


# ---------------------------------------------------------------- responses

class RespSink:
    def __init__(self):
        self.events = []

    def on_response_interim(self, head):
        self.events.append(("interim", head.status))

    def on_response_head(self, head):
        self.events.append(("head", head.status))
        self.head = head

    def on_response_body(self, data):
        self.events.append(("body", data))

    def on_response_complete(self):
        self.events.append(("done",))


def test_response_with_length_and_keep_alive():
    sink = RespSink()
    reader = ResponseReader(sink)
    reader.expect("GET")
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nSet-Cookie: a=1\r\n"
                b"Set-Cookie: b=2\r\nConnection: X-Hop\r\n\r\nhi")
    assert sink.events == [("head", 200), ("body", b"hi"), ("done",)]
    assert sink.head.keep_alive and sink.head.content_length == 2
    assert sink.head.set_cookies == [b"a=1", b"b=2"]
    assert sink.head.connection_named == {b"x-hop"}
    assert sink.head.reason == b"OK"


def test_chunked_response_is_decoded():
    sink = RespSink()
    reader = ResponseReader(sink)
    reader.expect("GET")
    reader.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
    assert sink.events == [("head", 200), ("body", b"hi"), ("done",)]
    assert sink.head.chunked


def test_head_response_does_not_wait_for_a_body_and_the_next_one_parses():
    sink = RespSink()
    reader = ResponseReader(sink)
    reader.expect("HEAD")
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
    assert sink.events == [("head", 200), ("done",)]
    assert sink.head.no_body
    reader.expect("GET")
    reader.feed(b"HTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx")
    assert sink.events[2:] == [("head", 201), ("body", b"x"), ("done",)]


def test_interim_responses_do_not_end_the_exchange():
    sink = RespSink()
    reader = ResponseReader(sink)
    reader.expect("POST")
    reader.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert sink.events == [("interim", 100), ("head", 200), ("done",)]


def test_body_until_close_ends_at_eof():
    sink = RespSink()
    reader = ResponseReader(sink)
    reader.expect("GET")
    reader.feed(b"HTTP/1.1 200 OK\r\n\r\nsome")
    assert sink.head.until_close and not sink.head.keep_alive
    assert reader.eof()
    assert not reader.eof()  # only once


def test_garbage_response_is_an_error():
    reader = ResponseReader(RespSink())
    reader.expect("GET")
    with pytest.raises(ResponseError):
        reader.feed(b"this is not http\r\n\r\n")


def test_switching_protocols_returns_the_tunnel_bytes():
    sink = RespSink()
    reader = ResponseReader(sink)
    reader.expect("GET")
    tail = reader.feed(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                       b"Upgrade: websocket\r\n\r\nFRAME")
    assert tail == b"FRAME"
    assert sink.events == [("head", 101)]


def test_started_tracks_response_bytes():
    reader = ResponseReader(RespSink())
    reader.expect("GET")
    assert not reader.started
    reader.feed(b"HTTP/1.1 2")
    assert reader.started


# ---------------------------------------------------------------- headers

def test_strip_hop_by_hop_and_connection_named():
    headers = [(b"Host", b"h"), (b"Connection", b"keep-alive, X-Secret"), (b"Keep-Alive", b"5"),
               (b"X-Secret", b"s"), (b"TE", b"trailers"), (b"Trailer", b"X"),
               (b"Transfer-Encoding", b"chunked"), (b"Upgrade", b"h2c"),
               (b"Proxy-Authorization", b"x"), (b"Proxy-Foo", b"y"), (b"X-Keep", b"k")]
    assert strip_hop_by_hop(headers) == [(b"Host", b"h"), (b"X-Keep", b"k")]
    kept = strip_hop_by_hop(headers, keep=frozenset({b"upgrade"}))
    assert (b"Upgrade", b"h2c") in kept


def test_connection_tokens():
    assert connection_tokens(b"Close, X-A ,,x-b") == {b"close", b"x-a", b"x-b"}


@pytest.mark.parametrize("value, expected", [
    ("Example.COM:8080", "example.com"), ("example.com.", "example.com"),
    ("[::1]:80", "::1"), ("h", "h"), (None, None), ("", None),
])
def test_host_name(value, expected):
    assert host_name(value) == expected


def test_forwarded_element():
    assert forwarded_element("10.0.0.1", "example.com", "http") == \
        "for=10.0.0.1;host=example.com;proto=http"
    assert forwarded_element("::1", "h:8080", "https") == 'for="[::1]";host="h:8080";proto=https'
    assert forwarded_element("1.2.3.4", None, "http") == "for=1.2.3.4;proto=http"
    assert append_list(b"a", b"b") == b"a, b" and append_list(None, b"b") == b"b"


@pytest.mark.parametrize("value, ok", [
    (b"abc-123", True), (b"3f9a.1:x@y=z+", True), (b"a" * 128, True), (b"a" * 129, False),
    (b"", False), (None, False), (b"has space", False), (b"<script>", False), (b"-lead", False),
])
def test_sane_request_id(value, ok):
    assert sane_request_id(value) is ok


def test_request_ids_are_unique_and_sane():
    ids = RequestIds()
    made = {ids.next() for _ in range(1000)}
    assert len(made) == 1000
    assert all(sane_request_id(i.encode()) for i in made)


def test_cookies():
    assert parse_cookies(["a=1; b=\"2\"; bad; a=3", "c=x=y"]) == {"a": "1", "b": "2", "c": "x=y"}
    assert parse_cookies(None) == {}
    lazy = LazyCookies(["s=1"])
    assert lazy.get("s") == "1" and "s" in lazy and len(lazy) == 1


def test_lazy_headers_lower_case_and_join():
    h = LazyHeaders([(b"X-A", b"1"), (b"x-a", b"2"), (b"Cookie", b"a=1"), (b"cookie", b"b=2")])
    assert h["x-a"] == "1, 2"
    assert h.get("cookie") == "a=1; b=2"
    assert h.get("missing") is None and "x-a" in h and set(h) == {"x-a", "cookie"}


def test_header_block_is_one_join():
    assert header_block(b"GET / HTTP/1.1\r\n", [(b"A", b"1")]) == b"GET / HTTP/1.1\r\nA: 1\r\n\r\n"


# ---------------------------------------------------------------- framing

def test_chunk_round_trip():
    body = chunked.encode_chunked([b"hello", b"", b" world"])
    assert body == b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    assert chunked.decode_chunked(body) == (b"hello world", True)
    assert chunked.decode_chunked(body[:7]) == (b"hell", False)
    with pytest.raises(ValueError):
        chunked.decode_chunked(b"zz\r\n")
    assert b"".join(chunked.chunk_parts(b"abc")) == chunked.chunk(b"abc")


@pytest.mark.parametrize("args, expected", [
    ((200, "GET", 10, False, True), chunked.LENGTH),
    ((200, "GET", None, True, True), chunked.CHUNKED),
    ((200, "GET", None, True, False), chunked.CLOSE),  # HTTP/1.0 client cannot read chunks
    ((200, "GET", None, False, True), chunked.CHUNKED),  # until-close re-framed
    ((200, "HEAD", 10, False, True), chunked.NONE),
    ((204, "GET", None, False, True), chunked.NONE),
    ((304, "GET", 10, False, True), chunked.NONE),
])
def test_response_framing(args, expected):
    assert chunked.response_framing(*args) == expected


def test_request_framing():
    assert chunked.request_framing(10, False) == chunked.LENGTH
    assert chunked.request_framing(None, True) == chunked.CHUNKED
    assert chunked.request_framing(0, False) == chunked.NONE


# ---------------------------------------------------------------- proxy-made responses

def test_render_and_status_line():
    assert status_line(404) == b"HTTP/1.1 404 Not Found\r\n"
    assert status_line(299) == b"HTTP/1.1 299 Unknown\r\n"
    out = render(200, [(b"A", b"1")], b"hi", keep_alive=True, http11=False)
    assert out == b"HTTP/1.1 200 OK\r\nA: 1\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nhi"
    out = render(200, [], b"hi", keep_alive=False, http11=True, head_only=True)
    assert out.endswith(b"Connection: close\r\n\r\n")


def test_error_response_carries_the_code():
    err = errors.error("no-backend")
    out = error_response(err, "no eligible backend in pool web", "rid-1", True, True)
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ")
    assert b"X-LBLab-Error: no-backend" in head and b"X-Request-Id: rid-1" in head
    assert b"Connection: close" not in head  # a 503 keeps the connection
    assert b'"error":"no-backend"' in body and b"rid-1" in body
    out = error_response(errors.error("ambiguous-length"), "x", "r", True, True)
    assert b"Connection: close" in out


# ---------------------------------------------------------------- the error table

def test_error_table_is_complete():
    for code, e in errors.ERRORS.items():
        assert e.code == code
        assert 400 <= e.status <= 599
        assert len(e.termination) == 2 and e.termination in errors.TERMINATIONS
        assert e.when and e.fix


def test_docs_errors_md_is_rendered_from_the_table():
    path = REPO / "docs" / "errors.md"
    assert path.read_text(encoding="utf-8") == errors.render_markdown(), \
        "docs/errors.md is stale: run `python -m proxy.errors > docs/errors.md`"
