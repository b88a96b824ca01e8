"""The proxy relaying real traffic: headers, ids, keep-alive, HTTP/1.0, streaming, routing."""
from __future__ import annotations

import json
import threading
import time

import pytest

from tests.proxy.e2e.support import (
    RawConn,
    Session,
    backend_entry,
    base_config,
    parse_response,
    raw,
    request,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def proxy(backends, proxy_factory):
    b1, b2, b3 = backends["b1"], backends["b2"], backends["b3"]
    pools = {
        "main": {"backends": [backend_entry(b1), backend_entry(b2), backend_entry(b3)]},
        "pa": {"backends": [backend_entry(b1, "pa1")]},
        "pb": {"backends": [backend_entry(b2, "pb1")]},
        "pc": {"backends": [backend_entry(b3, "pc1")]},
    }
    routes = {
        "ping": {"match": {"path_prefix": "/ping"},
                 "respond": {"status": 200, "body": "pong\n"}},
        "old": {"match": {"path_prefix": "/old"},
                "redirect": {"location": "http://{host}/new{path}", "status": 301}},
        "host_route": {"match": {"host": "api.test"}, "forward": "pa"},
        "wild": {"match": {"host": "*.shop.test"}, "forward": "pb"},
        "prefix": {"match": {"path_prefix": "/static/"}, "forward": "pc"},
        "regex": {"match": {"path_regex": "^/items/[0-9]+$"}, "forward": "pb"},
        "hdr": {"match": {"headers": {"X-Tenant": "gold"}}, "forward": "pc"},
        "meth": {"match": {"methods": ["DELETE"]}, "forward": "pa"},
        "qry": {"match": {"query": {"v": "2"}}, "forward": "pb"},
        "ck": {"match": {"cookies": {"beta": "1"}}, "forward": "pc"},
        "prio_low": {"match": {"path_prefix": "/prio"}, "forward": "pa"},
        "prio_high": {"priority": 5, "match": {"path_prefix": "/prio"}, "forward": "pb"},
        "canary": {"match": {"path_prefix": "/canary"},
                   "split": [{"pool": "pa", "weight": 90}, {"pool": "pb", "weight": 10}]},
        "catch": {"priority": -10, "forward": "main"},
        "only_host": {"match": {"host": "only.test"}, "forward": "pa"},
    }
    listeners = {
        "web": {"bind": "127.0.0.1:0", "routes": [r for r in routes if r != "only_host"]},
        "strict": {"bind": "127.0.0.1:0", "routes": ["only_host"]},
    }
    return proxy_factory(base_config(pools, routes, listeners))


# ---------------------------------------------------------------- forwarding

def test_forwarding_headers_seen_by_backend(proxy):
    resp = request(proxy.port(), path="/echo?x=1", headers={
        "Host": "shop.example:8443", "X-Forwarded-For": "203.0.113.9",
        "Forwarded": "for=203.0.113.9"})
    assert resp.status == 200
    echo = resp.json()
    assert echo["path"] == "/echo" and echo["query"] == "x=1"
    assert echo["host"] == "shop.example:8443"
    # The client is no trusted proxy (listeners.NAME.forwarded): its own
    # X-Forwarded-For and Forwarded are dropped, not appended to.
    assert echo["x_forwarded_for"] == "127.0.0.1"
    assert echo["x_forwarded_proto"] == "http"
    assert echo["x_forwarded_host"] == "shop.example:8443"
    assert echo["forwarded"] == 'for=127.0.0.1;host="shop.example:8443";proto=http'


def test_forwarding_headers_are_replaced_not_trusted(proxy):
    resp = request(proxy.port(), path="/echo", headers={"X-Forwarded-Proto": "https",
                                                        "X-Forwarded-Host": "evil.example"})
    echo = resp.json()
    assert echo["x_forwarded_proto"] == "http"
    assert echo["x_forwarded_host"] == f"127.0.0.1:{proxy.port()}"


def test_request_id_kept_when_sane(proxy):
    resp = request(proxy.port(), path="/echo", headers={"X-Request-Id": "trace-42.a"})
    assert resp.request_id == "trace-42.a"
    assert resp.json()["request_id"] == "trace-42.a"
    assert proxy.event("trace-42.a")["status"] == 200


@pytest.mark.parametrize("sent", [None, "has spaces and <tags>", "x" * 300])
def test_request_id_generated_otherwise(proxy, sent):
    headers = {"X-Request-Id": sent} if sent else {}
    resp = request(proxy.port(), path="/echo", headers=headers)
    rid = resp.request_id
    assert rid and rid != sent
    assert resp.json()["request_id"] == rid
    assert proxy.event(rid)["request_id"] == rid


def test_hop_by_hop_headers_are_stripped(proxy):
    resp = request(proxy.port(), path="/echo", headers={
        "Connection": "keep-alive, X-Private", "X-Private": "secret", "Keep-Alive": "timeout=5",
        "TE": "trailers", "Trailer": "X-T", "Proxy-Authorization": "Basic eA==",
        "Proxy-Connection": "keep-alive", "Upgrade": "h2c", "X-End-To-End": "kept"})
    seen = {k.lower() for k in resp.json()["headers"]}
    for name in ("x-private", "keep-alive", "te", "trailer", "proxy-authorization",
                 "proxy-connection", "upgrade"):
        assert name not in seen, name
    assert "x-end-to-end" in seen
    # The response carries no hop-by-hop headers of the backend either.
    assert "keep-alive" not in resp.headers and "transfer-encoding" not in resp.headers


def test_http10_client_is_answered_and_closed(proxy):
    data = raw(proxy.port(), b"GET /echo HTTP/1.0\r\n\r\n")
    resp = parse_response(data)
    assert resp.status == 200
    assert data.startswith(b"HTTP/1.")
    assert "chunked" not in resp.headers.get("transfer-encoding", "")
    assert resp.headers.get("connection", "").lower() == "close"
    assert json.loads(resp.body)["http_version"] == "1.1"  # the backend hop is 1.1


def test_http10_keep_alive_when_asked(proxy):
    with RawConn(proxy.port()) as conn:
        for _ in range(2):
            conn.send(b"GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            resp = conn.response()
            assert resp.status == 200
            assert resp.headers["connection"].lower() == "keep-alive"


def test_keep_alive_reuse_on_both_sides(proxy):
    port = proxy.port()
    with Session(port) as s:
        responses = [s.get("/static/a") for _ in range(5)]  # pool pc: one backend
    assert all(r.status == 200 for r in responses)
    clients = {proxy.event(r.request_id)["client"] for r in responses}
    assert len(clients) == 1  # one client connection
    backend_conns = {r.json()["connection_id"] for r in responses}
    assert len(backend_conns) == 1  # one pooled backend connection
    assert [r.json()["connection_request"] for r in responses] == sorted(
        r.json()["connection_request"] for r in responses)


def test_pipelined_requests_are_answered_in_order(proxy):
    with RawConn(proxy.port()) as conn:
        conn.send(b"GET /static/1 HTTP/1.1\r\nHost: h\r\n\r\n"
                  b"GET /ping HTTP/1.1\r\nHost: h\r\n\r\n"
                  b"GET /static/3 HTTP/1.1\r\nHost: h\r\n\r\n")
        first, second, third = (conn.response() for _ in range(3))
    assert json.loads(first.body)["path"] == "/static/1"
    assert second.body == b"pong\n"
    assert json.loads(third.body)["path"] == "/static/3"


def test_head_request(proxy):
    with Session(proxy.port()) as s:
        head = s.request("HEAD", "/static/x")
        assert head.status == 200 and head.body == b""
        assert int(head.headers["content-length"]) > 0
        after = s.get("/static/y")  # the connection is still in step
        assert after.json()["path"] == "/static/y"


def test_expect_100_continue_is_relayed(proxy):
    with RawConn(proxy.port()) as conn:
        conn.send(b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        interim = conn.response()
        assert interim.status == 100
        conn.send(b"hello")
        resp = conn.response()
    assert resp.status == 200 and json.loads(resp.body)["bytes"] == 5


# ---------------------------------------------------------------- streaming

def _blocks(total: int, size: int = 64 * 1024):
    block = b"x" * size
    sent = 0
    while sent < total:
        piece = block[:min(size, total - sent)]
        sent += len(piece)
        yield piece


class RssSampler(threading.Thread):
    def __init__(self, proxy):
        super().__init__(daemon=True)
        self.proxy = proxy
        self.peak = 0
        self.stop_flag = threading.Event()

    def run(self):
        while not self.stop_flag.wait(0.02):
            try:
                self.peak = max(self.peak, self.proxy.rss_kb())
            except (OSError, RuntimeError):
                return


def test_large_chunked_upload_is_streamed(proxy):
    total = 50 * 1024 * 1024
    before = proxy.rss_kb()
    sampler = RssSampler(proxy)
    sampler.start()
    try:
        resp = request(proxy.port(), "POST", "/upload", body=_blocks(total),
                       encode_chunked=True, timeout=60,
                       headers={"Transfer-Encoding": "chunked"})
    finally:
        sampler.stop_flag.set()
        sampler.join(2)
    assert resp.status == 200, resp
    result = resp.json()
    assert result["bytes"] == total and result["chunked"] is True
    grown_mb = (sampler.peak - before) / 1024
    assert grown_mb < 20, f"proxy RSS grew by {grown_mb:.1f} MB for a 50 MB upload"
    event = proxy.event(resp.request_id)
    assert event["bytes_in"] == total and event["termination"] == "--"


def test_content_length_upload_is_streamed(proxy):
    total = 8 * 1024 * 1024
    resp = request(proxy.port(), "PUT", "/upload", body=b"y" * total, timeout=30)
    assert resp.status == 200
    assert resp.json()["bytes"] == total
    assert resp.json()["content_length"] == str(total)


# ---------------------------------------------------------------- local answers

def test_fixed_response(proxy):
    resp = request(proxy.port(), path="/ping")
    assert resp.status == 200 and resp.body == b"pong\n"
    assert resp.headers["content-type"].startswith("text/plain")
    assert "x-lblab-error" not in resp.headers
    event = proxy.event(resp.request_id)
    assert event["route"] == "ping" and event["backend"] is None and not event["proxy_error"]


def test_redirect(proxy):
    resp = request(proxy.port(), path="/old/page?a=1", headers={"Host": "site.test"})
    assert resp.status == 301
    assert resp.headers["location"] == "http://site.test/new/old/page?a=1"


def test_no_route_is_a_clear_404(proxy):
    resp = request(proxy.port("strict"), path="/somewhere", headers={"Host": "other.test"})
    assert resp.status == 404
    assert resp.headers["x-lblab-error"] == "no-route"
    body = resp.json()
    assert body["error"] == "no-route"
    assert "strict" in body["message"] and "other.test" in body["message"]
    assert "/somewhere" in body["message"]
    event = proxy.event(resp.request_id)
    assert event["proxy_error"] is True and event["termination"] == "PR" and event["status"] == 404
    # ... and the connection stays usable after a 404
    ok = request(proxy.port("strict"), path="/x", headers={"Host": "only.test"})
    assert ok.status == 200 and ok.backend == "b1"


# ---------------------------------------------------------------- routing

@pytest.mark.parametrize("kwargs, backend, route", [
    ({"headers": {"Host": "api.test"}}, "b1", "host_route"),
    ({"headers": {"Host": "API.test:8080"}}, "b1", "host_route"),  # case and port ignored
    ({"headers": {"Host": "eu.shop.test"}}, "b2", "wild"),
    ({"path": "/static/app.js"}, "b3", "prefix"),
    ({"path": "/items/42"}, "b2", "regex"),
    ({"headers": {"X-Tenant": "gold"}}, "b3", "hdr"),
    ({"method": "DELETE", "path": "/thing"}, "b1", "meth"),
    ({"path": "/search?q=a&v=2"}, "b2", "qry"),
    ({"headers": {"Cookie": "a=0; beta=1"}}, "b3", "ck"),
    ({"path": "/prio/x"}, "b2", "prio_high"),  # priority beats the listener's order
])
def test_route_matching(proxy, kwargs, backend, route):
    kwargs.setdefault("path", "/r")
    resp = request(proxy.port(), **kwargs)
    assert resp.status == 200
    assert resp.backend == backend
    assert proxy.event(resp.request_id)["route"] == route


def test_unmatched_requests_fall_to_the_catch_all(proxy):
    resp = request(proxy.port(), path="/items/abc", headers={"X-Tenant": "silver"})
    assert proxy.event(resp.request_id)["route"] == "catch"


def test_canary_split_ratio(proxy):
    counts = {"b1": 0, "b2": 0}
    with Session(proxy.port()) as s:
        for _ in range(1000):
            counts[s.get("/canary").backend] += 1
    # 10% of 1000: the standard deviation is 9.5, so 55..145 is beyond 4.5 sigma.
    assert 55 <= counts["b2"] <= 145, counts
    events = [e for e in proxy.events() if e.get("route") == "canary"][-5:]
    assert all(e["split"]["weights"] == {"pa": 90, "pb": 10} for e in events)


def test_bodies_relayed_both_ways_with_keep_alive(proxy):
    with Session(proxy.port()) as s:
        for size in (0, 1, 70_000, 300_000):
            resp = s.request("POST", "/upload", body=b"z" * size)
            assert resp.status == 200 and resp.json()["bytes"] == size
        big = s.get("/static/after")
        assert big.status == 200


def test_slow_reader_gets_the_whole_response(proxy, backends):
    # A client that reads slowly pauses the backend (back-pressure), not the proxy.
    with RawConn(proxy.port()) as conn:
        conn.send(b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 200000\r\n\r\n"
                  + b"q" * 200000)
        time.sleep(0.2)
        resp = conn.response()
    assert json.loads(resp.body)["bytes"] == 200000


def test_connection_close_from_client_is_honoured(proxy):
    data = raw(proxy.port(), b"GET /static/c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    resp = parse_response(data)
    assert resp.status == 200 and resp.headers["connection"] == "close"


def test_proxy_survives_and_still_serves(proxy):
    with RawConn(proxy.port()) as conn:
        conn.send(b"GET /echo HTTP/1.1\r\nHost: h\r\n\r\n")
        assert conn.response().status == 200
        conn.send(b"\x00\xff garbage\r\n\r\n")
        assert conn.rest().startswith(b"HTTP/1.1 400 ")
    assert request(proxy.port(), path="/echo").status == 200
