"""HTTP/2 from clients, end to end: curl (--http2-prior-knowledge, --http2 over TLS by
ALPN), HTTP/1.1 on the same listener, each stream balanced and logged as a request, the
error contract per stream, GOAWAY on shutdown, and each flood protection at frame level."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import time

import h2.events
import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import ContinuationFrame, HeadersFrame, PingFrame, RstStreamFrame, \
    SettingsFrame

from labs.backend.testing import free_port
from tests.proxy.e2e.support import backend_entry
from tests.proxy.http2.h2client import H2Client

CURL = ["curl", "-sS", "--max-time", "10"]


def config(backends, *, http2=True, tls=None, pools=None, **listener) -> dict:
    web = {"bind": "127.0.0.1:0", "routes": ["all", "dead"], "http2": http2, **listener}
    if tls is not None:
        web["tls"] = tls
    return {
        "admin": {"listen": "127.0.0.1:0"},
        "listeners": {"web": web},
        "routes": {"dead": {"priority": 1, "match": {"path_prefix": "/dead"}, "forward": "dead"},
                   "all": {"forward": "p"}},
        "pools": pools or {
            "p": {"backends": [backend_entry(backends[n]) for n in ("b1", "b2", "b3")]},
            "dead": {"retries": 0, "backends": [
                {"name": "gone", "address": f"127.0.0.1:{free_port()}"}]},
        },
    }


@pytest.fixture(scope="module")
def proxy(proxy_factory, backends):
    return proxy_factory(config(backends, http2={"max_resets": 20, "max_control_frames": 20,
                                                 "max_continuation_frames": 8},
                                limits={"max_header_bytes": 4096}))


def curl(*args: str) -> str:
    done = subprocess.run([*CURL, *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_curl_has_http2():
    features = subprocess.run(["curl", "-V"], capture_output=True, text=True).stdout
    assert "HTTP2" in features


def test_curl_prior_knowledge(proxy):
    out = curl("--http2-prior-knowledge", f"http://127.0.0.1:{proxy.port('web')}/pk",
               "-w", "\\n%{http_version}")
    body, version = out.rsplit("\n", 1)
    assert version == "2" and json.loads(body)["path"] == "/pk"


def test_fields_unique_to_a_response_stay_out_of_the_hpack_table(proxy):
    """x-request-id (one per request) and date (one per second) are sent "never indexed"
    (RFC 7541 6.2.3): the client's decoding table keeps only fields that repeat."""
    client = H2Client(proxy.port("web"))
    sids = [client.get(f"/hpack/{i}") for i in range(8)]
    for sid in sids:
        client.response(sid)
    client.close()
    heads = [e.headers for e in client.events if isinstance(e, h2.events.ResponseReceived)]
    assert len(heads) == 8
    ids = set()
    for headers in heads:
        fields = {bytes(h[0]): h for h in headers}
        assert not fields[b"x-request-id"].indexable and not fields[b"date"].indexable
        assert fields[b"content-type"].indexable  # the same in every response: indexed
        ids.add(fields[b"x-request-id"][1])
    assert len(ids) == 8
    table = [name for name, _ in client.conn.decoder.header_table.dynamic_entries]
    assert b"content-type" in table
    assert b"x-request-id" not in table and b"date" not in table


def test_one_connection_spreads_over_the_backends(proxy):
    client = H2Client(proxy.port("web"))
    sids = [client.get(f"/spread/{i}") for i in range(6)]  # six streams at once
    answers = [client.response(sid) for sid in sids]
    client.close()
    assert [h[b":status"] for h, _ in answers] == [b"200"] * 6
    assert sorted(json.loads(body)["backend"] for _, body in answers) == \
        ["b1", "b1", "b2", "b2", "b3", "b3"]
    events = proxy.wait_events(lambda e: e.get("type") == "request"
                               and e["path"].startswith("/spread/"), count=6)
    assert {e["backend"] for e in events} == {"b1", "b2", "b3"}
    assert all(e["status"] == 200 and e["termination"] == "--" for e in events)
    assert all(e["protocol"] == "h2" for e in events)  # the dashboard labels them HTTP/2
    assert sorted(e["stream_id"] for e in events) == sorted(sids)
    conn = proxy.wait_events(lambda e: e.get("type") == "connection" and e.get("kind") == "h2"
                             and e.get("streams") == 6)
    assert conn[0]["listener"] == "web"


def test_http11_still_served_on_the_same_listener(proxy):
    out = curl("--http1.1", f"http://127.0.0.1:{proxy.port('web')}/old",
               "-w", "\\n%{http_version}")
    body, version = out.rsplit("\n", 1)
    assert version == "1.1" and json.loads(body)["http_version"] == "1.1"


