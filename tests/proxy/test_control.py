"""The admin API over real HTTP: a real Runtime, EventBus and Metrics, served on
127.0.0.1 port 0 and driven with aiohttp.ClientSession. Backends point at ports
nothing listens on: no traffic is needed to exercise the control plane.
"""
from __future__ import annotations

import asyncio
import copy
import json
from dataclasses import dataclass

import aiohttp
import pytest
import pytest_asyncio
import yaml

from proxy.config import load_config, to_data
from proxy.control import start_admin
from proxy.drain import DrainManager
from proxy.events import AdminChange, EventBus, RequestEvent
from proxy.metrics import Metrics
from proxy.runtime import Runtime

CONFIG = """
admin: {listen: "127.0.0.1:0"}
listeners:
  web: {bind: "127.0.0.1:0", routes: [all]}
routes:
  all: {forward: web}
pools:
  web:
    backends:
      - {name: b1, address: "127.0.0.1:1"}
      - {name: b2, address: "127.0.0.1:2", weight: 2}
  api:
    backends:
      - {name: a1, address: "127.0.0.1:3"}
"""


@dataclass
class Server:
    """Exactly the attribute set start_admin documents (drains/health are optional)."""

    runtime: Runtime
    bus: EventBus
    metrics: Metrics | None

    @property
    def config(self):
        return self.runtime.config


@dataclass
class Admin:
    server: Server
    handle: object
    http: aiohttp.ClientSession

    @property
    def runtime(self) -> Runtime:
        return self.server.runtime

    @property
    def bus(self) -> EventBus:
        return self.server.bus

    async def state(self) -> dict:
        async with self.http.get("/state") as r:
            assert r.status == 200
            return await r.json()


def make_server(config_text: str = CONFIG, metrics: bool = True) -> Server:
    runtime = Runtime(load_config(config_text))
    m = Metrics(runtime) if metrics else None
    if m is not None:
        runtime.bus.add_sink(m.sink)
    return Server(runtime=runtime, bus=runtime.bus, metrics=m)


async def serve(server, headers=None):
    handle = await start_admin(server)
    session = aiohttp.ClientSession(base_url=handle.url, headers=headers)
    return handle, session


@pytest_asyncio.fixture
async def admin():
    server = make_server()
    handle, session = await serve(server)
    try:
        yield Admin(server, handle, session)
    finally:
        await session.close()
        await handle.stop()


def request_event(request_id: str, **kw) -> RequestEvent:
    base = dict(request_id=request_id, listener="web", client="127.0.0.1:5000", method="GET",
                path="/", pool="web", backend="b1", status=200, latency_ms=3.0)
    base.update(kw)
    return RequestEvent(**base)


def backend_names(state: dict, pool: str = "web") -> list[str]:
    return [b["name"] for b in state["pools"][pool]["backends"]]


def backend(state: dict, name: str, pool: str = "web") -> dict:
    return next(b for b in state["pools"][pool]["backends"] if b["name"] == name)


def error_paths(body: dict) -> set[str]:
    return {e["path"] for e in body["errors"]}


async def until(predicate, what: str) -> None:
    """Poll the loop until predicate() holds (a hang guard, not a speed check)."""
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


# ---------------------------------------------------------------- read-only

@pytest.mark.asyncio
async def test_index_lists_endpoints_and_healthz(admin):
    async with admin.http.get("/") as r:
        body = await r.json()
    paths = {(e["method"], e["path"]) for e in body["endpoints"]}
    assert ("GET", "/state") in paths and ("PUT", "/config") in paths
    async with admin.http.get("/healthz") as r:
        assert r.status == 200
        assert (await r.json()) == {"status": "ok"}


@pytest.mark.asyncio
async def test_bound_port_is_real(admin):
    assert admin.handle.port > 0
    assert admin.handle.url == f"http://127.0.0.1:{admin.handle.port}"


@pytest.mark.asyncio
async def test_state_shape(admin):
    state = await admin.state()
    assert {"generation", "listeners", "routes", "pools", "config", "events_published",
            "subscribers", "drains"} <= set(state)
    assert state["drains"] is None  # this server runs no drain manager
    assert backend_names(state) == ["b1", "b2"]
    b2 = backend(state, "b2")
    assert b2["weight"] == 2 and b2["intent"] == "active" and b2["eligible"] is True
    assert state["config"] == to_data(admin.runtime.config)
    assert state["subscribers"] == 0


