"""Differential test of the HTTP/1.1 edge: what the backend receives is what the client sent.

A raw recording backend sits behind a real proxy. Hypothesis generates
request sequences (pipelined, split at random points, with Content-Length or
chunked bodies, chunk extensions, trailers, odd whitespace, underscores) and
hostile framing (Transfer-Encoding / Content-Length variants followed by a
"smuggled" request). The bytes the backend recorded are then parsed twice, by
a strict parser (h11) and a lenient one (httptools, llhttp), and must give:

- for valid input: exactly the client's requests (method, target, body, and
  every end-to-end header with its value), in order, under both parsers;
- for hostile input: no parse error, the same requests under both parsers,
  and exactly as many requests as the client got backend responses: nothing
  reached a backend that the client did not see answered (no smuggling).

`-s` prints how many variants each family tried.
"""
from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.proxy.edge.harness import (
    EdgeProxy,
    RecordingBackend,
    exchange,
    parse_lenient,
    parse_strict,
    proxy_config,
)

pytestmark = pytest.mark.timeout(600)

TRIED: Counter = Counter()
SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
MARKS = itertools.count(1)
# Headers the proxy owns: dropped, rewritten or added on the way (docs/errors.md).
NOT_END_TO_END = {"host", "connection", "keep-alive", "proxy-connection", "te", "trailer",
                  "transfer-encoding", "content-length", "upgrade", "x-forwarded-for",
                  "x-forwarded-host", "x-forwarded-proto", "forwarded", "x-request-id",
                  "x-client-verify", "x-client-cert-subject", "expect"}


@pytest.fixture(scope="module")
def edge():
    backend = RecordingBackend()
    with EdgeProxy(proxy_config([backend.address], pool={"retries": 0})) as proxy:
        yield proxy, backend
    backend.close()


def report(family: str) -> None:
    print(f"\n[edge] differential/{family}: {TRIED[family]} variants tried, all held")


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in points + [len(data)]:
        if p > last:
            out.append(data[last:p])
            last = p
    return out


def received(backend: RecordingBackend, mark, tag: str):
    """(strict, lenient) lists of requests tagged `tag`, and every parse error."""
    strict, lenient, errors = [], [], []
    for stream in backend.since(mark):
        for parse, out in ((parse_strict, strict), (parse_lenient, lenient)):
            parsed = parse(stream)
            if parsed.error:
                errors.append(parsed.error)
            out += [r for r in parsed.requests if tag in r.target]
    return strict, lenient, errors


def end_to_end(headers) -> list[tuple[str, str]]:
    return [(n, v) for n, v in headers
            if n not in NOT_END_TO_END and not n.startswith("proxy-")]


# ====================================================================== valid sequences

token = st.from_regex(r"\A[A-Za-z][A-Za-z0-9]{0,7}(-[A-Za-z0-9]{1,6}){0,2}(_[a-z]{1,4})?\Z")
value = st.from_regex(r"\A([!-~]([ \t!-~]{0,30}[!-~])?)?\Z")
ows = st.sampled_from(["", " ", "  ", "\t", " \t"])


@st.composite
def request(draw, tag: str, index: int, last: bool):
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]))
    path = "/" + "/".join(draw(st.lists(st.from_regex(r"\A[A-Za-z0-9._~%!$&'()*+,;=:@-]{1,8}\Z"),
                                        max_size=3)))
    target = f"{path}?{tag}&i={index}"
    headers = []
    for name, val in draw(st.lists(st.tuples(token, value), max_size=6)):
        lname = name.lower()
        if lname in NOT_END_TO_END or lname.startswith("proxy-"):
            continue
        if "_" in name and lname.replace("_", "-") in NOT_END_TO_END:
            continue
        headers.append((name, val, draw(ows), draw(ows)))
    body = b""
    framing = b""
    if method in ("POST", "PUT", "PATCH"):
        kind = draw(st.sampled_from(["none", "length", "chunked"]))
        body = draw(st.binary(max_size=200)) if kind != "none" else b""
        # Unusual but valid spellings of the framing: any case, OWS, leading zeros.
        if kind == "length":
            name = draw(st.sampled_from([b"Content-Length", b"content-length", b"CONTENT-LENGTH"]))
            framing = b"%b:%b%0*d%b\r\n" % (name, draw(st.sampled_from([b"", b" ", b"\t "])),
                                              draw(st.integers(1, 4)), len(body),
                                              draw(st.sampled_from([b"", b" ", b"\t"])))
            wire_body = body
        elif kind == "chunked":
            name = draw(st.sampled_from([b"Transfer-Encoding", b"transfer-encoding",
                                         b"TRANSFER-ENCODING"]))
            coding = draw(st.sampled_from([b"chunked", b"Chunked", b"CHUNKED", b" chunked ",
                                           b"\tchunked"]))
            framing = b"%b:%b\r\n" % (name, coding)
            wire_body = b""
            rest = body
            while rest:
                n = draw(st.integers(1, len(rest)))
                ext = draw(st.sampled_from([b"", b";a=b", b';n="q v"', b";x", b";a=b;c"]))
                size = b"%0*x" % (draw(st.integers(1, 4)), n)
                if draw(st.booleans()):
                    size = size.upper()
                wire_body += b"%b%b\r\n%b\r\n" % (size, ext, rest[:n])
                rest = rest[n:]
            wire_body += b"0\r\n" + draw(st.sampled_from([b"", b"X-T: 1\r\n"])) + b"\r\n"
        else:
            wire_body = b""
    else:
        wire_body = b""
    close = last and draw(st.booleans())
    lines = [f"{method} {target} HTTP/1.1".encode(), b"Host: edge.test"]
    for name, val, lead, trail in headers:
        lines.append(f"{name}:{lead}{val}{trail}".encode())
    if close:
        lines.append(b"Connection: close")
    wire = b"\r\n".join(lines) + b"\r\n" + framing + b"\r\n" + wire_body
    expected = (method, target, [(n.lower(), v) for n, v, _, _ in headers], body)
    return wire, expected, close


