"""HTTP/1.1 behaviour of a real backend process: echo, keep-alive, pipelining, bodies."""

import http.client
import json
import time

import pytest

from labs.backend.testing import start_backend

from .wire import connect, eventually, exchange, read_response

pytestmark = pytest.mark.timeout(30)


def test_echo_reports_what_it_saw(backend):
    conn = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=3)
    try:
        conn.request("GET", "/api/x?a=1&b=2", headers={
            "X-Forwarded-For": "203.0.113.7, 10.0.0.1", "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "shop.example", "Forwarded": "for=203.0.113.7;proto=https",
            "X-Request-Id": "req-123", "X-Custom": "yes",
        })
        local_port = conn.sock.getsockname()[1]
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status == 200
    assert resp.getheader("X-Backend") == "t1"
    assert resp.getheader("X-Request-Id") == "req-123"
    assert resp.getheader("Content-Type") == "application/json"
    seen = json.loads(body)
    assert seen["backend"] == "t1"
    assert (seen["method"], seen["path"], seen["query"]) == ("GET", "/api/x", "a=1&b=2")
    assert seen["client"] == f"127.0.0.1:{local_port}"
    assert seen["x_forwarded_for"] == "203.0.113.7, 10.0.0.1"
    assert seen["x_forwarded_proto"] == "https"
    assert seen["x_forwarded_host"] == "shop.example"
    assert seen["forwarded"] == "for=203.0.113.7;proto=https"
    assert seen["request_id"] == "req-123"
    assert seen["headers"]["X-Custom"] == "yes"
    assert seen["http_version"] == "1.1"
    assert seen["body_bytes"] == 0


def test_any_path_and_method_is_echoed(backend):
    r = backend.get("/static/app.js")
    assert r.status == 200 and r.json()["path"] == "/static/app.js"
    r = backend.request("POST", "/api/orders", body=b"x" * 1000)
    assert r.status == 200
    assert (r.json()["method"], r.json()["body_bytes"]) == ("POST", 1000)
    assert r.headers["X-Backend"] == "t1"
    r = backend.request("GET", "/")
    assert r.json()["request_id"] is None


def test_repeated_headers_are_joined(backend):
    r = exchange(backend.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.1.1.1\r\n"
                               b"X-Forwarded-For: 2.2.2.2\r\nConnection: close\r\n\r\n")
    assert r.json()["x_forwarded_for"] == "1.1.1.1, 2.2.2.2"
    assert r.json()["headers"]["X-Forwarded-For"] == "1.1.1.1, 2.2.2.2"


def test_head_has_headers_but_no_body(backend):
    with connect(backend.port) as sock, sock.makefile("rb") as f:
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        head = read_response(f, head=True)
        assert head.status == 200 and int(head.headers["content-length"]) > 0
        assert head.headers["x-backend"] == "t1"
        after = read_response(f)  # the next response starts right after the headers
        assert after.json()["path"] == "/after"


def test_keep_alive_serves_several_requests_on_one_connection(backend):
    conn = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=3)
    try:
        seen = []
        for path in ("/a", "/b", "/work?ms=1", "/c"):
            conn.request("GET", path)
            resp = conn.getresponse()
            assert resp.status == 200 and resp.getheader("Connection") is None
            seen.append(resp.read())
        echoes = [json.loads(b) for b in seen if b"connection_id" in b]
        assert len({e["connection_id"] for e in echoes}) == 1
        assert [e["connection_request"] for e in echoes] == [1, 2, 4]
    finally:
        conn.close()


def test_pipelined_requests_are_answered_in_order(backend):
    reqs = b"".join(
        f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for p in ("/work?ms=50", "/one", "/two")
    ) + b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /last HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(backend.port) as sock, sock.makefile("rb") as f:
        sock.sendall(reqs)
        replies = [read_response(f) for _ in range(5)]
    assert replies[0].json()["work_ms"] == 50
    assert [r.json().get("path") for r in replies[1:3]] == ["/one", "/two"]
    assert replies[3].json()["bytes"] == 3
    assert replies[4].json()["path"] == "/last"