@pytest.mark.asyncio
async def test_get_config_yaml_and_json(admin):
    async with admin.http.get("/config") as r:
        assert r.content_type == "text/yaml"
        assert yaml.safe_load(await r.text()) == to_data(admin.runtime.config)
    async with admin.http.get("/config?format=json") as r:
        assert r.content_type == "application/json"
        assert await r.json() == to_data(admin.runtime.config)
    async with admin.http.get("/config?format=xml") as r:
        assert r.status == 400


@pytest.mark.asyncio
async def test_unknown_endpoint_and_method_are_json(admin):
    async with admin.http.get("/nope") as r:
        assert r.status == 404
        assert "GET / lists every endpoint" in (await r.json())["error"]
    async with admin.http.post("/state") as r:
        assert r.status == 405
        assert "GET" in (await r.json())["error"]


# ---------------------------------------------------------------- PUT /config

@pytest.mark.asyncio
async def test_put_config_yaml_swaps_and_publishes(admin):
    data = to_data(admin.runtime.config)
    data["pools"]["web"]["backends"][0]["weight"] = 7
    data["pools"]["web"]["retries"] = 3
    sub = admin.bus.subscribe(["admin"])
    async with admin.http.put("/config", data=yaml.safe_dump(data),
                              headers={"Content-Type": "text/yaml"}) as r:
        assert r.status == 200, await r.text()
        body = await r.json()
    assert backend(body, "b1")["weight"] == 7
    assert body["config"]["pools"]["web"]["retries"] == 3
    assert admin.runtime.config.pools["web"].retries == 3
    lines = [json.loads(line) for line in await sub.next_batch()]
    assert [(e["verb"], e["target"]) for e in lines] == [("put_config", "config")]
    sub.close()


@pytest.mark.asyncio
async def test_put_config_json(admin):
    data = to_data(admin.runtime.config)
    del data["pools"]["api"]
    async with admin.http.put("/config", json=data) as r:
        assert r.status == 200, await r.text()
    assert set(admin.runtime.pools) == {"web"}


@pytest.mark.asyncio
async def test_put_config_refused_whole_with_every_error(admin):
    before = await admin.state()
    data = copy.deepcopy(before["config"])
    data["pools"]["web"]["balancer"]["algorithm"] = "telepathy"
    data["pools"]["web"]["backends"][1]["weight"] = -1
    data["routes"]["all"]["forward"] = "missing"
    data["pools"]["api"]["retires"] = 2  # typo
    async with admin.http.put("/config", json=data) as r:
        assert r.status == 422
        body = await r.json()
    assert body["error"] == "config refused"
    paths = error_paths(body)
    assert "pools.web.balancer.algorithm" in paths
    assert "pools.web.backends[1].weight" in paths
    assert "pools.api.retires" in paths
    assert any("telepathy" in e["message"] and "round_robin" in e["message"]
               for e in body["errors"])
    # Cross-object errors come after the per-object ones are fixed: the
    # dangling route is reported once the rest is right.
    data = copy.deepcopy(before["config"])
    data["routes"]["all"]["forward"] = "missing"
    async with admin.http.put("/config", json=data) as r:
        assert r.status == 422
        assert "routes.all" in error_paths(await r.json())
    assert await admin.state() == before


