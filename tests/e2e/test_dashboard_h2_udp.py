"""HTTP/2, gRPC and UDP on the live dashboard, in headless Chromium against a real sandbox,
bridge and daphne. The sandbox's web listener is given cleartext HTTP/2 and a UDP listener
is added (PUT /config); real clients then use them: two slow HTTP/2 streams on one
connection (the h2 library), curl --http2-prior-knowledge, the grpcio client, and Python
UDP sockets. The page must list the HTTP/2 connection with its live streams and the UDP
flow with its datagrams, then label the decisions (h2 and stream id, gRPC status, the
flow's end and why)."""
import json
import re
import socket
import subprocess
import urllib.request

import grpc
from playwright.sync_api import Page, expect

from labs.backend.testing import start_backend, start_backends
from tests.e2e.test_accessibility import axe_violations
from tests.e2e.test_dashboard_l4 import admin
from tests.explainer.parts import wait_until
from tests.proxy.http2.h2client import H2Client

IDENTITY = {"request_serializer": lambda m: m, "response_deserializer": lambda m: m}


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def udp_events(admin_url: str) -> list[str]:
    """The proxy's recent events about UDP flows (GET /events?replay, read until quiet)."""
    lines = []
    try:
        with urllib.request.urlopen(f"{admin_url}/events?replay=300", timeout=2) as resp:
            while True:
                line = resp.readline().decode()
                if '"udp"' in line:
                    lines.append(line[:400])
    except OSError:
        pass  # the stream stays open: its read timeout ends the replay
    return lines


def seconds(text: str) -> float:
    m = re.match(r"([\d.]+) s$", text.strip())
    assert m, text
    return float(m.group(1))