@st.composite
def sequence(draw):
    tag = f"seq{next(MARKS)}"
    n = draw(st.integers(1, 4))
    items = [draw(request(tag, i, i == n - 1)) for i in range(n)]
    cuts = draw(st.lists(st.integers(0, 4000), max_size=5))
    return tag, items, cuts


def test_valid_requests_arrive_exactly_as_sent(edge):
    proxy, backend = edge

    @SETTINGS
    @given(sequence())
    def check(case):
        TRIED["valid"] += 1
        tag, items, cuts = case
        mark = backend.mark()
        data = b"".join(wire for wire, _, _ in items)
        closes = items[-1][2]
        replies, _ = exchange(proxy.port(), split(data, cuts),
                              count=None if closes else len(items))
        assert [r.status for r in replies] == [200] * len(items), replies
        targets = [e[1] for _, e, _ in items]
        assert [r.body.decode() for r in replies] == [f"ok {t}" for t in targets]
        strict, lenient, errors = received(backend, mark, tag)
        assert not errors
        for parsed in (strict, lenient):
            got = sorted(parsed, key=lambda r: int(r.target.rsplit("=", 1)[1]))
            assert [(r.method, r.target, end_to_end(r.headers), r.body) for r in got] == [
                expected for _, expected, _ in items]
            assert all(r.header("host") == ["edge.test"] for r in got)

    check()
    report("valid")


# ====================================================================== hostile framing

# Valid spellings are repeated so that about half the variants are forwarded
# (and checked for what the backend reads) rather than refused.
te_names = st.sampled_from(["Transfer-Encoding"] * 6 + ["transfer-encoding", "TRANSFER-ENCODING",
                            "Transfer_Encoding", "Transfer-Encoding ", " Transfer-Encoding",
                            "Transfer\x0bEncoding", "X-Transfer-Encoding"])
te_values = st.sampled_from(["chunked"] * 8 + [" chunked", "chunked ", "\tchunked", "Chunked",
                             "chunked, identity", "identity, chunked", "gzip, chunked",
                             "chunked, chunked", "xchunked", "chunk", "chunked\x0b", '"chunked"',
                             "chunked;foo=bar", ""])
cl_names = st.sampled_from(["Content-Length"] * 6 + ["content-length", "Content_Length",
                            "Content-Length ", " Content-Length", "Content-Length\x00"])
cl_values = st.sampled_from(["0", "4", "5", "5", "5", "40", " 5", "5 ", "+5", "05", "5,5", "5, 0", "0x5",
                             "-1", "", "5\x0b"])
chunk_bodies = st.sampled_from([b"0\r\n\r\n", b"5\r\nhello\r\n0\r\n\r\n"] * 3 + [
                                b"5;x\r\nhello\r\n0\r\n\r\n", b"5 \r\nhello\r\n0\r\n\r\n",
                                b"5\nhello\n0\n\n", b"0\r\n\r\n\r\n", b"-5\r\nhello\r\n0\r\n\r\n",
                                b"0x5\r\nhello\r\n0\r\n\r\n", b"ffffffffffffffffff\r\n",
                                b"5\r\nhello0\r\n\r\n", b"hello", b""])