def test_http10_closes_unless_keep_alive(backend):
    with connect(backend.port) as sock, sock.makefile("rb") as f:
        sock.sendall(b"GET /old HTTP/1.0\r\n\r\n")
        r = read_response(f)
        assert r.status == 200 and r.headers.get("connection") == "close"
        assert r.json()["http_version"] == "1.0"
        assert f.read() == b""  # closed by the server
    with connect(backend.port) as sock, sock.makefile("rb") as f:
        sock.sendall(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = read_response(f)
        assert r.headers.get("connection") == "keep-alive"
        sock.sendall(b"GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert read_response(f).json()["connection_request"] == 2


def test_connection_close_is_honoured(backend):
    with connect(backend.port) as sock, sock.makefile("rb") as f:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_response(f).headers["connection"] == "close"
        assert f.read() == b""


def test_malformed_request_gets_400_with_x_backend(backend):
    r = exchange(backend.port, b"THIS IS NOT HTTP\r\n\r\n")
    assert r.status == 400
    assert r.headers["x-backend"] == "t1"
    assert "malformed HTTP request" in r.json()["error"]


def test_chunked_upload_is_counted_chunk_by_chunk(backend):
    before = backend.stats()
    with connect(backend.port) as sock, sock.makefile("rb") as f:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"X-Request-Id: up-1\r\n\r\n")
        total = 0
        for size in (10, 70_000, 1, 300_000):
            sock.sendall(f"{size:x}\r\n".encode() + b"z" * size + b"\r\n")
            total += size
            time.sleep(0.01)
        sock.sendall(b"0\r\n\r\n")
        r = read_response(f)
    body = r.json()
    assert r.status == 200
    assert body["bytes"] == total and body["chunked"] is True and body["chunks"] >= 4
    assert body["request_id"] == "up-1" and body["backend"] == "t1"
    after = backend.stats()
    assert after["uploads_completed"] == before["uploads_completed"] + 1
    assert after["upload_bytes"] == before["upload_bytes"] + total


def test_large_content_length_upload(backend):
    size = 8 * 1024 * 1024
    block = b"q" * 65536

    def body():
        for _ in range(size // len(block)):
            yield block

    conn = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=5)
    try:
        conn.request("POST", "/upload", body=body(), headers={"Content-Length": str(size)})
        resp = conn.getresponse()
        result = json.loads(resp.read())
    finally:
        conn.close()
    assert result["bytes"] == size and result["chunked"] is False
    assert result["content_length"] == str(size)


def test_expect_100_continue(backend):
    with connect(backend.port) as sock, sock.makefile("rb") as f:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        assert f.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert f.readline() == b"\r\n"
        sock.sendall(b"hello")
        assert read_response(f).json()["bytes"] == 5


def test_body_of_an_early_answer_is_discarded_and_the_connection_reused(backend):
    with connect(backend.port) as sock, sock.makefile("rb") as f:
        sock.sendall(b"GET /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"a" * 1000)
        assert read_response(f).status == 405  # answered before the body arrived
        sock.sendall(b"a" * 99000)
        sock.sendall(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        r = read_response(f)
        assert r.json()["path"] == "/next" and r.json()["connection_request"] == 2


def test_early_answer_without_100_continue_closes(backend):
    with connect(backend.port) as sock, sock.makefile("rb") as f:
        sock.sendall(b"GET /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        r = read_response(f)
        assert r.status == 405 and r.headers["connection"] == "close"
        assert f.read() == b""


def test_upgrade_requests_are_answered_as_plain_http_then_closed(backend):
    with connect(backend.port) as sock, sock.makefile("rb") as f:
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        r = read_response(f)
        assert r.status == 200 and r.json()["path"] == "/ws"
        assert f.read() == b""


def test_websocket_on_ws_greets_echoes_pongs_and_closes(backend):
    import websocket

    ws = websocket.create_connection(f"ws://127.0.0.1:{backend.port}/ws?user=u1", timeout=5)
    try:
        assert json.loads(ws.recv()) == {"backend": backend.name}
        ws.send("hello")
        assert ws.recv() == "hello"
        ws.send_binary(b"\x00\x01")
        assert ws.recv() == b"\x00\x01"
        ws.ping(b"p")
        opcode, frame = ws.recv_data_frame(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_PONG and frame.data == b"p"
    finally:
        ws.close()  # sends a close frame and waits for the backend's close
    assert backend.get("/").status == 200  # other connections still speak HTTP


def test_websocket_handshakes_are_app_requests_with_their_faults(backend):
    """A handshake holds a worker for latency_ms (loading the user's session); one beyond
    max_in_flight is shed like any request, and the connection closes."""
    import websocket

    backend.control({"latency_ms": 400, "max_in_flight": 1, "shed": "503"})
    url = f"ws://127.0.0.1:{backend.port}/ws"
    second = websocket.WebSocket()
    second.settimeout(5)
    with connect(backend.port) as sock, sock.makefile("rb") as f:
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                     b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        eventually(lambda: backend.stats()["in_flight"] >= 1)  # its session is loading
        with pytest.raises(websocket.WebSocketBadStatusException) as shed:
            second.connect(url)
        assert shed.value.status_code == 503
        assert f.readline().startswith(b"HTTP/1.1 101 ")  # the first one, once loaded
    backend.clear_faults()


def test_upload_needs_post(backend):
    r = backend.get("/upload")
    assert r.status == 405 and r.headers["Allow"] == "POST, PUT"


def test_client_leaving_mid_upload_counts_as_aborted(backend):
    before = backend.stats()["aborted_uploads"]
    with connect(backend.port) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
                     + b"a" * 5000)
        eventually(lambda: backend.stats()["in_flight"] >= 1)
    eventually(lambda: backend.stats()["aborted_uploads"] == before + 1)
    eventually(lambda: backend.stats()["in_flight"] == 0)


def test_work_takes_the_time_it_says(backend):
    started = time.monotonic()
    r = backend.get("/work?ms=200&cpu_ms=20")
    elapsed = time.monotonic() - started
    body = r.json()
    assert r.status == 200 and body["backend"] == "t1"
    assert (body["work_ms"], body["cpu_ms"]) == (200, 20)
    assert body["took_ms"] >= 220
    assert elapsed >= 0.22
    bad = backend.get("/work?ms=soon")
    assert bad.status == 400
    assert bad.json()["error"] == "ms must be a number of milliseconds, got 'soon' (try /work?ms=200)"


def test_idle_keep_alive_connections_are_closed():
    with start_backend("idle", None, "127.0.0.1", "--keepalive-timeout", "0.2") as b:
        with connect(b.port) as sock, sock.makefile("rb") as f:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(f).status == 200
            assert f.read() == b""  # closed after 0.2 s idle (the read would time out otherwise)
