"""Balancing seen from outside: algorithms, stickiness, client addresses (NAT vs ip_hash)."""
from __future__ import annotations

import collections
import threading

import pytest

from tests.proxy.e2e.support import Session, backend_entry, base_config, request

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def proxy(backends, proxy_factory):
    """One listener per scenario, each with its own pool of the same three backends."""
    handles = [backends["b1"], backends["b2"], backends["b3"]]

    def pool(prefix, balancer, weights=None, **extra):
        entries = [backend_entry(h, f"{prefix}-{h.name}",
                                 **({"weight": weights[i]} if weights else {}))
                   for i, h in enumerate(handles)]
        return {"balancer": balancer, "backends": entries, **extra}

    pools = {
        "rr": pool("rr", {"algorithm": "round_robin"}),
        "wrr": pool("wrr", {"algorithm": "weighted_round_robin"}, weights=[3, 1, 0]),
        "lor": pool("lor", {"algorithm": "least_outstanding_requests"}),
        "sticky": pool("st", {"algorithm": "round_robin"},
                       sticky={"mode": "cookie", "cookie": "LBSTICKY"}),
        "iphash": pool("ip", {"algorithm": "ip_hash"}),
    }
    routes = {name: {"forward": name} for name in pools}
    listeners = {name: {"bind": "127.0.0.1:0", "routes": [name]} for name in pools}
    return proxy_factory(base_config(pools, routes, listeners))


def test_round_robin_rotates_exactly(proxy):
    with Session(proxy.port("rr")) as s:
        seq = [s.get("/").backend for _ in range(12)]
    assert sorted(seq[:3]) == ["b1", "b2", "b3"]
    assert all(seq[i] == seq[i + 3] for i in range(len(seq) - 3)), seq


def test_round_robin_events_show_the_index(proxy):
    resp = request(proxy.port("rr"), path="/idx")
    event = proxy.event(resp.request_id)
    assert event["algorithm"] == "round_robin"
    assert event["inputs"]["of"] == 3
    assert [c["name"] for c in event["candidates"]] == ["rr-b1", "rr-b2", "rr-b3"]
    assert event["backend"] == f"rr-{resp.backend}"


def test_weighted_split_follows_weights(proxy):
    counts = collections.Counter()
    with Session(proxy.port("wrr")) as s:
        for _ in range(400):
            counts[s.get("/").backend] += 1
    assert counts["b3"] == 0  # weight 0 takes nothing
    assert 270 <= counts["b1"] <= 330, counts  # 3:1 of 400 = 300:100


def test_least_outstanding_avoids_a_slow_backend(proxy, backends):
    backends["b1"].control({"latency_ms": 300})
    counts = collections.Counter()
    lock = threading.Lock()
    errors = []

    def client():
        try:
            with Session(proxy.port("lor")) as s:
                for _ in range(20):
                    backend = s.get("/").backend
                    with lock:
                        counts[backend] += 1
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    total = sum(counts.values())
    assert total == 60
    # Round robin would send a third (20) to the slow one.
    assert counts["b1"] <= 10, counts


def test_sticky_cookie_round_trip(proxy):
    port = proxy.port("sticky")
    first = request(port, path="/cart")
    cookie = first.headers.get("set-cookie", "")
    assert cookie.startswith("LBSTICKY="), first.headers
    value = cookie.split(";")[0]
    with Session(port) as s:
        backends_seen = {s.get("/cart", headers={"Cookie": value}).backend for _ in range(9)}
    assert backends_seen == {first.backend}
    event = proxy.wait_events(lambda e: e.get("pool") == "sticky" and e.get("sticky")
                              and e["sticky"].get("hit"))[-1]
    assert event["sticky"]["mode"] == "cookie"


def test_forged_sticky_cookie_is_ignored_and_repicked(proxy):
    port = proxy.port("sticky")
    forged = "LBSTICKY=st-b2.9999999999.00000000000000000000000000000000"
    seen = []
    for _ in range(6):
        resp = request(port, path="/cart", headers={"Cookie": forged})
        seen.append(resp.backend)
        assert resp.headers.get("set-cookie", "").startswith("LBSTICKY=")  # re-stuck
        event = proxy.event(resp.request_id)
        assert event["sticky"]["hit"] is False
    assert set(seen) != {"b2"}  # the forged target does not decide


def test_many_clients_behind_one_address_share_a_backend(proxy):
    """NAT: every client behind one address hashes to the same backend."""
    port = proxy.port("iphash")
    seen = {request(port, path="/", source="127.0.0.77").backend for _ in range(15)}
    assert len(seen) == 1


def test_clients_on_different_addresses_spread(proxy):
    port = proxy.port("iphash")
    by_address = {}
    for i in range(10, 40):
        address = f"127.0.0.{i}"
        by_address[address] = request(port, path="/", source=address).backend
        # the same address again lands on the same backend
        assert request(port, path="/", source=address).backend == by_address[address]
    assert len(set(by_address.values())) >= 2, by_address
    event = proxy.wait_events(lambda e: e.get("pool") == "iphash")[-1]
    assert event["client"].startswith("127.0.0.")