@st.composite
def hostile(draw):
    tag = f"smug{next(MARKS)}"
    fields = []
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        if draw(st.booleans()):
            fields.append(f"{draw(te_names)}: {draw(te_values)}")
        else:
            fields.append(f"{draw(cl_names)}: {draw(cl_values)}")
    version = draw(st.sampled_from(["1.1", "1.1", "1.0"]))
    keep = "Connection: keep-alive\r\n" if version == "1.0" else ""
    head = (f"POST /first?{tag}&i=0 HTTP/{version}\r\nHost: edge.test\r\n{keep}"
            + "".join(f + "\r\n" for f in fields) + "\r\n").encode("latin-1")
    smuggled = f"GET /smuggled?{tag}&i=1 HTTP/1.1\r\nHost: edge.test\r\n\r\n".encode()
    last = f"GET /last?{tag}&i=2 HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n"
    if draw(st.booleans()):
        body = draw(chunk_bodies)  # any body, whatever the framing says
    elif "chunked" in fields[0]:
        body = draw(st.sampled_from([b"0\r\n\r\n", b"5\r\nhello\r\n0\r\n\r\n",
                                     b"2;e=1\r\nhi\r\n0\r\nX-T: 1\r\n\r\n"]))
    else:
        length = fields[0].partition(":")[2].strip()
        body = b"x" * int(length) if length.isdigit() else b""
    data = head + body + smuggled + last.encode()
    cuts = draw(st.lists(st.integers(0, 600), max_size=3))
    return tag, data, cuts


def test_hostile_framing_never_smuggles(edge):
    proxy, backend = edge
    outcomes: Counter = Counter()

    @settings(SETTINGS, max_examples=500)
    @given(hostile())
    def check(case):
        TRIED["smuggling"] += 1
        tag, data, cuts = case
        mark = backend.mark()
        replies, _ = exchange(proxy.port(), split(data, cuts), count=None, timeout=3.0)
        from_backend = [r for r in replies if "x-lblab-error" not in r.headers]
        strict, lenient, errors = received(backend, mark, tag)
        assert not errors, errors
        assert [(r.method, r.target, r.body) for r in strict] == [
            (r.method, r.target, r.body) for r in lenient]
        # Every request a backend saw was answered to this client, and nothing else.
        assert sorted(r.body.decode()[3:] for r in from_backend) == sorted(
            r.target for r in strict)
        outcomes["refused" if len(from_backend) < len(replies) else "forwarded"] += 1

    check()
    print(f"\n[edge] smuggling outcomes: {dict(outcomes)}")
    report("smuggling")


# ====================================================================== what follows a request

malformed = st.sampled_from([
    b"GET / HTTP/1.1\r\nHost: edge.test\r\nBad Name: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: edge.test\r\nTransfer_Encoding: chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: edge test\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: edge.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: edge.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked"
    b"\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: edge.test\r\nX: a\x00b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: edge.test\r\n folded: x\r\n\r\n",
    b"GET / HTTP/3.0\r\nHost: edge.test\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00",
    b"POST / HTTP/1.1\r\nHost: edge.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /u HTTP/1.1\r\nHost: edge.test\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
    b"Content-Length: 4\r\n\r\nbody",
])


def test_valid_requests_before_a_malformed_one_are_answered_first(edge):
    proxy, backend = edge

    @SETTINGS
    @given(st.integers(1, 4), malformed, st.binary(max_size=40),
           st.lists(st.integers(0, 800), max_size=4))
    def check(k, bad, tail, cuts):
        TRIED["valid-then-malformed"] += 1
        tag = f"vtm{next(MARKS)}"
        good = b"".join(f"GET /ok?{tag}&i={i} HTTP/1.1\r\nHost: edge.test\r\n\r\n".encode()
                        for i in range(k))
        replies, closed = exchange(proxy.port(), split(good + bad + tail, cuts), count=None,
                                   timeout=3.0)
        assert [r.status for r in replies[:k]] == [200] * k
        assert [r.body.decode() for r in replies[:k]] == [
            f"ok /ok?{tag}&i={i}" for i in range(k)]
        assert len(replies) == k + 1 and closed
        assert replies[k].status in (400, 501, 505) and "x-lblab-error" in replies[k].headers
        strict, lenient, errors = received(backend, mark=mark_before[0], tag=tag)
        assert not errors and len(strict) == len(lenient) == k

    mark_before = [backend.mark()]
    check()
    report("valid-then-malformed")


def test_a_closing_request_is_answered_whatever_follows(edge):
    proxy, backend = edge

    @SETTINGS
    @given(st.sampled_from([("1.1", "Connection: close\r\n"), ("1.0", ""),
                            ("1.0", "Connection: close\r\n")]),
           st.one_of(st.binary(max_size=100),
                     st.just(b"GET /after HTTP/1.1\r\nHost: edge.test\r\n\r\n")),
           st.lists(st.integers(0, 300), max_size=3))
    def check(variant, tail, cuts):
        TRIED["close-then-bytes"] += 1
        tag = f"ctb{next(MARKS)}"
        version, conn = variant
        mark = backend.mark()
        msg = f"GET /only?{tag} HTTP/{version}\r\nHost: edge.test\r\n{conn}\r\n".encode()
        replies, closed = exchange(proxy.port(), split(msg + tail, cuts), count=None,
                                   timeout=3.0)
        assert [r.status for r in replies] == [200] and closed
        assert replies[0].body.decode() == f"ok /only?{tag}"
        strict, lenient, errors = received(backend, mark, tag)
        assert not errors and len(strict) == len(lenient) == 1

    check()
    report("close-then-bytes")