@pytest.mark.asyncio
async def test_put_config_malformed(admin):
    async with admin.http.put("/config", data="listeners: [unclosed",
                              headers={"Content-Type": "text/yaml"}) as r:
        assert r.status == 400
        assert "not valid YAML" in (await r.json())["error"]
    async with admin.http.put("/config", data="{nope",
                              headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400
        assert "not valid JSON" in (await r.json())["error"]
    async with admin.http.put("/config", data="") as r:
        assert r.status == 400
    async with admin.http.put("/config", data="- a list") as r:
        assert r.status == 422  # parsed, but not a config


# ---------------------------------------------------------------- backend verbs

@pytest.mark.asyncio
async def test_add_backend(admin):
    async with admin.http.post("/pools/web/backends",
                               json={"name": "b3", "address": "127.0.0.1:4", "weight": 5}) as r:
        assert r.status == 201, await r.text()
        body = await r.json()
    assert backend_names(body) == ["b1", "b2", "b3"]
    assert backend(body, "b3")["weight"] == 5


@pytest.mark.asyncio
async def test_add_backend_refused(admin):
    before = await admin.state()
    async with admin.http.post("/pools/web/backends",
                               json={"name": "b1", "address": "127.0.0.1:9"}) as r:
        assert r.status == 422
        body = await r.json()
        assert any("unique" in e["message"] for e in body["errors"])
    # Unique across pools too.
    async with admin.http.post("/pools/web/backends",
                               json={"name": "a1", "address": "127.0.0.1:9"}) as r:
        assert r.status == 422
        assert any("unique across pools" in e["message"] for e in (await r.json())["errors"])
    async with admin.http.post("/pools/web/backends",
                               json={"name": "b9", "address": "nowhere"}) as r:
        assert r.status == 422
        assert "pools.web.backends[2].address" in error_paths(await r.json())
    async with admin.http.post("/pools/nope/backends",
                               json={"name": "b9", "address": "127.0.0.1:9"}) as r:
        assert r.status == 404
        assert "pools: api, web" in (await r.json())["error"]
    async with admin.http.post("/pools/web/backends", data="{bad json",
                               headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400
        assert "not valid JSON" in (await r.json())["error"]
    async with admin.http.post("/pools/web/backends", json=["b9"]) as r:
        assert r.status == 400
    assert await admin.state() == before


@pytest.mark.asyncio
async def test_remove_backend(admin):
    async with admin.http.delete("/pools/web/backends/b1") as r:
        assert r.status == 200
        assert backend_names(await r.json()) == ["b2"]
    async with admin.http.delete("/pools/web/backends/b1") as r:
        assert r.status == 404
        assert "no backend named 'b1'" in (await r.json())["error"]


@pytest.mark.asyncio
async def test_remove_with_drain_needs_a_drain_manager(admin):
    async with admin.http.delete("/pools/web/backends/b1?drain=1") as r:
        assert r.status == 501
        assert "drains" in (await r.json())["error"]
    async with admin.http.post("/pools/web/backends/b1/drain") as r:
        assert r.status == 501
    assert backend_names(await admin.state()) == ["b1", "b2"]


@pytest.mark.asyncio
async def test_set_weight(admin):
    async with admin.http.put("/pools/web/backends/b1/weight", json={"weight": 9}) as r:
        assert r.status == 200
        assert backend(await r.json(), "b1")["weight"] == 9
    before = await admin.state()
    async with admin.http.put("/pools/web/backends/b1/weight", json={"weight": -1}) as r:
        assert r.status == 422
        assert error_paths(await r.json()) == {"pools.web.backends[0].weight"}
    async with admin.http.put("/pools/web/backends/b1/weight", json={"wieght": 2}) as r:
        assert r.status == 400
    async with admin.http.put("/pools/web/backends/zz/weight", json={"weight": 2}) as r:
        assert r.status == 404
    async with admin.http.put("/pools/zz/backends/b1/weight", json={"weight": 2}) as r:
        assert r.status == 404
    assert await admin.state() == before


@pytest.mark.asyncio
async def test_maintenance_and_activate(admin):
    async with admin.http.post("/pools/web/backends/b2/maintenance") as r:
        assert r.status == 200
        b2 = backend(await r.json(), "b2")
    assert b2["intent"] == "maintenance" and b2["eligible"] is False
    async with admin.http.post("/pools/web/backends/b2/activate") as r:
        b2 = backend(await r.json(), "b2")
    assert b2["intent"] == "active" and b2["eligible"] is True
    async with admin.http.post("/pools/web/backends/b7/activate") as r:
        assert r.status == 404


# ---------------------------------------------------------------- pool verbs

@pytest.mark.asyncio
async def test_set_balancer(admin):
    async with admin.http.put("/pools/web/balancer",
                              json={"algorithm": "round_robin", "choices": 3}) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["pools"]["web"]["balancer"]["choices"] == 3
    before = await admin.state()
    async with admin.http.put("/pools/web/balancer", json={"algorithm": "telepathy"}) as r:
        assert r.status == 422
        body = await r.json()
    assert error_paths(body) == {"pools.web.balancer.algorithm"}
    assert "choose one of" in body["errors"][0]["message"]
    async with admin.http.put("/pools/web/balancer", json={"choices": 3}) as r:
        assert r.status == 400
        assert '"algorithm"' in (await r.json())["error"]
    async with admin.http.put("/pools/nope/balancer", json={"algorithm": "round_robin"}) as r:
        assert r.status == 404
    assert await admin.state() == before


@pytest.mark.asyncio
async def test_patch_pool(admin):
    settings = {"panic_threshold": 0.5, "retries": 2, "slow_start": "10s",
                "health": {"type": "tcp", "interval": "1s"}}
    async with admin.http.patch("/pools/web", json=settings) as r:
        assert r.status == 200, await r.text()
        body = await r.json()
    pool = body["config"]["pools"]["web"]
    assert pool["panic_threshold"] == 0.5 and pool["retries"] == 2
    assert pool["slow_start"] == "10s"
    assert body["pools"]["web"]["health_check"]["type"] == "tcp"
    before = await admin.state()
    async with admin.http.patch("/pools/web", json={"retries": 9, "panik_threshold": 1}) as r:
        assert r.status == 422
        assert error_paths(await r.json()) == {"pools.web.retries", "pools.web.panik_threshold"}
    async with admin.http.patch("/pools/web", json={"backends": []}) as r:
        assert r.status == 422
        assert "backend verbs" in (await r.json())["errors"][0]["message"]
    async with admin.http.patch("/pools/web", json={}) as r:
        assert r.status == 400
    async with admin.http.patch("/pools/nope", json={"retries": 1}) as r:
        assert r.status == 404
    assert await admin.state() == before


# ---------------------------------------------------------------- token

TOKEN_CONFIG = CONFIG.replace('admin: {listen: "127.0.0.1:0"}',
                              'admin: {listen: "127.0.0.1:0", token: s3cret}')


@pytest.mark.asyncio
async def test_token_required_when_set():
    server = make_server(TOKEN_CONFIG)
    handle, session = await serve(server)
    try:
        for path in ("/state", "/metrics", "/healthz", "/nope"):
            async with session.get(path) as r:
                assert r.status == 401, path
                body = await r.json()
                assert "Authorization: Bearer" in body["error"]
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
        async with session.get("/state", headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401
        async with session.put("/pools/web/backends/b1/weight", json={"weight": 5}) as r:
            assert r.status == 401
        assert server.runtime.config.pools["web"].backends[0].weight == 1
        async with session.get("/state", headers={"Authorization": "Bearer s3cret"}) as r:
            assert r.status == 200
    finally:
        await session.close()
        await handle.stop()


# ---------------------------------------------------------------- events

async def read_lines(response, count: int) -> list[dict]:
    out = []
    while len(out) < count:
        line = await asyncio.wait_for(response.content.readline(), 10)
        assert line, "stream ended early"
        if line.strip():
            out.append(json.loads(line))
    return out


@pytest.mark.asyncio
async def test_events_stream_admin_change_filtered_by_type(admin):
    async with admin.http.get("/events?types=admin") as stream:
        assert stream.status == 200
        assert stream.content_type == "application/x-ndjson"
        await until(lambda: admin.bus.subscriber_count == 1, "subscribed")
        admin.bus.publish(request_event("filtered-out"))
        async with admin.http.put("/pools/web/backends/b1/weight", json={"weight": 4}) as r:
            assert r.status == 200
        [event] = await read_lines(stream, 1)
    assert event["type"] == "admin"
    assert event["verb"] == "set_weight" and event["target"] == "web/b1"
    assert event["detail"] == {"weight": 4}


@pytest.mark.asyncio
async def test_events_stream_all_types(admin):
    async with admin.http.get("/events") as stream:
        await until(lambda: admin.bus.subscriber_count == 1, "subscribed")
        admin.bus.publish(request_event("r1"))
        async with admin.http.post("/pools/web/backends/b2/maintenance") as r:
            assert r.status == 200
        events = await read_lines(stream, 3)
    assert [e["type"] for e in events] == ["request", "state_change", "admin"]
    assert events[1]["new"] == "maintenance"


@pytest.mark.asyncio
async def test_events_replay(admin):
    admin.bus.publish(request_event("r1", ts=100.0))
    admin.bus.publish(AdminChange(verb="set_weight", target="web/b1", ts=101.0))
    admin.bus.publish(request_event("r2", ts=102.0))
    async with admin.http.get("/events?replay=2") as stream:
        replayed = await read_lines(stream, 2)
    assert [(e["type"], e.get("request_id")) for e in replayed] == [("admin", None),
                                                                    ("request", "r2")]
    async with admin.http.get("/events?replay=10&types=request") as stream:
        replayed = await read_lines(stream, 2)
        # Then the live part follows.
        admin.bus.publish(request_event("r3"))
        [live] = await read_lines(stream, 1)
    assert [e["request_id"] for e in replayed] == ["r1", "r2"]
    assert live["request_id"] == "r3"


@pytest.mark.asyncio
async def test_events_bad_query(admin):
    async with admin.http.get("/events?types=request,bogus") as r:
        assert r.status == 400
        body = await r.json()
        assert "bogus" in body["error"] and "state_change" in body["error"]
    async with admin.http.get("/events?replay=lots") as r:
        assert r.status == 400
    assert admin.bus.subscriber_count == 0


@pytest.mark.asyncio
async def test_events_subscription_closed_when_client_leaves(admin):
    for _ in range(3):
        stream = await admin.http.get("/events")
        await until(lambda: admin.bus.subscriber_count == 1, "subscribed")
        stream.close()  # drop the connection without reading anything
        await until(lambda: admin.bus.subscriber_count == 0, "unsubscribed after disconnect")


@pytest.mark.asyncio
async def test_events_sse(admin):
    async with admin.http.get("/events?types=admin",
                              headers={"Accept": "text/event-stream"}) as stream:
        assert stream.content_type == "text/event-stream"
        await until(lambda: admin.bus.subscriber_count == 1, "subscribed")
        async with admin.http.post("/pools/web/backends/b1/maintenance"):
            pass
        line = await asyncio.wait_for(stream.content.readline(), 10)
    assert line.startswith(b"data: ")
    assert json.loads(line[len(b"data: "):])["verb"] == "set_state"


@pytest.mark.asyncio
async def test_stop_ends_open_streams():
    server = make_server()
    handle, session = await serve(server)
    try:
        stream = await session.get("/events")
        await until(lambda: server.bus.subscriber_count == 1, "subscribed")
        await asyncio.wait_for(handle.stop(), 10)  # hang guard: stop must not wait on it
        assert server.bus.subscriber_count == 0
        stream.close()
    finally:
        await session.close()


# ---------------------------------------------------------------- requests

@pytest.mark.asyncio
async def test_request_lookup(admin):
    admin.bus.publish(request_event("abc-123", status=502, proxy_error=True,
                                    termination="SC", error="connection refused",
                                    candidates=[{"name": "b1", "eligible": True}]))
    async with admin.http.get("/requests/abc-123") as r:
        assert r.status == 200
        event = await r.json()
    assert event["type"] == "request" and event["status"] == 502
    assert event["proxy_error"] is True and event["termination"] == "SC"
    assert event["candidates"] == [{"name": "b1", "eligible": True}]
    async with admin.http.get("/requests/never") as r:
        assert r.status == 404
        assert "evicted" in (await r.json())["error"]


@pytest.mark.asyncio
async def test_recent_requests(admin):
    for i in range(5):
        admin.bus.publish(request_event(f"r{i}"))
    async with admin.http.get("/requests?limit=2") as r:
        body = await r.json()
    assert body["count"] == 2
    assert [e["request_id"] for e in body["requests"]] == ["r3", "r4"]
    async with admin.http.get("/requests") as r:
        assert (await r.json())["count"] == 5
    async with admin.http.get("/requests?limit=0") as r:
        assert r.status == 400


# ---------------------------------------------------------------- metrics

@pytest.mark.asyncio
async def test_metrics_split_and_gauges(admin):
    admin.bus.publish(request_event("m1", status=500))  # the backend's own 500
    admin.bus.publish(request_event("m2", status=502, proxy_error=True, termination="SC"))
    admin.bus.publish(request_event("m3", status=503, backend=None, proxy_error=True,
                                    termination="PQ"))
    async with admin.http.post("/pools/web/backends/b2/maintenance"):
        pass
    async with admin.http.get("/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await r.text()
    lines = set(text.splitlines())
    assert ('lblab_requests_total{backend="b1",code_class="5xx",pool="web",source="backend"} 1.0'
            in lines)
    assert ('lblab_requests_total{backend="b1",code_class="5xx",pool="web",source="proxy"} 1.0'
            in lines)
    assert ('lblab_requests_total{backend="-",code_class="5xx",pool="web",source="proxy"} 1.0'
            in lines)
    assert 'lblab_backend_up{backend="b1",pool="web"} 1.0' in lines
    assert 'lblab_backend_up{backend="b2",pool="web"} 0.0' in lines
    assert 'lblab_backend_intent{backend="b2",intent="maintenance",pool="web"} 1.0' in lines
    assert 'lblab_backend_weight{backend="b2",pool="web"} 2.0' in lines
    assert 'lblab_pool_panic{pool="web"} 0.0' in lines
    assert 'lblab_admin_changes_total{verb="set_state"} 1.0' in lines
    assert any(line.startswith("lblab_events_published_total ") for line in lines)


@pytest.mark.asyncio
async def test_metrics_off_is_501():
    server = make_server(metrics=False)
    handle, session = await serve(server)
    try:
        async with session.get("/metrics") as r:
            assert r.status == 501
            assert "metrics" in (await r.json())["error"]
    finally:
        await session.close()
        await handle.stop()


# ---------------------------------------------------------------- drain, then remove

@pytest_asyncio.fixture
async def admin_with_drains():
    server = make_server()
    server.drains = DrainManager(server)  # the real one; no data plane, so nothing to cut
    await server.drains.start()
    handle, session = await serve(server)
    try:
        yield Admin(server, handle, session)
    finally:
        await session.close()
        await handle.stop()
        await server.drains.stop()


@pytest.mark.asyncio
async def test_drain_then_remove(admin_with_drains):
    admin = admin_with_drains
    b1 = admin.runtime.pools["web"].backends["b1"]
    b1.outstanding = 1  # a request in flight, as the data plane would count it
    async with admin.http.delete("/pools/web/backends/b1?drain=1") as r:
        assert r.status == 202, await r.text()
        body = await r.json()
    assert body["drain"]["backend"] == "b1" and body["drain"]["remove"] is True
    assert [d["backend"] for d in body["drains"]["drains"]] == ["b1"]
    assert backend(body, "b1")["intent"] == "draining"
    assert backend(body, "b1")["eligible"] is False
    b1.outstanding = 0  # the request finished
    await until(lambda: "b1" not in admin.runtime.pools["web"].backends, "removed after drain")
    assert backend_names(await admin.state()) == ["b2"]


@pytest.mark.asyncio
async def test_drain_keeps_backend_and_activate_ends_it(admin_with_drains):
    admin = admin_with_drains
    admin.runtime.pools["web"].backends["b1"].outstanding = 1
    async with admin.http.post("/pools/web/backends/b1/drain") as r:
        assert r.status == 202
        assert backend(await r.json(), "b1")["intent"] == "draining"
    async with admin.http.post("/pools/web/backends/b1/activate") as r:
        assert r.status == 200
        assert backend(await r.json(), "b1")["intent"] == "active"
    await until(lambda: not admin.server.drains.running, "drain ended by activation")
    state = await admin.state()
    assert backend_names(state) == ["b1", "b2"]
    assert state["drains"]["recent"][-1]["outcome"] == "cancelled"


@pytest.mark.asyncio
async def test_concurrent_verbs_lose_no_change(admin):
    """Verbs are validated in a worker thread; one that lands while another is being
    validated is planned again on top of it: every change is kept."""
    async def add(i: int):
        async with admin.http.post("/pools/web/backends",
                                   json={"name": f"n{i}", "address": f"127.0.0.1:{100 + i}"}) as r:
            assert r.status == 201, await r.text()

    async def weigh(name: str, weight: int):
        async with admin.http.put(f"/pools/web/backends/{name}/weight",
                                  json={"weight": weight}) as r:
            assert r.status == 200, await r.text()

    await asyncio.gather(*(add(i) for i in range(12)), weigh("b1", 7), weigh("b2", 9))
    state = await admin.state()
    names = backend_names(state)
    assert sorted(names) == sorted(["b1", "b2"] + [f"n{i}" for i in range(12)])
    assert backend(state, "b1")["weight"] == 7 and backend(state, "b2")["weight"] == 9


@pytest.mark.asyncio
async def test_a_load_report_is_kept_on_the_backends(admin):
    async with admin.http.put("/pools/web/load", json={"loads": {"b1": 3, "b2": 0.5,
                                                                 "zz": 1}}) as r:
        assert r.status == 200
        assert await r.json() == {"pool": "web", "loads": {"b1": 3, "b2": 0.5, "zz": 1},
                                  "unknown": ["zz"]}
    b1 = admin.runtime.pools["web"].backends["b1"]
    assert b1.reported_load == 3 and b1.reported_at is not None
    async with admin.http.put("/pools/web/load", json={"loads": {"b1": -1}}) as r:
        assert r.status == 400 and "requests in flight" in (await r.json())["error"]
    async with admin.http.put("/pools/nope/load", json={"loads": {}}) as r:
        assert r.status == 404
