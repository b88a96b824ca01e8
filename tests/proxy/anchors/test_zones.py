"""Zones: a zone on each backend and listener, cross_zone per pool, zone-aware routing
that falls back to every zone when the listener's own has no eligible backend."""
from __future__ import annotations

import pytest

from proxy.config import ConfigError, load_config
from proxy.model import BackendState
from proxy.zones import zone_filter
from tests.proxy.anchors.support import (
    Client, GatedBackend, admin_get, admin_json, backend_entry, event)
from tests.proxy.edge.harness import EdgeProxy

pytestmark = pytest.mark.timeout(60)


def backend(name, zone):
    return BackendState(name=name, host="127.0.0.1", port=1, pool="p", zone=zone)


def test_zone_filter_keeps_the_zone_then_falls_back():
    a1, b1, b2, anywhere = backend("a1", "a"), backend("b1", "b"), backend("b2", "b"), \
        backend("x", None)
    picked, view = zone_filter([a1, b1, b2], "a", cross_zone=False)
    assert picked == [a1] and view["zones"] == ["a"] and not view["fallback"]
    picked, view = zone_filter([b1, b2, anywhere], "a", cross_zone=False)
    assert picked == [anywhere]  # a backend without a zone serves every zone
    picked, view = zone_filter([b1, b2], "a", cross_zone=False)
    assert picked == [b1, b2] and view["fallback"] is True
    assert "zone a has no eligible backend: falling back to every zone (b)" in view["reason"]
    picked, view = zone_filter([a1, b1], "a", cross_zone=True)
    assert picked == [a1, b1] and view["zones"] == ["a", "b"]
    assert view["reason"] == "cross_zone on: zone a sends to every zone"


def test_zone_names_are_validated():
    with pytest.raises(ConfigError) as err:
        load_config("""
listeners: {web: {bind: "127.0.0.1:0", routes: [all], zone: "us east"}}
routes: {all: {forward: p}}
pools: {p: {cross_zone: maybe, backends: [{name: b1, address: "127.0.0.1:1", zone: ""}]}}
""")
    paths = sorted(p for p, _ in err.value.errors)
    assert paths == ["listeners.web.zone", "pools.p.backends[0].zone", "pools.p.cross_zone"]


def zoned_config(a, b1, b2, cross_zone: bool, a_state: str = "active") -> dict:
    return {
        "admin": {"listen": "127.0.0.1:0"},
        "listeners": {"node-a": {"bind": "127.0.0.1:0", "routes": ["all"], "zone": "a"},
                      "node-b": {"bind": "127.0.0.1:0", "routes": ["all"], "zone": "b"}},
        "routes": {"all": {"forward": "p"}},
        "pools": {"p": {"cross_zone": cross_zone,
                        "backends": [backend_entry("a1", a, zone="a", state=a_state),
                                     backend_entry("b1", b1, zone="b"),
                                     backend_entry("b2", b2, zone="b")]}},
    }


def served_by(proxy, listener: str, n: int, prefix: str) -> list[bytes]:
    return [Client(proxy.port(listener), f"/{prefix}{i}").result().body.split()[0]
            for i in range(n)]


def test_cross_zone_off_keeps_traffic_in_the_zone_and_falls_back_when_it_is_empty():
    a, b1, b2 = (GatedBackend(n, gated=False) for n in ("a1", "b1", "b2"))
    try:
        with EdgeProxy(zoned_config(a, b1, b2, cross_zone=False)) as proxy:
            # Node a has one backend in its zone: it takes all of node a's traffic.
            assert served_by(proxy, "node-a", 6, "na") == [b"a1"] * 6
            assert set(served_by(proxy, "node-b", 6, "nb")) == {b"b1", b"b2"}
            ev = event(proxy, "na0")
            assert ev.zone["listener_zone"] == "a" and ev.zone["cross_zone"] is False
            assert ev.zone["backend_zone"] == "a" and ev.zone["fallback"] is False
            assert {c["name"]: c["zone"] for c in ev.candidates} == {
                "a1": "a", "b1": "b", "b2": "b"}
            proxy.apply(zoned_config(a, b1, b2, cross_zone=False, a_state="maintenance"))
            assert set(served_by(proxy, "node-a", 4, "fa")) == {b"b1", b"b2"}
            ev = event(proxy, "fa0")
            assert ev.zone["fallback"] is True and "falling back" in ev.zone["reason"]
            state = admin_json(proxy, "/state")
            assert state["listeners"]["node-a"]["zone"] == "a"
            assert state["pools"]["p"]["cross_zone"] is False
            assert [b["zone"] for b in state["pools"]["p"]["backends"]] == ["a", "b", "b"]
            metrics = admin_get(proxy, "/metrics").decode()
            assert 'lblab_zone_requests_total{from_zone="a",pool="p",to_zone="a"} 6.0' in metrics
            assert 'lblab_zone_requests_total{from_zone="a",pool="p",to_zone="b"} 4.0' in metrics
    finally:
        for b in (a, b1, b2):
            b.close()


def test_cross_zone_on_spreads_each_node_over_every_zone():
    a, b1, b2 = (GatedBackend(n, gated=False) for n in ("a1", "b1", "b2"))
    try:
        with EdgeProxy(zoned_config(a, b1, b2, cross_zone=True)) as proxy:
            assert set(served_by(proxy, "node-a", 6, "ca")) == {b"a1", b"b1", b"b2"}
            ev = event(proxy, "ca0")
            assert ev.zone["cross_zone"] is True and ev.zone["zones"] == ["a", "b"]
    finally:
        for b in (a, b1, b2):
            b.close()
