"""Request framing rules of proxy.http1.parse, for generated variants (no sockets).

Each family draws many variants of one trick (hypothesis) and checks the
reader's verdict: refused with the documented code (docs/errors.md, "Request
framing"), or read as exactly one well-defined request. `-s` prints how many
variants each family tried.
"""
from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from proxy.http1.parse import MANAGED_NAMES, RequestError, RequestReader

TRIED: Counter = Counter()
SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


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


def read(pieces: list[bytes]) -> Sink:
    sink = Sink()
    reader = RequestReader(sink)
    for piece in pieces:
        reader.feed(piece)
    return sink


def verdict(pieces: list[bytes]) -> tuple[str | None, Sink | None]:
    try:
        return None, read(pieces)
    except RequestError as err:
        return err.code, None


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in points + [len(data)]:
        out.append(data[last:p])
        last = p
    return [p for p in out if p]


def report(family: str) -> None:
    print(f"\n[edge] framing/{family}: {TRIED[family]} variants tried, all held")


# ---------------------------------------------------------------- header names

managed = st.sampled_from(sorted(n.decode() for n in MANAGED_NAMES) + ["proxy-authorization"])


@st.composite
def underscored(draw):
    """A managed name with some '-' turned to '_' (at least one) and random case."""
    name = draw(managed)
    if "-" not in name:
        name = draw(st.sampled_from(["x-forwarded-for", "content-length",
                                     "transfer-encoding", "x-request-id"]))
    chars = []
    dashes = [i for i, c in enumerate(name) if c == "-"]
    flip = draw(st.sets(st.sampled_from(dashes), min_size=1))
    for i, c in enumerate(name):
        c = "_" if i in flip else c
        chars.append(c.upper() if draw(st.booleans()) else c)
    return "".join(chars)


def test_underscored_managed_names_are_refused():
    @SETTINGS
    @given(underscored(), st.sampled_from(["chunked", "5", "evil", "1.2.3.4"]))
    def check(name, value):
        TRIED["underscore-managed"] += 1
        data = f"POST / HTTP/1.1\r\nHost: a\r\n{name}: {value}\r\n\r\n".encode()
        code, _ = verdict([data])
        assert code == "underscore-header"

    check()
    report("underscore-managed")


def test_other_underscored_names_pass_unchanged():
    @SETTINGS
    @given(st.from_regex(r"\A[A-Za-z][A-Za-z0-9]{0,8}_[A-Za-z0-9_]{1,10}\Z"))
    def check(name):
        alias = name.replace("_", "-").lower()
        if alias in {n.decode() for n in MANAGED_NAMES} or alias.startswith("proxy-"):
            return
        TRIED["underscore-other"] += 1
        data = f"GET / HTTP/1.1\r\nHost: a\r\n{name}: v\r\n\r\n".encode()
        code, sink = verdict([data])
        assert code is None
        assert (name.encode(), b"v") in sink.heads[0].headers

    check()
    report("underscore-other")


def test_names_that_are_not_tokens_are_refused():
    bad = st.sampled_from([chr(c) for c in range(0, 32) if c not in (9, 10, 13)]
                          + [" ", "\t", "\x7f", '"', "(", ")", ",", "/", ";", "<", "=", ">",
                             "?", "@", "[", "\\", "]", "{", "}", "\x80", "\xff"])

    @SETTINGS
    @given(st.text(TCHAR, min_size=1, max_size=10), bad, st.text(TCHAR, max_size=10))
    def check(before, char, after):
        TRIED["name-not-token"] += 1
        name = (before + char + after).encode("latin-1")
        data = b"GET / HTTP/1.1\r\nHost: a\r\n" + name + b": v\r\n\r\n"
        code, _ = verdict([data])
        assert code == "bad-request"

    check()
    report("name-not-token")


# ---------------------------------------------------------------- values and Host

def test_whitespace_around_values_is_not_part_of_them():
    ows = st.text(" \t", max_size=4)

    @SETTINGS
    @given(ows, st.from_regex(r"\A[!-~]([ !-~]{0,20}[!-~])?\Z"), ows)
    def check(lead, value, trail):
        TRIED["value-whitespace"] += 1
        data = f"GET / HTTP/1.1\r\nHost: a\r\nX-V:{lead}{value}{trail}\r\n\r\n".encode()
        code, sink = verdict([data])
        assert code is None
        assert sink.heads[0].headers[-1] == (b"X-V", value.encode())

    check()
    report("value-whitespace")