def test_http2_streams_grpc_and_udp_flows_are_drawn(page: Page, stack, artifacts):
    sb = stack.sandbox
    proxy_port = int(sb.proxy_url.rsplit(":", 1)[1])
    slow = start_backend("slow", None, "127.0.0.1", "--faults", json.dumps({"latency_ms": 6000}))
    udp = start_backends(["u1", "u2"], "--mode", "udp")
    grpc_backend = start_backend("g1", None, "127.0.0.1", "--mode", "grpc")
    udp_port = free_udp_port()
    original = admin(f"{sb.admin_url}/config")
    config = json.loads(json.dumps(original))
    config["listeners"]["web"]["http2"] = True
    config["pools"]["slow"] = {"backends": [{"name": "slow", "address": f"127.0.0.1:{slow.port}"}]}
    config["pools"]["rpc"] = {"protocol": "h2", "backends": [
        {"name": "g1", "address": f"127.0.0.1:{grpc_backend.port}"}]}
    config["routes"]["slow"] = {"match": {"path_prefix": "/h2-slow"}, "forward": "slow"}
    config["routes"]["rpc"] = {"match": {"path_prefix": "/lblab.toy.Echo/"}, "forward": "rpc"}
    config["listeners"]["web"]["routes"] = ["slow", "rpc", *config["listeners"]["web"]["routes"]]
    config["pools"]["game"] = {"backends": [{"name": h.name, "address": f"127.0.0.1:{h.port}"}
                                            for h in udp]}
    config["listeners"]["game"] = {"bind": f"127.0.0.1:{udp_port}", "protocol": "udp",
                                   "pool": "game", "udp": {"flow_idle": "8s", "max_flows": 10}}
    admin(f"{sb.admin_url}/config", "PUT", config)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    client = None
    try:
        page.goto(stack.web_url + "/")
        expect(page.locator("#feed-status")).to_have_text("live (WebSocket)", timeout=10_000)
        expect(page.locator("#topology svg")).to_contain_text("pool game", timeout=10_000)

        # Two slow requests on one HTTP/2 connection: one row, its two streams in flight.
        client = H2Client(proxy_port)
        sids = [client.get("/h2-slow/one"), client.get("/h2-slow/two")]
        here = "127.0.0.1:%d" % client.sock.getsockname()[1]
        row = page.locator("#conn-rows tr", has_text=here)
        expect(row).to_be_visible(timeout=5_000)
        expect(row.locator(".kind-chip")).to_have_text("HTTP/2")
        expect(row).to_contain_text("2 streams live")
        streams = row.locator(".h2-streams li")
        expect(streams).to_have_count(2)
        expect(streams.nth(0)).to_contain_text(f"#{sids[0]}")
        expect(row).to_contain_text("GET /h2-slow/one")
        expect(row).to_contain_text("GET /h2-slow/two")
        expect(streams.nth(0).locator("b")).to_have_text("slow")
        page.locator("#open-connections").screenshot(path=artifacts / "h2-streams-open.png")
        assert axe_violations(page) == []  # the streams list inside the table
        answers = [client.response(sid) for sid in sids]
        assert [h[b":status"] for h, _ in answers] == [b"200", b"200"]
        expect(row).to_contain_text("0 streams live", timeout=5_000)  # open, idle
        client.close()
        client = None
        expect(page.locator("#conn-rows tr", has_text=here)).to_have_count(0, timeout=5_000)

        # curl with prior knowledge, and gRPC calls (an OK one and an unknown method).
        out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null",
                              "-w", "%{http_version}", f"{sb.proxy_url}/h2-curl"],
                             capture_output=True, text=True, timeout=10)
        assert out.stdout == "2", out
        with grpc.insecure_channel(f"127.0.0.1:{proxy_port}") as channel:
            reply = channel.unary_unary("/lblab.toy.Echo/Whoami", **IDENTITY)(b"", timeout=5)
            assert b"g1" in reply
            try:
                channel.unary_unary("/lblab.toy.Echo/Nope", **IDENTITY)(b"", timeout=5)
                raise AssertionError("an unknown gRPC method answered")
            except grpc.RpcError as exc:
                nope = exc.code()
        page.select_option("#f-kind", "h2")
        stream_rows = page.locator("#stream li button")
        one = stream_rows.filter(has_text="GET /h2-slow/one")
        expect(one).to_be_visible(timeout=5_000)
        expect(one.locator(".proto-chip")).to_have_text(f"h2 #{sids[0]}")
        expect(one).to_contain_text(f"h2 stream {sids[0]}")
        expect(stream_rows.filter(has_text="GET /h2-curl")).to_contain_text("h2 #1")
        conn_row = stream_rows.filter(has_text=f"HTTP/2 {here}")
        expect(conn_row).to_contain_text("2 streams")
        expect(conn_row).to_contain_text("closed by the client")
        ok_call = stream_rows.filter(has_text="POST /lblab.toy.Echo/Whoami")
        expect(ok_call.locator(".grpc-chip")).to_have_text("gRPC 0")
        expect(ok_call).to_contain_text("gRPC 0 OK")
        bad_call = stream_rows.filter(has_text="POST /lblab.toy.Echo/Nope")
        expect(bad_call.locator(".grpc-chip")).to_have_text(f"gRPC {nope.value[0]}")
        expect(bad_call).to_contain_text(nope.name)
        expect(stream_rows.filter(has_text="UDP flow")).to_have_count(0)  # filtered out
        page.locator(".stream").screenshot(path=artifacts / "h2-stream-labels.png")
        assert axe_violations(page) == []  # the h2 and gRPC chips keep WCAG AA
        bad_call.click()
        detail = page.locator("#detail")
        expect(detail).to_contain_text(f"gRPC {nope.value[0]} {nope.name}")
        expect(detail).to_contain_text("HTTP/2, stream")
        conn_row.click()
        expect(detail).to_contain_text(f"HTTP/2 {here} · 2 streams")
        expect(detail).to_contain_text("Each stream is a request of its own")
        expect(page.locator("#request-diagram svg")).to_contain_text("HTTP/2 connection",
                                                                     timeout=5_000)

        # A UDP flow: three datagrams each way, listed with its idle time, then it ends idle.
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(3)
        sock.bind(("127.0.0.1", 0))
        me = "127.0.0.1:%d" % sock.getsockname()[1]
        try:
            replies = []
            for word in (b"one", b"two", b"three"):
                sock.sendto(word, ("127.0.0.1", udp_port))
                replies.append(sock.recv(100).decode())
            backend = replies[0].split()[0]
            assert backend in ("u1", "u2") and replies == [f"{backend} one", f"{backend} two",
                                                           f"{backend} three"]
            flow = page.locator("#conn-rows tr", has_text=me)
            expect(flow).to_be_visible(timeout=5_000)
            expect(flow.locator(".kind-chip")).to_have_text("UDP flow")
            expect(flow).to_contain_text(f"game → {backend} (pool game)")
            expect(flow.locator(".dgrams")).to_have_text("3 / 3 datagrams", timeout=5_000)
            expect(flow).to_contain_text("11 B / 20 B")
            first = seconds(flow.locator("td.idle").inner_text())
            # The idle timer runs (a poll may pull it back by the bridge's delay, < 1 s; polled,
            # as a busy machine's timers lag).
            assert wait_until(lambda: seconds(flow.locator("td.idle").inner_text()) >= first + 0.5,
                              timeout=5, what=f"the flow's idle time to pass {first + 0.5} s")
            page.locator("#open-connections").screenshot(path=artifacts / "udp-flow-open.png")
            assert axe_violations(page) == []
            expect(page.locator("#conn-rows tr", has_text=me)).to_have_count(0, timeout=12_000)
        finally:
            sock.close()
        page.select_option("#f-kind", "udp")
        ended = page.locator("#stream li button", has_text=f"UDP flow {me}")
        try:
            expect(ended).to_be_visible(timeout=5_000)
        except AssertionError:
            # What the proxy said about UDP flows, and what the page shows, for the report.
            print("proxy:", *udp_events(sb.admin_url), sep="\n  ")
            print("stream:", page.locator("#stream").inner_text()[:2000])
            raise
        expect(ended).to_contain_text("ended idle")
        expect(ended).to_contain_text("udp.flow_idle")
        expect(ended.locator(".status")).to_have_text("ok")
        ended.click()
        expect(detail).to_contain_text(f"UDP flow {me} → {backend}")
        expect(detail).to_contain_text("the balancer picked once, for the first datagram")
        expect(detail).to_contain_text("UDP flow: every datagram from one client address")
        path = page.locator("#request-diagram svg")
        expect(path).to_contain_text("first datagram: a new flow", timeout=5_000)
        expect(path).to_contain_text("ended idle")
        page.screenshot(path=artifacts / "udp-flow-ended.png", full_page=True)
        page.select_option("#f-kind", "")
        assert errors == []
    finally:
        if client is not None:
            client.close()
        admin(f"{sb.admin_url}/config", "PUT", original)
        for handle in (slow, grpc_backend, *udp):
            handle.stop()
