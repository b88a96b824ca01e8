"""L4 on the live dashboard, in headless Chromium against a real sandbox, bridge and daphne:
flip the web listener to L4 from the page, hold a raw TCP connection open through the
proxy and watch it age in the open-connections panel, see its connection event in the
stream once it closes, flip back to L7; a refused flip shows the proxy's reason."""
import asyncio
import json
import re
import socket
import threading
import urllib.request
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from playwright.sync_api import Page, expect

from explainer import diagrams
from tests.explainer.parts import REPO, wait_until
from tests.explainer.test_l4_diagrams import CONNECTION, STATE

MERMAID = REPO / "static" / "vendor" / "mermaid-11.17.2" / "mermaid.min.js"


def admin(url: str, method: str = "GET", body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    if method == "GET" and url.endswith("/config"):
        url += "?format=json"
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=3) as resp:
        return json.load(resp)


def raw_connection(proxy_url: str) -> tuple[socket.socket, str]:
    """A TCP connection through the proxy with one HTTP exchange on it, left open."""
    parts = urlsplit(proxy_url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=3)
    sock.sendall(b"GET /l4-hello HTTP/1.1\r\nHost: lab\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    assert data.startswith(b"HTTP/1.1 200")
    # At L4 nothing is added: the toy backend answers without the proxy's X-Request-Id.
    assert b"x-request-id" not in data.split(b"\r\n\r\n")[0].lower()
    host, port = sock.getsockname()[:2]
    return sock, f"{host}:{port}"


def age_seconds(text: str) -> float:
    m = re.match(r"([\d.]+) s$", text.strip())
    assert m, text
    return float(m.group(1))


@pytest.fixture
def config_restored(stack):
    """The module's tests share one sandbox: one that fails half-way must not leave the next
    one a listener flipped to L4 or a sticky pool."""
    url = f"{stack.sandbox.admin_url}/config"
    original = admin(url)
    yield
    admin(url, "PUT", original)


@pytest.mark.usefixtures("config_restored")
def test_flip_to_l4_watch_a_connection_and_flip_back(page: Page, stack, artifacts):
    sb = stack.sandbox
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(stack.web_url + "/")
    expect(page.locator("#proxy-status")).to_have_text("reachable", timeout=10_000)
    expect(page.locator("#feed-status")).to_have_text("live (WebSocket)")
    topology = page.locator("#topology svg")
    expect(topology).to_contain_text("L7 · http", timeout=10_000)
    expect(topology).to_contain_text("b3 · healthy", timeout=10_000)

    # Flip the web listener to L4 from the Listeners tab.
    page.click("#tab-listeners")
    expect(page.locator("#listener-now")).to_contain_text("L7 · HTTP")
    flip = page.locator("#flip-layer")
    expect(flip).to_have_text("Flip web to L4 (TCP)")
    expect(page.locator("#flip-tls")).to_be_disabled()  # this listener speaks no TLS
    flip.click()
    result = page.locator("#mode-form .result")
    expect(result).to_contain_text("Listener web is now L4 (TCP): every connection goes to "
                                   "pool web")
    expect(result).to_contain_text("it no longer uses route all")
    expect(page.locator("#mode-hint")).to_contain_text("balances connections, not requests")
    expect(page.locator("#listener-now")).to_contain_text("L4 · TCP", timeout=5_000)
    expect(flip).to_have_text("Flip web to L7 (HTTP)")
    expect(topology).to_contain_text("L4 · tcp", timeout=5_000)
    expect(topology).to_contain_text("every connection")
    expect(topology).to_contain_text("no listener uses it")
    assert admin(f"{sb.admin_url}/state")["listeners"]["web"]["protocol"] == "tcp"
    page.locator(".controls").screenshot(path=artifacts / "l4-flipped.png")

    # A raw TCP connection through the proxy: listed live, its age ticking.
    sock, client = raw_connection(sb.proxy_url)
    try:
        row = page.locator("#conn-rows tr", has_text=client)
        expect(row).to_be_visible(timeout=5_000)
        expect(row).to_contain_text("TCP")
        expect(row).to_contain_text("web → ")
        expect(page.locator("#conns-count")).to_have_text("1")
        expect(page.locator("#conns-empty")).to_be_hidden()
        first = age_seconds(row.locator("td.age").inner_text())
        # It ticks: a second later by the page's clock (polled: a busy machine's timers lag).
        assert wait_until(lambda: age_seconds(row.locator("td.age").inner_text()) >= first + 1.0,
                          timeout=10, what=f"the connection's age to pass {first + 1.0} s")
        backend = row.locator("td b").inner_text()
        assert backend in ("b1", "b2", "b3")
        expect(topology).to_contain_text("L4: 1 open connection", timeout=5_000)
        expect(topology).to_contain_text("open now: 1 TCP")
        page.screenshot(path=artifacts / "l4-open-connection.png", full_page=True)
        page.locator("#open-connections").screenshot(path=artifacts / "l4-open-connections-panel.png")
    finally:
        sock.close()

    # Closed: gone from the panel, and its connection event is in the stream.
    expect(page.locator("#conn-rows tr", has_text=client)).to_have_count(0, timeout=5_000)
    expect(page.locator("#conns-empty")).to_be_visible()
    page.select_option("#f-kind", "connection")
    stream_row = page.locator("#stream li button", has_text=f"TCP {client}")
    expect(stream_row).to_be_visible(timeout=5_000)
    expect(stream_row).to_contain_text("closed by the client")
    expect(stream_row).to_contain_text(backend)
    expect(page.locator("#stream li button", has_text="GET /")).to_have_count(0)  # filtered
    stream_row.click()
    detail = page.locator("#detail")
    expect(detail).to_contain_text(f"TCP {client} → {backend}")
    expect(detail).to_contain_text("At L4 the balancer picks once per connection")
    expect(detail).to_contain_text("closed by the client")
    expect(detail).to_contain_text("client → backend")
    path = page.locator("#request-diagram svg")
    expect(path).to_contain_text("TCP connect", timeout=5_000)
    expect(path).to_contain_text("the client closed it")
    page.screenshot(path=artifacts / "l4-connection-closed.png", full_page=True)
    page.select_option("#f-kind", "")

    # Back to L7: the old route is used again and requests carry their ids again.
    page.click("#tab-listeners")
    flip.click()
    expect(result).to_contain_text("Listener web is now L7 (HTTP): requests are routed by all")
    expect(topology).to_contain_text("L7 · http", timeout=5_000)
    expect(topology).not_to_contain_text("no listener uses it")

    def served():
        try:
            with urllib.request.urlopen(f"{sb.proxy_url}/l7-again", timeout=3) as resp:
                return resp.headers.get("X-Request-Id")
        except OSError:
            return None
    assert wait_until(served, timeout=5, what="L7 again")

    # A pool with cookie stickiness cannot go L4: the proxy's own reason is shown.
    admin(f"{sb.admin_url}/pools/web", "PATCH", {"sticky": {"mode": "cookie"}})
    expect(topology).to_contain_text("sticky: cookie", timeout=5_000)
    flip.click()
    expect(result).to_contain_text("The proxy refused listener web as L4 (TCP) with no TLS "
                                   "(the running config is unchanged):")
    expect(result.locator("li code")).to_have_text("pools.web.sticky.mode")
    expect(result).to_contain_text("sticky mode cookie needs HTTP cookies")
    expect(result).to_contain_text("use sticky mode source_ip")
    expect(page.locator("#log")).to_contain_text("Refused: pools.web.sticky.mode: sticky mode "
                                                 "cookie needs HTTP cookies")
    page.locator(".controls").screenshot(path=artifacts / "l4-refused-sticky.png")
    assert admin(f"{sb.admin_url}/state")["listeners"]["web"]["protocol"] == "http"
    admin(f"{sb.admin_url}/pools/web", "PATCH", {"sticky": None})
    assert errors == []


def test_l4_and_tls_diagrams_render_in_strict_mermaid(page: Page, artifacts):
    page.set_content("<div id=out></div>")
    page.add_script_tag(path=str(MERMAID))
    for name, text in (("topology", diagrams.topology(STATE)),
                       ("connection", diagrams.connection_sequence(CONNECTION))):
        result = page.evaluate("""async ([name, text]) => {
            mermaid.initialize({startOnLoad: false, securityLevel: 'strict'});
            try {
                const {svg} = await mermaid.render('d-' + name, text);
                document.getElementById('out').innerHTML = svg;
                return {ok: true, text: document.getElementById('out').textContent};
            } catch (e) { return {ok: false, error: String(e.message || e)}; }
        }""", [name, text])
        assert result["ok"], (name, result.get("error"))
        page.locator("#out").screenshot(path=artifacts / f"l4-{name}-diagram.png")
        if name == "topology":
            for words in ("TLS terminate: www.lab.test, api.lab.test", "TLS passthrough",
                          "SNI api.lab.test, *.api.lab.test", "other names",
                          "every connection", "re-encrypts to backends", "PROXY protocol v2"):
                assert words in result["text"], words
        else:
            assert "SNI api.lab.test" in result["text"] and "517 B" in result["text"]


class EchoWebSocket:
    """A real WebSocket backend (aiohttp, its own thread): /ws echoes text back."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10), "the WebSocket backend did not start"

    async def _ws(self, request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(f"echo: {msg.data}")
        return ws

    def _run(self):
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_get("/ws", self._ws)
        self.runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", 0).start())
        self.port = self.runner.addresses[0][1]
        self.ready.set()
        self.loop.run_forever()

    def stop(self):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_a_websocket_tunnel_is_listed_with_its_age(page: Page, stack, artifacts):
    """An L7 listener's WebSocket tunnel: opened from this very browser through the proxy."""
    sb = stack.sandbox
    backend = EchoWebSocket()
    original = admin(f"{sb.admin_url}/config")
    config = json.loads(json.dumps(original))
    config["pools"]["live"] = {"backends": [{"name": "ws1",
                                             "address": f"127.0.0.1:{backend.port}"}]}
    config["routes"]["ws"] = {"match": {"path_prefix": "/ws"}, "forward": "live"}
    config["listeners"]["web"]["routes"] = ["ws", *config["listeners"]["web"]["routes"]]
    admin(f"{sb.admin_url}/config", "PUT", config)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(stack.web_url + "/")
        expect(page.locator("#feed-status")).to_have_text("live (WebSocket)", timeout=10_000)
        expect(page.locator("#topology svg")).to_contain_text("pool live", timeout=10_000)
        ws_url = sb.proxy_url.replace("http://", "ws://") + "/ws"
        echo = page.evaluate("""(url) => new Promise((resolve, reject) => {
            const ws = new WebSocket(url);
            window.__tunnel = ws;
            ws.onopen = () => ws.send('hello through the proxy');
            ws.onmessage = (e) => resolve(e.data);
            ws.onerror = () => reject(new Error('WebSocket failed'));
        })""", ws_url)
        assert echo == "echo: hello through the proxy"
        row = page.locator("#conn-rows tr", has_text="WebSocket")
        expect(row).to_be_visible(timeout=5_000)
        expect(row).to_contain_text("ws1")
        expect(row).to_contain_text("/ws")
        first = age_seconds(row.locator("td.age").inner_text())
        assert wait_until(lambda: age_seconds(row.locator("td.age").inner_text()) >= first + 0.8,
                          timeout=10, what=f"the tunnel's age to pass {first + 0.8} s")
        expect(page.locator("#topology svg")).to_contain_text("open now: 1 WebSocket",
                                                              timeout=5_000)
        page.locator("#open-connections").screenshot(path=artifacts / "websocket-open.png")
        page.evaluate("() => window.__tunnel.close()")
        expect(page.locator("#conn-rows tr", has_text="WebSocket")).to_have_count(0,
                                                                                 timeout=5_000)
        page.select_option("#f-kind", "websocket")
        tunnel = page.locator("#stream li button", has_text="GET /ws")
        expect(tunnel).to_be_visible(timeout=5_000)
        expect(tunnel).to_contain_text("101")
        expect(tunnel).to_contain_text("WebSocket tunnel")
        tunnel.click()
        expect(page.locator("#detail")).to_contain_text("switched protocols: a WebSocket tunnel")
        assert errors == []
    finally:
        admin(f"{sb.admin_url}/config", "PUT", original)
        backend.stop()