def test_each_stream_gets_the_error_contract(proxy):
    out = curl("--http2-prior-knowledge", "-i", f"http://127.0.0.1:{proxy.port('web')}/dead")
    assert out.startswith("HTTP/2 503")  # connect-failed: see docs/errors.md
    assert "x-lblab-error: connect-failed" in out
    rid = re.search(r"x-request-id: (\S+)", out).group(1)
    event = proxy.event(rid)
    assert event["status"] == 503 and event["proxy_error"] and event["backend"] == "gone"


def test_request_body_streams_to_the_backend(proxy, tmp_path):
    # Bigger than the stream window (64 KiB): flow control has to open it again.
    body = tmp_path / "body"
    body.write_bytes(b"x" * 200_000)
    out = curl("--http2-prior-knowledge", "--data-binary", f"@{body}",
               f"http://127.0.0.1:{proxy.port('web')}/upload")
    assert json.loads(out)["bytes"] == 200_000


def test_h2_by_alpn_over_tls_and_http11_fallback(tls_proxy, backends, lab_pki):
    proxy = tls_proxy(config(backends, tls={"certificates": [{"pki": "www.lab.test"}],
                                            "alpn": ["h2", "http/1.1"]}))
    port = proxy.port("web")
    common = ["--cacert", str(lab_pki / "ca.pem"), "--resolve", f"www.lab.test:{port}:127.0.0.1",
              f"https://www.lab.test:{port}/tls", "-w", "\\n%{http_version}", "-D", "-"]
    out = curl("--http2", *common)
    assert out.rsplit("\n", 1)[1] == "2"
    rid = re.search(r"x-request-id: (\S+)", out).group(1)
    event = proxy.event(rid)
    assert event["tls"]["alpn"] == "h2" and event["backend"] in ("b1", "b2", "b3")
    assert '"x_forwarded_proto": "https"' in out
    out = curl("--http1.1", *common)
    assert out.rsplit("\n", 1)[1] == "1.1"


