"""The admin API of a real proxy process under hostile bodies, and the GET /config
-> PUT /config round trip of configs with a TLS passthrough listener."""
from __future__ import annotations

import http.client
import json

import pytest
import yaml

from tests.proxy.e2e.support import backend_entry, base_config, request


def call(proxy, method: str, path: str, body: bytes = b"", ctype: str = "text/yaml",
         accept: str = "application/json") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.admin_port, timeout=30)
    try:
        conn.request(method, path, body=body or None,
                     headers={"Content-Type": ctype, "Accept": accept})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def passthrough_config(backends) -> dict:
    config = base_config({"web": {"backends": [backend_entry(backends["b1"])]},
                          "tlspool": {"backends": [backend_entry(backends["b2"])]}})
    config["listeners"]["edge"] = {
        "bind": "127.0.0.1:0", "protocol": "tcp", "pool": "tlspool",
        "tls": {"mode": "passthrough", "sni": {"www.lab.test": "tlspool"}}}
    return config


def test_a_passthrough_config_round_trips_and_admin_writes_work(backends, proxy_factory):
    proxy = proxy_factory(passthrough_config(backends))
    for fmt, ctype in (("yaml", "text/yaml"), ("json", "application/json")):
        status, exported = call(proxy, "GET", f"/config?format={fmt}")
        assert status == 200
        status, body = call(proxy, "PUT", "/config", exported, ctype=ctype)
        assert status == 200, body[:500]
        status, again = call(proxy, "GET", f"/config?format={fmt}")
        assert again == exported  # unchanged
    # Admin writes are no longer refused because of the export's defaults.
    status, body = call(proxy, "PUT", "/pools/web/backends/b1/weight", b'{"weight": 3}',
                        ctype="application/json")
    assert status == 200, body[:500]
    status, body = call(proxy, "POST", "/pools/web/backends",
                        json.dumps(backend_entry(backends["b3"])).encode(),
                        ctype="application/json")
    assert status == 201, body[:500]
    assert request(proxy.port("web")).status == 200


def hostile_bodies() -> list[tuple[str, bytes, str]]:
    base = yaml.safe_dump({"listeners": {"web": {"bind": "127.0.0.1:0", "routes": ["a"]}},
                           "routes": {"a": {"respond": {"body": "x"}}}})
    bomb = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [" + ",".join([f"*{p}"] * 10) + "]\n"
        for p, c in zip("abcdefg", "bcdefgh"))
    return [
        ("utf16", base.encode("utf-16"), "text/yaml"),
        ("utf32", base.encode("utf-32"), "text/yaml"),
        ("latin1", "listeners: {é: 1}".encode("latin-1"), "text/yaml"),
        ("deep-yaml", b"[" * 100_000 + b"]" * 100_000, "text/yaml"),
        ("deep-json", b"[" * 100_000 + b"]" * 100_000, "application/json"),
        ("bigint-yaml", b"listeners: " + b"9" * 50_000, "text/yaml"),
        ("bigint-json", b'{"listeners": ' + b"9" * 50_000 + b"}", "application/json"),
        ("nan-json", b'{"listeners": NaN}', "application/json"),
        ("bomb", (bomb + base).encode(), "text/yaml"),
        ("large", base.encode() + b"\n#" + b"x" * (1024 * 1024), "text/yaml"),
        ("self-alias", b"listeners: &l {web: {bind: *l}}", "text/yaml"),
    ]


@pytest.fixture(scope="module")
def plain_proxy(backends, proxy_factory):
    """One proxy for the refusals: each leaves its config as it was."""
    return proxy_factory(base_config({"web": {"backends": [backend_entry(backends["b1"])]}}))


@pytest.mark.parametrize("family,body,ctype", hostile_bodies(),
                         ids=[f for f, _, _ in hostile_bodies()])
def test_hostile_put_config_bodies_get_a_clear_400(plain_proxy, family, body, ctype):
    proxy = plain_proxy
    status, raw = call(proxy, "PUT", "/config", body, ctype=ctype)
    assert status == 400, (family, raw[:300])
    answer = json.loads(raw)
    assert answer["error"] and len(raw) < 4000
    assert "Traceback" not in raw.decode()
    assert request(proxy.port("web")).backend == "b1"  # still serving the old config


def test_put_config_reports_every_error_in_one_answer(plain_proxy):
    proxy = plain_proxy
    bad = {
        "admin": {"listen": "127.0.0.1:0", "token": "  "},
        "listeners": {"web": {"bind": "127.0.0.1:1:2", "routes": ["all", "ghost"]}},
        "routes": {"all": {"forward": "web"},
                   "r": {"redirect": {"location": "/x\r\nSet-Cookie: a=b"}}},
        "pools": {"web": {"retries": 99, "balancer": {"algorithm": "maglev",
                                                       "table_size": 10**18 + 9},
                          "health": {"path": "/h HTTP/1.1\r\nHost: x"},
                          "backends": [{"name": "b1", "address": [1, 2]}]}},
    }
    status, raw = call(proxy, "PUT", "/config", json.dumps(bad).encode(),
                       ctype="application/json")
    assert status == 422
    paths = {e["path"] for e in json.loads(raw)["errors"]}
    for expected in ("admin.token", "listeners.web.bind", "listeners.web.routes[1]",
                     "routes.r.redirect.location", "pools.web.retries",
                     "pools.web.balancer.table_size", "pools.web.health.path",
                     "pools.web.backends[0].address"):
        assert expected in paths, (expected, paths)