def test_control_characters_in_values_are_refused():
    ctl = st.sampled_from([bytes([c]) for c in range(0, 32) if c not in (9,)] + [b"\x7f"])

    @SETTINGS
    @given(st.from_regex(rb"\A[a-z]{1,5}\Z"), ctl, st.from_regex(rb"\A[a-z]{1,5}\Z"))
    def check(before, char, after):
        TRIED["value-control"] += 1
        data = b"GET / HTTP/1.1\r\nHost: a\r\nX-V: " + before + char + after + b"\r\n\r\n"
        code, _ = verdict([data])
        assert code == "bad-request"

    check()
    report("value-control")


def test_hosts_with_characters_no_host_has_are_refused():
    bad = st.sampled_from([b" ", b"\t", b'"', b"/", b"\\", b"<", b">", b"{", b"}", b"|",
                           b"^", b"`", b"\x80", b"\xff", b"#", b"?"])

    @SETTINGS
    @given(st.from_regex(rb"\A[a-z0-9.-]{1,12}\Z"), bad, st.from_regex(rb"\A[a-z0-9.]{1,8}\Z"),
           st.booleans())
    def check(before, char, after, absolute):
        host = before + char + after
        if absolute and char in (b"/", b"#", b"?", b" ", b"\t"):
            return  # these end or break the authority in a request line instead
        TRIED["host-chars"] += 1
        if absolute:
            data = b"GET http://" + host + b"/ HTTP/1.1\r\nHost: a\r\n\r\n"
        else:
            data = b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
        code, _ = verdict([data])
        assert code == "bad-request"

    check()
    report("host-chars")


def test_valid_hosts_pass():
    @SETTINGS
    @given(st.from_regex(r"\A([a-z0-9-]{1,10}\.){0,3}[a-z]{1,6}(:[0-9]{1,5})?\Z"))
    def check(host):
        TRIED["host-valid"] += 1
        code, sink = verdict([f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()])
        assert code is None and sink.heads[0].host == host

    check()
    report("host-valid")


# ---------------------------------------------------------------- Transfer-Encoding / Content-Length

codings = st.sampled_from(["chunked", "Chunked", "CHUNKED", "gzip", "deflate", "identity",
                           "compress", "x-custom", "chunked;q=1", ""])


def test_transfer_encoding_is_chunked_alone_or_refused():
    @SETTINGS
    @given(st.lists(codings, min_size=1, max_size=3), st.sampled_from(["1.1", "1.0"]),
           st.sampled_from([",", ", ", " ,", ",\t"]), st.booleans())
    def check(items, version, sep, two_headers):
        TRIED["transfer-encoding"] += 1
        if two_headers and len(items) > 1:
            te = "".join(f"Transfer-Encoding: {c}\r\n" for c in items)
        else:
            te = f"Transfer-Encoding: {sep.join(items)}\r\n"
        data = (f"POST / HTTP/{version}\r\nHost: a\r\n{te}\r\n5\r\nhello\r\n0\r\n\r\n"
                .encode())
        code, sink = verdict([data])
        alone = len(items) == 1 and items[0].lower() == "chunked"
        if alone and version == "1.1":
            assert code is None and sink.bodies == [b"hello"] and sink.heads[0].chunked
        else:
            assert code in ("ambiguous-length", "transfer-coding", "bad-request")
            if version == "1.1" and items[-1].lower() == "chunked" and all(items):
                others = [c for c in items[:-1] if c.lower() != "chunked"]
                if others and len(items) == 2:
                    assert code == "transfer-coding"

    check()
    report("transfer-encoding")


@pytest.mark.parametrize("value", [b"chunked\t", b"chunked \t"])
def test_a_tab_after_chunked_is_an_ambiguous_length(value):
    # llhttp reads "chunked<TAB>" as another coding; the proxy refuses rather than pick.
    code, _ = verdict([b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: " + value
                       + b"\r\n\r\n0\r\n\r\n"])
    assert code == "ambiguous-length"


