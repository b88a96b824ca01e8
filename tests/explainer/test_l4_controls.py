"""Flipping a real proxy's listener between L7 and L4 from the page's control, and the
L4 connections the page then lists and explains (real proxy, real toy backends)."""
import asyncio
import json
import socket
import urllib.request

import pytest
from django.test import Client

from explainer.bridge import Bridge
from explainer.services import dashboard
from labs.sandbox.admin_client import AdminClient
from tests.explainer.parts import REPO, wait_until

URL = "/api/default/control/listener-mode"


@pytest.fixture
def client():
    return Client(enforce_csrf_checks=True)


def token_for(client) -> str:
    page = client.get("/")
    assert page.status_code == 200
    return page.cookies["csrftoken"].value


def flip(client, protocol, tls="none", listener="web", token=None):
    token = token or token_for(client)
    resp = client.post(URL, {"listener": listener, "protocol": protocol, "tls": tls,
                             "csrfmiddlewaretoken": token})
    return resp.status_code, resp.json()


def http_get(url: str):
    with urllib.request.urlopen(url, timeout=3) as resp:
        return resp.status, resp.headers.get("X-Request-Id"), json.loads(resp.read() or b"{}")


def open_tcp(lab) -> socket.socket:
    """A raw TCP connection through the proxy, one HTTP request answered on it, kept open."""
    sock = socket.create_connection(("127.0.0.1", lab.proxy_port), timeout=3)
    sock.sendall(b"GET /raw HTTP/1.1\r\nHost: lab\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    assert data.startswith(b"HTTP/1.1 200")
    return sock


def test_the_page_has_the_listener_control(site_on, lab, client):
    site_on(lab)
    page = client.get("/").content.decode()
    assert 'data-action="listener-mode"' in page and 'id="flip-layer"' in page
    assert 'id="open-connections"' in page and 'id="f-kind"' in page


def test_a_flip_without_csrf_token_is_refused(site_on, lab, client):
    site_on(lab)
    resp = client.post(URL, {"listener": "web", "protocol": "tcp", "tls": "none"})
    assert resp.status_code == 403
    assert AdminClient(lab.admin_url).state()["listeners"]["web"]["protocol"] == "http"


def test_flip_the_default_topology_to_l4_and_back_while_traffic_flows(site_on, lab, client):
    site_on(lab)
    token = token_for(client)
    status, request_id, echo = http_get(f"{lab.proxy_url}/before")
    assert status == 200 and request_id and echo["x_forwarded_for"]  # L7 adds both

    status, body = flip(client, "tcp", token=token)
    assert status == 200, body
    assert body["message"].startswith("Listener web is now L4 (TCP): every connection goes "
                                      "to pool web")
    assert body["notes"] == ["it no longer uses route all (kept in the config for the way "
                             "back)"]
    web = body["state"]["listeners"]["web"]
    assert (web["protocol"], web["pool"], web["routes"]) == ("tcp", "web", [])

    # HTTP still flows, relayed as bytes: no request id, no X-Forwarded-For added.
    def served():
        try:
            return http_get(f"{lab.proxy_url}/after")
        except OSError:
            return None
    status, request_id, echo = wait_until(served, timeout=5, what="traffic through L4")
    assert status == 200 and request_id is None
    assert not echo.get("x_forwarded_for")

    # An open connection is listed live, then explained once it closes.
    sock = open_tcp(lab)
    try:
        live = wait_until(lambda: AdminClient(lab.admin_url).connections()["connections"],
                          timeout=5, what="the open connection listed")
        assert live[0]["kind"] == "tcp" and live[0]["backend"] in ("b1", "b2")
        listed = client.get("/api/default/connections").json()
        assert listed["ok"] and listed["count"] == 1
        connection_id = listed["connections"][0]["connection_id"]
        paint = client.get("/api/default/snapshot").json()
        assert [c["connection_id"] for c in paint["connections"]["connections"]] == \
            [connection_id]
        assert "L4 · tcp" in paint["diagram"] and '"every connection"' in paint["diagram"]
    finally:
        sock.close()

    def diagram():
        resp = client.get(f"/api/default/connections/{connection_id}/diagram")
        return resp.json() if resp.status_code == 200 else None
    drawn = wait_until(diagram, timeout=5, what="the closed connection's diagram")
    event = drawn["connection"]
    assert event["closed_by"] == "client" and event["bytes_in"] > 0 and event["bytes_out"] > 0
    assert "C->>P: TCP connect" in drawn["diagram"] and "the client closed it" in drawn["diagram"]
    paint = client.get("/api/default/snapshot").json()
    assert connection_id in [e["connection_id"] for e in paint["connection_events"]]
    missing = client.get("/api/default/connections/nope/diagram")
    assert missing.status_code == 404 and "no closed connection" in missing.json()["error"]

    status, body = flip(client, "http", token=token)
    assert status == 200, body
    assert body["message"] == "Listener web is now L7 (HTTP): requests are routed by all; no TLS."
    status, request_id, _body = wait_until(served, timeout=5, what="traffic through L7 again")
    assert status == 200 and request_id

    status, body = flip(client, "http", token=token)
    assert status == 200 and "already L7 (HTTP) with no TLS: nothing to change" in body["message"]


def test_cookie_stickiness_makes_the_proxy_refuse_l4_and_the_page_gets_why(site_on, lab, client):
    site_on(lab)
    AdminClient(lab.admin_url).patch_pool("web", {"sticky": {"mode": "cookie"}})
    status, body = flip(client, "tcp")
    assert status == 422 and body["ok"] is False
    assert body["error"] == ("The proxy refused listener web as L4 (TCP) with no TLS "
                             "(the running config is unchanged):")
    [error] = body["errors"]
    assert error["path"] == "pools.web.sticky.mode"
    assert "sticky mode cookie needs HTTP cookies" in error["message"]
    assert "never sees a host, path, header or cookie" in error["message"]
    assert "use sticky mode source_ip" in error["message"]
    state = AdminClient(lab.admin_url).state()
    assert state["listeners"]["web"]["protocol"] == "http"  # nothing changed


def test_a_mode_the_config_has_no_pieces_for_says_why(site_on, lab, client):
    site_on(lab)
    status, body = flip(client, "http", tls="terminate")
    assert status == 409
    assert body["error"] == ("Listener web cannot become L7 (HTTP) with TLS terminated by the "
                             "proxy (nothing changed):")
    assert body["errors"][0]["path"] == "listeners.web.tls"
    assert "needs a certificate" in body["errors"][0]["message"]
    status, body = flip(client, "tcp", listener="nope")
    assert status == 404 and "no listener named 'nope'" in body["errors"][0]["message"]
    status, body = flip(client, "udp")
    assert status == 400 and body["errors"][0]["path"] == "protocol"


@pytest.mark.asyncio
async def test_the_bridge_carries_opens_live_connections_and_closes(lab):
    ticks: list[dict] = []

    async def send(message):
        ticks.append(message)

    admin = AdminClient(lab.admin_url)
    from explainer.services import listener_modes
    change = listener_modes.build(admin.config(), "web", "tcp", "none")
    admin.put_config(change.config)

    bridge = Bridge("default", lab.admin_url, send, tick_s=0.1, state_every_s=0.3)
    task = asyncio.create_task(bridge.run())
    try:
        async def until(predicate, timeout=10.0):
            loop = asyncio.get_running_loop()
            end, seen = loop.time() + timeout, 0
            while loop.time() < end:
                while seen < len(ticks):
                    seen += 1
                    if predicate(ticks[seen - 1]):
                        return ticks[seen - 1]
                await asyncio.sleep(0.05)
            raise TimeoutError("no matching tick")

        await until(lambda t: t["stream"]["connected"])
        sock = await asyncio.to_thread(open_tcp, lab)
        opened = await until(lambda t: t["opened"])
        [event] = opened["opened"]
        assert event["type"] == "connection_open" and event["kind"] == "tcp"
        live = await until(lambda t: (t["connections"] or {}).get("count") == 1)
        assert live["connections"]["connections"][0]["connection_id"] == event["connection_id"]
        # The diagram comes with the proxy's state, which the bridge polls on its own
        # period: a later tick than the connections' may carry it.
        await until(lambda t: "L4: 1 open connection" in (t["diagram"] or ""))
        sock.close()
        closed = await until(lambda t: any(d.get("connection_id") == event["connection_id"]
                                           for d in t["decisions"]))
        decision = next(d for d in closed["decisions"] if d["type"] == "connection")
        assert decision["closed_by"] == "client"
        await until(lambda t: (t["connections"] or {}).get("count") == 0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.asyncio
async def test_first_paint_lists_live_connections(site_on, lab):
    site_on(lab)
    admin = AdminClient(lab.admin_url)
    from explainer.services import listener_modes
    admin.put_config(listener_modes.build(admin.config(), "web", "tcp", "none").config)
    sock = await asyncio.to_thread(open_tcp, lab)
    try:
        await asyncio.to_thread(wait_until, lambda: admin.connections()["count"] == 1, 5)
        paint = await dashboard.first_paint("default")
        assert paint["connections"]["count"] == 1
        assert paint["state"]["connections"]["by_listener"]["web"] == {"tcp": 1}
    finally:
        sock.close()


@pytest.fixture
def tls_lab(tmp_path):
    """Two plain toy backends behind a proxy that terminates TLS with the lab PKI (made here)."""
    import ssl
    import sys

    import yaml

    from proxy import pki
    from tests.explainer.parts import Lab, spawn, stop, wait_http

    state_dir = tmp_path / "state"
    pki.init(state_dir / "pki", backends=[], clients=[])
    lab = Lab(dir=tmp_path)
    try:
        for name in ("b1", "b2"):
            lab.start_backend(name)
        lab.ports()
        config = yaml.safe_load((REPO / "proxy" / "examples" / "tls-terminate.yaml").read_text())
        config["admin"]["listen"] = f"127.0.0.1:{lab.admin_port}"
        config["listeners"]["web"]["bind"] = f"127.0.0.1:{lab.proxy_port}"
        config["pools"]["web"]["backends"] = [
            {"name": n, "address": f"127.0.0.1:{p}"} for n, p in lab.backends.items()]
        path = tmp_path / "proxy.yaml"
        path.write_text(yaml.safe_dump(config))
        log = tmp_path / "proxy.log"
        proc = spawn([sys.executable, "-m", "proxy", "--config", str(path)], log,
                     env={"LBLAB_STATE_DIR": str(state_dir)})
        lab.procs["proxy"] = proc
        wait_http(f"{lab.admin_url}/healthz", proc=proc, log=log)
        lab.ca = ssl.create_default_context(cafile=str(state_dir / "pki" / "ca.pem"))
        yield lab
    finally:
        for proc in reversed(list(lab.procs.values())):
            stop(proc)


def https_get(lab, name: str):
    """GET / over TLS with server name `name`: (status, certificate names seen)."""
    import http.client

    # Connect by address but ask for (and check) `name`, as curl --resolve does.
    conn = http.client.HTTPConnection("127.0.0.1", lab.proxy_port, timeout=3)
    conn.sock = lab.ca.wrap_socket(socket.create_connection(("127.0.0.1", lab.proxy_port), 3),
                                   server_hostname=name)
    try:
        names = [v for k, v in conn.sock.getpeercert()["subjectAltName"] if k == "DNS"]
        conn.request("GET", "/tls", headers={"Host": name})
        return conn.getresponse().status, names
    finally:
        conn.close()


def test_terminate_to_passthrough_and_back_on_a_real_proxy(site_on, tls_lab, client):
    site_on(tls_lab)
    token = token_for(client)
    wait_until(lambda: https_get(tls_lab, "api.lab.test")[0] == 200, timeout=5,
               what="HTTPS through the terminating listener")
    assert https_get(tls_lab, "api.lab.test")[1] == ["api.lab.test"]  # chosen by SNI

    status, body = flip(client, "tcp", tls="passthrough", token=token)
    assert status == 200, body
    assert body["state"]["tls"]["web"] == {
        "mode": "passthrough", "sni": {"www.lab.test": "web", "api.lab.test": "web"},
        "default_pool": "web", "unknown_sni": "default"}
    assert "the backends must speak TLS themselves" in body["message"]
    # The toy backends speak plain HTTP: a passed-through handshake reaches them and fails.
    with pytest.raises(OSError):
        https_get(tls_lab, "www.lab.test")

    status, body = flip(client, "http", tls="terminate", token=token)
    assert status == 200, body
    view = body["state"]["tls"]["web"]
    assert view["mode"] == "terminate"
    assert [c["names"] for c in view["certificates"]] == [["www.lab.test"], ["api.lab.test"]]
    assert body["state"]["listeners"]["web"]["routes"] == ["api", "all"]
    status, names = https_get(tls_lab, "www.lab.test")
    assert status == 200 and names == ["www.lab.test"]
