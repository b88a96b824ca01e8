"""proxy.routing without sockets: conditions, priority, actions, splits, no route."""
from __future__ import annotations

import random

import pytest

from proxy.config import load_config
from proxy.http1.headers import LazyCookies, LazyHeaders
from proxy.routing import (
    FORWARD,
    NO_ROUTE,
    REDIRECT,
    RESPOND,
    Router,
    RouteRequest,
    build_routers,
    host_matches,
)

CONFIG = """
listeners:
  web:
    bind: 127.0.0.1:0
    routes: [api_host, wild, admin_get, by_header, beta_cookie, by_query, regex, low, canary,
             fixed, moved, catch_all]
routes:
  api_host:   {match: {host: api.example.com}, forward: api}
  wild:       {match: {host: "*.shop.example"}, forward: shop}
  admin_get:  {match: {path_prefix: /admin, methods: [get, HEAD]}, forward: admin}
  by_header:  {match: {headers: {X-Tenant: gold}}, forward: gold}
  beta_cookie: {match: {cookies: {beta: "*"}}, forward: beta}
  by_query:   {match: {query: {v: "2"}}, forward: v2}
  regex:      {match: {path_regex: "^/items/[0-9]+$"}, forward: items}
  low:        {priority: -5, match: {path_prefix: /canary}, forward: api}
  canary:     {priority: 10, match: {path_prefix: /canary}, split: [{pool: stable, weight: 90}, {pool: beta, weight: 10}]}
  fixed:      {match: {path_prefix: /ping}, respond: {status: 200, body: pong}}
  moved:      {match: {path_prefix: /old}, redirect: {location: "http://{host}/new{path}", status: 301}}
  catch_all:  {priority: -100, match: {}, forward: default}
pools:
  api: {}
  shop: {}
  admin: {}
  gold: {}
  beta: {}
  v2: {}
  items: {}
  stable: {}
  default: {}
"""


@pytest.fixture(scope="module")
def router() -> Router:
    return build_routers(load_config(CONFIG), random.Random(7))["web"]


def req(path="/", host="www.example.com", method="GET", headers=None, cookies=None, query=""):
    raw = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    return RouteRequest(host, path, method, LazyHeaders(raw), query,
                        LazyCookies([cookies]) if cookies else {}, target=path)


def pool_of(router, request):
    decision = router.match(request)
    assert decision.kind == FORWARD, decision
    return decision.pool


def test_exact_host(router):
    assert pool_of(router, req(host="api.example.com")) == "api"
    assert pool_of(router, req(host="api2.example.com")) == "default"


@pytest.mark.parametrize("host, hit", [
    ("a.shop.example", True), ("a.b.shop.example", True), ("shop.example", False),
    ("xshop.example", False), (None, False),
])
def test_wildcard_host(host, hit):
    assert host_matches("*.shop.example", host) is hit


def test_wildcard_host_in_router(router):
    assert pool_of(router, req(host="eu.shop.example")) == "shop"


def test_path_prefix_and_methods(router):
    assert pool_of(router, req("/admin/users")) == "admin"
    assert pool_of(router, req("/admin/users", method="HEAD")) == "admin"
    assert pool_of(router, req("/admin/users", method="POST")) == "default"


def test_header_exact_value(router):
    assert pool_of(router, req(headers={"X-Tenant": "gold"})) == "gold"
    assert pool_of(router, req(headers={"x-tenant": "silver"})) == "default"


def test_cookie_presence(router):
    assert pool_of(router, req(cookies="beta=anything; other=1")) == "beta"
    assert pool_of(router, req(cookies="other=1")) == "default"


def test_query_parameter(router):
    assert pool_of(router, req(query="a=1&v=2")) == "v2"
    assert pool_of(router, req(query="v=3")) == "default"


def test_path_regex(router):
    assert pool_of(router, req("/items/42")) == "items"
    assert pool_of(router, req("/items/42/x")) == "default"


def test_priority_beats_listener_order(router):
    # `low` comes first in the listener but has a lower priority than `canary`.
    decision = router.match(req("/canary/x"))
    assert decision.route == "canary"
    assert [r.name for r in router.routes][-1] == "catch_all"


def test_ties_keep_the_listener_order():
    config = load_config("""
listeners: {web: {bind: "127.0.0.1:0", routes: [second, first]}}
routes:
  first: {match: {path_prefix: /}, forward: a}
  second: {match: {path_prefix: /}, forward: b}
pools: {a: {}, b: {}}
""")
    router = build_routers(config)["web"]
    assert router.match(req("/x")).route == "second"


def test_canary_split_follows_weights():
    router = build_routers(load_config(CONFIG), random.Random(1))["web"]
    counts = {"stable": 0, "beta": 0}
    for _ in range(10_000):
        decision = router.match(req("/canary"))
        counts[decision.pool] += 1
        assert decision.split["weights"] == {"stable": 90, "beta": 10}
        assert decision.split["chosen"] == decision.pool
    assert 850 <= counts["beta"] <= 1150


def test_split_is_deterministic_with_a_seeded_rng():
    a = build_routers(load_config(CONFIG), random.Random(3))["web"]
    b = build_routers(load_config(CONFIG), random.Random(3))["web"]
    assert [a.match(req("/canary")).pool for _ in range(50)] == \
        [b.match(req("/canary")).pool for _ in range(50)]


def test_fixed_response(router):
    decision = router.match(req("/ping"))
    assert decision.kind == RESPOND and decision.status == 200
    assert decision.respond.body == "pong"


def test_redirect_expands_host_and_path(router):
    decision = router.match(req("/old/page?x=1", host="example.org"))
    assert decision.kind == REDIRECT and decision.status == 301
    assert decision.location == "http://example.org/new/old/page?x=1"


def test_no_route_names_listener_host_and_path():
    config = load_config("""
listeners: {web: {bind: "127.0.0.1:0", routes: [only]}}
routes: {only: {match: {host: a.example}, forward: p}}
pools: {p: {}}
""")
    decision = build_routers(config)["web"].match(req("/nothing", host="b.example"))
    assert decision.kind == NO_ROUTE
    assert "web" in decision.reason and "b.example" in decision.reason
    assert "/nothing" in decision.reason and "only" in decision.reason


def test_catch_all_fast_path():
    config = load_config("""
listeners: {web: {bind: "127.0.0.1:0", routes: [all]}}
routes: {all: {forward: p}}
pools: {p: {}}
""")
    router = build_routers(config)["web"]
    assert router._only is not None
    assert router.match(req("/anything", host=None)).pool == "p"


def test_tcp_listeners_get_no_router():
    config = load_config("""
listeners:
  web: {bind: "127.0.0.1:0", routes: [all]}
  raw: {bind: "127.0.0.1:0", protocol: tcp, pool: p}
routes: {all: {forward: p}}
pools: {p: {}}
""")
    assert set(build_routers(config)) == {"web"}