def test_content_length_is_digits_once_or_refused():
    values = st.sampled_from(["5", "05", "+5", "-5", "5 5", "5,5", "5, 5", "0x5", "5.0", "", "five",
                              "99999999999999999999999"])

    @SETTINGS
    @given(st.lists(values, min_size=1, max_size=2), st.booleans())
    def check(lengths, with_te):
        TRIED["content-length"] += 1
        head = "".join(f"Content-Length: {v}\r\n" for v in lengths)
        if with_te:
            head += "Transfer-Encoding: chunked\r\n"
        data = f"POST / HTTP/1.1\r\nHost: a\r\n{head}\r\nhello".encode()
        code, sink = verdict([data])
        if len(lengths) == 1 and lengths[0] in ("5", "05") and not with_te:
            assert code is None and sink.bodies == [b"hello"]
        else:
            assert code in ("ambiguous-length", "bad-request", "body-too-large")

    check()
    report("content-length")


# ---------------------------------------------------------------- chunked bodies

ext_name = st.from_regex(r"\A[a-z]{1,6}\Z")
ext_value = st.one_of(st.from_regex(r"\A[a-z0-9]{0,6}\Z"), st.just('"q s"'))


@st.composite
def chunked_body(draw):
    data = draw(st.binary(min_size=0, max_size=300))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    pieces, last = [], 0
    for c in cuts + [len(data)]:
        if c > last:
            pieces.append(data[last:c])
            last = c
    wire = b""
    for piece in pieces:
        ext = b""
        if draw(st.booleans()):
            ext = (";" + draw(ext_name) + "=" + draw(ext_value)).encode()
        size = b"%x" % len(piece)
        if draw(st.booleans()):
            size = size.upper()
        wire += size + ext + b"\r\n" + piece + b"\r\n"
    trailers = b""
    if draw(st.booleans()):
        trailers = b"X-Trailer: t\r\nX-Other: u\r\n"
    wire += b"0\r\n" + trailers + b"\r\n"
    return data, wire


def test_chunked_bodies_with_extensions_and_trailers_read_exactly():
    @SETTINGS
    @given(chunked_body(), st.lists(st.integers(0, 2000), max_size=5))
    def check(body_wire, cuts):
        TRIED["chunked"] += 1
        data, wire = body_wire
        msg = b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + wire
        nxt = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
        sink = read(split(msg + nxt, cuts))
        assert sink.bodies == [data, b""] and sink.completed == 2
        assert [h.target for h in sink.heads] == [b"/c", b"/next"]
        # Trailer fields are dropped, never added to the head.
        assert all(n.lower() != b"x-trailer" for n, _ in sink.heads[0].headers)

    check()
    report("chunked")


def test_chunk_extensions_cannot_stream_unbounded_bytes():
    sink = Sink()
    reader = RequestReader(sink)
    reader.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;x=")
    with pytest.raises(RequestError) as info:
        for _ in range(100):
            reader.feed(b"a" * 4096)
    assert info.value.code == "bad-chunk"


# ---------------------------------------------------------------- what follows a request

def test_a_closing_request_is_read_whatever_follows():
    @SETTINGS
    @given(st.sampled_from([("1.1", "Connection: close\r\n"), ("1.0", ""),
                            ("1.1", "Connection: keep-alive, close\r\n"),
                            ("1.0", "Connection: close\r\n")]),
           st.binary(max_size=200), st.lists(st.integers(0, 400), max_size=4))
    def check(variant, junk, cuts):
        TRIED["closing-then-bytes"] += 1
        version, conn = variant
        msg = f"GET /only HTTP/{version}\r\nHost: a\r\n{conn}\r\n".encode()
        sink = read(split(msg + junk, cuts))
        assert sink.completed == 1 and [h.target for h in sink.heads] == [b"/only"]

    check()
    report("closing-then-bytes")


def test_upgrade_with_a_body_is_refused():
    @SETTINGS
    @given(st.sampled_from(["websocket", "h2c", "foo/1"]),
           st.sampled_from(["Content-Length: 5\r\n", "Transfer-Encoding: chunked\r\n"]),
           st.sampled_from(["upgrade", "Upgrade", "keep-alive, upgrade"]))
    def check(proto, framing, conn):
        TRIED["upgrade-body"] += 1
        data = (f"POST /u HTTP/1.1\r\nHost: a\r\nUpgrade: {proto}\r\nConnection: {conn}\r\n"
                f"{framing}\r\nhello").encode()
        code, _ = verdict([data])
        assert code == "bad-request"

    check()
    report("upgrade-body")


def test_the_http2_preface_is_an_http_version_error():
    code, _ = verdict([b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"])
    assert code == "http-version"