def test_settings_advertise_the_limits(proxy):
    client = H2Client(proxy.port("web"))
    client.read(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
    settings = client.conn.remote_settings
    assert settings.max_header_list_size == 4096
    assert settings.max_concurrent_streams == 100
    sid = client.get("/hello")
    headers, body = client.response(sid)
    assert headers[b":status"] == b"200" and json.loads(body)["path"] == "/hello"
    client.close()


def _calm(proxy, client: H2Client, kind: str) -> None:
    goaway = client.goaway()
    assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    events = proxy.wait_events(lambda e: e.get("type") == "connection" and e.get("kind") == "h2"
                               and (e.get("error") or "").startswith(kind))
    assert events[-1]["closed_by"] == "proxy"


def test_rapid_reset_gets_goaway_enhance_your_calm(proxy):
    client = H2Client(proxy.port("web"))

    def reset(n: int, path: str) -> None:
        for _ in range(n):
            sid = client.get(path)
            client.send_raw(RstStreamFrame(sid, error_code=ErrorCodes.CANCEL).serialize())

    # Under the cap: each reset stream is a request the client ended (termination C.);
    # the backend takes 3 s to answer, so the reset always comes first.
    reset(5, "/work?ms=3000&r=few")
    proxy.wait_events(lambda e: e.get("type") == "request" and e.get("path") ==
                      "/work?ms=3000&r=few" and e["termination"][0] == "C", count=5)
    reset(20, "/work?ms=3000&r=many")  # 25 in the period: max_resets is 20
    _calm(proxy, client, "rapid-reset")


def test_continuation_flood_gets_goaway(proxy):
    client = H2Client(proxy.port("web"))
    block = client.conn.encoder.encode([(b":method", b"GET"), (b":path", b"/"),
                                        (b":scheme", b"http"), (b":authority", b"x")])
    client.send_raw(HeadersFrame(1, block[:3]).serialize())  # no END_HEADERS
    for _ in range(20):
        client.send_raw(ContinuationFrame(1, b"\x00").serialize())
    _calm(proxy, client, "continuation-flood")


@pytest.mark.parametrize("frame,kind", [
    (PingFrame(0, b"abcdefgh"), "ping-flood"),
    (SettingsFrame(0), "settings-flood"),
])
def test_control_frame_floods_get_goaway(proxy, frame, kind):
    client = H2Client(proxy.port("web"))
    client.send_raw(frame.serialize() * 30)  # max_control_frames is 20
    _calm(proxy, client, kind)


def test_hpack_bomb_over_the_header_list_size(proxy):
    """A header repeated by HPACK reference: a small block that decodes past the limit."""
    client = H2Client(proxy.port("web"))
    value = b"v" * 1500
    client.get("/bomb", extra=[(b"x-big", value)] * 4)  # 6000 bytes decoded, >4096
    goaway = client.goaway()
    assert goaway.error_code in (ErrorCodes.ENHANCE_YOUR_CALM, ErrorCodes.PROTOCOL_ERROR,
                                 ErrorCodes.COMPRESSION_ERROR)
    proxy.wait_events(lambda e: e.get("type") == "connection" and e.get("kind") == "h2"
                      and "max_header_bytes" in (e.get("error") or ""))


def test_goaway_on_shutdown(proxy_factory, backends):
    proxy = proxy_factory(config(backends))
    client = H2Client(proxy.port("web"))
    headers, _ = client.response(client.get("/before"))
    assert headers[b":status"] == b"200"
    proxy.process.send_signal(signal.SIGTERM)
    goaway = client.goaway()
    assert goaway.error_code == ErrorCodes.NO_ERROR
    assert goaway.last_stream_id == 1
    proxy.process.wait(10)


def test_stickiness_retries_and_timeouts_per_stream(proxy_factory, backends):
    """The HTTP/1.1 pipeline per stream: a sticky cookie, a retry past a dead backend,
    and a response timeout (504), all on one HTTP/2 connection."""
    dead = {"name": "gone", "address": f"127.0.0.1:{free_port()}"}
    proxy = proxy_factory({
        "admin": {"listen": "127.0.0.1:0"},
        "listeners": {"web": {"bind": "127.0.0.1:0", "http2": True,
                              "routes": ["slow", "sticky", "all"]}},
        "routes": {
            "slow": {"match": {"path_prefix": "/work"}, "forward": "slow"},
            "sticky": {"match": {"path_prefix": "/sticky"}, "forward": "sticky"},
            "all": {"forward": "retry"}},
        "pools": {
            "retry": {"retries": 1, "backends": [dead, backend_entry(backends["b1"])]},
            "sticky": {"sticky": {"mode": "cookie"},
                       "backends": [backend_entry(backends[n]) for n in ("b2", "b3")]},
            "slow": {"timeouts": {"response_header": "300ms"},
                     "backends": [backend_entry(backends["b1"], name="b1-slow")]},
        }})
    client = H2Client(proxy.port("web"))
    # Retry: the dead backend refuses, the request goes on to b1.
    for _ in range(2):
        headers, body = client.response(client.get("/retry"))
        assert headers[b":status"] == b"200" and json.loads(body)["backend"] == "b1"
    retried = proxy.wait_events(lambda e: e.get("path") == "/retry" and e.get("retries"))
    assert retried[0]["retries"][0]["backend"] == "gone"
    # Sticky: the cookie set on the first answer pins the next streams.
    headers, body = client.response(client.get("/sticky"))
    first = json.loads(body)["backend"]
    cookie = headers[b"set-cookie"].split(b";")[0]
    for _ in range(4):
        _, body = client.response(client.get("/sticky", extra=[(b"cookie", cookie)]))
        assert json.loads(body)["backend"] == first
    # Timeout: b1 answers /work?ms=2000 after 2 s; the stream gets 504, the connection lives on.
    headers, body = client.response(client.get("/work?ms=2000"))
    assert headers[b":status"] == b"504"
    assert json.loads(body)["error"] == "response-timeout"
    headers, _ = client.response(client.get("/retry"))
    assert headers[b":status"] == b"200"
    client.close()


def test_a_stream_whose_body_stalls_gets_408(proxy_factory, backends):
    proxy = proxy_factory(config(backends, timeouts={"request_body": "300ms"}))
    client = H2Client(proxy.port("web"))
    sid = client.conn.get_next_available_stream_id()
    client.conn.send_headers(sid, [(b":method", b"POST"), (b":path", b"/upload"),
                                   (b":scheme", b"http"), (b":authority", b"lab.test")])
    client.conn.send_data(sid, b"first bytes, then nothing")
    client.flush()
    headers, body = client.response(sid)
    assert headers[b":status"] == b"408"
    assert json.loads(body)["error"] == "body-timeout"
    event = proxy.event(headers[b"x-request-id"].decode())
    assert event["termination"] == "PR" and "timeouts.request_body" in event["error"]
    # The connection is fine: the next stream is answered.
    headers, _ = client.response(client.get("/after"))
    assert headers[b":status"] == b"200"
    client.close()


def test_open_connection_and_its_streams_are_listed(proxy):
    client = H2Client(proxy.port("web"))
    sids = [client.get("/work?ms=1500") for _ in range(2)]
    deadline = time.monotonic() + 5
    while True:
        _, body = proxy.admin("GET", "/connections")
        h2conns = [c for c in body["connections"] if c["kind"] == "h2"
                   and len(c.get("streams", [])) == 2]
        if h2conns or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert h2conns, body
    assert {s["stream_id"] for s in h2conns[0]["streams"]} == set(sids)
    assert all(s["backend"] in ("b1", "b2", "b3") for s in h2conns[0]["streams"])
    for sid in sids:
        assert client.response(sid)[0][b":status"] == b"200"
    client.close()
